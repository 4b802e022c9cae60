"""The Redis backend (redis-py asyncio), also run over fakeredis with no server.

Layout: every key is ``ac:{<namespace>}:<kind>:<sha256 hex>``. The braces are a Redis
Cluster hash tag, so all keys of a namespace live in one slot and the multi-key scripts
are cluster-safe. A record is a hash:

==========  ==============================================================================
field       meaning
==========  ==============================================================================
``r``       the record as JSON, without the fields the store manages
``e``       ``expires_at`` (float seconds of the Redis server's clock, ``%.17g``)
``c``       consumed flag (codes, states, reset tokens)
``rot/rev`` rotated / revoked flags (refresh tokens); ``g`` the grant index key
``a/m/h``   attempts, max attempts, answer hash (challenges)
``ca/m/sk`` created_at, max_expires_at, subject index key (sessions)
==========  ==============================================================================

Clients are hashes with ``id``, ``s`` (secret hash), ``ca``, ``ua`` and one field
``m:<json key>`` per metadata key (so a metadata merge is an HSET), no TTL, listed by the
set ``ac:{ns}:index:clients``. Grants (``grant:``) and subjects (``subject:``) are sets of
full key names of the same slot.

Time: the store keeps it. Scripts read ``TIME``; a record is live while ``now < e``. The
physical key TTL is the remaining logical TTL plus ``settings.expired_retention``, so the
key stays as a tombstone for that long and EXPIRED is told apart from NOT_FOUND. Updates
use HSET, which keeps the TTL; a TTL is only ever raised (session touch, index sets).

Every read-modify-write is one Lua script (EVALSHA, loaded again on NOSCRIPT). Scripts
need no ``cjson``: records are opaque JSON strings, flags and times are hash fields.
Store failures (any ``RedisError`` other than a bug in our own scripts, and ``OSError``)
raise ``StorageUnavailable`` naming the URL without its password. Reads are retried
after a connection error; a state-changing script only when the connection could not be
established, never after it may have reached the server (see ``RedisBackend._send``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import secrets
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from authconform._net import free_loopback_port
from authconform._urls import safe_url
from authconform.contract import (
    ALL_CAPABILITIES,
    JSON,
    MAX_PAYLOAD_BYTES,
    AccessTokenRecord,
    AttemptResult,
    AttemptStatus,
    BackendSettings,
    ChallengeRecord,
    ClientRecord,
    CodeRecord,
    ConsumeResult,
    ConsumeStatus,
    Health,
    RateLimitResult,
    RefreshTokenRecord,
    ResetTokenRecord,
    RotateResult,
    RotateStatus,
    SessionRecord,
    StateRecord,
)
from authconform.contract._validate import (
    KINDS,
    answer_hash,
    check_id,
    check_namespace,
    check_payload,
    check_positive_int,
    check_record,
    check_ttl,
    dumps_json,
    hash_secret,
    record_from_json_with,
    record_to_dict,
    secret_matches,
)
from authconform.errors import ConfigurationError, Conflict, InvalidArgument, StorageUnavailable

__all__ = ["RedisBackend", "factory", "fakeredis_factory"]

R = TypeVar("R")

INDEX_KINDS = ("grant", "subject", "index")
SCAN_COUNT = 1000
BATCH = 500
RATE_LIMIT_RETENTION_MS = 1000
RETRY_BASE = 0.05  # seconds before the first retry; doubled each time
RETRY_CAP = 0.5
# Scripts that change nothing a caller can observe (session_list and client_list only
# forget index members whose record is gone), so they may be sent again.
_READ_SCRIPTS = frozenset({"get", "live", "session_list", "client_list"})
# ResponseError prefixes that describe the server's state, not a bug in our scripts.
SERVER_STATE_PREFIXES = (
    "OOM",
    "BUSY",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "WRONGTYPE",
    "EXECABORT",
    "UNBLOCKED",
)

# Lua ------------------------------------------------------------------------------------
# ``now`` is the server's clock; ``fmt`` keeps a double exact (Lua's tostring keeps 14
# digits, and Redis converts Lua numbers to integers in replies).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
_PRELUDE = (
    _NOW
    + """
local function fmt(x) return string.format('%.17g', x) end
local function raise_ttl(key, px)
  local cur = redis.call('PTTL', key)
  if cur ~= -2 and cur < px then redis.call('PEXPIRE', key, px) end
end
local function hset_pairs(key, argv, first)
  for i = first, #argv, 200 do
    local last = math.min(i + 199, #argv)
    redis.call('HSET', key, unpack(argv, i, last))
  end
end
"""
)

# revoke every token of a grant: delete access tokens, mark live refresh tokens revoked,
# forget expired ones, drop the index; returns how many were live (and not revoked).
_REVOKE_GRANT_FN = """
local function revoke_grant(gk)
  local n = 0
  for _, k in ipairs(redis.call('SMEMBERS', gk)) do
    local v = redis.call('HMGET', k, 'e', 'rev')
    if v[1] then
      local live = tonumber(v[1]) > now
      if string.find(k, ':access_tokens:', 1, true) then
        if live then n = n + 1 end
        redis.call('DEL', k)
      elseif not live then
        redis.call('DEL', k)
      elseif v[2] ~= '1' then
        n = n + 1
        redis.call('HSET', k, 'rev', '1')
      end
    end
  end
  redis.call('DEL', gk)
  return n
end
"""

# KEYS[1] record, KEYS[2..] index sets; ARGV: ttl, ttl_ms, retention_ms, field/values
LUA_PUT = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = fmt(now + tonumber(ARGV[1]))
local px = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'e', e)
hset_pairs(KEYS[1], ARGV, 4)
redis.call('PEXPIRE', KEYS[1], px)
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  raise_ttl(KEYS[i], px)
end
return {e, fmt(now)}
"""
)

