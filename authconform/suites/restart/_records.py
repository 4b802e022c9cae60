"""Every kind of record, written before a restart and checked after it.

:func:`write_all` stores one record of each kind and changes the state of some (a code
and a state consumed, a refresh token rotated and another revoked, a wrong challenge
answer, a session revoked, two rate-limit hits). It returns a :class:`Written` (plain
JSON, so a subprocess can write and the test process check). :func:`verify_all` then
checks, through another backend instance, that every record is there with the same
expiry (remaining TTL, not reset, not lost) and every flag intact: a consumed code
never comes back unconsumed. :func:`verify_expiry` lets the time run out and checks
the records die when they should, in the store too (Redis: the keys' PTTL).

Problems are sentences; the checks fail with them (self-tests match their wording).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from authconform.contract import (
    AccessTokenRecord,
    AttemptStatus,
    ChallengeRecord,
    CodeRecord,
    ConsumeStatus,
    RefreshTokenRecord,
    ResetTokenRecord,
    RotateStatus,
    SessionRecord,
    StateRecord,
    StorageBackend,
)

__all__ = ["Written", "verify_all", "verify_expiry", "write_all"]

RATE_LIMIT = 3
RATE_WINDOW = 3600.0
MAX_ATTEMPTS = 3


def _uid() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class Written:
    """What :func:`write_all` stored (secrets included: never print one)."""

    ttl: float
    client_id: str = field(default_factory=_uid)
    client_secret: str = field(default_factory=_uid)
    code_live: str = field(default_factory=_uid)
    code_used: str = field(default_factory=_uid)
    access_live: str = field(default_factory=_uid)
    access_revoked: str = field(default_factory=_uid)
    refresh_rotated: str = field(default_factory=_uid)
    refresh_new: str = field(default_factory=_uid)
    refresh_revoked: str = field(default_factory=_uid)
    state_live: str = field(default_factory=_uid)
    state_used: str = field(default_factory=_uid)
    reset_live: str = field(default_factory=_uid)
    reset_used: str = field(default_factory=_uid)
    challenge_id: str = field(default_factory=_uid)
    challenge_answer: str = field(default_factory=_uid)
    session_live: str = field(default_factory=_uid)
    session_revoked: str = field(default_factory=_uid)
    subject: str = field(default_factory=lambda: "u-" + _uid())
    rate_key: str = field(default_factory=_uid)
    rate_reset_at: float = 0.0
    expires: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """For a subprocess."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Written:
        """Back from :meth:`to_json`."""
        return cls(**json.loads(text))


async def write_all(b: StorageBackend, ttl: float, w: Written | None = None) -> Written:
    """Store one record of each kind and use some of them (see the module docstring)."""
    w = w or Written(ttl=ttl)
    grant, grant_revoked = "g-" + _uid(), "g-" + _uid()
    await b.create_client(w.client_id, {"client_name": "restart"}, secret=w.client_secret)
    code = CodeRecord(client_id=w.client_id, subject=w.subject, grant_id=grant)
    w.expires["code"] = (await b.put_code(w.code_live, code, ttl)).expires_at
    await b.put_code(w.code_used, code, ttl)
    consumed = await b.consume_code(w.code_used)
    assert consumed.status is ConsumeStatus.CONSUMED, f"consume before the restart: {consumed}"
    access = AccessTokenRecord(w.client_id, w.subject, grant)
    w.expires["access token"] = (
        await b.put_access_token(w.access_live, access, ttl)
    ).expires_at
    await b.put_access_token(w.access_revoked, access, ttl)
    assert await b.revoke_access_token(w.access_revoked)
    refresh = RefreshTokenRecord(w.client_id, w.subject, grant)
    w.expires["refresh token"] = (
        await b.put_refresh_token(w.refresh_rotated, refresh, ttl)
    ).expires_at
    rotated = await b.rotate_refresh_token(w.refresh_rotated, w.refresh_new, ttl)
    assert rotated.status is RotateStatus.ROTATED, f"rotation before the restart: {rotated}"
    other = RefreshTokenRecord(w.client_id, w.subject, grant_revoked)
    await b.put_refresh_token(w.refresh_revoked, other, ttl)
    assert await b.revoke_refresh_token(w.refresh_revoked)
    state = StateRecord(client_id=w.client_id)
    w.expires["state"] = (await b.put_state(w.state_live, state, ttl)).expires_at
    await b.put_state(w.state_used, state, ttl)
    assert (await b.consume_state(w.state_used)).status is ConsumeStatus.CONSUMED
    reset = ResetTokenRecord(w.subject)
    w.expires["reset token"] = (await b.put_reset_token(w.reset_live, reset, ttl)).expires_at
    await b.put_reset_token(w.reset_used, reset, ttl)
    assert (await b.consume_reset_token(w.reset_used)).status is ConsumeStatus.CONSUMED
    challenge = ChallengeRecord(w.subject, max_attempts=MAX_ATTEMPTS)
    w.expires["challenge"] = (
        await b.put_challenge(w.challenge_id, w.challenge_answer, challenge, ttl)
    ).expires_at
    first = await b.attempt_challenge(w.challenge_id, "wrong-" + _uid())
    assert first.status is AttemptStatus.WRONG, f"wrong answer before the restart: {first}"
    session = SessionRecord(w.subject)
    w.expires["session"] = (
        await b.create_session(w.session_live, session, ttl, ttl)
    ).expires_at
    await b.create_session(w.session_revoked, session, ttl, ttl)
    assert await b.revoke_session(w.session_revoked)
    for _ in range(2):
        hit = await b.hit(w.rate_key, RATE_LIMIT, RATE_WINDOW)
    w.rate_reset_at = hit.reset_at
    return w


