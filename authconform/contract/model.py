"""The executable definition of the storage contract: a small sequential model.

``ContractModel`` is what docs/contract.md says, in code. It keeps every capability in
plain dicts keyed by the raw ids (exact code points: no case folding, no normalisation,
no prefix or pattern matching), with its own clock ``now``. ``apply`` runs one operation
named like the ``StorageBackend`` method, with the same arguments, and returns what a
correct backend returns (the same record and result types) or raises the same exception
(``Conflict``, ``InvalidArgument``).

Time. A record stored at ``t`` with TTL ``ttl`` is live in ``[t, t + ttl)``. After that
it is *expired and remembered* for ``expired_retention`` seconds (``math.inf``: until
``purge_expired``, as stores that compute expiry themselves do), then *forgotten*: every
operation treats it as never stored (as Redis does once a key's physical TTL ran out).

Checking a real backend. A backend's timestamps come from its store's clock, and a
concurrent operation takes effect at an unknown instant of its call window. ``step``
answers "which model states are possible after this operation, if it took effect
somewhere in ``[lo, hi]`` and answered ``observed``?"; ``same_result`` compares one answer
with another, timestamps within a tolerance. The Hypothesis state machines and the
linearizability checker (``authconform.race.linearizability``) are built on these two.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any, NamedTuple

from authconform.contract._protocol import StorageBackend
from authconform.contract._records import (
    AccessTokenRecord,
    AttemptResult,
    AttemptStatus,
    ChallengeRecord,
    ClientRecord,
    CodeRecord,
    ConsumeResult,
    ConsumeStatus,
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
    check_id,
    check_payload,
    check_positive_int,
    check_record,
    check_ttl,
    dumps_json,
    hash_secret,
    record_from_json_with,
    record_to_json,
    secret_matches,
)
from authconform.errors import Conflict, InvalidArgument

__all__ = [
    "MODEL_ERRORS",
    "TIMESTAMP_FIELDS",
    "UNCHECKED",
    "ContractModel",
    "same_result",
]


class _Unchecked:
    """The answer of an operation the model does not predict (health, dump_raw, close)."""

    _instance: _Unchecked | None = None

    def __new__(cls) -> _Unchecked:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Any = _Unchecked()

#: exceptions that are answers of the contract (anything else is a failure of the store)
MODEL_ERRORS: tuple[type[Exception], ...] = (Conflict, InvalidArgument)

#: record and result fields that hold an instant of the store's clock
TIMESTAMP_FIELDS = frozenset(
    {"expires_at", "created_at", "updated_at", "max_expires_at", "reset_at"}
)

_LIVE, _EXPIRED, _GONE = 0, 1, 2

Hashable = Any  # a hashable value


# entries: immutable and hashable, so copies are cheap and fingerprints exact ----------------
class _Client(NamedTuple):
    metadata: str  # JSON text of the metadata dict
    secret_hash: str | None
    created_at: float
    updated_at: float


class _Once(NamedTuple):  # codes, states, reset tokens
    text: str
    expires_at: float
    consumed: bool
    client_id: str | None


class _Access(NamedTuple):
    text: str
    expires_at: float
    grant_id: str
    client_id: str


class _Refresh(NamedTuple):
    text: str
    expires_at: float
    grant_id: str
    client_id: str
    rotated: bool
    revoked: bool
    in_grant: bool  # still in the grant's index (a revoke_grant takes every token out)


class _Challenge(NamedTuple):
    text: str
    expires_at: float
    answer: str
    attempts: int
    max_attempts: int


class _Session(NamedTuple):
    text: str
    expires_at: float
    subject: str
    created_at: float
    max_expires_at: float


_ONCE_KINDS = {"codes": CodeRecord, "states": StateRecord, "reset_tokens": ResetTokenRecord}

_SIGNATURES: dict[str, inspect.Signature] = {}


def _signature(op: str) -> inspect.Signature:
    sig = _SIGNATURES.get(op)
    if sig is None:
        method = getattr(StorageBackend, op, None)
        if method is None or op.startswith("_"):
            raise ValueError(f"unknown StorageBackend operation {op!r}")
        sig = _SIGNATURES[op] = inspect.signature(method)
    return sig


def _text(record: Any, **managed: Any) -> str:
    """The record as JSON text with the fields the store manages reset to ``managed``."""
    return record_to_json(replace(record, **managed))


class ContractModel:
    """The storage contract as a sequential model with its own clock.

    ``now`` is the model's time (settable); ``expired_retention`` how long an expired
    record is remembered (``math.inf``: until ``purge_expired``).
    """

    __slots__ = ("_last", "_t", "expired_retention", "now")

    def __init__(self, *, now: float = 0.0, expired_retention: float = math.inf) -> None:
        """An empty namespace at time ``now``."""
        if not expired_retention >= 0:
            raise ValueError("expired_retention must be >= 0")
        self.now = float(now)
        self.expired_retention = float(expired_retention)
        self._t: dict[str, dict[Any, Any]] = {kind: {} for kind in KINDS}
        self._last: tuple[str, Any] | None = None  # the entry the last operation wrote

    # copies and fingerprints -------------------------------------------------------------
    def copy(self) -> ContractModel:
        """An independent copy (entries are immutable, so this copies dicts only)."""
        other = ContractModel.__new__(ContractModel)
        other.now = self.now
        other.expired_retention = self.expired_retention
        other._t = {kind: dict(table) for kind, table in self._t.items()}
        other._last = None
        return other

    def fingerprint(self) -> Hashable:
        """A hashable summary of the stored state (not of ``now``): equal iff states are."""
        self._forget()
        return tuple(frozenset(self._t[kind].items()) for kind in KINDS)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._t.items() if v)
        return f"ContractModel(now={self.now!r}, {sizes or 'empty'})"

    # running operations ----------------------------------------------------------------
    def apply(
        self,
        op: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Any:
        """Run ``op`` (a ``StorageBackend`` method name) at ``now`` (default: ``self.now``).

        Returns what a correct backend returns; raises ``Conflict`` or
        ``InvalidArgument`` where a correct backend raises them. Operations the model
        does not predict (``health``, ``dump_raw``, ``close``) return ``UNCHECKED``.
        """
        if now is not None:
            self.now = float(now)
        bound = _signature(op).bind(None, *args, **(kwargs or {}))
        bound.apply_defaults()
        params = dict(bound.arguments)
        params.pop("self", None)
        self._last = None
        handler: Callable[..., Any] = getattr(self, "_op_" + op)
        return handler(**params)

    def run(
        self,
        op: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Any:
        """Like ``apply``, but a contract exception is returned instead of raised."""
        try:
            return self.apply(op, args, kwargs, now=now)
        except MODEL_ERRORS as exc:
            return exc

    def step(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        observed: Any,
        *,
        lo: float,
        hi: float,
        tolerance: float = 0.0,
        skew: float = 0.0,
    ) -> list[ContractModel]:
        """Every model state possible after ``op`` answered ``observed``.

        The operation took effect at one instant of ``[lo - skew, hi + skew]`` not
        before ``self.now`` (``skew``: how far the store's clock may be off the
        callers'). The instants tried are the window's start and every instant inside
        it where the state changes (an expiry, the end of a retention, a rate-limit
        window boundary). A timestamp the backend reports (``expires_at``,
        ``created_at``, ...) may be later than the model's for that instant by up to the
        rest of the window plus ``tolerance`` (rounding up to the store's precision),
        never earlier by more than ``skew``; the returned models keep the backend's
        timestamps. An empty list: no instant explains the answer. ``self`` is not
        changed.
        """
        start = max(lo - skew, self.now)
        stop = hi + skew
        if start > stop:
            return []
        found: dict[Hashable, ContractModel] = {}
        instants = {start}
        instants.update(self._boundaries(op, args, kwargs, start, stop))
        for t in sorted(instants):
            model = self.copy()
            result = model.run(op, args, kwargs, now=t)
            if not _match(result, observed, below=skew, above=stop - t + tolerance):
                continue
            model._adopt(op, result, observed)
            key = model.fingerprint()
            best = found.get(key)
            if best is None or model.now < best.now:
                found[key] = model
        return list(found.values())

    def _boundaries(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        start: float,
        stop: float,
    ) -> Iterable[float]:
        r = self.expired_retention
        for kind in KINDS:
            if kind == "clients":
                continue
            for key, entry in self._t[kind].items():
                e = key[2] + key[1] if kind == "rate_limits" else entry.expires_at
                if start < e <= stop:
                    yield e
                if math.isfinite(r) and start < e + r <= stop:
                    yield e + r
        if op == "hit":
            try:
                params = _signature(op).bind(None, *args, **(kwargs or {})).arguments
                window = float(params["window"])
            except (TypeError, ValueError, KeyError):
                return
            if window > 0 and math.isfinite(window):
                k = math.floor(start / window) + 1
                for _ in range(16):  # a window narrower than the call: enough boundaries
                    b = k * window
                    if b > stop:
                        break
                    yield b
                    k += 1

    # time helpers ----------------------------------------------------------------------
    def _status(self, expires_at: float) -> int:
        if self.now < expires_at:
            return _LIVE
        if self.now < expires_at + self.expired_retention:
            return _EXPIRED
        return _GONE

    def _forget(self) -> None:
        """Drop forgotten entries (they are invisible anyway) so fingerprints compare."""
        if math.isinf(self.expired_retention):
            return
        for kind in KINDS:
            if kind in ("clients", "rate_limits"):
                continue
            table = self._t[kind]
            gone = [k for k, e in table.items() if self._status(e.expires_at) == _GONE]
            for k in gone:
                del table[k]

    def _find(self, kind: str, key: str) -> tuple[Any, int]:
        """The entry and its status; a forgotten entry is dropped and reads as missing."""
        entry = self._t[kind].get(key)
        if entry is None:
            return None, _GONE
        status = self._status(entry.expires_at)
        if status == _GONE:
            del self._t[kind][key]
            return None, _GONE
        return entry, status

    def _live(self, kind: str, key: str) -> Any:
        entry, status = self._find(kind, key)
        return entry if status == _LIVE else None

    def _insert(self, kind: str, key: str, entry: Any, what: str) -> None:
        if self._find(kind, key)[0] is not None:
            raise Conflict(f"{what} already exists")
        self._t[kind][key] = entry
        self._last = (kind, key)

    def _adopt(self, op: str, result: Any, observed: Any) -> None:
        """Keep the backend's timestamps for the entry the last operation wrote."""
        if self._last is None or isinstance(observed, BaseException):
            return
        kind, key = self._last
        entry = self._t[kind].get(key)
        record = observed.record if isinstance(observed, RotateResult) else observed
        if entry is None or record is None or not is_dataclass(record):
            return
        changes = {
            name: float(getattr(record, name))
            for name in ("expires_at", "created_at", "updated_at", "max_expires_at")
            if name in entry._fields and isinstance(getattr(record, name, None), int | float)
        }
        self._t[kind][key] = entry._replace(**changes)

    # clients ---------------------------------------------------------------------------
    @staticmethod
    def _client(client_id: str, c: _Client) -> ClientRecord:
        return ClientRecord(
            client_id, json.loads(c.metadata), c.secret_hash, c.created_at, c.updated_at
        )

    def _op_create_client(
        self, client_id: str, metadata: Mapping[str, Any], secret: str | None = None
    ) -> ClientRecord:
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        if client_id in self._t["clients"]:
            raise Conflict(f"client {client_id!r} already exists")
        entry = _Client(
            dumps_json(dict(metadata), "metadata"),
            hash_secret(secret) if secret is not None else None,
            self.now,
            self.now,
        )
        self._t["clients"][client_id] = entry
        self._last = ("clients", client_id)
        return self._client(client_id, entry)

    def _op_get_client(self, client_id: str) -> ClientRecord | None:
        check_id(client_id, "client_id")
        entry = self._t["clients"].get(client_id)
        return None if entry is None else self._client(client_id, entry)

    def _op_update_client(
        self, client_id: str, metadata: Mapping[str, Any], secret: str | None = None
    ) -> ClientRecord | None:
        check_id(client_id, "client_id")
        check_payload(metadata, "metadata")
        if secret is not None:
            check_id(secret, "secret")
        entry = self._t["clients"].get(client_id)
        if entry is None:
            return None
        old = self._client(client_id, entry)
        merged = {**old.metadata, **metadata}
        check_payload(merged, "metadata")
        entry = _Client(
            dumps_json(merged, "metadata"),
            hash_secret(secret) if secret is not None else entry.secret_hash,
            entry.created_at,
            self.now,
        )
        self._t["clients"][client_id] = entry
        self._last = ("clients", client_id)
        return self._client(client_id, entry)

    def _op_delete_client(self, client_id: str) -> bool:
        """Delete the client and revoke what was issued to it (docs: Client deletion)."""
        check_id(client_id, "client_id")
        existed = self._t["clients"].pop(client_id, None) is not None
        for kind in ("codes", "states", "access_tokens"):
            table = self._t[kind]
            for key in [k for k, e in table.items() if e.client_id == client_id]:
                del table[key]
        refresh = self._t["refresh_tokens"]
        for key, entry in list(refresh.items()):
            if entry.client_id == client_id and not entry.revoked:
                refresh[key] = entry._replace(revoked=True)
        return existed

    def _op_list_clients(self) -> list[ClientRecord]:
        return [self._client(k, self._t["clients"][k]) for k in sorted(self._t["clients"])]

    def _op_verify_client_secret(self, client_id: str, secret: str) -> bool:
        check_id(client_id, "client_id")
        check_id(secret, "secret")
        entry = self._t["clients"].get(client_id)
        return entry is not None and secret_matches(secret, entry.secret_hash)

    # codes, states, reset tokens ---------------------------------------------------------
    def _put_once(self, kind: str, key: str, record: Any, ttl: float, what: str) -> Any:
        cls = _ONCE_KINDS[kind]
        check_id(key, what)
        check_record(record, cls)
        ttl = check_ttl(ttl)
        expires = self.now + ttl
        text = _text(record, expires_at=0.0, consumed=False)
        client_id = getattr(record, "client_id", None)
        self._insert(kind, key, _Once(text, expires, consumed=False, client_id=client_id), what)
        return record_from_json_with(cls, text, expires_at=expires, consumed=False)

    def _consume(self, kind: str, key: str) -> ConsumeResult[Any]:
        cls = _ONCE_KINDS[kind]
        check_id(key, "value")
        entry, status = self._find(kind, key)
        if entry is None:
            return ConsumeResult(ConsumeStatus.NOT_FOUND)
        if status != _LIVE:
            return ConsumeResult(ConsumeStatus.EXPIRED)
        record: Any = record_from_json_with(
            cls, entry.text, expires_at=entry.expires_at, consumed=True
        )
        if entry.consumed:
            return ConsumeResult(ConsumeStatus.ALREADY_USED, record)
        self._t[kind][key] = entry._replace(consumed=True)
        return ConsumeResult(ConsumeStatus.CONSUMED, record)

    def _op_put_code(self, code: str, record: CodeRecord, ttl: float) -> CodeRecord:
        return self._put_once("codes", code, record, ttl, "code")  # type: ignore[no-any-return]

    def _op_get_code(self, code: str) -> CodeRecord | None:
        check_id(code, "code")
        entry = self._live("codes", code)
        if entry is None:
            return None
        return record_from_json_with(
            CodeRecord, entry.text, expires_at=entry.expires_at, consumed=entry.consumed
        )

    def _op_consume_code(self, code: str) -> ConsumeResult[CodeRecord]:
        return self._consume("codes", code)

    def _op_put_state(self, state: str, record: StateRecord, ttl: float) -> StateRecord:
        return self._put_once("states", state, record, ttl, "state")  # type: ignore[no-any-return]

    def _op_consume_state(self, state: str) -> ConsumeResult[StateRecord]:
        return self._consume("states", state)

    def _op_put_reset_token(
        self, token: str, record: ResetTokenRecord, ttl: float
    ) -> ResetTokenRecord:
        return self._put_once("reset_tokens", token, record, ttl, "token")  # type: ignore[no-any-return]

    def _op_consume_reset_token(self, token: str) -> ConsumeResult[ResetTokenRecord]:
        return self._consume("reset_tokens", token)

    # access tokens -----------------------------------------------------------------------
    def _op_put_access_token(
        self, token: str, record: AccessTokenRecord, ttl: float
    ) -> AccessTokenRecord:
        check_id(token, "token")
        check_record(record, AccessTokenRecord)
        ttl = check_ttl(ttl)
        expires = self.now + ttl
        text = _text(record, expires_at=0.0)
        entry = _Access(text, expires, record.grant_id, record.client_id)
        self._insert("access_tokens", token, entry, "access token")
        return record_from_json_with(AccessTokenRecord, text, expires_at=expires)

    def _op_get_access_token(self, token: str) -> AccessTokenRecord | None:
        check_id(token, "token")
        entry = self._live("access_tokens", token)
        if entry is None:
            return None
        return record_from_json_with(AccessTokenRecord, entry.text, expires_at=entry.expires_at)

    def _op_revoke_access_token(self, token: str) -> bool:
        check_id(token, "token")
        entry, status = self._find("access_tokens", token)
        if entry is None:
            return False
        del self._t["access_tokens"][token]
        return status == _LIVE

    def _revoke_grant(self, grant_id: str) -> int:
        count = 0
        access = self._t["access_tokens"]
        for key in [k for k, e in access.items() if e.grant_id == grant_id]:
            entry, status = self._find("access_tokens", key)
            if entry is not None:
                count += status == _LIVE
                del access[key]
        refresh = self._t["refresh_tokens"]
        for key in [k for k, e in refresh.items() if e.grant_id == grant_id and e.in_grant]:
            entry, status = self._find("refresh_tokens", key)
            if entry is None:
                continue
            if status != _LIVE:
                del refresh[key]
                continue
            count += not entry.revoked
            refresh[key] = entry._replace(revoked=True, in_grant=False)
        return count

    def _op_revoke_grant(self, grant_id: str) -> int:
        check_id(grant_id, "grant_id")
        return self._revoke_grant(grant_id)

    # refresh tokens ----------------------------------------------------------------------
    @staticmethod
    def _refresh(entry: _Refresh) -> RefreshTokenRecord:
        return record_from_json_with(
            RefreshTokenRecord,
            entry.text,
            expires_at=entry.expires_at,
            rotated=entry.rotated,
            revoked=entry.revoked,
        )

    def _op_put_refresh_token(
        self, token: str, record: RefreshTokenRecord, ttl: float
    ) -> RefreshTokenRecord:
        check_id(token, "token")
        check_record(record, RefreshTokenRecord)
        ttl = check_ttl(ttl)
        text = _text(record, expires_at=0.0, rotated=False, revoked=False)
        entry = _Refresh(
            text,
            self.now + ttl,
            record.grant_id,
            record.client_id,
            rotated=False,
            revoked=False,
            in_grant=True,
        )
        self._insert("refresh_tokens", token, entry, "refresh token")
        return self._refresh(entry)

    def _op_get_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        check_id(token, "token")
        entry = self._live("refresh_tokens", token)
        return None if entry is None else self._refresh(entry)

    def _op_rotate_refresh_token(self, old: str, new: str, ttl: float) -> RotateResult:
        check_id(old, "old token")
        check_id(new, "new token")
        ttl = check_ttl(ttl)
        if old == new:
            raise InvalidArgument("the new refresh token must differ from the old one")
        entry, status = self._find("refresh_tokens", old)
        if entry is None:
            return RotateResult(RotateStatus.NOT_FOUND)
        if status != _LIVE:
            return RotateResult(RotateStatus.EXPIRED)
        if entry.revoked:
            return RotateResult(RotateStatus.REVOKED, self._refresh(entry))
        if entry.rotated:
            self._revoke_grant(entry.grant_id)
            return RotateResult(RotateStatus.REUSED, self._refresh(self._t["refresh_tokens"][old]))
        if self._find("refresh_tokens", new)[0] is not None:
            raise Conflict("the new refresh token already exists")
        self._t["refresh_tokens"][old] = entry._replace(rotated=True)
        successor = _Refresh(
            entry.text,
            self.now + ttl,
            entry.grant_id,
            entry.client_id,
            rotated=False,
            revoked=False,
            in_grant=True,
        )
        self._t["refresh_tokens"][new] = successor
        self._last = ("refresh_tokens", new)
        return RotateResult(RotateStatus.ROTATED, self._refresh(successor))

    def _op_revoke_refresh_token(self, token: str) -> bool:
        check_id(token, "token")
        entry = self._live("refresh_tokens", token)
        if entry is None or entry.revoked:
            return False
        self._t["refresh_tokens"][token] = entry._replace(revoked=True)
        return True

    # challenges --------------------------------------------------------------------------
    def _op_put_challenge(
        self, challenge_id: str, answer: str, record: ChallengeRecord, ttl: float
    ) -> ChallengeRecord:
        check_id(challenge_id, "challenge_id")
        check_id(answer, "answer")
        check_record(record, ChallengeRecord)
        ttl = check_ttl(ttl)
        text = _text(record, expires_at=0.0, attempts=0)
        entry = _Challenge(text, self.now + ttl, answer, 0, record.max_attempts)
        self._insert("challenges", challenge_id, entry, "challenge")
        return record_from_json_with(ChallengeRecord, text, expires_at=entry.expires_at, attempts=0)

    def _op_attempt_challenge(self, challenge_id: str, answer: str) -> AttemptResult:
        check_id(challenge_id, "challenge_id")
        check_id(answer, "answer")
        entry, status = self._find("challenges", challenge_id)
        if entry is None:
            return AttemptResult(AttemptStatus.NOT_FOUND)
        if status != _LIVE:
            return AttemptResult(AttemptStatus.EXPIRED)
        attempts = entry.attempts + 1
        left = entry.max_attempts - attempts
        record = record_from_json_with(
            ChallengeRecord, entry.text, expires_at=entry.expires_at, attempts=attempts
        )
        if answer == entry.answer:
            del self._t["challenges"][challenge_id]
            return AttemptResult(AttemptStatus.SUCCESS, left, record)
        if left <= 0:
            del self._t["challenges"][challenge_id]
            return AttemptResult(AttemptStatus.LOCKED, 0, record)
        self._t["challenges"][challenge_id] = entry._replace(attempts=attempts)
        return AttemptResult(AttemptStatus.WRONG, left, record)

    # sessions ----------------------------------------------------------------------------
    @staticmethod
    def _session(entry: _Session) -> SessionRecord:
        return record_from_json_with(
            SessionRecord,
            entry.text,
            expires_at=entry.expires_at,
            created_at=entry.created_at,
            max_expires_at=entry.max_expires_at,
        )

    def _op_create_session(
        self, session_id: str, record: SessionRecord, ttl: float, max_lifetime: float
    ) -> SessionRecord:
        check_id(session_id, "session_id")
        check_record(record, SessionRecord)
        ttl = check_ttl(ttl)
        max_lifetime = check_ttl(max_lifetime, "max_lifetime")
        if ttl > max_lifetime:
            raise InvalidArgument(f"ttl {ttl} exceeds max_lifetime {max_lifetime}")
        text = _text(
            record,
            handle=hash_secret(session_id),
            expires_at=0.0,
            created_at=0.0,
            max_expires_at=0.0,
        )
        entry = _Session(text, self.now + ttl, record.subject, self.now, self.now + max_lifetime)
        self._insert("sessions", session_id, entry, "session")
        return self._session(entry)

    def _op_get_session(self, session_id: str) -> SessionRecord | None:
        check_id(session_id, "session_id")
        entry = self._live("sessions", session_id)
        return None if entry is None else self._session(entry)

    def _op_touch_session(self, session_id: str, ttl: float) -> SessionRecord | None:
        check_id(session_id, "session_id")
        ttl = check_ttl(ttl)
        entry = self._live("sessions", session_id)
        if entry is None:
            return None
        expires = max(entry.expires_at, min(self.now + ttl, entry.max_expires_at))
        entry = entry._replace(expires_at=expires)
        self._t["sessions"][session_id] = entry
        self._last = ("sessions", session_id)
        return self._session(entry)

    def _op_list_sessions(self, subject: str) -> list[SessionRecord]:
        check_id(subject, "subject")
        records = [
            self._session(e)
            for k, e in list(self._t["sessions"].items())
            if e.subject == subject and self._live("sessions", k) is not None
        ]
        return sorted(records, key=lambda r: (r.created_at, r.handle))

    def _op_revoke_session(self, session_id: str) -> bool:
        check_id(session_id, "session_id")
        entry, status = self._find("sessions", session_id)
        if entry is None:
            return False
        del self._t["sessions"][session_id]
        return status == _LIVE

    def _op_revoke_all_sessions(self, subject: str) -> int:
        check_id(subject, "subject")
        count = 0
        table = self._t["sessions"]
        for key in [k for k, e in table.items() if e.subject == subject]:
            entry, status = self._find("sessions", key)
            if entry is not None:
                count += status == _LIVE
                del table[key]
        return count

    # rate limits -------------------------------------------------------------------------
    def _op_hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        check_id(key, "key")
        check_positive_int(limit, "limit")
        window = check_ttl(window, "window")
        start = math.floor(self.now / window) * window
        slot = (key, window, start)
        count = self._t["rate_limits"].get(slot, 0) + 1
        self._t["rate_limits"][slot] = count
        return RateLimitResult(count <= limit, count, limit, start + window)

    # admin -------------------------------------------------------------------------------
    def _op_stats(self) -> dict[str, int]:
        out = {"clients": len(self._t["clients"])}
        for kind in KINDS[1:-1]:
            out[kind] = sum(1 for k in list(self._t[kind]) if self._live(kind, k) is not None)
        out["rate_limits"] = sum(
            1 for (_, window, start) in self._t["rate_limits"] if self.now < start + window
        )
        return {kind: out[kind] for kind in KINDS}

    def _op_purge_expired(self) -> int:
        count = 0
        for kind in KINDS[1:-1]:
            table = self._t[kind]
            for key in list(table):
                entry, status = self._find(kind, key)
                if entry is not None and status == _EXPIRED:
                    del table[key]
                    count += 1
        rate = self._t["rate_limits"]
        for slot in [s for s in rate if self.now >= s[2] + s[1]]:
            del rate[slot]  # removed, not counted (docs: Purge expired)
        return count

    def _op_drop_namespace(self) -> None:
        for table in self._t.values():
            table.clear()

    def _op_health(self) -> Any:
        return UNCHECKED

    def _op_dump_raw(self) -> Any:
        return UNCHECKED

    def _op_close(self) -> Any:
        return UNCHECKED


def _close(a: Any, b: Any, below: float, above: float) -> bool:
    """``b`` (observed) is ``a`` (model) or later by <= ``above``, earlier by <= ``below``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return bool(a == b)
    if a == b:
        return True
    return -below <= float(b) - float(a) <= above


def _match(model_result: Any, observed: Any, *, below: float, above: float) -> bool:
    if model_result is UNCHECKED:
        return not isinstance(observed, BaseException)
    if isinstance(model_result, BaseException) or isinstance(observed, BaseException):
        return (
            isinstance(model_result, BaseException)
            and isinstance(observed, BaseException)
            and type(model_result) is type(observed)
        )
    if is_dataclass(model_result) and not isinstance(model_result, type):
        if type(model_result) is not type(observed):
            return False
        for f in fields(model_result):
            a, b = getattr(model_result, f.name), getattr(observed, f.name)
            if f.name in TIMESTAMP_FIELDS:
                if not _close(a, b, below, above):
                    return False
            elif not _match(a, b, below=below, above=above):
                return False
        return True
    if isinstance(model_result, list | tuple):
        return (
            isinstance(observed, list | tuple)
            and type(model_result) is type(observed)
            and len(model_result) == len(observed)
            and all(
                _match(a, b, below=below, above=above)
                for a, b in zip(model_result, observed, strict=True)
            )
        )
    if isinstance(model_result, bool) or isinstance(observed, bool):
        return model_result is observed
    if isinstance(model_result, Mapping):
        return isinstance(observed, Mapping) and dict(model_result) == dict(observed)
    if model_result is None or observed is None:
        return model_result is observed
    return type(model_result) is type(observed) and bool(model_result == observed)


def same_result(model_result: Any, observed: Any, *, tolerance: float = 0.0) -> bool:
    """True if ``observed`` is the answer ``model_result`` predicts.

    Exceptions compare by type (``Conflict``, ``InvalidArgument``). Records and results
    compare field by field, exactly, except the timestamp fields (``TIMESTAMP_FIELDS``),
    which may differ by at most ``tolerance`` seconds: a backend's time is its store's.
    ``UNCHECKED`` (an answer the model does not predict) matches anything but an
    exception.
    """
    return _match(model_result, observed, below=tolerance, above=tolerance)