# KEYS[1] record; ARGV: fields after 'e'. A live record's fields, or nil.
LUA_GET = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'e', unpack(ARGV))
if not v[1] or tonumber(v[1]) <= now then return false end
return v
"""
)

# KEYS[1] record. 0 not found, 1 expired, {'u'|'c', e, r}.
LUA_CONSUME = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'c', 'r')
if not v[1] then return 0 end
if tonumber(v[1]) <= now then return 1 end
if v[2] == '1' then return {'u', v[1], v[3]} end
redis.call('HSET', KEYS[1], 'c', '1')
return {'c', v[1], v[3]}
"""
)

# KEYS[1] access token. 1 if it was live; the key is deleted either way.
LUA_REVOKE_ACCESS = (
    _NOW
    + """
local e = redis.call('HGET', KEYS[1], 'e')
if not e then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(e) > now then return 1 end
return 0
"""
)

# KEYS[1] grant index.
LUA_REVOKE_GRANT = _NOW + _REVOKE_GRANT_FN + "return revoke_grant(KEYS[1])\n"

# KEYS[1] refresh token. 1 if it was live and not yet revoked.
LUA_REVOKE_REFRESH = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'rev')
if not v[1] or tonumber(v[1]) <= now or v[2] == '1' then return 0 end
redis.call('HSET', KEYS[1], 'rev', '1')
return 1
"""
)

# KEYS[1] old, KEYS[2] new; ARGV: ttl, ttl_ms, retention_ms.
# {'nf'} | {'exp'} | {'conflict'} | {status, e, rot, rev, r} with status rev/reused/ok.
LUA_ROTATE = (
    _PRELUDE
    + _REVOKE_GRANT_FN
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'rot', 'rev', 'r', 'g', 'ci')
if not v[1] then return {'nf'} end
if tonumber(v[1]) <= now then return {'exp'} end
if v[3] == '1' then return {'rev', v[1], v[2], v[3], v[4]} end
if v[2] == '1' then
  revoke_grant(v[5])
  local w = redis.call('HMGET', KEYS[1], 'e', 'rot', 'rev', 'r')
  return {'reused', w[1], w[2], w[3], w[4]}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], 'rot', '1')
local e = fmt(now + tonumber(ARGV[1]))
local px = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'e', e, 'rot', '0', 'rev', '0', 'r', v[4], 'g', v[5])
redis.call('PEXPIRE', KEYS[2], px)
redis.call('SADD', v[5], KEYS[2])
raise_ttl(v[5], px)
if v[6] then
  redis.call('HSET', KEYS[2], 'ci', v[6])
  redis.call('SADD', v[6], KEYS[2])
  raise_ttl(v[6], px)
end
return {'ok', e, '0', '0', v[4]}
"""
)

# KEYS[1] challenge; ARGV[1] answer hash. {'nf'} | {'exp'} | {status, left, attempts, e, r}
LUA_ATTEMPT = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'a', 'm', 'h', 'r')
if not v[1] then return {'nf'} end
if tonumber(v[1]) <= now then return {'exp'} end
local a = tonumber(v[2]) + 1
local left = tonumber(v[3]) - a
if v[4] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'ok', tostring(left), tostring(a), v[1], v[5]}
end
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'locked', '0', tostring(a), v[1], v[5]}
end
redis.call('HSET', KEYS[1], 'a', tostring(a))
return {'wrong', tostring(left), tostring(a), v[1], v[5]}
"""
)

# KEYS[1] session, KEYS[2] subject index; ARGV: ttl, ttl_ms, retention_ms, max_lifetime,
# max_lifetime_ms, r. 0 on conflict, else {e, created_at, max_expires_at}.
LUA_SESSION_CREATE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = fmt(now + tonumber(ARGV[1]))
local m = fmt(now + tonumber(ARGV[4]))
local ca = fmt(now)
local ret = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'e', e, 'm', m, 'ca', ca, 'r', ARGV[6], 'sk', KEYS[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + ret)
redis.call('SADD', KEYS[2], KEYS[1])
raise_ttl(KEYS[2], tonumber(ARGV[5]) + ret + 1000)
return {e, ca, m}
"""
)

# KEYS[1] session; ARGV: ttl, retention_ms. 0 if not live, else {e, m, ca, r}.
LUA_SESSION_TOUCH = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'm', 'ca', 'r')
if not v[1] or tonumber(v[1]) <= now then return 0 end
local e = tonumber(v[1])
local ne = math.max(e, math.min(now + tonumber(ARGV[1]), tonumber(v[2])))
if ne > e then
  v[1] = fmt(ne)
  redis.call('HSET', KEYS[1], 'e', v[1])
  raise_ttl(KEYS[1], math.ceil((ne - now) * 1000) + tonumber(ARGV[2]))
end
return v
"""
)

# KEYS[1] subject index. Flat {e, m, ca, r, ...} of live sessions; forgets vanished keys.
LUA_SESSION_LIST = (
    _NOW
    + """
local out = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', k, 'e', 'm', 'ca', 'r')
  if not v[1] then
    redis.call('SREM', KEYS[1], k)
  elseif tonumber(v[1]) > now then
    for i = 1, 4 do out[#out + 1] = v[i] end
  end
end
return out
"""
)

# KEYS[1] session. 1 if it was live; deleted and unindexed either way.
LUA_SESSION_REVOKE = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'e', 'sk')
if not v[1] then return 0 end
redis.call('DEL', KEYS[1])
if v[2] then redis.call('SREM', v[2], KEYS[1]) end
if tonumber(v[1]) > now then return 1 end
return 0
"""
)

