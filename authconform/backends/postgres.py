r"""PostgreSQL backend: psycopg 3 (async) with a connection pool; one schema per namespace.

Every read-modify-write is one conditional statement (``UPDATE ... WHERE NOT consumed
AND expires_at > now RETURNING ...``) or one short transaction, so the outcome of a race
is decided by PostgreSQL's row locks, not by this process. Expiry is computed from the
injected clock and passed as a parameter; expired rows are kept (and reported EXPIRED)
until ``purge_expired``. Records are stored as JSON text (not ``jsonb``, which refuses
``\u0000`` escapes) next to the typed columns the queries need. Tokens, codes, states,
reset tokens, challenge ids and session ids are stored as SHA-256 hex; a challenge
answer as ``answer_hash`` (SHA-256 of the secret challenge id and the answer).

Connections: an ``AsyncConnectionPool`` (autocommit) opened on first use. Opening first
probes the server with a bounded number of direct connection attempts with backoff, so
an unreachable server fails within ``connect_timeout`` instead of blocking; a pool that
cannot hand out a connection is discarded and reopened on the next call. Every
psycopg, pool, socket or timeout error becomes ``StorageUnavailable`` (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from authconform._net import free_loopback_port
from authconform.contract import (
    ALL_CAPABILITIES,
    JSON,
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
    answer_matches,
    check_id,
    check_namespace,
    check_payload,
    check_positive_int,
    check_record,
    check_ttl,
    hash_secret,
    record_from_json,
    record_from_json_with,
    record_to_json,
    secret_matches,
)
from authconform.errors import ConfigurationError, Conflict, InvalidArgument, StorageUnavailable

__all__ = ["PostgresBackend", "factory"]

R = TypeVar("R")
T = TypeVar("T")

Conn = psycopg.AsyncConnection[Any]
Pool = psycopg_pool.AsyncConnectionPool[Any]

SCHEMA_COMMENT = "authconform namespace"

# Tables of one namespace. ``record`` is the record's JSON text; the typed columns
# (flags, expiry, grant, subject) are authoritative and override the JSON on read.
# A rate-limit counter is identified by (key hash, window length, window start), so
# limiters with different windows on the same key never share a count.
DDL = """
CREATE TABLE IF NOT EXISTS {s}.clients (
    key text PRIMARY KEY,
    record text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.codes (
    key text PRIMARY KEY,
    record text NOT NULL,
    expires_at double precision NOT NULL,
    consumed boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS {s}.access_tokens (
    key text PRIMARY KEY,
    grant_id text NOT NULL,
    record text NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS access_tokens_grant ON {s}.access_tokens (grant_id);
CREATE TABLE IF NOT EXISTS {s}.refresh_tokens (
    key text PRIMARY KEY,
    grant_id text NOT NULL,
    record text NOT NULL,
    expires_at double precision NOT NULL,
    rotated boolean NOT NULL DEFAULT false,
    revoked boolean NOT NULL DEFAULT false,
    in_grant boolean NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS refresh_tokens_grant ON {s}.refresh_tokens (grant_id);
CREATE TABLE IF NOT EXISTS {s}.states (
    key text PRIMARY KEY,
    record text NOT NULL,
    expires_at double precision NOT NULL,
    consumed boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS {s}.reset_tokens (
    key text PRIMARY KEY,
    record text NOT NULL,
    expires_at double precision NOT NULL,
    consumed boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS {s}.challenges (
    key text PRIMARY KEY,
    record text NOT NULL,
    answer_hash text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    expires_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.sessions (
    key text PRIMARY KEY,
    subject text NOT NULL,
    record text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    max_expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_subject ON {s}.sessions (subject);
DO $$ BEGIN
    -- a table of the old layout (one counter per key and window start) is dropped: its
    -- rows only count windows that end within one window length
    IF to_regclass('{s}.rate_limits') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{s}.rate_limits')
        AND attname = 'window_length' AND NOT attisdropped
    ) THEN
        DROP TABLE {s}.rate_limits;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS {s}.rate_limits (
    key text NOT NULL,
    window_length double precision NOT NULL,
    window_start double precision NOT NULL,
    count bigint NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (key, window_length, window_start)
);
"""

# Queries; ``{s}`` is the quoted schema. Parameters are always bound, never formatted.
QUERIES: dict[str, str] = {
    # clients
    "client_insert": "INSERT INTO {s}.clients (key, record) VALUES (%s, %s) "
    "ON CONFLICT (key) DO NOTHING RETURNING key",
    "client_get": "SELECT record FROM {s}.clients WHERE key = %s",
    "client_get_for_update": "SELECT record FROM {s}.clients WHERE key = %s FOR UPDATE",
    "client_set": "UPDATE {s}.clients SET record = %s WHERE key = %s",
    # the client's codes, states and access tokens go; its refresh tokens are marked
    # revoked (kept, so a replay is still recognised); one statement, so atomic. A record
    # of a client starts with the text %(owner)s = {"client_id":<JSON string>, (client_id
    # is every such record's first field); no JSON parsing in SQL, which fails on \u0000
    "client_delete": "WITH c AS (DELETE FROM {s}.clients WHERE key = %(id)s RETURNING key), "
    + ", ".join(
        f"{kind} AS (DELETE FROM {{s}}.{kind} WHERE starts_with(record, %(owner)s))"
        for kind in ("codes", "states", "access_tokens")
    )
    + ", r AS (UPDATE {s}.refresh_tokens SET revoked = true WHERE NOT revoked"
    " AND starts_with(record, %(owner)s)) SELECT key FROM c",
    "client_list": 'SELECT record FROM {s}.clients ORDER BY key COLLATE "C"',
    # single-use kinds (codes, states, reset tokens): {t} is the table
    "once_insert": "INSERT INTO {s}.{t} (key, record, expires_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO NOTHING RETURNING key",
    "once_get": "SELECT record, expires_at, consumed FROM {s}.{t} "
    "WHERE key = %s AND expires_at > %s",
    "once_consume": "UPDATE {s}.{t} SET consumed = true "
    "WHERE key = %s AND NOT consumed AND expires_at > %s RETURNING record, expires_at",
    "once_classify": "SELECT record, expires_at, consumed FROM {s}.{t} WHERE key = %s",
    # access tokens
    "at_insert": "INSERT INTO {s}.access_tokens (key, grant_id, record, expires_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
    "at_get": "SELECT record, expires_at FROM {s}.access_tokens WHERE key = %s AND expires_at > %s",
    "at_delete": "DELETE FROM {s}.access_tokens WHERE key = %s RETURNING expires_at > %s",
    # refresh tokens
    "rt_insert": "INSERT INTO {s}.refresh_tokens (key, grant_id, record, expires_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
    "rt_get": "SELECT record, expires_at, rotated, revoked FROM {s}.refresh_tokens "
    "WHERE key = %s AND expires_at > %s",
    "rt_lock_grant": "SELECT pg_advisory_xact_lock(%s, hashtext(grant_id)) "
    "FROM {s}.refresh_tokens WHERE key = %s",
    "rt_rotate_old": "UPDATE {s}.refresh_tokens SET rotated = true "
    "WHERE key = %s AND NOT rotated AND NOT revoked AND expires_at > %s "
    "RETURNING record, grant_id",
    "rt_classify": "SELECT record, grant_id, expires_at, rotated, revoked "
    "FROM {s}.refresh_tokens WHERE key = %s",
    "rt_revoke": "UPDATE {s}.refresh_tokens SET revoked = true "
    "WHERE key = %s AND NOT revoked AND expires_at > %s RETURNING key",
    "grant_lock": "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
    "grant_revoke": "WITH a AS (DELETE FROM {s}.access_tokens WHERE grant_id = %(g)s "
    "RETURNING expires_at > %(now)s AS live), "
    "d AS (DELETE FROM {s}.refresh_tokens WHERE grant_id = %(g)s AND in_grant "
    "AND expires_at <= %(now)s), "
    "r AS (UPDATE {s}.refresh_tokens SET revoked = true, in_grant = false "
    "WHERE grant_id = %(g)s AND in_grant AND NOT revoked AND expires_at > %(now)s RETURNING 1), "
    "k AS (UPDATE {s}.refresh_tokens SET in_grant = false "
    "WHERE grant_id = %(g)s AND in_grant AND revoked AND expires_at > %(now)s) "
    "SELECT (SELECT count(*) FROM a WHERE live) + (SELECT count(*) FROM r)",
    # challenges
    "ch_insert": "INSERT INTO {s}.challenges "
    "(key, record, answer_hash, attempts, max_attempts, expires_at) "
    "VALUES (%s, %s, %s, 0, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
    "ch_attempt": "UPDATE {s}.challenges SET attempts = attempts + 1 "
    "WHERE key = %s AND expires_at > %s "
    "RETURNING record, answer_hash, attempts, max_attempts, expires_at",
    "ch_delete": "DELETE FROM {s}.challenges WHERE key = %s",
    "ch_classify": "SELECT expires_at FROM {s}.challenges WHERE key = %s",
    # sessions
    "se_insert": "INSERT INTO {s}.sessions "
    "(key, subject, record, created_at, expires_at, max_expires_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
    "se_get": "SELECT record, expires_at FROM {s}.sessions WHERE key = %s AND expires_at > %s",
    "se_touch": "UPDATE {s}.sessions "
    "SET expires_at = GREATEST(expires_at, LEAST(%(until)s, max_expires_at)) "
    "WHERE key = %(k)s AND expires_at > %(now)s RETURNING record, expires_at",
    "se_list": "SELECT record, expires_at FROM {s}.sessions "
    'WHERE subject = %s AND expires_at > %s ORDER BY created_at, key COLLATE "C"',
    "se_delete": "DELETE FROM {s}.sessions WHERE key = %s RETURNING expires_at > %s",
    "se_delete_subject": "WITH d AS (DELETE FROM {s}.sessions WHERE subject = %s "
    "RETURNING expires_at > %s AS live) SELECT count(*) FROM d WHERE live",
    # rate limits
    "rl_hit": "INSERT INTO {s}.rate_limits AS r "
    "(key, window_length, window_start, count, expires_at) "
    "VALUES (%(k)s, %(window)s, %(start)s, 1, %(end)s) "
    "ON CONFLICT (key, window_length, window_start) DO UPDATE "
    "SET count = CASE WHEN r.expires_at > %(now)s THEN r.count + 1 ELSE 1 END, "
    "expires_at = CASE WHEN r.expires_at > %(now)s THEN r.expires_at "
    "ELSE EXCLUDED.expires_at END RETURNING count",
    # admin
    "stats": "SELECT (SELECT count(*) FROM {s}.clients), "
    + ", ".join(
        f"(SELECT count(*) FROM {{s}}.{kind} WHERE expires_at > %(now)s)" for kind in KINDS[1:]
    ),
    "purge": "WITH "
    + ", ".join(
        f"{kind} AS (DELETE FROM {{s}}.{kind} WHERE expires_at <= %(now)s RETURNING 1)"
        for kind in KINDS[1:]
    )
    # ended rate-limit windows are removed (the CTE runs) but not counted
    + " SELECT "
    + " + ".join(f"(SELECT count(*) FROM {kind})" for kind in KINDS[1:-1]),
    "schema_comment": "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
    "WHERE nspname = %s",
    "schema_tables": "SELECT tablename FROM pg_tables WHERE schemaname = %s "
    'ORDER BY tablename COLLATE "C"',
}

_ONCE_TABLES = ("codes", "states", "reset_tokens")

#: every table and index the DDL makes: when all exist (and the rate-limit table has its
#: current layout) the DDL is not run again. Re-running it on a schema in use is not
#: harmless: CREATE INDEX IF NOT EXISTS takes a SHARE lock on its table before it finds
#: the index, and a rotation whose reuse path writes refresh_tokens then access_tokens
#: deadlocks against it (seen with 16 processes each opening its own instance).
_RELATIONS = tuple(re.findall(r"(?:TABLE|INDEX) IF NOT EXISTS (?:\{s\}\.)?(\w+)", DDL))
_SCHEMA_COMPLETE = (
    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = ANY(%s)) = %s AND EXISTS (SELECT 1 FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = 'rate_limits' AND a.attname = 'window_length' "
    "AND NOT a.attisdropped)"
)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key derived from ``parts``."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _where(url: str) -> str:
    """``host:port/db`` of a connection URL (never the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparsable postgres url>"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    db = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{db}"


def _is_alive(conn: Conn) -> bool:
    """Cheap liveness test of an idle connection, without a round trip.

    An idle autocommit connection has nothing to read; if the server has terminated it
    (restart, ``pg_terminate_backend``), reading the socket meets the FATAL message and
    EOF and libpq marks the connection bad.
    """
    pgconn = conn.pgconn
    if conn.closed or conn.broken or pgconn.status != psycopg.pq.ConnStatus.OK:
        return False
    try:
        for _ in range(2):
            pgconn.consume_input()
    except psycopg.OperationalError:
        return False
    return pgconn.status == psycopg.pq.ConnStatus.OK


class PostgresBackend:
    """The storage contract on PostgreSQL (schema ``authconform_<namespace>``)."""

    name = "postgres"
    capabilities = ALL_CAPABILITIES

    def __init__(self, settings: BackendSettings) -> None:
        """Remember the settings; nothing connects until the first operation."""
        self.namespace = check_namespace(settings.namespace)
        self.schema = f"authconform_{self.namespace}"
        self.clock = settings.clock
        self._settings = settings
        self._url = settings.postgres_url
        self.where = _where(self._url)
        pool_max = settings.options.get("pool_max_size", 10)
        if isinstance(pool_max, bool) or not isinstance(pool_max, int) or pool_max < 1:
            raise ConfigurationError(
                f"option pool_max_size must be an integer >= 1, got {pool_max!r}"
            )
        self._pool_max = pool_max
        self._connect_timeout = float(settings.connect_timeout)
        self._op_timeout = float(settings.operation_timeout)
        self._pool: Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._schema_lock = asyncio.Lock()
        self._ready = False
        self._ns_key = _lock_key("authconform", self.schema)
        self._ns_key32 = self._ns_key >> 32  # int4 half, for the (int4, int4) lock space
        s = _quote_ident(self.schema)
        self._q = {name: q.replace("{s}", s) for name, q in QUERIES.items() if "{t}" not in q}
        for name, q in QUERIES.items():
            if "{t}" in q:
                for table in _ONCE_TABLES:
                    self._q[f"{name}:{table}"] = q.replace("{s}", s).replace("{t}", table)
        self._ddl = DDL.replace("{s}", s)

    # connection plumbing -------------------------------------------------------------
    def _conn_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(self._connect_timeout)),
            "application_name": f"authconform:{self.namespace}"[:63],
        }

    def _unavailable(self, exc: BaseException | None) -> StorageUnavailable:
        """A fail-closed error naming host:port/db, never a password or a value."""
        if exc is None:
            detail = "no connection"
        elif isinstance(exc, TimeoutError):
            detail = "timed out"
        elif isinstance(exc, psycopg_pool.PoolTimeout):
            detail = "no connection available in time"
        elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()[:300]
        else:  # a server-side error: name it, do not echo the message (it may quote data)
            sqlstate = getattr(exc, "sqlstate", None)
            detail = f"{type(exc).__name__}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
        return StorageUnavailable(f"postgres at {self.where} unavailable: {detail}")

    async def _probe_server(self) -> None:
        """Bounded connection attempts with backoff, all within ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        delay = 0.05
        last: BaseException | None = None
        attempts = max(1, self._settings.retries + 1)
        for attempt in range(attempts):
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, **self._conn_kwargs())
            except (psycopg.OperationalError, OSError) as exc:
                last = exc
            else:
                await conn.close()
                return
            remaining = deadline - loop.time()
            if remaining <= 0 or attempt == attempts - 1:
                break
            await asyncio.sleep(min(delay, remaining))
            delay *= 4
        raise self._unavailable(last)

    async def _get_pool(self) -> Pool:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._pool_lock:
            if self._pool is not None:
                return self._pool
            await self._probe_server()
            pool = psycopg_pool.AsyncConnectionPool(
                self._url,
                kwargs=self._conn_kwargs(),
                min_size=1,
                max_size=self._pool_max,
                open=False,
                timeout=self._connect_timeout,
                name=f"authconform-{self.namespace}",
            )
            try:
                await pool.open(wait=True, timeout=self._connect_timeout)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
            return pool

    async def _discard_pool(self, pool: Pool) -> None:
        """Drop a pool that could not hand out a connection; the next call reopens."""
        if self._pool is pool:
            self._pool = None
            await pool.close(timeout=1.0)

    @contextlib.asynccontextmanager
    async def _connection(self, pool: Pool) -> AsyncIterator[Conn]:
        """A live pooled connection; dead ones (server restart) are discarded first.

        The pool replaces every connection returned in a bad state, so pulling dead
        ones out until a live one (or a fresh one) comes is bounded by the pool size and
        the pool timeout. (The pool's own ``check`` hook backs off for a second after
        each failed check, too slow after a restart that killed every connection.)
        """
        conn = await pool.getconn()
        for _ in range(self._pool_max + 1):
            if _is_alive(conn):
                break
            await pool.putconn(conn)
            conn = await pool.getconn()
        try:
            yield conn
        finally:
            await pool.putconn(conn)

    async def _ensure_schema(self, pool: Pool) -> None:
        """Create the schema and tables once per instance, under an advisory lock."""
        async with self._schema_lock:
            if self._ready:
                return
            async with self._connection(pool) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ns_key,))
                cur = await conn.execute(self._q["schema_comment"], (self.schema,))
                row = await cur.fetchone()
                if row is not None and row[0] != SCHEMA_COMMENT:
                    raise ConfigurationError(
                        f"schema {self.schema} exists in {self.where} but was not created by "
                        "authconform; choose another namespace"
                    )
                if row is None:
                    s = _quote_ident(self.schema)
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                    await conn.execute(f"COMMENT ON SCHEMA {s} IS '{SCHEMA_COMMENT}'")
                else:
                    cur = await conn.execute(
                        _SCHEMA_COMPLETE,
                        (self.schema, list(_RELATIONS), len(_RELATIONS), self.schema),
                    )
                    complete = await cur.fetchone()
                    if complete is not None and complete[0]:
                        self._ready = True
                        return
                await conn.execute(self._ddl)
            self._ready = True

    async def _run(
        self,
        body: Callable[[Conn], Awaitable[T]],
        *,
        schema: bool = True,
        idempotent: bool = False,
    ) -> T:
        """Run ``body`` on a pooled connection; map every store failure to StorageUnavailable.

        A missing table (another instance dropped the namespace) recreates the schema
        and runs ``body`` again: the failed statement changed nothing. A lost connection
        is retried once for read-only operations; a write is never replayed blindly.
        """
        pool: Pool | None = None
        try:
            async with asyncio.timeout(self._op_timeout):
                pool = await self._get_pool()
                if schema and not self._ready:
                    await self._ensure_schema(pool)
                attempts = 0
                while True:
                    attempts += 1
                    try:
                        async with self._connection(pool) as conn:
                            return await body(conn)
                    except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName):
                        if not schema or attempts > 1:
                            raise
                        self._ready = False
                        await self._ensure_schema(pool)
                    except psycopg.OperationalError as exc:
                        if (
                            not idempotent
                            or attempts > 1
                            or isinstance(exc, psycopg_pool.PoolTimeout)
                        ):
                            raise
        except psycopg_pool.PoolTimeout as exc:
            if pool is not None:
                await self._discard_pool(pool)
            raise self._unavailable(exc) from None
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    def _now(self) -> float:
        return self.clock.now()

    async def close(self) -> None:
        """Close the pool. The stored data stays."""
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=2.0)

    # generic helpers ---------------------------------------------------------------------
    async def _insert(self, query: str, params: tuple[Any, ...], what: str) -> None:
        async def body(conn: Conn) -> bool:
            cur = await conn.execute(query, params)
            return await cur.fetchone() is not None

        if not await self._run(body):
            raise Conflict(f"{what} already exists")

    async def _put_once(
        self, table: str, cls: type[R], secret: str, what: str, record: R, ttl: float
    ) -> R:
        key = hash_secret(check_id(secret, what))
        check_record(record, cls)
        ttl = check_ttl(ttl)
        expires_at = self._now() + ttl
        stored = replace(record, expires_at=expires_at, consumed=False)  # type: ignore[type-var]
        text = record_to_json(stored)
        await self._insert(
            self._q[f"once_insert:{table}"], (key, text, expires_at), what.replace("_", " ")
        )
        return record_from_json(cls, text)

    async def _get_once(self, table: str, cls: type[R], secret: str, what: str) -> R | None:
        key = hash_secret(check_id(secret, what))
        now = self._now()

        async def body(conn: Conn) -> R | None:
            cur = await conn.execute(self._q[f"once_get:{table}"], (key, now))
            row = await cur.fetchone()
            if row is None:
                return None
            return record_from_json_with(cls, row[0], expires_at=row[1], consumed=row[2])

        return await self._run(body, idempotent=True)

    async def _consume(self, table: str, cls: type[R], secret: str) -> ConsumeResult[R]:
        key = hash_secret(check_id(secret, "value"))
        now = self._now()

        async def body(conn: Conn) -> ConsumeResult[R]:
            cur = await conn.execute(self._q[f"once_consume:{table}"], (key, now))
            row = await cur.fetchone()
            if row is not None:
                return ConsumeResult(
                    ConsumeStatus.CONSUMED,
                    record_from_json_with(cls, row[0], expires_at=row[1], consumed=True),
                )
            # A consumed row never becomes unconsumed, so this classification is race-free.
            cur = await conn.execute(self._q[f"once_classify:{table}"], (key,))
            row = await cur.fetchone()
            if row is None:
                return ConsumeResult(ConsumeStatus.NOT_FOUND)
            if row[1] <= now:
                return ConsumeResult(ConsumeStatus.EXPIRED)
            if row[2]:
                return ConsumeResult(
                    ConsumeStatus.ALREADY_USED,
                    record_from_json_with(cls, row[0], expires_at=row[1], consumed=True),
                )
            # Live and unconsumed now: it was stored after our UPDATE; consume came first.
            return ConsumeResult(ConsumeStatus.NOT_FOUND)

        return await self._run(body)

    # clients ---------------------------------------------------------------------------
    async def create_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord:
        """Register a client; Conflict if the id exists."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        now = self._now()
        record = ClientRecord(
            client_id=client_id,
            metadata=dict(metadata),
            secret_hash=hash_secret(secret) if secret is not None else None,
            created_at=now,
            updated_at=now,
        )
        text = record_to_json(record)

        async def body(conn: Conn) -> bool:
            cur = await conn.execute(self._q["client_insert"], (client_id, text))
            return await cur.fetchone() is not None

        if not await self._run(body):
            raise Conflict(f"client {client_id!r} already exists")
        return record_from_json(ClientRecord, text)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """Return the client or None."""
        check_id(client_id, "client_id")

        async def body(conn: Conn) -> ClientRecord | None:
            cur = await conn.execute(self._q["client_get"], (client_id,))
            row = await cur.fetchone()
            return None if row is None else record_from_json(ClientRecord, row[0])

        return await self._run(body, idempotent=True)

    async def update_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord | None:
        """Merge metadata; keep what was not given (row locked for the merge)."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        secret_hash = hash_secret(secret) if secret is not None else None

        async def body(conn: Conn) -> ClientRecord | None:
            async with conn.transaction():
                cur = await conn.execute(self._q["client_get_for_update"], (client_id,))
                row = await cur.fetchone()
                if row is None:
                    return None
                old = record_from_json(ClientRecord, row[0])
                merged = {**old.metadata, **metadata}
                check_payload(merged, "metadata")
                new = replace(
                    old,
                    metadata=merged,
                    secret_hash=secret_hash if secret_hash is not None else old.secret_hash,
                    updated_at=self._now(),
                )
                text = record_to_json(new)
                await conn.execute(self._q["client_set"], (text, client_id))
            return record_from_json(ClientRecord, text)

        return await self._run(body)

    async def delete_client(self, client_id: str) -> bool:
        """Delete; True if it existed. Revokes what was issued to the client."""
        check_id(client_id, "client_id")

        async def body(conn: Conn) -> bool:
            owner = '{"client_id":' + json.dumps(client_id, ensure_ascii=True) + ","
            cur = await conn.execute(self._q["client_delete"], {"id": client_id, "owner": owner})
            return await cur.fetchone() is not None

        return await self._run(body)

    async def list_clients(self) -> list[ClientRecord]:
        """All clients, sorted by id (code point order)."""

        async def body(conn: Conn) -> list[ClientRecord]:
            cur = await conn.execute(self._q["client_list"])
            return [record_from_json(ClientRecord, r[0]) for r in await cur.fetchall()]

        return await self._run(body, idempotent=True)

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time compare against the stored hash."""
        check_id(client_id, "client_id")
        check_id(secret, "secret")
        record = await self.get_client(client_id)
        return record is not None and secret_matches(secret, record.secret_hash)

    # codes -----------------------------------------------------------------------------
    async def put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        """Store a code."""
        return await self._put_once("codes", CodeRecord, code, "code", record, ttl)

    async def get_code(self, code: str) -> CodeRecord | None:
        """A live code (consumed or not) or None."""
        return await self._get_once("codes", CodeRecord, code, "code")

    async def consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        """Use a code once: one conditional UPDATE decides."""
        return await self._consume("codes", CodeRecord, code)

    # access tokens -----------------------------------------------------------------------
    async def put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        """Store an access token under its grant."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, AccessTokenRecord)
        ttl = check_ttl(ttl)
        stored = replace(record, expires_at=self._now() + ttl)
        text = record_to_json(stored)
        await self._insert(
            self._q["at_insert"],
            (key, record.grant_id, text, stored.expires_at),
            "access token",
        )
        return record_from_json(AccessTokenRecord, text)

    async def get_access_token(self, token: str) -> AccessTokenRecord | None:
        """A live access token or None."""
        key = hash_secret(check_id(token, "token"))
        now = self._now()

        async def body(conn: Conn) -> AccessTokenRecord | None:
            cur = await conn.execute(self._q["at_get"], (key, now))
            row = await cur.fetchone()
            return (
                None
                if row is None
                else record_from_json_with(AccessTokenRecord, row[0], expires_at=row[1])
            )

        return await self._run(body, idempotent=True)

    async def revoke_access_token(self, token: str) -> bool:
        """Delete an access token; True if it was live."""
        key = hash_secret(check_id(token, "token"))
        now = self._now()

        async def body(conn: Conn) -> bool:
            cur = await conn.execute(self._q["at_delete"], (key, now))
            row = await cur.fetchone()
            return bool(row is not None and row[0])

        return await self._run(body)

    async def _revoke_grant_in(self, conn: Conn, grant_id: str, now: float) -> int:
        """Inside a transaction holding the grant lock: revoke everything of the grant."""
        cur = await conn.execute(self._q["grant_revoke"], {"g": grant_id, "now": now})
        row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def revoke_grant(self, grant_id: str) -> int:
        """Delete the grant's access tokens and mark its refresh tokens revoked.

        The grant's advisory lock (also taken by rotation) makes a concurrent rotation
        either finish before (its new token is then revoked too) or see REVOKED.
        """
        check_id(grant_id, "grant_id")
        now = self._now()

        async def body(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(self._q["grant_lock"], (self._ns_key32, grant_id))
                return await self._revoke_grant_in(conn, grant_id, now)

        return await self._run(body)

    # refresh tokens ------------------------------------------------------------------------
    async def put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        """Store a refresh token with its own TTL."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, RefreshTokenRecord)
        ttl = check_ttl(ttl)
        stored = replace(record, expires_at=self._now() + ttl, rotated=False, revoked=False)
        text = record_to_json(stored)
        await self._insert(
            self._q["rt_insert"],
            (key, record.grant_id, text, stored.expires_at),
            "refresh token",
        )
        return record_from_json(RefreshTokenRecord, text)

    async def get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        """A live refresh token (flags tell rotated/revoked) or None."""
        key = hash_secret(check_id(token, "token"))
        now = self._now()

        async def body(conn: Conn) -> RefreshTokenRecord | None:
            cur = await conn.execute(self._q["rt_get"], (key, now))
            row = await cur.fetchone()
            if row is None:
                return None
            return record_from_json_with(
                RefreshTokenRecord, row[0], expires_at=row[1], rotated=row[2], revoked=row[3]
            )

        return await self._run(body, idempotent=True)

    async def rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        """Mark ``old`` rotated and insert ``new`` in one transaction; reuse revokes the grant."""
        old_key = hash_secret(check_id(old, "old token"))
        new_key = hash_secret(check_id(new, "new token"))
        ttl = check_ttl(ttl)
        if old_key == new_key:
            raise InvalidArgument("the new refresh token must differ from the old one")
        now = self._now()

        async def body(conn: Conn) -> RotateResult:
            async with conn.transaction():
                # Serialise with revoke_grant on the same grant (see revoke_grant).
                await conn.execute(self._q["rt_lock_grant"], (self._ns_key32, old_key))
                cur = await conn.execute(self._q["rt_rotate_old"], (old_key, now))
                row = await cur.fetchone()
                if row is not None:
                    current = record_from_json_with(
                        RefreshTokenRecord, row[0], rotated=False, revoked=False
                    )
                    stored = replace(current, expires_at=now + ttl)
                    text = record_to_json(stored)
                    cur = await conn.execute(
                        self._q["rt_insert"], (new_key, row[1], text, stored.expires_at)
                    )
                    if await cur.fetchone() is None:
                        raise Conflict("the new refresh token already exists")
                    return RotateResult(
                        RotateStatus.ROTATED, record_from_json(RefreshTokenRecord, text)
                    )
                cur = await conn.execute(self._q["rt_classify"], (old_key,))
                row = await cur.fetchone()
                if row is None:
                    return RotateResult(RotateStatus.NOT_FOUND)
                text, grant_id, expires_at, rotated, revoked = row
                if expires_at <= now:
                    return RotateResult(RotateStatus.EXPIRED)
                if revoked:
                    return RotateResult(
                        RotateStatus.REVOKED,
                        record_from_json_with(
                            RefreshTokenRecord,
                            text,
                            expires_at=expires_at,
                            rotated=rotated,
                            revoked=True,
                        ),
                    )
                if rotated:
                    await self._revoke_grant_in(conn, grant_id, now)
                    return RotateResult(
                        RotateStatus.REUSED,
                        record_from_json_with(
                            RefreshTokenRecord,
                            text,
                            expires_at=expires_at,
                            rotated=True,
                            revoked=True,
                        ),
                    )
                # Live, unrotated, unrevoked: stored after our UPDATE; rotation came first.
                return RotateResult(RotateStatus.NOT_FOUND)

        return await self._run(body)

    async def revoke_refresh_token(self, token: str) -> bool:
        """Mark one refresh token revoked; True if it was live and not revoked."""
        key = hash_secret(check_id(token, "token"))
        now = self._now()

        async def body(conn: Conn) -> bool:
            cur = await conn.execute(self._q["rt_revoke"], (key, now))
            return await cur.fetchone() is not None

        return await self._run(body)

    # states and reset tokens -----------------------------------------------------------------
    async def put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        """Store a pending state."""
        return await self._put_once("states", StateRecord, state, "state", record, ttl)

    async def consume_state(self, state: str) -> ConsumeResult[StateRecord]:
        """Use a state once."""
        return await self._consume("states", StateRecord, state)

    async def put_reset_token(
        self, token: str, record: ResetTokenRecord, ttl: float
    ) -> ResetTokenRecord:
        """Store a reset token."""
        return await self._put_once(
            "reset_tokens", ResetTokenRecord, token, "reset_token", record, ttl
        )

    async def consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        """Use a reset token once."""
        return await self._consume("reset_tokens", ResetTokenRecord, token)

    # challenges --------------------------------------------------------------------------
    async def put_challenge(
        self, challenge_id: str, answer: str, record: ChallengeRecord, ttl: float
    ) -> ChallengeRecord:
        """Store a challenge with its answer hashed."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        check_record(record, ChallengeRecord)
        ttl = check_ttl(ttl)
        stored = replace(record, attempts=0, expires_at=self._now() + ttl)
        text = record_to_json(stored)
        await self._insert(
            self._q["ch_insert"],
            (key, text, answer_hash(challenge_id, answer), stored.max_attempts, stored.expires_at),
            "challenge",
        )
        return record_from_json(ChallengeRecord, text)

    async def attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        """Count one answer (one UPDATE ... RETURNING); delete on success or lock-out."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        now = self._now()

        async def body(conn: Conn) -> AttemptResult:
            async with conn.transaction():
                cur = await conn.execute(self._q["ch_attempt"], (key, now))
                row = await cur.fetchone()
                if row is None:
                    cur = await conn.execute(self._q["ch_classify"], (key,))
                    found = await cur.fetchone()
                    if found is None:
                        return AttemptResult(AttemptStatus.NOT_FOUND)
                    return AttemptResult(AttemptStatus.EXPIRED)
                text, stored_hash, attempts, max_attempts, expires_at = row
                record = record_from_json_with(
                    ChallengeRecord, text, attempts=attempts, expires_at=expires_at
                )
                left = max_attempts - attempts
                if answer_matches(challenge_id, answer, stored_hash):
                    await conn.execute(self._q["ch_delete"], (key,))
                    return AttemptResult(AttemptStatus.SUCCESS, left, record)
                if left <= 0:
                    await conn.execute(self._q["ch_delete"], (key,))
                    return AttemptResult(AttemptStatus.LOCKED, 0, record)
                return AttemptResult(AttemptStatus.WRONG, left, record)

        return await self._run(body)

    # sessions ----------------------------------------------------------------------------
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
        now = self._now()
        stored = replace(
            record,
            handle=key,
            created_at=now,
            expires_at=now + ttl,
            max_expires_at=now + max_lifetime,
        )
        text = record_to_json(stored)
        await self._insert(
            self._q["se_insert"],
            (key, record.subject, text, now, stored.expires_at, stored.max_expires_at),
            "session",
        )
        return record_from_json(SessionRecord, text)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A live session or None."""
        key = hash_secret(check_id(session_id, "session_id"))
        now = self._now()

        async def body(conn: Conn) -> SessionRecord | None:
            cur = await conn.execute(self._q["se_get"], (key, now))
            row = await cur.fetchone()
            return (
                None
                if row is None
                else record_from_json_with(SessionRecord, row[0], expires_at=row[1])
            )

        return await self._run(body, idempotent=True)

    async def touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        """Extend up to the maximum lifetime, never shorten (one UPDATE)."""
        key = hash_secret(check_id(session_id, "session_id"))
        ttl = check_ttl(ttl)
        now = self._now()

        async def body(conn: Conn) -> SessionRecord | None:
            cur = await conn.execute(
                self._q["se_touch"], {"k": key, "now": now, "until": now + ttl}
            )
            row = await cur.fetchone()
            return (
                None
                if row is None
                else record_from_json_with(SessionRecord, row[0], expires_at=row[1])
            )

        return await self._run(body)

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """Live sessions of a subject, oldest first."""
        check_id(subject, "subject")
        now = self._now()

        async def body(conn: Conn) -> list[SessionRecord]:
            cur = await conn.execute(self._q["se_list"], (subject, now))
            rows = await cur.fetchall()
            return [record_from_json_with(SessionRecord, r[0], expires_at=r[1]) for r in rows]

        return await self._run(body, idempotent=True)

    async def revoke_session(self, session_id: str) -> bool:
        """End one session; True if it was live."""
        key = hash_secret(check_id(session_id, "session_id"))
        now = self._now()

        async def body(conn: Conn) -> bool:
            cur = await conn.execute(self._q["se_delete"], (key, now))
            row = await cur.fetchone()
            return bool(row is not None and row[0])

        return await self._run(body)

    async def revoke_all_sessions(self, subject: str) -> int:
        """End every session of a subject; count the live ones."""
        check_id(subject, "subject")
        now = self._now()

        async def body(conn: Conn) -> int:
            cur = await conn.execute(self._q["se_delete_subject"], (subject, now))
            row = await cur.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run(body)

    # rate limits ---------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Fixed window aligned to its length; one upsert counts the hit."""
        check_id(key, "key")
        check_positive_int(limit, "limit")
        window = check_ttl(window, "window")
        now = self._now()
        start = math.floor(now / window) * window
        end = start + window
        params = {
            "k": hash_secret(key),
            "window": window,
            "start": float(start),
            "end": end,
            "now": now,
        }

        async def body(conn: Conn) -> int:
            cur = await conn.execute(self._q["rl_hit"], params)
            row = await cur.fetchone()
            assert row is not None  # an upsert with RETURNING always returns the row
            return int(row[0])

        count = await self._run(body)
        return RateLimitResult(count <= limit, count, limit, end)

    # admin ---------------------------------------------------------------------------------
    async def health(self) -> Health:
        """``SELECT 1`` latency and the durability settings; never raises."""
        started = time.perf_counter()
        latency = 0.0

        async def body(conn: Conn) -> dict[str, str]:
            nonlocal latency
            t0 = time.perf_counter()
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()
            latency = (time.perf_counter() - t0) * 1000
            durability: dict[str, str] = {}
            for setting in ("synchronous_commit", "fsync", "full_page_writes"):
                cur = await conn.execute(f"SHOW {setting}")
                row = await cur.fetchone()
                durability[setting] = str(row[0]) if row is not None else ""
            return durability

        try:
            durability = await self._run(body, schema=False, idempotent=True)
        except StorageUnavailable as exc:
            return Health(
                ok=False, latency_ms=(time.perf_counter() - started) * 1000, detail=str(exc)
            )
        return Health(ok=True, latency_ms=latency, durability=durability)

    async def stats(self) -> dict[str, int]:
        """Live records per kind."""
        now = self._now()

        async def body(conn: Conn) -> dict[str, int]:
            cur = await conn.execute(self._q["stats"], {"now": now})
            row = await cur.fetchone()
            assert row is not None
            return {kind: int(n) for kind, n in zip(KINDS, row, strict=True)}

        return await self._run(body, idempotent=True)

    async def purge_expired(self) -> int:
        """Delete expired rows of every kind; returns how many."""
        now = self._now()

        async def body(conn: Conn) -> int:
            cur = await conn.execute(self._q["purge"], {"now": now})
            row = await cur.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run(body)

    async def drop_namespace(self) -> None:
        """Drop the namespace's schema, only if it carries our comment."""

        async def body(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ns_key,))
                cur = await conn.execute(self._q["schema_comment"], (self.schema,))
                row = await cur.fetchone()
                if row is not None and row[0] == SCHEMA_COMMENT:
                    await conn.execute(f"DROP SCHEMA {_quote_ident(self.schema)} CASCADE")
            self._ready = False

        await self._run(body, schema=False)

    async def dump_raw(self) -> str:
        """Every row of every table of the namespace schema, as PostgreSQL renders it."""

        async def body(conn: Conn) -> str:
            cur = await conn.execute(self._q["schema_tables"], (self.schema,))
            tables = [r[0] for r in await cur.fetchall()]
            out: list[str] = [f"schema {self.schema}"]
            s = _quote_ident(self.schema)
            for table in tables:
                cur = await conn.execute(
                    f"SELECT t::text FROM {s}.{_quote_ident(table)} t ORDER BY 1"
                )
                rows = await cur.fetchall()
                out.append(f"table {table} ({len(rows)} rows)")
                out.extend(str(r[0]) for r in rows)
            return "\n".join(out)

        return await self._run(body, schema=False, idempotent=True)


def _outage_url(url: str) -> str:
    """The same URL pointed at a loopback port where nothing listens."""
    port = free_loopback_port()
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        userinfo, _, _hostport = parts.netloc.rpartition("@")
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "hostaddr", "port")]
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    # a key=value conninfo string
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=str(port))
    params.pop("hostaddr", None)
    return " ".join(f"{k}={v}" for k, v in params.items())


def _outage_settings(settings: BackendSettings) -> BackendSettings:
    return dataclasses.replace(settings, postgres_url=_outage_url(settings.postgres_url))


def factory(settings: BackendSettings) -> PostgresBackend:
    """Entry point ``postgres``."""
    return PostgresBackend(settings)


factory.uses_clock = True  # type: ignore[attr-defined]
factory.service = "postgres"  # type: ignore[attr-defined]
factory.outage_settings = _outage_settings  # type: ignore[attr-defined]
