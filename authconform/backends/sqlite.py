"""The embedded persistent backend: one SQLite file in WAL mode, shared across processes.

Layout: each namespace owns a fixed set of tables named ``ns_<namespace>_<kind>`` (created
IF NOT EXISTS on first use). No kind name is an ``_``-suffix of another, so two namespaces
can never map to the same table name. ``drop_namespace`` drops exactly those tables.

Each row holds the record as JSON text (``record_to_json`` of the record as it was put)
plus typed columns for what queries need. The mutable fields live in their columns, which
are authoritative and are laid over the JSON on every read: ``consumed``, ``rotated``,
``revoked``, ``attempts`` and ``expires_at`` (sessions also rewrite their JSON on touch).
Keys are ``hash_secret`` hex of the secret; client ids are kept as given.

Threading: the blocking ``sqlite3`` calls run on one dedicated worker thread per backend
instance (a single-thread executor), which owns the instance's only connection. Every
read-modify-write runs in one ``BEGIN IMMEDIATE`` transaction, so it is atomic across
threads, instances and processes sharing the file; ``busy_timeout`` makes writers queue.

Time comes from ``settings.clock`` (read inside the transaction). Expired rows are kept
until ``purge_expired`` (so consume/rotate/attempt can say EXPIRED) and are invisible to
every ``get_*``. A store failure (locked past the busy timeout, I/O error, unable to open)
raises ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal, TypeVar

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

__all__ = ["SqliteBackend", "factory"]

T = TypeVar("T")
R = TypeVar("R")
Mode = Literal["read", "snapshot", "write"]

BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

_RECORD = "key TEXT PRIMARY KEY, record TEXT NOT NULL"
_ONCE = _RECORD + ", expires_at REAL NOT NULL, consumed INTEGER NOT NULL DEFAULT 0"
# kind -> column definitions of its table (one entry per kind of ``KINDS``).
SCHEMA: dict[str, str] = {
    "clients": _RECORD,
    "codes": _ONCE,
    "access_tokens": _RECORD + ", expires_at REAL NOT NULL, grant_id TEXT NOT NULL",
    "refresh_tokens": (
        _RECORD + ", expires_at REAL NOT NULL, grant_id TEXT NOT NULL,"
        " rotated INTEGER NOT NULL DEFAULT 0, revoked INTEGER NOT NULL DEFAULT 0,"
        " in_grant INTEGER NOT NULL DEFAULT 1"
    ),
    "states": _ONCE,
    "challenges": (
        _RECORD + ", expires_at REAL NOT NULL, answer_hash TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0"
    ),
    "reset_tokens": _ONCE,
    "sessions": (
        _RECORD + ", expires_at REAL NOT NULL, subject TEXT NOT NULL, created_at REAL NOT NULL"
    ),
    # one counter per (key hash, window length, window start): limiters with different
    # windows on the same key never share a count
    "rate_limits": (
        "key TEXT NOT NULL, window_length REAL NOT NULL, window_start REAL NOT NULL,"
        " expires_at REAL NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (key, window_length, window_start)"
    ),
}
assert tuple(SCHEMA) == KINDS, "SCHEMA must define every kind, in KINDS order"
# kind -> indexed column
INDEXES = {"access_tokens": "grant_id", "refresh_tokens": "grant_id", "sessions": "subject"}


def _synchronous(value: object) -> str:
    """Validate ``options["sqlite_synchronous"]`` (a name or 0-3)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return SYNCHRONOUS_LEVELS[value]
    if isinstance(value, str) and value.upper() in SYNCHRONOUS_LEVELS:
        return value.upper()
    raise ConfigurationError(
        f"option sqlite_synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)} "
        f"(or 0-3), got {value!r}"
    )


