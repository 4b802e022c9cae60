"""Store outage: every operation fails closed with StorageUnavailable, health says not ok.

The backend comes from ``backend_factory(outage=True)``: the same backend with settings
under which its store cannot be reached (the factory's ``outage_settings``: a closed
port for redis and postgres, a database file that cannot be opened for sqlite).
Backends without a store that can be down (memory: no ``outage_settings``) skip as
not-applicable.
Every call is bounded by ``asyncio.wait_for`` so a hang fails instead of blocking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from authconform.contract import (
    AccessTokenRecord,
    Capability,
    ChallengeRecord,
    CodeRecord,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
    StorageUnavailable,
)
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import uid

C = Capability
Call = Callable[[Any], Awaitable[object]]
Factory = Callable[..., StorageBackend]
BOUND = 15.0  # seconds; retries with backoff must end well before this


def code() -> CodeRecord:
    return CodeRecord(client_id="c-x", subject="u-x", grant_id="g-x")


OPERATIONS: list[tuple[str, Capability, Call]] = [
    ("create_client", C.CLIENTS, lambda b: b.create_client(uid(), {}, secret=uid())),
    ("get_client", C.CLIENTS, lambda b: b.get_client(uid())),
    ("update_client", C.CLIENTS, lambda b: b.update_client(uid(), {"a": 1})),
    ("delete_client", C.CLIENTS, lambda b: b.delete_client(uid())),
    ("list_clients", C.CLIENTS, lambda b: b.list_clients()),
    ("verify_client_secret", C.CLIENTS, lambda b: b.verify_client_secret(uid(), uid())),
    ("put_code", C.CODES, lambda b: b.put_code(uid(), code(), 60.0)),
    ("get_code", C.CODES, lambda b: b.get_code(uid())),
    ("consume_code", C.CODES, lambda b: b.consume_code(uid())),
    (
        "put_access_token",
        C.TOKENS,
        lambda b: b.put_access_token(uid(), AccessTokenRecord("c", "u", "g"), 60.0),
    ),
    ("get_access_token", C.TOKENS, lambda b: b.get_access_token(uid())),
    ("revoke_access_token", C.TOKENS, lambda b: b.revoke_access_token(uid())),
    ("revoke_grant", C.TOKENS, lambda b: b.revoke_grant(uid())),
    (
        "put_refresh_token",
        C.REFRESH,
        lambda b: b.put_refresh_token(uid(), RefreshTokenRecord("c", "u", "g"), 60.0),
    ),
    ("get_refresh_token", C.REFRESH, lambda b: b.get_refresh_token(uid())),
    ("rotate_refresh_token", C.REFRESH, lambda b: b.rotate_refresh_token(uid(), uid(), 60.0)),
    ("revoke_refresh_token", C.REFRESH, lambda b: b.revoke_refresh_token(uid())),
    ("put_state", C.STATES, lambda b: b.put_state(uid(), StateRecord(client_id="c"), 60.0)),
    ("consume_state", C.STATES, lambda b: b.consume_state(uid())),
    (
        "put_challenge",
        C.CHALLENGES,
        lambda b: b.put_challenge(uid(), uid(), ChallengeRecord("u"), 60.0),
    ),
    ("attempt_challenge", C.CHALLENGES, lambda b: b.attempt_challenge(uid(), uid())),
    (
        "put_reset_token",
        C.RESET_TOKENS,
        lambda b: b.put_reset_token(uid(), ResetTokenRecord("u"), 60.0),
    ),
    ("consume_reset_token", C.RESET_TOKENS, lambda b: b.consume_reset_token(uid())),
    (
        "create_session",
        C.SESSIONS,
        lambda b: b.create_session(uid(), SessionRecord("u"), 60.0, 60.0),
    ),
    ("get_session", C.SESSIONS, lambda b: b.get_session(uid())),
    ("touch_session", C.SESSIONS, lambda b: b.touch_session(uid(), 60.0)),
    ("list_sessions", C.SESSIONS, lambda b: b.list_sessions("u-" + uid())),
    ("revoke_session", C.SESSIONS, lambda b: b.revoke_session(uid())),
    ("revoke_all_sessions", C.SESSIONS, lambda b: b.revoke_all_sessions("u-" + uid())),
    ("hit", C.RATE_LIMITS, lambda b: b.hit(uid(), 5, 60.0)),
    ("stats", C.ADMIN, lambda b: b.stats()),
    ("purge_expired", C.ADMIN, lambda b: b.purge_expired()),
    ("dump_raw", C.ADMIN, lambda b: b.dump_raw()),
    ("drop_namespace", C.ADMIN, lambda b: b.drop_namespace()),
]


@spec("CONTRACT-fail-closed", level="MUST")
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(call, id=name, marks=requires(capability))
        for name, capability, call in OPERATIONS
    ],
)
async def test_operation_fails_closed_when_the_store_is_down(
    backend_factory: Factory, call: Call
) -> None:
    """With the store down the operation raises StorageUnavailable; it never returns a result.

    A None, NOT_FOUND, False or [] from a dead store would read as "no such token" or
    "not revoked" and make a server take the wrong security decision.
    """
    down = backend_factory(outage=True)
    outcome: object = None
    try:
        outcome = await asyncio.wait_for(call(down), BOUND)
    except StorageUnavailable:
        return
    except TimeoutError:
        pytest.fail(f"the operation hung for {BOUND} s instead of raising StorageUnavailable")
    pytest.fail(f"returned {outcome!r} with the store down; expected StorageUnavailable")


@spec("CONTRACT-fail-closed", "CONTRACT-health-reports-durability", level="MUST")
@requires(Capability.ADMIN)
async def test_health_reports_not_ok_when_the_store_is_down(backend_factory: Factory) -> None:
    """health() with the store down returns ok=False with a detail, and does not raise."""
    down = backend_factory(outage=True)
    try:
        health = await asyncio.wait_for(down.health(), BOUND)
    except TimeoutError:
        pytest.fail(f"health() hung for {BOUND} s with the store down")
    assert health.ok is False
    assert health.detail, "health() should say what failed"