# KEYS[1] subject index. How many were live; every session and the index are deleted.
LUA_SESSION_REVOKE_ALL = (
    _NOW
    + """
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local e = redis.call('HGET', k, 'e')
  if e and tonumber(e) > now then n = n + 1 end
  redis.call('DEL', k)
end
redis.call('DEL', KEYS[1])
return n
"""
)

# KEYS[1] counter; ARGV: window, retention_ms. {count, window end}.
LUA_HIT = (
    _PRELUDE
    + """
local w = tonumber(ARGV[1])
local start = math.floor(now / w) * w
local stop = fmt(start + w)
local c
if redis.call('HGET', KEYS[1], 'e') == stop then
  c = redis.call('HINCRBY', KEYS[1], 'c', 1)
else
  redis.call('HSET', KEYS[1], 'e', stop, 'c', '1')
  c = 1
end
redis.call('PEXPIREAT', KEYS[1], math.ceil((start + w) * 1000) + tonumber(ARGV[2]))
return {c, stop}
"""
)

# KEYS[1] client, KEYS[2] clients index; ARGV: has_secret, secret_hash, client_id,
# field/values. 0 on conflict, else the server time.
LUA_CLIENT_CREATE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ts = fmt(now)
redis.call('HSET', KEYS[1], 'id', ARGV[3], 'ca', ts, 'ua', ts)
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 's', ARGV[2]) end
hset_pairs(KEYS[1], ARGV, 4)
redis.call('SADD', KEYS[2], KEYS[1])
return ts
"""
)

# KEYS[1] client; ARGV: has_secret, secret_hash, size limit, field/values.
# 0 if absent, {'big', size} if the merged metadata is too large, else {'ok', HGETALL...}.
LUA_CLIENT_UPDATE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local sizes = {}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if string.sub(h[i], 1, 2) == 'm:' then sizes[h[i]] = #h[i] - 1 + #h[i + 1] end
end
for i = 4, #ARGV, 2 do sizes[ARGV[i]] = #ARGV[i] - 1 + #ARGV[i + 1] end
local total, n = 2, 0
for _, s in pairs(sizes) do total = total + s; n = n + 1 end
if n > 1 then total = total + n - 1 end
if total > tonumber(ARGV[3]) then return {'big', tostring(total)} end
hset_pairs(KEYS[1], ARGV, 4)
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 's', ARGV[2]) end
redis.call('HSET', KEYS[1], 'ua', fmt(now))
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS[1] client, KEYS[2] clients index, KEYS[3] the client's codes, states and tokens.
# Deletes its codes, states and access tokens, marks its refresh tokens revoked.
LUA_CLIENT_DELETE = """
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
for _, k in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if string.find(k, ':refresh_tokens:', 1, true) then
    if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'rev', '1') end
  else
    redis.call('DEL', k)
  end
end
redis.call('DEL', KEYS[3])
return n
"""

# KEYS[1] clients index. {HGETALL, ...} of every client.
LUA_CLIENT_LIST = """
local out = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', k)
  if #h == 0 then redis.call('SREM', KEYS[1], k) else out[#out + 1] = h end
end
return out
"""

# KEYS: records. 1 per key that is live (clients have no 'e' and are always live).
LUA_LIVE = (
    _NOW
    + """
local out = {}
for i, k in ipairs(KEYS) do
  local e = redis.call('HGET', k, 'e')
  if e then
    out[i] = (tonumber(e) > now) and 1 or 0
  else
    out[i] = redis.call('EXISTS', k)
  end
end
return out
"""
)

# KEYS: records, then index sets (ARGV[1] = how many records). Deletes tombstones, then
# forgets index members that no longer exist. Returns how many records were deleted.
LUA_PURGE = (
    _NOW
    + """
local n = 0
local records = tonumber(ARGV[1])
for i = 1, records do
  local e = redis.call('HGET', KEYS[i], 'e')
  if e and tonumber(e) <= now then
    redis.call('UNLINK', KEYS[i])
    n = n + 1
  end
end
for i = records + 1, #KEYS do
  if redis.call('TYPE', KEYS[i])['ok'] == 'set' then
    for _, k in ipairs(redis.call('SMEMBERS', KEYS[i])) do
      if redis.call('EXISTS', k) == 0 then redis.call('SREM', KEYS[i], k) end
    end
  end
end
return n
"""
)

_SCRIPTS = {
    "put": LUA_PUT,
    "get": LUA_GET,
    "consume": LUA_CONSUME,
    "revoke_access": LUA_REVOKE_ACCESS,
    "revoke_grant": LUA_REVOKE_GRANT,
    "revoke_refresh": LUA_REVOKE_REFRESH,
    "rotate": LUA_ROTATE,
    "attempt": LUA_ATTEMPT,
    "session_create": LUA_SESSION_CREATE,
    "session_touch": LUA_SESSION_TOUCH,
    "session_list": LUA_SESSION_LIST,
    "session_revoke": LUA_SESSION_REVOKE,
    "session_revoke_all": LUA_SESSION_REVOKE_ALL,
    "hit": LUA_HIT,
    "client_create": LUA_CLIENT_CREATE,
    "client_update": LUA_CLIENT_UPDATE,
    "client_delete": LUA_CLIENT_DELETE,
    "client_list": LUA_CLIENT_LIST,
    "live": LUA_LIVE,
    "purge": LUA_PURGE,
}


# helpers ----------------------------------------------------------------------------------
def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up (a TTL never ends early)."""
    return math.ceil(seconds * 1000)


def _stored_json(record: Any, *managed: str) -> str:
    """The record as JSON without the fields the store manages."""
    data = record_to_dict(record)
    for name in managed:
        data.pop(name, None)
    return dumps_json(data, "record")