class SqliteBackend:
    """One SQLite file; one worker thread and one connection per instance."""

    name = "sqlite"
    capabilities = ALL_CAPABILITIES

    def __init__(self, settings: BackendSettings) -> None:
        """Validate settings; the file is opened lazily by the worker thread."""
        self.namespace = check_namespace(settings.namespace)
        self.clock = settings.clock
        self.path = settings.sqlite_path
        self.synchronous = _synchronous(settings.options.get("sqlite_synchronous", "NORMAL"))
        # a writer waits for the lock at most this long (then StorageUnavailable)
        self._busy_ms = max(1, int(min(BUSY_TIMEOUT_MS / 1000, settings.operation_timeout) * 1000))
        self._t = {kind: f'"ns_{self.namespace}_{kind}"' for kind in KINDS}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"authconform-sqlite-{self.namespace}"
        )
        self._conn: sqlite3.Connection | None = None  # owned by the worker thread
        self._schema_ready = False
        self._closed = False
        self._pid = os.getpid()

    # plumbing (worker thread) --------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only the worker thread ever uses it
            )
            try:
                conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._schema_ready = False
        return self._conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._drop_old_rate_limits(conn)
            for kind, columns in SCHEMA.items():
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self._t[kind]} ({columns})")
            for kind, column in INDEXES.items():
                index = f'"ns_{self.namespace}_{kind}_{column}"'
                conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {self._t[kind]} ({column})")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._schema_ready = True

    def _drop_old_rate_limits(self, conn: sqlite3.Connection) -> None:
        """Drop a rate-limit table of the old layout (one counter per key and start).

        Its rows are counters of windows that end within one window length, so the only
        loss is that limiters count afresh once; keeping it would fail every ``hit``.
        """
        table = self._t["rate_limits"]
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if columns and "window_length" not in columns:
            conn.execute(f"DROP TABLE {table}")

    def _transaction(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection, float], T], mode: Mode
    ) -> T:
        if mode != "read":
            conn.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
        try:
            result = fn(conn, self.clock.now())
            if mode != "read":
                conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one to report
            raise

    def _call(self, fn: Callable[[sqlite3.Connection, float], T], mode: Mode) -> T:
        try:
            conn = self._connection()
            if not self._schema_ready:
                self._create_schema(conn)
            try:
                return self._transaction(conn, fn, mode)
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                # another instance dropped the namespace: recreate it, as memory does
                self._create_schema(conn)
                return self._transaction(conn, fn, mode)
        except sqlite3.Error as exc:
            message = str(exc)
            if self._conn is not None and not ("locked" in message or "busy" in message):
                # a broken connection (I/O error, file replaced): reopen on the next call
                self._conn.close()
                self._conn = None
            raise StorageUnavailable(
                f"sqlite {self.path}: {type(exc).__name__}: {message}"
            ) from exc

    async def _get_live(self, kind: str, cls: type[T], key: str) -> T | None:
        """The live record of ``kind`` stored under ``key``, as stored, or None."""
        query = f"SELECT record FROM {self._t[kind]} WHERE key = ? AND expires_at > ?"

        def op(conn: sqlite3.Connection, now: float) -> T | None:
            row = conn.execute(query, (key, now)).fetchone()
            return None if row is None else record_from_json(cls, row[0])

        return await self._run(op, "read")

    async def _run(self, fn: Callable[[sqlite3.Connection, float], T], mode: Mode = "write") -> T:
        if self._closed:
            raise StorageUnavailable("sqlite backend is closed")
        if self._pid != os.getpid():
            self._after_fork()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._call, fn, mode)
        except RuntimeError as exc:  # executor shut down concurrently with close()
            raise StorageUnavailable(f"sqlite backend is closed: {exc}") from None
        return await future

    def _after_fork(self) -> None:
        """In a forked child the worker thread does not exist: start afresh.

        The inherited connection is abandoned, not closed (SQLite connections must not
        cross a fork; closing it here could disturb the parent's file locks).
        """
        self._pid = os.getpid()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"authconform-sqlite-{self.namespace}"
        )
        self._conn = None
        self._schema_ready = False

    def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def close(self) -> None:
        """Close the connection and stop the worker thread. The file stays."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid():
            self._after_fork()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection)
        finally:
            self._executor.shutdown(wait=True)

    # shared SQL helpers (worker thread, inside a transaction) ------------------------------
    def _insert(
        self,
        conn: sqlite3.Connection,
        kind: str,
        row: Mapping[str, object],
        conflict: str | None = None,
    ) -> None:
        columns = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        try:
            conn.execute(f"INSERT INTO {self._t[kind]} ({columns}) VALUES ({marks})", row)
        except sqlite3.IntegrityError:
            raise Conflict(conflict or f"{kind[:-1].replace('_', ' ')} already exists") from None

    async def _put(self, kind: str, key: str, record: R, ttl: float, **columns: object) -> R:
        def op(conn: sqlite3.Connection, now: float) -> R:
            stored: Any = replace(record, expires_at=now + ttl)  # type: ignore[type-var]
            text = record_to_json(stored)
            row = {"key": key, "record": text, "expires_at": stored.expires_at, **columns}
            self._insert(conn, kind, row)
            return record_from_json(type(record), text)

        return await self._run(op)

    async def _consume(self, kind: str, cls: type[R], secret: str) -> ConsumeResult[R]:
        key = hash_secret(check_id(secret, "value"))
        table = self._t[kind]

        def op(conn: sqlite3.Connection, now: float) -> ConsumeResult[R]:
            row = conn.execute(
                f"UPDATE {table} SET consumed = 1 WHERE key = ? AND consumed = 0"
                " AND expires_at > ? RETURNING record",
                (key, now),
            ).fetchone()
            if row is not None:
                return ConsumeResult(
                    ConsumeStatus.CONSUMED, record_from_json_with(cls, row[0], consumed=True)
                )
            row = conn.execute(
                f"SELECT record, expires_at FROM {table} WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return ConsumeResult(ConsumeStatus.NOT_FOUND)
            if now >= row[1]:
                return ConsumeResult(ConsumeStatus.EXPIRED)
            return ConsumeResult(
                ConsumeStatus.ALREADY_USED, record_from_json_with(cls, row[0], consumed=True)
            )

        return await self._run(op)

    # clients -------------------------------------------------------------------------------
    async def create_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord:
        """Register a client; Conflict if the id exists."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        secret_hash = hash_secret(secret) if secret is not None else None
        meta = dict(metadata)

        def op(conn: sqlite3.Connection, now: float) -> ClientRecord:
            record = ClientRecord(
                client_id=client_id,
                metadata=meta,
                secret_hash=secret_hash,
                created_at=now,
                updated_at=now,
            )
            text = record_to_json(record)
            try:
                conn.execute(
                    f"INSERT INTO {self._t['clients']} (key, record) VALUES (?, ?)",
                    (client_id, text),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"client {client_id!r} already exists") from None
            return record_from_json(ClientRecord, text)

        return await self._run(op)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """Return the client or None."""
        check_id(client_id, "client_id")

        def op(conn: sqlite3.Connection, now: float) -> ClientRecord | None:
            row = conn.execute(
                f"SELECT record FROM {self._t['clients']} WHERE key = ?", (client_id,)
            ).fetchone()
            return None if row is None else record_from_json(ClientRecord, row[0])

        return await self._run(op, "read")

    async def update_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord | None:
        """Merge metadata; keep what was not given."""
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        secret_hash = hash_secret(secret) if secret is not None else None
        meta = dict(metadata)

        def op(conn: sqlite3.Connection, now: float) -> ClientRecord | None:
            table = self._t["clients"]
            row = conn.execute(f"SELECT record FROM {table} WHERE key = ?", (client_id,)).fetchone()
            if row is None:
                return None
            old = record_from_json(ClientRecord, row[0])
            merged = {**old.metadata, **meta}
            check_payload(merged, "metadata")
            new = replace(
                old,
                metadata=merged,
                secret_hash=secret_hash if secret_hash is not None else old.secret_hash,
                updated_at=now,
            )
            text = record_to_json(new)
            conn.execute(f"UPDATE {table} SET record = ? WHERE key = ?", (text, client_id))
            return record_from_json(ClientRecord, text)

        return await self._run(op)

    async def delete_client(self, client_id: str) -> bool:
        """Delete; True if it existed. Revokes what was issued to the client."""
        check_id(client_id, "client_id")

        def op(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(f"DELETE FROM {self._t['clients']} WHERE key = ?", (client_id,))
            existed = cur.rowcount > 0
            # the client's codes, states and access tokens go; its refresh tokens are
            # marked revoked and kept, so a replay is still recognised
            owned = "json_extract(record, '$.client_id') = ?"
            for kind in ("codes", "states", "access_tokens"):
                conn.execute(f"DELETE FROM {self._t[kind]} WHERE {owned}", (client_id,))
            conn.execute(
                f"UPDATE {self._t['refresh_tokens']} SET revoked = 1 WHERE revoked = 0 AND {owned}",
                (client_id,),
            )
            return existed

        return await self._run(op)

    async def list_clients(self) -> list[ClientRecord]:
        """All clients, sorted by id."""

        def op(conn: sqlite3.Connection, now: float) -> list[ClientRecord]:
            rows = conn.execute(f"SELECT record FROM {self._t['clients']} ORDER BY key").fetchall()
            return [record_from_json(ClientRecord, r[0]) for r in rows]

        return await self._run(op, "read")

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time compare against the stored hash."""
        check_id(client_id, "client_id")
        check_id(secret, "secret")
        record = await self.get_client(client_id)
        return record is not None and secret_matches(secret, record.secret_hash)

    # codes ---------------------------------------------------------------------------------
    async def put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        """Store a code."""
        key = hash_secret(check_id(code, "code"))
        check_record(record, CodeRecord)
        ttl = check_ttl(ttl)
        return await self._put("codes", key, replace(record, consumed=False), ttl, consumed=0)

    async def get_code(self, code: str) -> CodeRecord | None:
        """A live code or None."""
        key = hash_secret(check_id(code, "code"))

        def op(conn: sqlite3.Connection, now: float) -> CodeRecord | None:
            row = conn.execute(
                f"SELECT record, consumed FROM {self._t['codes']} WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            return (
                None
                if row is None
                else record_from_json_with(CodeRecord, row[0], consumed=bool(row[1]))
            )

        return await self._run(op, "read")

    async def consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        """Use a code once."""
        return await self._consume("codes", CodeRecord, code)

    # access tokens -------------------------------------------------------------------------
    async def put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        """Store an access token under its grant."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, AccessTokenRecord)
        ttl = check_ttl(ttl)
        return await self._put("access_tokens", key, record, ttl, grant_id=record.grant_id)

    async def get_access_token(self, token: str) -> AccessTokenRecord | None:
        """A live access token or None."""
        key = hash_secret(check_id(token, "token"))

        return await self._get_live("access_tokens", AccessTokenRecord, key)

    async def revoke_access_token(self, token: str) -> bool:
        """Delete an access token; True if it was live."""
        key = hash_secret(check_id(token, "token"))

        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute(
                f"DELETE FROM {self._t['access_tokens']} WHERE key = ? RETURNING expires_at",
                (key,),
            ).fetchone()
            return row is not None and now < row[0]

        return await self._run(op)

    def _revoke_grant_locked(self, conn: sqlite3.Connection, grant_id: str, now: float) -> int:
        """Delete the grant's access tokens; mark its refresh tokens revoked.

        ``in_grant`` mirrors the memory backend's grant index: a refresh token leaves it
        once a revocation of its grant has handled it, so a later revocation of the same
        grant leaves it alone (an expired one is kept for EXPIRED rather than deleted).
        """
        access, refresh = self._t["access_tokens"], self._t["refresh_tokens"]
        rows = conn.execute(
            f"DELETE FROM {access} WHERE grant_id = ? RETURNING expires_at", (grant_id,)
        ).fetchall()
        count = sum(1 for (expires_at,) in rows if now < expires_at)
        conn.execute(
            f"DELETE FROM {refresh} WHERE grant_id = ? AND in_grant = 1 AND expires_at <= ?",
            (grant_id, now),
        )
        count += conn.execute(
            f"UPDATE {refresh} SET revoked = 1, in_grant = 0"
            " WHERE grant_id = ? AND in_grant = 1 AND revoked = 0",
            (grant_id,),
        ).rowcount
        conn.execute(
            f"UPDATE {refresh} SET in_grant = 0 WHERE grant_id = ? AND in_grant = 1", (grant_id,)
        )
        return count

    async def revoke_grant(self, grant_id: str) -> int:
        """Delete the grant's access tokens and mark its refresh tokens revoked."""
        check_id(grant_id, "grant_id")
        return await self._run(lambda conn, now: self._revoke_grant_locked(conn, grant_id, now))

    # refresh tokens ------------------------------------------------------------------------
    def _refresh_record(self, row: tuple[Any, ...]) -> RefreshTokenRecord:
        """``row`` = (record, expires_at, rotated, revoked)."""
        return record_from_json_with(
            RefreshTokenRecord,
            row[0],
            expires_at=row[1],
            rotated=bool(row[2]),
            revoked=bool(row[3]),
        )

    async def put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        """Store a refresh token with its own TTL."""
        key = hash_secret(check_id(token, "token"))
        check_record(record, RefreshTokenRecord)
        ttl = check_ttl(ttl)
        return await self._put(
            "refresh_tokens",
            key,
            replace(record, rotated=False, revoked=False),
            ttl,
            grant_id=record.grant_id,
        )

    async def get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        """A live refresh token (flags tell rotated/revoked) or None."""
        key = hash_secret(check_id(token, "token"))

        def op(conn: sqlite3.Connection, now: float) -> RefreshTokenRecord | None:
            row = conn.execute(
                f"SELECT record, expires_at, rotated, revoked FROM {self._t['refresh_tokens']}"
                " WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            return None if row is None else self._refresh_record(row)

        return await self._run(op, "read")

    async def rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        """Atomically replace ``old`` by ``new``; reuse revokes the grant."""
        old_key = hash_secret(check_id(old, "old token"))
        new_key = hash_secret(check_id(new, "new token"))
        ttl = check_ttl(ttl)
        if old_key == new_key:
            raise InvalidArgument("the new refresh token must differ from the old one")
        table = self._t["refresh_tokens"]
        select = f"SELECT record, expires_at, rotated, revoked, grant_id FROM {table} WHERE key = ?"

        def op(conn: sqlite3.Connection, now: float) -> RotateResult:
            row = conn.execute(
                f"UPDATE {table} SET rotated = 1 WHERE key = ? AND rotated = 0 AND revoked = 0"
                " AND expires_at > ? RETURNING record, grant_id",
                (old_key, now),
            ).fetchone()
            if row is not None:  # old is now marked rotated; store its successor
                current = record_from_json_with(RefreshTokenRecord, row[0])
                stored = replace(current, rotated=False, revoked=False, expires_at=now + ttl)
                text = record_to_json(stored)
                self._insert(  # Conflict rolls the whole transaction back
                    conn,
                    "refresh_tokens",
                    {
                        "key": new_key,
                        "record": text,
                        "expires_at": stored.expires_at,
                        "grant_id": row[1],
                    },
                    "the new refresh token already exists",
                )
                return RotateResult(
                    RotateStatus.ROTATED, record_from_json(RefreshTokenRecord, text)
                )
            found = conn.execute(select, (old_key,)).fetchone()
            if found is None:
                return RotateResult(RotateStatus.NOT_FOUND)
            if now >= found[1]:
                return RotateResult(RotateStatus.EXPIRED)
            if found[3]:
                return RotateResult(RotateStatus.REVOKED, self._refresh_record(found))
            # rotated before: reuse of a refresh token revokes its whole grant (RFC 9700 4.14.2)
            self._revoke_grant_locked(conn, found[4], now)
            again = conn.execute(select, (old_key,)).fetchone()
            return RotateResult(RotateStatus.REUSED, self._refresh_record(again))

        return await self._run(op)

    async def revoke_refresh_token(self, token: str) -> bool:
        """Mark one refresh token revoked; True if it was live and not revoked."""
        key = hash_secret(check_id(token, "token"))

        def op(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(
                f"UPDATE {self._t['refresh_tokens']} SET revoked = 1"
                " WHERE key = ? AND revoked = 0 AND expires_at > ?",
                (key, now),
            )
            return cur.rowcount > 0

        return await self._run(op)

    # states and reset tokens ---------------------------------------------------------------
    async def put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        """Store a pending state."""
        key = hash_secret(check_id(state, "state"))
        check_record(record, StateRecord)
        ttl = check_ttl(ttl)
        return await self._put("states", key, replace(record, consumed=False), ttl, consumed=0)

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
        return await self._put(
            "reset_tokens", key, replace(record, consumed=False), ttl, consumed=0
        )

    async def consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        """Use a reset token once."""
        return await self._consume("reset_tokens", ResetTokenRecord, token)

    # challenges ----------------------------------------------------------------------------
    async def put_challenge(
        self, challenge_id: str, answer: str, record: ChallengeRecord, ttl: float
    ) -> ChallengeRecord:
        """Store a challenge with its answer hashed."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        check_record(record, ChallengeRecord)
        ttl = check_ttl(ttl)
        return await self._put(
            "challenges",
            key,
            replace(record, attempts=0),
            ttl,
            answer_hash=answer_hash(challenge_id, answer),
            attempts=0,
        )

    async def attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        """Count one answer atomically; the challenge dies on success or lock-out."""
        key = hash_secret(check_id(challenge_id, "challenge_id"))
        check_id(answer, "answer")
        table = self._t["challenges"]

        def op(conn: sqlite3.Connection, now: float) -> AttemptResult:
            row = conn.execute(
                f"UPDATE {table} SET attempts = attempts + 1 WHERE key = ? AND expires_at > ?"
                " RETURNING record, attempts, answer_hash",
                (key, now),
            ).fetchone()
            if row is None:
                exists = conn.execute(f"SELECT 1 FROM {table} WHERE key = ?", (key,)).fetchone()
                status = AttemptStatus.NOT_FOUND if exists is None else AttemptStatus.EXPIRED
                return AttemptResult(status)
            record = record_from_json_with(ChallengeRecord, row[0], attempts=row[1])
            left = record.max_attempts - record.attempts
            if answer_matches(challenge_id, answer, row[2]):
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                return AttemptResult(AttemptStatus.SUCCESS, left, record)
            if left <= 0:
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                return AttemptResult(AttemptStatus.LOCKED, 0, record)
            return AttemptResult(AttemptStatus.WRONG, left, record)

        return await self._run(op)

    # sessions ------------------------------------------------------------------------------
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

        def op(conn: sqlite3.Connection, now: float) -> SessionRecord:
            stored = replace(
                record,
                handle=key,
                created_at=now,
                expires_at=now + ttl,
                max_expires_at=now + max_lifetime,
            )
            text = record_to_json(stored)
            self._insert(
                conn,
                "sessions",
                {
                    "key": key,
                    "record": text,
                    "expires_at": stored.expires_at,
                    "subject": record.subject,
                    "created_at": now,
                },
            )
            return record_from_json(SessionRecord, text)

        return await self._run(op)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A live session or None."""
        key = hash_secret(check_id(session_id, "session_id"))

        return await self._get_live("sessions", SessionRecord, key)

    async def touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        """Extend to min(now + ttl, max_expires_at); never shorten."""
        key = hash_secret(check_id(session_id, "session_id"))
        ttl = check_ttl(ttl)
        table = self._t["sessions"]

        def op(conn: sqlite3.Connection, now: float) -> SessionRecord | None:
            row = conn.execute(
                f"SELECT record FROM {table} WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is None:
                return None
            record = record_from_json(SessionRecord, row[0])
            expires = max(record.expires_at, min(now + ttl, record.max_expires_at))
            text = record_to_json(replace(record, expires_at=expires))
            conn.execute(
                f"UPDATE {table} SET record = ?, expires_at = ? WHERE key = ?",
                (text, expires, key),
            )
            return record_from_json(SessionRecord, text)

        return await self._run(op)

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """Live sessions of a subject, oldest first."""
        check_id(subject, "subject")

        def op(conn: sqlite3.Connection, now: float) -> list[SessionRecord]:
            rows = conn.execute(
                f"SELECT record FROM {self._t['sessions']} WHERE subject = ? AND expires_at > ?"
                " ORDER BY created_at, key",
                (subject, now),
            ).fetchall()
            return [record_from_json(SessionRecord, r[0]) for r in rows]

        return await self._run(op, "read")

    async def revoke_session(self, session_id: str) -> bool:
        """End one session; True if it was live."""
        key = hash_secret(check_id(session_id, "session_id"))

        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute(
                f"DELETE FROM {self._t['sessions']} WHERE key = ? RETURNING expires_at", (key,)
            ).fetchone()
            return row is not None and now < row[0]

        return await self._run(op)

    async def revoke_all_sessions(self, subject: str) -> int:
        """End every session of a subject; returns how many were live."""
        check_id(subject, "subject")

        def op(conn: sqlite3.Connection, now: float) -> int:
            rows = conn.execute(
                f"DELETE FROM {self._t['sessions']} WHERE subject = ? RETURNING expires_at",
                (subject,),
            ).fetchall()
            return sum(1 for (expires_at,) in rows if now < expires_at)

        return await self._run(op)

    # rate limits ---------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Fixed window aligned to its length; one atomic upsert."""
        check_id(key, "key")
        check_positive_int(limit, "limit")
        window = check_ttl(window, "window")
        key_hash = hash_secret(key)
        table = self._t["rate_limits"]
        sql = (
            f"INSERT INTO {table} (key, window_length, window_start, expires_at, count)"
            " VALUES (:key, :window, :start, :expires, 1)"
            " ON CONFLICT (key, window_length, window_start) DO UPDATE SET"
            " count = CASE WHEN :now >= expires_at THEN 1 ELSE count + 1 END,"
            " expires_at = CASE WHEN :now >= expires_at THEN excluded.expires_at"
            " ELSE expires_at END"
            " RETURNING count"
        )

        def op(conn: sqlite3.Connection, now: float) -> RateLimitResult:
            start = math.floor(now / window) * window
            params = {
                "key": key_hash,
                "window": window,
                "start": start,
                "expires": start + window,
                "now": now,
            }
            (count,) = conn.execute(sql, params).fetchone()
            return RateLimitResult(count <= limit, count, limit, start + window)

        return await self._run(op)

    # admin ---------------------------------------------------------------------------------
    def _durability(self, conn: sqlite3.Connection, now: float) -> dict[str, str]:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        level = SYNCHRONOUS_LEVELS[sync] if isinstance(sync, int) and 0 <= sync <= 3 else sync
        return {"journal_mode": str(journal), "synchronous": str(level), "path": self.path}

    async def health(self) -> Health:
        """``SELECT 1`` latency and the durability settings; never raises."""
        started = time.perf_counter()
        try:
            await self._run(lambda conn, now: conn.execute("SELECT 1").fetchone(), "read")
            latency = (time.perf_counter() - started) * 1000
            durability = await self._run(self._durability, "read")
        except Exception as exc:  # health reports any failure as not ok, never raises
            return Health(
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                durability={"path": self.path},
                detail=f"{type(exc).__name__}: {exc}",
            )
        return Health(ok=True, latency_ms=latency, durability=durability)

    async def stats(self) -> dict[str, int]:
        """Live records per kind."""

        def op(conn: sqlite3.Connection, now: float) -> dict[str, int]:
            out: dict[str, int] = {}
            for kind in KINDS:
                if kind == "clients":
                    sql, params = f"SELECT count(*) FROM {self._t[kind]}", ()
                else:
                    sql = f"SELECT count(*) FROM {self._t[kind]} WHERE expires_at > ?"
                    params = (now,)  # type: ignore[assignment]
                out[kind] = conn.execute(sql, params).fetchone()[0]
            return out

        return await self._run(op, "snapshot")

    async def purge_expired(self) -> int:
        """Delete expired rows; returns how many."""

        def op(conn: sqlite3.Connection, now: float) -> int:
            counts = {
                k: conn.execute(f"DELETE FROM {self._t[k]} WHERE expires_at <= ?", (now,)).rowcount
                for k in KINDS
                if k != "clients"
            }
            # an ended rate-limit window is removed but not counted
            return sum(n for k, n in counts.items() if k != "rate_limits")

        return await self._run(op)

    async def drop_namespace(self) -> None:
        """Drop this namespace's tables (the fixed set it creates) and nothing else."""

        def op(conn: sqlite3.Connection, now: float) -> None:
            for kind in KINDS:
                conn.execute(f"DROP TABLE IF EXISTS {self._t[kind]}")  # drops its index too
            self._schema_ready = False  # a later call on this instance starts empty

        await self._run(op)

    async def dump_raw(self) -> str:
        """Every row of this namespace's tables, as JSON text."""

        def op(conn: sqlite3.Connection, now: float) -> str:
            out: dict[str, list[dict[str, Any]]] = {}
            for kind in KINDS:
                cur = conn.execute(f"SELECT * FROM {self._t[kind]} ORDER BY rowid")
                names = [d[0] for d in cur.description]
                out[f"ns_{self.namespace}_{kind}"] = [dict(zip(names, r, strict=True)) for r in cur]
            return json.dumps(out, default=str)

        return await self._run(op, "snapshot")


def factory(settings: BackendSettings) -> SqliteBackend:
    """Entry point ``sqlite``."""
    return SqliteBackend(settings)


factory.uses_clock = True  # type: ignore[attr-defined]
factory.service = None  # type: ignore[attr-defined]
factory.store = "sqlite"  # type: ignore[attr-defined]  # the restart suite's store: a file


def _outage_settings(settings: BackendSettings) -> BackendSettings:
    """Settings whose database file cannot be opened (a lost or unmounted volume)."""
    return dataclasses.replace(settings, sqlite_path="/nonexistent/authconform/down.sqlite3")


factory.outage_settings = _outage_settings  # type: ignore[attr-defined]