def _same_expiry(label: str, before: float, after: float, tolerance: float) -> str | None:
    if abs(after - before) <= tolerance:
        return None
    how = "reset (extended)" if after > before else "shortened"
    return (
        f"the {label}'s expiry changed across the restart: {after - before:+.3f} s "
        f"(TTL {how}; the remaining time must survive)"
    )


async def verify_all(
    b: StorageBackend, w: Written, *, tolerance: float = 0.01, now: float | None = None
) -> list[str]:
    """Every record and flag of ``w`` as it was before the restart; the problems found."""
    problems: list[str] = []

    def lost(label: str) -> None:
        problems.append(f"the {label} written before the restart is gone after it")

    # reads first: they change nothing
    client = await b.get_client(w.client_id)
    if client is None:
        lost("client registration")
    elif not await b.verify_client_secret(w.client_id, w.client_secret):
        problems.append("the client's secret no longer verifies after the restart")
    code = await b.get_code(w.code_live)
    if code is None:
        lost("authorization code")
    else:
        if code.consumed:
            problems.append("an unused authorization code is marked consumed after the restart")
        if (p := _same_expiry("code", w.expires["code"], code.expires_at, tolerance)) is not None:
            problems.append(p)
    used = await b.get_code(w.code_used)
    if used is not None and not used.consumed:
        problems.append(
            "a code consumed before the restart came back unconsumed (replay reopened)"
        )
    access = await b.get_access_token(w.access_live)
    if access is None:
        lost("access token")
    elif (p := _same_expiry("access token", w.expires["access token"], access.expires_at,
                            tolerance)) is not None:
        problems.append(p)
    if await b.get_access_token(w.access_revoked) is not None:
        problems.append("an access token revoked before the restart is valid again after it")
    old = await b.get_refresh_token(w.refresh_rotated)
    if old is None:
        lost("rotated refresh token")
    else:
        if not old.rotated:
            problems.append("a refresh token rotated before the restart lost its rotated flag")
        if (p := _same_expiry("refresh token", w.expires["refresh token"], old.expires_at,
                              tolerance)) is not None:
            problems.append(p)
    if await b.get_refresh_token(w.refresh_new) is None:
        lost("refresh token issued by the rotation")
    revoked = await b.get_refresh_token(w.refresh_revoked)
    if revoked is not None and not revoked.revoked:
        problems.append("a refresh token revoked before the restart lost its revoked flag")
    session = await b.get_session(w.session_live)
    if session is None:
        lost("session")
    elif (p := _same_expiry("session", w.expires["session"], session.expires_at,
                            tolerance)) is not None:
        problems.append(p)
    if await b.get_session(w.session_revoked) is not None:
        problems.append("a session revoked before the restart is live again after it")

    # then the state-changing checks
    replay = await b.consume_code(w.code_used)
    if replay.status is not ConsumeStatus.ALREADY_USED:
        problems.append(
            "a code consumed before the restart was consumed again after it "
            f"({replay.status.name}; expected ALREADY_USED): replay reopened"
        )
    first = await b.consume_code(w.code_live)
    if code is not None and first.status is not ConsumeStatus.CONSUMED:
        problems.append(
            f"an unused code could not be consumed after the restart: {first.status.name}"
        )
    reuse = await b.rotate_refresh_token(w.refresh_rotated, _uid(), w.ttl)
    if reuse.status not in (RotateStatus.REUSED, RotateStatus.REVOKED):
        problems.append(
            "reuse of a refresh token rotated before the restart was not detected "
            f"({reuse.status.name}; expected REUSED)"
        )
    again = await b.rotate_refresh_token(w.refresh_revoked, _uid(), w.ttl)
    if again.status is not RotateStatus.REVOKED:
        problems.append(
            f"a refresh token revoked before the restart rotates after it ({again.status.name})"
        )
    state = await b.consume_state(w.state_used)
    if state.status is not ConsumeStatus.ALREADY_USED:
        problems.append(
            f"a state consumed before the restart was consumed again ({state.status.name})"
        )
    if (await b.consume_state(w.state_live)).status is not ConsumeStatus.CONSUMED:
        lost("pending state")
    reset = await b.consume_reset_token(w.reset_used)
    if reset.status is not ConsumeStatus.ALREADY_USED:
        problems.append(
            f"a reset token consumed before the restart was consumed again ({reset.status.name})"
        )
    if (await b.consume_reset_token(w.reset_live)).status is not ConsumeStatus.CONSUMED:
        lost("reset token")
    attempt = await b.attempt_challenge(w.challenge_id, "wrong-" + _uid())
    if attempt.status is AttemptStatus.NOT_FOUND:
        lost("challenge")
    elif attempt.status is AttemptStatus.WRONG and attempt.attempts_left != MAX_ATTEMPTS - 2:
        problems.append(
            f"the challenge's attempt counter was reset by the restart ({attempt.attempts_left} "
            f"attempts left after the second wrong answer; expected {MAX_ATTEMPTS - 2})"
        )
    hit = await b.hit(w.rate_key, RATE_LIMIT, RATE_WINDOW)
    current = time.time() if now is None else now
    if current < w.rate_reset_at and hit.count != 3:
        problems.append(
            f"the rate-limit window was reset by the restart (count {hit.count} after "
            "2 hits before it and 1 after; expected 3)"
        )
    return problems


