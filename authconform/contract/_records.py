"""Typed, immutable records and operation results of the storage contract.

Records are what a caller hands to ``put_*`` and what ``get_*`` hands back. Fields a
backend fills in (``expires_at``, ``consumed``, ``rotated``, ...) are ignored on input.
``extra``/``metadata`` hold JSON values; a backend returns a fresh copy every time.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

JSON = Any  # a JSON value: None, bool, int, float (finite), str, list, dict[str, JSON]


def _empty() -> dict[str, JSON]:
    return {}


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A registered OAuth client (RFC 7591). Persists with no TTL.

    The secret is never stored or returned: only ``secret_hash`` (SHA-256, hex).
    """

    client_id: str
    metadata: Mapping[str, JSON] = field(default_factory=_empty)
    secret_hash: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """An authorization code's grant (RFC 6749 4.1.2), single use."""

    client_id: str
    subject: str
    grant_id: str
    redirect_uri: str = ""
    scopes: tuple[str, ...] = ()
    code_challenge: str = ""
    code_challenge_method: str = "S256"
    resource: str | None = None
    redirect_uri_provided_explicitly: bool = True
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0
    consumed: bool = False


@dataclass(frozen=True, slots=True)
class AccessTokenRecord:
    """An access token's grant; tied to ``grant_id`` for ``revoke_grant``."""

    client_id: str
    subject: str
    grant_id: str
    scopes: tuple[str, ...] = ()
    resource: str | None = None
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A refresh token. Its family is its grant: every rotation stays in ``grant_id``.

    A rotated or revoked token is kept (flagged) until its own expiry so that reuse is
    recognised (RFC 9700 4.14.2).
    """

    client_id: str
    subject: str
    grant_id: str
    scopes: tuple[str, ...] = ()
    resource: str | None = None
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0
    rotated: bool = False
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A pending authorization request keyed by its ``state`` value (10 min, single use)."""

    client_id: str
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0
    consumed: bool = False


@dataclass(frozen=True, slots=True)
class ResetTokenRecord:
    """A password-reset (or e-mail verification) token: single use, 15 min."""

    subject: str
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0
    consumed: bool = False


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """A second-factor challenge; the answer is stored hashed, never returned."""

    subject: str
    max_attempts: int = 3
    attempts: int = 0
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A login session. ``handle`` is the SHA-256 of the session id (safe to show)."""

    subject: str
    extra: Mapping[str, JSON] = field(default_factory=_empty)
    handle: str = ""
    created_at: float = 0.0
    expires_at: float = 0.0
    max_expires_at: float = 0.0


class ConsumeStatus(enum.Enum):
    """Outcome of a single-use ``consume``."""

    CONSUMED = "consumed"
    ALREADY_USED = "already_used"
    EXPIRED = "expired"
    NOT_FOUND = "not_found"


class RotateStatus(enum.Enum):
    """Outcome of a refresh-token rotation."""

    ROTATED = "rotated"
    REUSED = "reused"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_FOUND = "not_found"


class AttemptStatus(enum.Enum):
    """Outcome of one answer to a challenge."""

    SUCCESS = "success"
    WRONG = "wrong"
    LOCKED = "locked"
    EXPIRED = "expired"
    NOT_FOUND = "not_found"


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ConsumeResult(Generic[R]):
    """``record`` is set for CONSUMED and ALREADY_USED (so a server can revoke the grant)."""

    status: ConsumeStatus
    record: R | None = None


@dataclass(frozen=True, slots=True)
class RotateResult:
    """``record`` is the new token's record for ROTATED, the old one's otherwise (if known)."""

    status: RotateStatus
    record: RefreshTokenRecord | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """``attempts_left`` counts the answers still allowed after this one."""

    status: AttemptStatus
    attempts_left: int = 0
    record: ChallengeRecord | None = None


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """A fixed window aligned to its length: ``reset_at`` is the window's end."""

    allowed: bool
    count: int
    limit: int
    reset_at: float


@dataclass(frozen=True, slots=True)
class Health:
    """``durability`` names the store's persistence settings (e.g. appendfsync)."""

    ok: bool
    latency_ms: float
    durability: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""