def _is_script_bug(exc: BaseException) -> bool:
    """True for a Lua error of our own scripts (a bug), not a server condition."""
    from redis.exceptions import ResponseError

    if type(exc) is not ResponseError:
        return False
    message = str(exc).lstrip()
    if message.upper().startswith(SERVER_STATE_PREFIXES):
        return False
    return "user_script" in message or "compiling script" in message


class _NotSent(Exception):
    """No connection could be established, so the command was never written."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RedisBackend:
    """The storage contract over one Redis database (or a fakeredis server).

    Built by :func:`factory` (``redis``) or :func:`fakeredis_factory` (``fakeredis``).
    """

    capabilities = ALL_CAPABILITIES

    def __init__(self, settings: BackendSettings, client: Any, *, name: str = "redis") -> None:
        """Use ``client`` (a ``redis.asyncio.Redis`` with ``decode_responses=True``)."""
        self.name = name
        self.namespace = check_namespace(settings.namespace)
        self._url = safe_url(settings.redis_url)
        self._retention_ms = (
            _ms(settings.expired_retention) if settings.expired_retention > 0 else 0
        )
        self._prefix = f"ac:{{{self.namespace}}}:"
        self._clients_index = self._prefix + "index:clients"
        self._r = client
        self._s = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import NoScriptError, RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self._noscript = NoScriptError
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._transient: tuple[type[BaseException], ...] = (
            RedisConnectionError,
            RedisTimeoutError,
            OSError,
        )
        self._timeout: type[BaseException] = RedisTimeoutError
        self._retries = max(0, settings.retries)

    # plumbing ---------------------------------------------------------------------------
    def _key(self, kind: str, digest: str) -> str:
        return f"{self._prefix}{kind}:{digest}"

    def _owned(self, client_id: str) -> str:
        """The set of a client's codes, states and tokens (emptied by delete_client)."""
        return self._key("index", "client:" + hash_secret(client_id))

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        return StorageUnavailable(
            f"{self.name} at {self._url} failed: {type(exc).__name__}"
            + (f": {detail}" if detail else "")
        )

    # Retries -------------------------------------------------------------------------
    # redis-py's own retry (``retry=``/``retry_on_error=`` on the client) re-sends a
    # command after ANY connection or timeout error, including one that struck after the
    # command reached the server and only its reply was lost. For a script that changes
    # state that is a second execution: a rotation whose reply is lost runs again, finds
    # the old token already rotated and answers REUSED, revoking the grant of a client
    # that did nothing wrong (and a consume would answer ALREADY_USED, a hit would count
    # twice). So the client is built without retries and this backend retries itself,
    # with bounded exponential backoff (``settings.retries`` times):
    #
    # * reads (``_READ_SCRIPTS``, HGETALL, SCAN, PING, ...) retry on any connection or
    #   timeout error: running them twice changes nothing;
    # * a state-changing command is retried only when it certainly never left this
    #   process: the pool failed to establish a connection (refused, connect timeout,
    #   handshake), which happens before a byte of the command is written. ``_send``
    #   takes the connection from the pool itself so that this phase is told apart from
    #   the write and the read. A failure after that point is ambiguous (the server may
    #   have run the script) and raises StorageUnavailable at once: the caller fails
    #   closed instead of the backend guessing.
    #
    # NOSCRIPT is a reply, not a lost one: the script did not run, so loading it and
    # sending the EVALSHA again is safe for every script.

    async def _send(self, *args: Any) -> Any:
        """Send one command on a pooled connection and return its reply.

        Raises ``_NotSent`` if no connection could be established (nothing was written);
        any other error is raised as it is. redis-py disconnects a connection whose write
        or read failed (or was cancelled) before it goes back to the pool.
        """
        pool = self._r.connection_pool
        try:
            conn = await pool.get_connection()
        except self._transient as exc:
            raise _NotSent(exc) from exc
        try:
            await conn.send_command(*args)
            return await conn.read_response()
        finally:
            await pool.release(conn)

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(RETRY_CAP, RETRY_BASE * 2**attempt))

    async def _write(self, *args: Any) -> Any:
        """A state-changing command: retried only if it was certainly never sent."""
        for attempt in range(self._retries + 1):
            try:
                return await self._send(*args)
            except _NotSent as exc:
                if attempt >= self._retries:
                    raise exc.error from None
            await self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """An idempotent call (``fn`` sends reads only): retried on a connection error.

        Not after a read timeout: a server that did not answer within
        ``operation_timeout`` is hung (paused, overloaded), and asking again would only
        multiply the time a caller waits for its StorageUnavailable.
        """
        for attempt in range(self._retries + 1):
            try:
                return await fn(*args, **kwargs)
            except _NotSent as exc:
                if attempt >= self._retries:
                    raise exc.error from None
            except self._timeout:
                raise
            except self._transient:
                if attempt >= self._retries:
                    raise
            await self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        # EVALSHA on our own connection (see _send); on NOSCRIPT (a restarted or flushed
        # server) load the script and send it again, as redis-py's Script.__call__ does.
        code = self._s[script]
        command = ("EVALSHA", code.sha, len(keys), *keys, *args)
        try:
            if script in _READ_SCRIPTS:
                try:
                    return await self._read(self._send, *command)
                except self._noscript:
                    code.sha = await self._read(self._send, "SCRIPT", "LOAD", code.script)
                    return await self._read(self._send, "EVALSHA", code.sha, *command[2:])
            try:
                return await self._write(*command)
            except self._noscript:
                code.sha = await self._read(self._send, "SCRIPT", "LOAD", code.script)
                return await self._write("EVALSHA", code.sha, *command[2:])
        except self._errors as exc:
            if _is_script_bug(exc):  # a bug of ours: surface it as it is
                raise
            raise self._unavailable(exc) from None

    async def _cmd(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """A read through the client (its reply parsing), retried; failures fail closed."""
        try:
            return await self._read(fn, *args, **kwargs)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def _scan(self, pattern: str) -> list[str]:
        keys: list[str] = []
        cursor: int = 0
        while True:
            cursor, batch = await self._cmd(self._r.scan, cursor, match=pattern, count=SCAN_COUNT)
            keys.extend(batch)
            if int(cursor) == 0:
                return sorted(set(keys))

    async def close(self) -> None:
        """Close the connection pool. The stored data stays."""
        try:
            await self._r.aclose()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def _put(
        self,
        kind: str,
        digest: str,
        ttl: float,
        fields: Sequence[str],
        *indexes: str,
    ) -> tuple[float, float]:
        keys = [self._key(kind, digest), *indexes]
        out = await self._eval("put", keys, [repr(ttl), _ms(ttl), self._retention_ms, *fields])
        if out == 0:
            raise Conflict(f"{kind[:-1].replace('_', ' ')} already exists")
        return float(out[0]), float(out[1])

    async def _get(self, kind: str, digest: str, *fields: str) -> list[str] | None:
        out = await self._eval("get", [self._key(kind, digest)], fields)
        return out or None

    async def _consume(self, kind: str, cls: type[R], secret: str) -> ConsumeResult[R]:
        key = hash_secret(check_id(secret, "value"))
        out = await self._eval("consume", [self._key(kind, key)])
        if out == 0:
            return ConsumeResult(ConsumeStatus.NOT_FOUND)
        if out == 1:
            return ConsumeResult(ConsumeStatus.EXPIRED)
        status = ConsumeStatus.CONSUMED if out[0] == "c" else ConsumeStatus.ALREADY_USED
        return ConsumeResult(
            status, record_from_json_with(cls, out[2], expires_at=float(out[1]), consumed=True)
        )

    # clients ------------------------------------------------------------------------------
    @staticmethod
    def _metadata_fields(metadata: Mapping[str, JSON]) -> list[str]:
        fields: list[str] = []
        for k, v in metadata.items():
            fields += ["m:" + dumps_json(k, "metadata"), dumps_json(v, "metadata")]
        return fields

    @staticmethod
    def _client_from_hash(flat: Sequence[str] | Mapping[str, str]) -> ClientRecord:
        h = flat if isinstance(flat, Mapping) else dict(zip(flat[::2], flat[1::2], strict=True))
        metadata = {json.loads(f[2:]): json.loads(v) for f, v in h.items() if f.startswith("m:")}
        return ClientRecord(
            client_id=h["id"],
            metadata=metadata,
            secret_hash=h.get("s"),
            created_at=float(h["ca"]),
            updated_at=float(h["ua"]),
        )

    async def create_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord:
        """Register a client (no TTL); Conflict if the id exists."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        secret_hash = hash_secret(secret) if secret is not None else None
        out = await self._eval(
            "client_create",
            [self._key("clients", hash_secret(client_id)), self._clients_index],
            [
                "0" if secret_hash is None else "1",
                secret_hash or "",
                client_id,
                *self._metadata_fields(metadata),
            ],
        )
        if out == 0:
            raise Conflict(f"client {client_id!r} already exists")
        now = float(out)
        return ClientRecord(client_id, json.loads(dumps_json(metadata)), secret_hash, now, now)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """Return the client or None."""
        check_id(client_id, "client_id")
        h = await self._cmd(self._r.hgetall, self._key("clients", hash_secret(client_id)))
        return self._client_from_hash(h) if h else None

    async def update_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord | None:
        """Merge metadata (one HSET: keys not given are kept); a secret replaces the hash."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        out = await self._eval(
            "client_update",
            [self._key("clients", hash_secret(client_id))],
            [
                "0" if secret is None else "1",
                hash_secret(secret) if secret is not None else "",
                MAX_PAYLOAD_BYTES,
                *self._metadata_fields(metadata),
            ],
        )
        if out == 0:
            return None
        if out[0] == "big":
            raise InvalidArgument(
                f"metadata is {out[1]} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
            )
        return self._client_from_hash(out[1])

    async def delete_client(self, client_id: str) -> bool:
        """Delete; True if it existed."""
        check_id(client_id, "client_id")
        out = await self._eval(
            "client_delete",
            [
                self._key("clients", hash_secret(client_id)),
                self._clients_index,
                self._owned(client_id),
            ],
        )
        return bool(out)

    async def list_clients(self) -> list[ClientRecord]:
        """Every client of the namespace, sorted by id."""
        out = await self._eval("client_list", [self._clients_index])
        return sorted((self._client_from_hash(h) for h in out), key=lambda c: c.client_id)

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time compare against the stored hash."""
        check_id(client_id, "client_id")
        check_id(secret, "secret")
        stored = await self._cmd(self._r.hget, self._key("clients", hash_secret(client_id)), "s")
        return secret_matches(secret, stored)

    # codes ----------------------------------------------------------------------------------
    async def put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        """Store a code for ``ttl`` seconds."""
        key = hash_secret(check_id(code, "code"))
        check_record(record, CodeRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at", "consumed")
        expires, _ = await self._put(
            "codes", key, ttl, ["c", "0", "r", text], self._owned(record.client_id)
        )
        return record_from_json_with(CodeRecord, text, expires_at=expires, consumed=False)

    async def get_code(self, code: str) -> CodeRecord | None:
        """A live code (consumed or not) or None."""
        key = hash_secret(check_id(code, "code"))
        v = await self._get("codes", key, "c", "r")
        if v is None:
            return None
        return record_from_json_with(CodeRecord, v[2], expires_at=float(v[0]), consumed=v[1] == "1")

    async def consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        """Use a code once (one script)."""
        return await self._consume("codes", CodeRecord, code)

    # access tokens --------------------------------------------------------------------------
    async def put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        """Store an access token and index it under its grant."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, AccessTokenRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at")
        grant = self._key("grant", hash_secret(record.grant_id))
        expires, _ = await self._put(
            "access_tokens", key, ttl, ["r", text], grant, self._owned(record.client_id)
        )
        return record_from_json_with(AccessTokenRecord, text, expires_at=expires)

    async def get_access_token(self, token: str) -> AccessTokenRecord | None:
        """A live access token or None."""
        key = hash_secret(check_id(token, "token"))
        v = await self._get("access_tokens", key, "r")
        return (
            None
            if v is None
            else record_from_json_with(AccessTokenRecord, v[1], expires_at=float(v[0]))
        )

    async def revoke_access_token(self, token: str) -> bool:
        """Delete an access token; True if it was live."""
        key = hash_secret(check_id(token, "token"))
        return bool(await self._eval("revoke_access", [self._key("access_tokens", key)]))

    async def revoke_grant(self, grant_id: str) -> int:
        """Delete the grant's access tokens, mark its refresh tokens revoked."""
        check_id(grant_id, "grant_id")
        out = await self._eval("revoke_grant", [self._key("grant", hash_secret(grant_id))])
        return int(out)

    # refresh tokens -------------------------------------------------------------------------
    def _refresh(self, e: str, rot: str, rev: str, text: str) -> RefreshTokenRecord:
        return record_from_json_with(
            RefreshTokenRecord, text, expires_at=float(e), rotated=rot == "1", revoked=rev == "1"
        )

    async def put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        """Store a refresh token with its own TTL, indexed under its grant."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, RefreshTokenRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at", "rotated", "revoked")
        grant = self._key("grant", hash_secret(record.grant_id))
        owned = self._owned(record.client_id)
        fields = ["rot", "0", "rev", "0", "r", text, "g", grant, "ci", owned]
        expires, _ = await self._put("refresh_tokens", key, ttl, fields, grant, owned)
        return self._refresh(repr(expires), "0", "0", text)

    async def get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        """A live refresh token (flags tell rotated/revoked) or None."""
        key = hash_secret(check_id(token, "token"))
        v = await self._get("refresh_tokens", key, "rot", "rev", "r")
        return None if v is None else self._refresh(v[0], v[1], v[2], v[3])

    async def rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        """Replace ``old`` by ``new`` in one script; reuse of a rotated token revokes the grant."""
        old_key = hash_secret(check_id(old, "old token"))
        new_key = hash_secret(check_id(new, "new token"))
        ttl = check_ttl(ttl)
        if old_key == new_key:
            raise InvalidArgument("the new refresh token must differ from the old one")
        out = await self._eval(
            "rotate",
            [self._key("refresh_tokens", old_key), self._key("refresh_tokens", new_key)],
            [repr(ttl), _ms(ttl), self._retention_ms],
        )
        status = out[0]
        if status == "nf":
            return RotateResult(RotateStatus.NOT_FOUND)
        if status == "exp":
            return RotateResult(RotateStatus.EXPIRED)
        if status == "conflict":
            raise Conflict("the new refresh token already exists")
        record = self._refresh(out[1], out[2], out[3], out[4])
        result = {"rev": RotateStatus.REVOKED, "reused": RotateStatus.REUSED}
        return RotateResult(result.get(status, RotateStatus.ROTATED), record)

    async def revoke_refresh_token(self, token: str) -> bool:
        """Mark one refresh token revoked; True if it was live and not revoked."""
        key = hash_secret(check_id(token, "token"))
        return bool(await self._eval("revoke_refresh", [self._key("refresh_tokens", key)]))

    # states and reset tokens ------------------------------------------------------------------
    async def put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        """Store a pending state."""
        key = hash_secret(check_id(state, "state"))
        check_record(record, StateRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at", "consumed")
        expires, _ = await self._put(
            "states", key, ttl, ["c", "0", "r", text], self._owned(record.client_id)
        )
        return record_from_json_with(StateRecord, text, expires_at=expires, consumed=False)

    async def consume_state(self, state: str) -> ConsumeResult[StateRecord]:
        """Use a state once."""
        return await self._consume("states", StateRecord, state)

    async def put_reset_token(
        self, token: str, record: ResetTokenRecord, ttl: float
    ) -> ResetTokenRecord:
        """Store a reset token."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, ResetTokenRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at", "consumed")
        expires, _ = await self._put("reset_tokens", key, ttl, ["c", "0", "r", text])
        return record_from_json_with(ResetTokenRecord, text, expires_at=expires, consumed=False)

    async def consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        """Use a reset token once."""
        return await self._consume("reset_tokens", ResetTokenRecord, token)

    # challenges -------------------------------------------------------------------------------
    async def put_challenge(
        self, challenge_id: str, answer: str, record: ChallengeRecord, ttl: float
    ) -> ChallengeRecord:
        """Store a challenge with its answer hashed."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        check_record(record, ChallengeRecord)
        ttl = check_ttl(ttl)
        text = _stored_json(record, "expires_at", "attempts")
        answer_digest = answer_hash(challenge_id, answer)
        fields = ["a", "0", "m", str(record.max_attempts), "h", answer_digest, "r", text]
        expires, _ = await self._put("challenges", key, ttl, fields)
        return record_from_json_with(ChallengeRecord, text, expires_at=expires, attempts=0)

    async def attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        """Count one answer in one script; the challenge dies on success or lock-out.

        The script compares SHA-256 digests; a timing difference could only tell about
        the digest of the answer, never the answer.
        """
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        out = await self._eval(
            "attempt", [self._key("challenges", key)], [answer_hash(challenge_id, answer)]
        )
        status = out[0]
        if status == "nf":
            return AttemptResult(AttemptStatus.NOT_FOUND)
        if status == "exp":
            return AttemptResult(AttemptStatus.EXPIRED)
        record = record_from_json_with(
            ChallengeRecord, out[4], expires_at=float(out[3]), attempts=int(out[2])
        )
        result = {"ok": AttemptStatus.SUCCESS, "locked": AttemptStatus.LOCKED}
        return AttemptResult(result.get(status, AttemptStatus.WRONG), int(out[1]), record)

    # sessions ---------------------------------------------------------------------------------
    @staticmethod
    def _session(e: str, m: str, ca: str, text: str) -> SessionRecord:
        return record_from_json_with(
            SessionRecord, text, expires_at=float(e), max_expires_at=float(m), created_at=float(ca)
        )

    async def create_session(
        self, session_id: str, record: SessionRecord, ttl: float, max_lifetime: float
    ) -> SessionRecord:
        """Create a session, indexed by subject."""
        key = hash_secret(check_id(session_id, "session_id"))
        check_record(record, SessionRecord)
        ttl = check_ttl(ttl)
        max_lifetime = check_ttl(max_lifetime, "max_lifetime")
        if ttl > max_lifetime:
            raise InvalidArgument(f"ttl {ttl} exceeds max_lifetime {max_lifetime}")
        text = _stored_json(
            dataclasses.replace(record, handle=key), "expires_at", "created_at", "max_expires_at"
        )
        out = await self._eval(
            "session_create",
            [self._key("sessions", key), self._key("subject", hash_secret(record.subject))],
            [repr(ttl), _ms(ttl), self._retention_ms, repr(max_lifetime), _ms(max_lifetime), text],
        )
        if out == 0:
            raise Conflict("session already exists")
        return self._session(out[0], out[2], out[1], text)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A live session or None."""
        key = hash_secret(check_id(session_id, "session_id"))
        v = await self._get("sessions", key, "m", "ca", "r")
        return None if v is None else self._session(*v)

    async def touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        """Extend to min(now + ttl, max_expires_at); never shorten. None if not live."""
        key = hash_secret(check_id(session_id, "session_id"))
        ttl = check_ttl(ttl)
        out = await self._eval(
            "session_touch", [self._key("sessions", key)], [repr(ttl), self._retention_ms]
        )
        return None if out == 0 else self._session(*out)

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """Live sessions of a subject, oldest first."""
        check_id(subject, "subject")
        out = await self._eval("session_list", [self._key("subject", hash_secret(subject))])
        records = [self._session(*out[i : i + 4]) for i in range(0, len(out), 4)]
        return sorted(records, key=lambda r: (r.created_at, r.handle))

    async def revoke_session(self, session_id: str) -> bool:
        """End one session; True if it was live."""
        key = hash_secret(check_id(session_id, "session_id"))
        return bool(await self._eval("session_revoke", [self._key("sessions", key)]))

    async def revoke_all_sessions(self, subject: str) -> int:
        """End every session of a subject; returns how many were live."""
        check_id(subject, "subject")
        out = await self._eval("session_revoke_all", [self._key("subject", hash_secret(subject))])
        return int(out)

    # rate limits ------------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Fixed window aligned to its length on the server's clock."""
        check_id(key, "key")
        check_positive_int(limit, "limit")
        window = check_ttl(window, "window")
        digest = hash_secret(f"{key}\x00{window!r}")
        out = await self._eval(
            "hit",
            [self._key("rate_limits", digest)],
            [repr(window), min(self._retention_ms, RATE_LIMIT_RETENTION_MS)],
        )
        count = int(out[0])
        return RateLimitResult(count <= limit, count, limit, float(out[1]))

    # admin --------------------------------------------------------------------------------------
    async def health(self) -> Health:
        """PING latency and the server's persistence/eviction settings. Never raises."""
        started = time.perf_counter()
        try:
            await self._read(self._r.ping)
        except self._errors as exc:
            return Health(
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                detail=str(self._unavailable(exc)),
            )
        latency = (time.perf_counter() - started) * 1000
        durability: dict[str, str] = {}
        notes: list[str] = []
        from redis.exceptions import ResponseError

        try:
            for param in ("appendonly", "appendfsync", "save", "maxmemory-policy"):
                value = (await self._read(self._r.config_get, param)).get(param)
                durability[param] = "(not reported)" if value is None else str(value)
        except ResponseError as exc:
            durability = {"config": f"unavailable: CONFIG GET refused ({str(exc)[:100]})"}
        except self._errors as exc:
            return Health(ok=False, latency_ms=latency, detail=str(self._unavailable(exc)))
        if self.name == "fakeredis":
            durability["persistence"] = "none (fakeredis, process memory)"
        policy = durability.get("maxmemory-policy", "")
        if policy.startswith(("allkeys-", "volatile-")):
            notes.append(
                f"warning: maxmemory-policy is {policy}: Redis may evict live grants, "
                "tokens and tombstones under memory pressure; use noeviction"
            )
        if durability.get("appendonly") == "no" and durability.get("save") == "":
            notes.append(
                "warning: persistence is off (appendonly no, save ''): a restart loses all"
            )
        return Health(ok=True, latency_ms=latency, durability=durability, detail="; ".join(notes))

    async def stats(self) -> dict[str, int]:
        """Live records per kind (tombstones and indexes not counted)."""
        counts = dict.fromkeys(KINDS, 0)
        records = [k for k in await self._scan(self._prefix + "*") if self._kind(k) in counts]
        for i in range(0, len(records), BATCH):
            batch = records[i : i + BATCH]
            flags = await self._eval("live", batch)
            for k, live in zip(batch, flags, strict=True):
                counts[self._kind(k)] += int(live)
        return counts

    def _kind(self, key: str) -> str:
        return key[len(self._prefix) :].split(":", 1)[0]

    async def purge_expired(self) -> int:
        """Delete tombstones (logically expired records) and forget vanished index members.

        Redis deletes keys itself after the retention; this only shortens the wait.
        """
        keys = await self._scan(self._prefix + "*")
        records = [k for k in keys if self._kind(k) in KINDS and self._kind(k) != "clients"]
        # an ended rate-limit window is removed but not counted
        windows = [k for k in records if self._kind(k) == "rate_limits"]
        records = [k for k in records if self._kind(k) != "rate_limits"]
        indexes = [k for k in keys if self._kind(k) in INDEX_KINDS]
        count = 0
        for i in range(0, len(records), BATCH):
            batch = records[i : i + BATCH]
            count += int(await self._eval("purge", batch, [len(batch)]))
        for i in range(0, len(windows), BATCH):
            await self._eval("purge", windows[i : i + BATCH], [len(windows[i : i + BATCH])])
        for i in range(0, len(indexes), BATCH):
            await self._eval("purge", indexes[i : i + BATCH], [0])
        return count

    async def drop_namespace(self) -> None:
        """UNLINK every key of ``ac:{<namespace>}:*`` (SCAN, batches); nothing else."""
        while True:
            keys = await self._scan(self._prefix + "*")
            if not keys:
                return
            for i in range(0, len(keys), BATCH):
                await self._unlink(keys[i : i + BATCH])

    async def _unlink(self, keys: Sequence[str]) -> None:
        try:
            await self._write("UNLINK", *keys)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def dump_raw(self) -> str:
        """Every key of the namespace with its type, value and PTTL, as JSON text."""
        keys = await self._scan(self._prefix + "*")
        out: dict[str, Any] = {}
        for key in keys:
            kind = await self._cmd(self._r.type, key)
            if kind == "hash":
                value: Any = await self._cmd(self._r.hgetall, key)
            elif kind == "set":
                value = sorted(await self._cmd(self._r.smembers, key))
            elif kind == "string":
                value = await self._cmd(self._r.get, key)
            elif kind == "none":
                continue
            else:
                value = f"<{kind}>"
            pttl = await self._cmd(self._r.pttl, key)
            out[key] = {"type": kind, "pttl_ms": pttl, "value": value}
        return json.dumps(out, indent=1, sort_keys=True)