async def verify_expiry(
    b: StorageBackend, w: Written, advance: Any, *, raw_redis: bool = False,
    retention: float = 3600.0,
) -> list[str]:
    """After the restart, let every TTL run out (``await advance(seconds)``): all gone.

    ``raw_redis``: also check each key's PTTL in the store against its logical expiry
    (physical expiry consistent: set, and not past the logical expiry plus retention).
    """
    problems: list[str] = []
    if raw_redis:
        problems += await _redis_pttl(b, retention)
    latest = max(w.expires.values())
    await advance(max(0.0, latest - time.time()) + 0.3 if raw_redis else w.ttl + 1.0)
    if await b.get_access_token(w.access_live) is not None:
        problems.append("the access token outlived its expiry after the restart")
    if await b.get_session(w.session_live) is not None:
        problems.append("the session outlived its expiry after the restart")
    new = await b.get_refresh_token(w.refresh_new)
    if new is not None:
        problems.append("the refresh token outlived its expiry after the restart")
    if await b.purge_expired() == 0 and w.ttl > 0:
        problems.append(
            "purge_expired() found no expired record after the restart: the store's own "
            "expiry of the records no longer matches their logical expiry"
        )
    return problems


async def _redis_pttl(b: StorageBackend, retention: float) -> list[str]:
    problems: list[str] = []
    dump = json.loads(await b.dump_raw())
    now = time.time()
    for key, entry in dump.items():
        value = entry.get("value")
        if entry.get("type") != "hash" or not isinstance(value, dict) or "e" not in value:
            continue
        pttl = int(entry.get("pttl_ms", -2))
        if pttl == -1:
            problems.append(f"a record key lost its physical TTL across the restart ({key[:40]}…)")
            continue
        logical = float(value["e"]) - now
        if pttl / 1000 > logical + retention + 2.0:
            problems.append(
                f"a record key outlives its logical expiry by {pttl / 1000 - logical:.0f} s "
                "(physical TTL reset by the restart)"
            )
    return problems
