"""The embedded default backend: dicts behind a lock, in this process only.

Instances with the same namespace in one process share a store (like handlers of one
server process); another process, or a restart, sees nothing. Records are kept as JSON
text, so every read returns a fresh copy. Expiry is computed from the injected clock.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

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
    record_from_dict,
    record_from_json,
    record_to_json,
    secret_matches,
)
from authconform.errors import Conflict, InvalidArgument

__all__ = ["MemoryBackend", "factory"]

R = TypeVar("R")


class _Store:
    """One namespace's data: ``kind -> key -> entry`` where entry holds JSON text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.grants: dict[str, set[tuple[str, str]]] = {}
        self.subjects: dict[str, set[str]] = {}


class MemoryBackend:
    """Dicts behind a ``threading.Lock``; no await inside a critical section."""

    name = "memory"
    capabilities = ALL_CAPABILITIES
    _stores: ClassVar[dict[str, _Store]] = {}
    _stores_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, settings: BackendSettings) -> None:
        """Attach to this process's store for ``settings.namespace``."""
        self.namespace = check_namespace(settings.namespace)
        self.clock = settings.clock
        with self._stores_lock:
            self._store = self._stores.setdefault(self.namespace, _Store())

    async def close(self) -> None:
        """Nothing to release; the data stays in this process."""

    # helpers ---------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock.now()

    def _table(self, kind: str) -> dict[str, dict[str, Any]]:
        return self._store.data[kind]

    def _put(self, kind: str, key: str, record: Any, ttl: float, **fields: Any) -> Any:
        """Store ``record`` (with ``fields`` set by the backend); return what was stored.

        The stored form is JSON text, so the returned record (which shares only the
        caller's own payload objects) can be mutated without touching the store.
        """
        table = self._table(kind)
        if key in table:
            raise Conflict(f"{kind[:-1].replace('_', ' ')} already exists")
        stored = replace(record, expires_at=self._now() + ttl, **fields)
        table[key] = {"record": record_to_json(stored), "expires_at": stored.expires_at}
        return stored

    def _live(self, kind: str, key: str) -> dict[str, Any] | None:
        entry = self._table(kind).get(key)
        if entry is None or self._now() >= entry["expires_at"]:
            return None
        return entry

    def _consume(self, kind: str, cls: type[R], secret: str) -> ConsumeResult[R]:
        key = hash_secret(check_id(secret, "value"))
        with self._store.lock:
            entry = self._table(kind).get(key)
            if entry is None:
                return ConsumeResult(ConsumeStatus.NOT_FOUND)
            if self._now() >= entry["expires_at"]:
                return ConsumeResult(ConsumeStatus.EXPIRED)
            data = json.loads(entry["record"])
            if data["consumed"]:
                return ConsumeResult(ConsumeStatus.ALREADY_USED, record_from_dict(cls, data))
            data["consumed"] = True
            entry["record"] = json.dumps(data)
            return ConsumeResult(ConsumeStatus.CONSUMED, record_from_dict(cls, data))

    def _index_grant(self, grant_id: str, kind: str, key: str) -> None:
        self._store.grants.setdefault(grant_id, set()).add((kind, key))

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
        with self._store.lock:
            table = self._table("clients")
            if client_id in table:
                raise Conflict(f"client {client_id!r} already exists")
            table[client_id] = {"record": text, "expires_at": math.inf}
        return record_from_json(ClientRecord, text)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """Return the client or None."""
        check_id(client_id, "client_id")
        with self._store.lock:
            entry = self._table("clients").get(client_id)
            return None if entry is None else record_from_json(ClientRecord, entry["record"])

    async def update_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord | None:
        """Merge metadata; keep what was not given."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        with self._store.lock:
            entry = self._table("clients").get(client_id)
            if entry is None:
                return None
            old = record_from_json(ClientRecord, entry["record"])
            merged = {**old.metadata, **metadata}
            check_payload(merged, "metadata")
            new = replace(
                old,
                metadata=merged,
                secret_hash=hash_secret(secret) if secret is not None else old.secret_hash,
                updated_at=self._now(),
            )
            entry["record"] = record_to_json(new)
            return record_from_json(ClientRecord, entry["record"])

    async def delete_client(self, client_id: str) -> bool:
        """Delete; True if it existed. Revokes what was issued to the client."""
        check_id(client_id, "client_id")
        with self._store.lock:
            existed = self._table("clients").pop(client_id, None) is not None
            # the client's codes, pending states and access tokens go; its refresh
            # tokens are marked revoked (kept, so a replay is recognised)
            for kind in ("codes", "states", "access_tokens", "refresh_tokens"):
                table = self._table(kind)
                for key, entry in list(table.items()):
                    data = json.loads(entry["record"])
                    if data["client_id"] != client_id:
                        continue
                    if kind != "refresh_tokens":
                        del table[key]
                        self._store.grants.get(data.get("grant_id", ""), set()).discard(
                            (kind, key)
                        )
                    elif not data["revoked"]:
                        data["revoked"] = True
                        entry["record"] = json.dumps(data)
            return existed

    async def list_clients(self) -> list[ClientRecord]:
        """All clients, sorted by id."""
        with self._store.lock:
            entries = [self._table("clients")[k]["record"] for k in sorted(self._table("clients"))]
        return [record_from_json(ClientRecord, e) for e in entries]

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time compare against the stored hash."""
        check_id(client_id, "client_id")
        check_id(secret, "secret")
        record = await self.get_client(client_id)
        return record is not None and secret_matches(secret, record.secret_hash)

    # codes -----------------------------------------------------------------------------
    async def put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        """Store a code."""
        key = hash_secret(check_id(code, "code"))
        check_record(record, CodeRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            return self._put("codes", key, record, ttl, consumed=False)  # type: ignore[no-any-return]

    async def get_code(self, code: str) -> CodeRecord | None:
        """A live code or None."""
        key = hash_secret(check_id(code, "code"))
        with self._store.lock:
            entry = self._live("codes", key)
            return None if entry is None else record_from_json(CodeRecord, entry["record"])

    async def consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        """Use a code once."""
        return self._consume("codes", CodeRecord, code)

    # access tokens -----------------------------------------------------------------------
    async def put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        """Store an access token under its grant."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, AccessTokenRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            stored = self._put("access_tokens", key, record, ttl)
            self._index_grant(record.grant_id, "access_tokens", key)
            return stored  # type: ignore[no-any-return]

    async def get_access_token(self, token: str) -> AccessTokenRecord | None:
        """A live access token or None."""
        key = hash_secret(check_id(token, "token"))
        with self._store.lock:
            entry = self._live("access_tokens", key)
            return None if entry is None else record_from_json(AccessTokenRecord, entry["record"])

    async def revoke_access_token(self, token: str) -> bool:
        """Delete an access token."""
        key = hash_secret(check_id(token, "token"))
        with self._store.lock:
            live = self._live("access_tokens", key) is not None
            entry = self._table("access_tokens").pop(key, None)
            if entry is not None:
                grant_id = json.loads(entry["record"])["grant_id"]
                self._store.grants.get(grant_id, set()).discard(("access_tokens", key))
            return live

    def _revoke_grant_locked(self, grant_id: str) -> int:
        count = 0
        for kind, key in sorted(self._store.grants.pop(grant_id, set())):
            if kind == "access_tokens":
                count += self._live(kind, key) is not None
                self._table(kind).pop(key, None)
                continue
            entry = self._live(kind, key)
            if entry is None:
                self._table(kind).pop(key, None)
                continue
            data = json.loads(entry["record"])
            if not data["revoked"]:
                count += 1
                data["revoked"] = True
                entry["record"] = json.dumps(data)
        return count

    async def revoke_grant(self, grant_id: str) -> int:
        """Delete the grant's access tokens and mark its refresh tokens revoked."""
        check_id(grant_id, "grant_id")
        with self._store.lock:
            return self._revoke_grant_locked(grant_id)

    # refresh tokens ------------------------------------------------------------------------
    async def put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        """Store a refresh token with its own TTL."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, RefreshTokenRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            stored = self._put("refresh_tokens", key, record, ttl, rotated=False, revoked=False)
            self._index_grant(record.grant_id, "refresh_tokens", key)
            return stored  # type: ignore[no-any-return]

    async def get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        """A live refresh token (flags tell rotated/revoked) or None."""
        key = hash_secret(check_id(token, "token"))
        with self._store.lock:
            entry = self._live("refresh_tokens", key)
            return None if entry is None else record_from_json(RefreshTokenRecord, entry["record"])

    async def rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        """Atomically replace ``old`` by ``new``; reuse revokes the grant."""
        old_key = hash_secret(check_id(old, "old token"))
        new_key = hash_secret(check_id(new, "new token"))
        ttl = check_ttl(ttl)
        if old_key == new_key:
            raise InvalidArgument("the new refresh token must differ from the old one")
        with self._store.lock:
            table = self._table("refresh_tokens")
            entry = table.get(old_key)
            if entry is None:
                return RotateResult(RotateStatus.NOT_FOUND)
            if self._now() >= entry["expires_at"]:
                return RotateResult(RotateStatus.EXPIRED)
            data = json.loads(entry["record"])
            if data["revoked"]:
                return RotateResult(
                    RotateStatus.REVOKED, record_from_dict(RefreshTokenRecord, data)
                )
            if data["rotated"]:
                self._revoke_grant_locked(data["grant_id"])
                return RotateResult(
                    RotateStatus.REUSED, record_from_json(RefreshTokenRecord, entry["record"])
                )
            if new_key in table:
                raise Conflict("the new refresh token already exists")
            data["rotated"] = True
            entry["record"] = json.dumps(data)
            data["rotated"] = False
            data["expires_at"] = self._now() + ttl
            table[new_key] = {"record": json.dumps(data), "expires_at": data["expires_at"]}
            self._index_grant(data["grant_id"], "refresh_tokens", new_key)
            return RotateResult(RotateStatus.ROTATED, record_from_dict(RefreshTokenRecord, data))

    async def revoke_refresh_token(self, token: str) -> bool:
        """Mark one refresh token revoked."""
        key = hash_secret(check_id(token, "token"))
        with self._store.lock:
            entry = self._live("refresh_tokens", key)
            if entry is None:
                return False
            data = json.loads(entry["record"])
            if data["revoked"]:
                return False
            data["revoked"] = True
            entry["record"] = json.dumps(data)
            return True

    # states and reset tokens -----------------------------------------------------------------
    async def put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        """Store a pending state."""
        key = hash_secret(check_id(state, "state"))
        check_record(record, StateRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            return self._put("states", key, record, ttl, consumed=False)  # type: ignore[no-any-return]

    async def consume_state(self, state: str) -> ConsumeResult[StateRecord]:
        """Use a state once."""
        return self._consume("states", StateRecord, state)

    async def put_reset_token(
        self, token: str, record: ResetTokenRecord, ttl: float
    ) -> ResetTokenRecord:
        """Store a reset token."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, ResetTokenRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            return self._put("reset_tokens", key, record, ttl, consumed=False)  # type: ignore[no-any-return]

    async def consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        """Use a reset token once."""
        return self._consume("reset_tokens", ResetTokenRecord, token)

    # challenges --------------------------------------------------------------------------
    async def put_challenge(
        self, challenge_id: str, answer: str, record: ChallengeRecord, ttl: float
    ) -> ChallengeRecord:
        """Store a challenge with its answer hashed."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        check_record(record, ChallengeRecord)
        ttl = check_ttl(ttl)
        with self._store.lock:
            stored = self._put("challenges", key, record, ttl, attempts=0)
            self._table("challenges")[key]["answer_hash"] = answer_hash(challenge_id, answer)
            return stored  # type: ignore[no-any-return]

    async def attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        """Count one answer atomically."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        with self._store.lock:
            table = self._table("challenges")
            entry = table.get(key)
            if entry is None:
                return AttemptResult(AttemptStatus.NOT_FOUND)
            if self._now() >= entry["expires_at"]:
                return AttemptResult(AttemptStatus.EXPIRED)
            record = record_from_json(ChallengeRecord, entry["record"])
            record = replace(record, attempts=record.attempts + 1)
            left = record.max_attempts - record.attempts
            if answer_matches(challenge_id, answer, entry["answer_hash"]):
                del table[key]
                return AttemptResult(AttemptStatus.SUCCESS, left, record)
            if left <= 0:
                del table[key]
                return AttemptResult(AttemptStatus.LOCKED, 0, record)
            entry["record"] = record_to_json(record)
            return AttemptResult(AttemptStatus.WRONG, left, record)

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
        with self._store.lock:
            now = self._now()
            stored = replace(record, handle=key, created_at=now, max_expires_at=now + max_lifetime)
            out = self._put("sessions", key, stored, ttl)
            self._store.subjects.setdefault(record.subject, set()).add(key)
            return out  # type: ignore[no-any-return]

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A live session or None."""
        key = hash_secret(check_id(session_id, "session_id"))
        with self._store.lock:
            entry = self._live("sessions", key)
            return None if entry is None else record_from_json(SessionRecord, entry["record"])

    async def touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        """Extend up to the maximum lifetime, never shorten."""
        key = hash_secret(check_id(session_id, "session_id"))
        ttl = check_ttl(ttl)
        with self._store.lock:
            entry = self._live("sessions", key)
            if entry is None:
                return None
            record = record_from_json(SessionRecord, entry["record"])
            expires = max(record.expires_at, min(self._now() + ttl, record.max_expires_at))
            record = replace(record, expires_at=expires)
            entry["record"] = record_to_json(record)
            entry["expires_at"] = expires
            return record_from_json(SessionRecord, entry["record"])

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """Live sessions of a subject, oldest first."""
        check_id(subject, "subject")
        with self._store.lock:
            keys = self._store.subjects.get(subject, set())
            live = [self._live("sessions", k) for k in keys]
            records = [record_from_json(SessionRecord, e["record"]) for e in live if e]
        return sorted(records, key=lambda r: (r.created_at, r.handle))

    async def revoke_session(self, session_id: str) -> bool:
        """End one session."""
        key = hash_secret(check_id(session_id, "session_id"))
        with self._store.lock:
            live = self._live("sessions", key)
            entry = self._table("sessions").pop(key, None)
            if entry is not None:
                subject = json.loads(entry["record"])["subject"]
                self._store.subjects.get(subject, set()).discard(key)
            return live is not None

    async def revoke_all_sessions(self, subject: str) -> int:
        """End every session of a subject."""
        check_id(subject, "subject")
        with self._store.lock:
            count = 0
            for key in self._store.subjects.pop(subject, set()):
                count += self._live("sessions", key) is not None
                self._table("sessions").pop(key, None)
            return count

    # rate limits ---------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Fixed window aligned to its length."""
        check_id(key, "key")
        check_positive_int(limit, "limit")
        window = check_ttl(window, "window")
        with self._store.lock:
            now = self._now()
            start = math.floor(now / window) * window
            # one counter per (key, window length, window start): limiters with different
            # windows on the same key never share a count
            slot = f"{hash_secret(key)}:{window!r}:{start!r}"
            table = self._table("rate_limits")
            entry = table.get(slot)
            if entry is None or now >= entry["expires_at"]:
                entry = table[slot] = {"record": "0", "expires_at": start + window}
            count = int(entry["record"]) + 1
            entry["record"] = str(count)
            return RateLimitResult(count <= limit, count, limit, start + window)

    # admin ---------------------------------------------------------------------------------
    async def health(self) -> Health:
        """Always healthy; nothing is durable."""
        started = time.perf_counter()
        with self._store.lock:
            pass
        return Health(
            ok=True,
            latency_ms=(time.perf_counter() - started) * 1000,
            durability={"persistence": "none (process memory)"},
        )

    async def stats(self) -> dict[str, int]:
        """Live records per kind."""
        with self._store.lock:
            return {
                kind: sum(1 for k in self._table(kind) if self._live(kind, k) is not None)
                for kind in KINDS
            }

    async def purge_expired(self) -> int:
        """Drop expired entries."""
        with self._store.lock:
            now = self._now()
            count = 0
            for kind in KINDS:
                table = self._table(kind)
                for key in [k for k, e in table.items() if now >= e["expires_at"]]:
                    del table[key]
                    # an ended rate-limit window is removed but not counted
                    count += kind != "rate_limits"
            for refs in self._store.grants.values():
                refs.difference_update({r for r in refs if r[1] not in self._table(r[0])})
            for keys in self._store.subjects.values():
                keys.intersection_update(self._table("sessions"))
            return count

    async def drop_namespace(self) -> None:
        """Empty this namespace's store in place.

        The store stays registered, so every instance of the namespace (created before
        or after the drop) keeps sharing one store, as they would share one server.
        """
        with self._store.lock:
            for table in self._store.data.values():
                table.clear()
            self._store.grants.clear()
            self._store.subjects.clear()

    async def dump_raw(self) -> str:
        """The store as JSON text."""
        with self._store.lock:
            return json.dumps(
                {
                    "data": self._store.data,
                    "grants": {g: sorted(v) for g, v in self._store.grants.items()},
                    "subjects": {s: sorted(v) for s, v in self._store.subjects.items()},
                },
                default=str,
            )


def factory(settings: BackendSettings) -> MemoryBackend:
    """Entry point ``memory``."""
    return MemoryBackend(settings)


factory.in_process = True  # type: ignore[attr-defined]  # another process cannot see it