# factories --------------------------------------------------------------------------------------
def _redis_client(settings: BackendSettings) -> Any:
    import redis.asyncio

    try:
        return redis.asyncio.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.operation_timeout,
            retry=_no_retry(),  # RedisBackend retries, only where safe (see _send)
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"bad redis URL {safe_url(settings.redis_url)}: {exc}; "
            "set --authconform-redis-url (env AUTHCONFORM_REDIS_URL)"
        ) from None


def _no_retry() -> Any:
    """redis-py's retry policy "never": a lost reply must not re-run a script."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Retry(NoBackoff(), 0)


def factory(settings: BackendSettings) -> RedisBackend:
    """Entry point ``redis``: a Redis server at ``settings.redis_url``."""
    return RedisBackend(settings, _redis_client(settings), name="redis")


def _outage_settings(settings: BackendSettings) -> BackendSettings:
    """The same URL (user, password, db) on a loopback port where nothing listens."""
    parts = urllib.parse.urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        path = os.path.join(tempfile.gettempdir(), f"authconform-no-redis-{secrets.token_hex(8)}")
        url = urllib.parse.urlunsplit(parts._replace(path=path))
    else:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{free_loopback_port()}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return dataclasses.replace(settings, redis_url=url)


factory.uses_clock = False  # type: ignore[attr-defined]
factory.service = "redis"  # type: ignore[attr-defined]
factory.outage_settings = _outage_settings  # type: ignore[attr-defined]

_FAKE_SERVERS: dict[str, Any] = {}
_FAKE_LOCK = threading.Lock()


def fakeredis_factory(settings: BackendSettings) -> RedisBackend:
    """Entry point ``fakeredis``: the same backend over an in-process fake Redis.

    Instances with the same ``redis_url`` share one fake server (like one Redis), in
    this process only. ``options={"fakeredis_down": True}`` gives a server that refuses
    every command (connection error).
    """
    import fakeredis

    server: Any
    if settings.options.get("fakeredis_down"):
        server = fakeredis.FakeServer()
        server.connected = False
    else:
        with _FAKE_LOCK:
            server = _FAKE_SERVERS.get(settings.redis_url)
            if server is None:
                server = _FAKE_SERVERS[settings.redis_url] = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True, retry=_no_retry())
    return RedisBackend(settings, client, name="fakeredis")


def _fakeredis_outage(settings: BackendSettings) -> BackendSettings:
    return dataclasses.replace(settings, options={**settings.options, "fakeredis_down": True})


fakeredis_factory.uses_clock = False  # type: ignore[attr-defined]
fakeredis_factory.service = None  # type: ignore[attr-defined]
fakeredis_factory.in_process = True  # type: ignore[attr-defined]  # one fake server per process
fakeredis_factory.outage_settings = _fakeredis_outage  # type: ignore[attr-defined]
