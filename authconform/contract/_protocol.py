"""The ``StorageBackend`` protocol, capabilities, clocks and backend settings."""

from __future__ import annotations

import enum
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from authconform.contract._records import (
    JSON,
    AccessTokenRecord,
    AttemptResult,
    ChallengeRecord,
    ClientRecord,
    CodeRecord,
    ConsumeResult,
    Health,
    RateLimitResult,
    RefreshTokenRecord,
    ResetTokenRecord,
    RotateResult,
    SessionRecord,
    StateRecord,
)


class Capability(enum.Enum):
    """What a backend declares it stores; checks for undeclared ones are not applicable."""

    CLIENTS = "clients"
    CODES = "codes"
    TOKENS = "tokens"
    REFRESH = "refresh"
    STATES = "states"
    CHALLENGES = "challenges"
    RESET_TOKENS = "reset_tokens"
    SESSIONS = "sessions"
    RATE_LIMITS = "rate_limits"
    ADMIN = "admin"


ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability)

_OPS_OF: dict[Capability, tuple[str, ...]] = {
    Capability.CLIENTS: (
        "create_client",
        "get_client",
        "update_client",
        "delete_client",
        "list_clients",
        "verify_client_secret",
    ),
    Capability.CODES: ("put_code", "get_code", "consume_code"),
    Capability.TOKENS: (
        "put_access_token",
        "get_access_token",
        "revoke_access_token",
        "revoke_grant",
    ),
    Capability.REFRESH: (
        "put_refresh_token",
        "get_refresh_token",
        "rotate_refresh_token",
        "revoke_refresh_token",
    ),
    Capability.STATES: ("put_state", "consume_state"),
    Capability.CHALLENGES: ("put_challenge", "attempt_challenge"),
    Capability.RESET_TOKENS: ("put_reset_token", "consume_reset_token"),
    Capability.SESSIONS: (
        "create_session",
        "get_session",
        "touch_session",
        "list_sessions",
        "revoke_session",
        "revoke_all_sessions",
    ),
    Capability.RATE_LIMITS: ("hit",),
    Capability.ADMIN: ("health", "stats", "purge_expired", "drop_namespace", "dump_raw"),
}
#: the capability each ``StorageBackend`` operation belongs to (as the Protocol groups them)
CAPABILITY_OF_OPERATION: dict[str, Capability] = {
    op: capability for capability, ops in _OPS_OF.items() for op in ops
}


class Clock(Protocol):
    """Wall-clock seconds since the epoch, as a float."""

    def now(self) -> float:
        """Return the current time."""
        ...


class SystemClock:
    """The real clock (``time.time``)."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class FakeClock:
    """A clock that moves only when told to; thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        """Start at ``start`` seconds since the epoch."""
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the fake time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._lock:
            self._now += seconds


@dataclass(frozen=True)
class BackendSettings:
    """Everything a backend factory may need. Unused fields are ignored.

    ``namespace`` must match ``[a-z0-9_]{1,40}``; a backend never reads or writes
    outside it.
    """

    namespace: str = "authconform"
    clock: Clock = field(default_factory=SystemClock)
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    sqlite_path: str = field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "authconform.sqlite3")
    )
    connect_timeout: float = 2.0
    operation_timeout: float = 5.0
    retries: int = 2
    expired_retention: float = 3600.0
    options: Mapping[str, JSON] = field(default_factory=dict)


@runtime_checkable
class StorageBackend(Protocol):
    """The storage contract. All operations are coroutines.

    Every operation validates its arguments first and raises ``InvalidArgument`` before
    touching the store; a store failure raises ``StorageUnavailable`` (never "not found").
    Tokens, codes, states, reset tokens, challenge answers, session ids and client
    secrets are stored hashed. Expired records are invisible to ``get_*``; ``consume``
    and ``rotate`` report EXPIRED while the store still remembers them.
    """

    name: str
    capabilities: frozenset[Capability]

    async def close(self) -> None:
        """Release connections. The stored data stays."""
        ...

    # clients ------------------------------------------------------------------
    async def create_client(
        self, client_id: str, metadata: Mapping[str, JSON], *, secret: str | None = None
    ) -> ClientRecord:
        """Register a client; raise ``Conflict`` if the id exists. No TTL."""
        ...

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """Return the client or None."""
        ...

    async def update_client(
        self,
        client_id: str,
        metadata: Mapping[str, JSON],
        *,
        secret: str | None = None,
    ) -> ClientRecord | None:
        """Merge ``metadata`` into the stored metadata (keys not given are kept).

        A ``secret`` replaces the stored secret hash; None keeps it. Returns None if the
        client does not exist.
        """
        ...

    async def delete_client(self, client_id: str) -> bool:
        """Delete; True if it existed."""
        ...

    async def list_clients(self) -> list[ClientRecord]:
        """Every client of the namespace, sorted by client id."""
        ...

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time compare of ``secret`` against the stored hash."""
        ...

    # authorization codes --------------------------------------------------------
    async def put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        """Store a code for ``ttl`` seconds; returns the stored record (expires_at set)."""
        ...

    async def get_code(self, code: str) -> CodeRecord | None:
        """A live code, consumed or not (``consumed`` tells); None once expired."""
        ...

    async def consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        """Atomically mark used: exactly one caller ever gets CONSUMED."""
        ...

    # access tokens ----------------------------------------------------------------
    async def put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        """Store an access token under its grant."""
        ...

    async def get_access_token(self, token: str) -> AccessTokenRecord | None:
        """A live, unrevoked access token or None."""
        ...

    async def revoke_access_token(self, token: str) -> bool:
        """Revoke one access token; True if it was live."""
        ...

    async def revoke_grant(self, grant_id: str) -> int:
        """Revoke every access and refresh token of the grant; returns how many."""
        ...

    # refresh tokens -----------------------------------------------------------------
    async def put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        """Store a refresh token with its own TTL (not the access token's)."""
        ...

    async def get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        """A live refresh token (flags tell rotated/revoked) or None once expired."""
        ...

    async def rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        """Atomically replace ``old`` by ``new`` (same grant, scopes, resource)."""
        ...

    async def revoke_refresh_token(self, token: str) -> bool:
        """Mark one refresh token revoked; True if it was live and not revoked."""
        ...

    # pending authorization state ------------------------------------------------------
    async def put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        """Store a pending ``state``."""
        ...

    async def consume_state(self, state: str) -> ConsumeResult[StateRecord]:
        """Atomically use a ``state`` once."""
        ...

    # second-factor challenges -----------------------------------------------------------
    async def put_challenge(
        self,
        challenge_id: str,
        answer: str,
        record: ChallengeRecord,
        ttl: float,
    ) -> ChallengeRecord:
        """Store a challenge; ``record.max_attempts`` bounds the answers allowed."""
        ...

    async def attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        """Atomically count one answer; the challenge dies on success or lock-out."""
        ...

    # reset tokens ---------------------------------------------------------------------
    async def put_reset_token(
        self, token: str, record: ResetTokenRecord, ttl: float
    ) -> ResetTokenRecord:
        """Store a reset token."""
        ...

    async def consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        """Atomically use a reset token once."""
        ...

    # sessions -------------------------------------------------------------------------
    async def create_session(
        self, session_id: str, record: SessionRecord, ttl: float, max_lifetime: float
    ) -> SessionRecord:
        """Create a session living ``ttl``, extendable up to ``max_lifetime`` from now."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A live session or None."""
        ...

    async def touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        """Extend to now + ttl, capped at the maximum lifetime; None if not live."""
        ...

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """Live sessions of a subject, oldest first."""
        ...

    async def revoke_session(self, session_id: str) -> bool:
        """End one session; True if it was live."""
        ...

    async def revoke_all_sessions(self, subject: str) -> int:
        """End every session of a subject; returns how many were live."""
        ...

    # rate limits ------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Count one hit in the fixed window containing now; allowed iff count <= limit."""
        ...

    # admin ------------------------------------------------------------------------------
    async def health(self) -> Health:
        """Probe the store; report latency and durability settings. Never raises."""
        ...

    async def stats(self) -> dict[str, int]:
        """Live record counts per kind (clients, codes, access_tokens, ...)."""
        ...

    async def purge_expired(self) -> int:
        """Remove expired records (where the store does not do it); returns how many."""
        ...

    async def drop_namespace(self) -> None:
        """Remove every record of this namespace and nothing else."""
        ...

    async def dump_raw(self) -> str:
        """Everything this namespace holds, as the store keeps it, for leak checks."""
        ...
