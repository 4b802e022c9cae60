"""Invalid arguments: rejected with InvalidArgument before the store is touched.

Each table row is one operation called with one bad argument. The same rows run twice:
against the backend under test (``InvalidArgument``, nothing stored) and against the
same backend with its store down, where they must still raise ``InvalidArgument`` and
not ``StorageUnavailable``: proof that validation happens before any I/O.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from authconform.contract import (
    MAX_ID_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_TTL,
    AccessTokenRecord,
    Capability,
    ChallengeRecord,
    CodeRecord,
    InvalidArgument,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
)
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import uid

C = Capability
Call = Callable[[Any], Awaitable[object]]
Factory = Callable[..., StorageBackend]


def code(**kw: Any) -> CodeRecord:
    return CodeRecord(**{"client_id": "c-x", "subject": "u-x", "grant_id": "g-x", **kw})


def access(**kw: Any) -> AccessTokenRecord:
    return AccessTokenRecord(**{"client_id": "c-x", "subject": "u-x", "grant_id": "g-x", **kw})


def refresh(**kw: Any) -> RefreshTokenRecord:
    return RefreshTokenRecord(**{"client_id": "c-x", "subject": "u-x", "grant_id": "g-x", **kw})


def state(**kw: Any) -> StateRecord:
    return StateRecord(**{"client_id": "c-x", **kw})


def reset(**kw: Any) -> ResetTokenRecord:
    return ResetTokenRecord(**{"subject": "u-x", **kw})


def challenge(**kw: Any) -> ChallengeRecord:
    return ChallengeRecord(**{"subject": "u-x", **kw})


def session(**kw: Any) -> SessionRecord:
    return SessionRecord(**{"subject": "u-x", **kw})


Row = tuple[str, Capability, Call]


def id_rows(bad: Any) -> list[Row]:
    """Every operation with ``bad`` in one of its id arguments."""
    return [
        ("create_client", C.CLIENTS, lambda b: b.create_client(bad, {})),
        ("create_client-secret", C.CLIENTS, lambda b: b.create_client(uid(), {}, secret=bad)),
        ("get_client", C.CLIENTS, lambda b: b.get_client(bad)),
        ("update_client", C.CLIENTS, lambda b: b.update_client(bad, {})),
        ("update_client-secret", C.CLIENTS, lambda b: b.update_client(uid(), {}, secret=bad)),
        ("delete_client", C.CLIENTS, lambda b: b.delete_client(bad)),
        ("verify_client_secret-id", C.CLIENTS, lambda b: b.verify_client_secret(bad, "s")),
        ("verify_client_secret-secret", C.CLIENTS, lambda b: b.verify_client_secret("c", bad)),
        ("put_code", C.CODES, lambda b: b.put_code(bad, code(), 60.0)),
        ("get_code", C.CODES, lambda b: b.get_code(bad)),
        ("consume_code", C.CODES, lambda b: b.consume_code(bad)),
        ("put_access_token", C.TOKENS, lambda b: b.put_access_token(bad, access(), 60.0)),
        ("get_access_token", C.TOKENS, lambda b: b.get_access_token(bad)),
        ("revoke_access_token", C.TOKENS, lambda b: b.revoke_access_token(bad)),
        ("revoke_grant", C.TOKENS, lambda b: b.revoke_grant(bad)),
        ("put_refresh_token", C.REFRESH, lambda b: b.put_refresh_token(bad, refresh(), 60.0)),
        ("get_refresh_token", C.REFRESH, lambda b: b.get_refresh_token(bad)),
        ("rotate-old", C.REFRESH, lambda b: b.rotate_refresh_token(bad, uid(), 60.0)),
        ("rotate-new", C.REFRESH, lambda b: b.rotate_refresh_token(uid(), bad, 60.0)),
        ("revoke_refresh_token", C.REFRESH, lambda b: b.revoke_refresh_token(bad)),
        ("put_state", C.STATES, lambda b: b.put_state(bad, state(), 60.0)),
        ("consume_state", C.STATES, lambda b: b.consume_state(bad)),
        ("put_challenge-id", C.CHALLENGES, lambda b: b.put_challenge(bad, "a", challenge(), 60.0)),
        (
            "put_challenge-answer",
            C.CHALLENGES,
            lambda b: b.put_challenge(uid(), bad, challenge(), 60.0),
        ),
        ("attempt_challenge-id", C.CHALLENGES, lambda b: b.attempt_challenge(bad, "a")),
        ("attempt_challenge-answer", C.CHALLENGES, lambda b: b.attempt_challenge(uid(), bad)),
        ("put_reset_token", C.RESET_TOKENS, lambda b: b.put_reset_token(bad, reset(), 60.0)),
        ("consume_reset_token", C.RESET_TOKENS, lambda b: b.consume_reset_token(bad)),
        ("create_session", C.SESSIONS, lambda b: b.create_session(bad, session(), 60.0, 60.0)),
        ("get_session", C.SESSIONS, lambda b: b.get_session(bad)),
        ("touch_session", C.SESSIONS, lambda b: b.touch_session(bad, 60.0)),
        ("list_sessions", C.SESSIONS, lambda b: b.list_sessions(bad)),
        ("revoke_session", C.SESSIONS, lambda b: b.revoke_session(bad)),
        ("revoke_all_sessions", C.SESSIONS, lambda b: b.revoke_all_sessions(bad)),
        ("hit", C.RATE_LIMITS, lambda b: b.hit(bad, 5, 60.0)),
    ]


def record_id_rows(bad: Any) -> list[Row]:
    """Every put with ``bad`` in one of the record's id fields."""
    return [
        ("code-client_id", C.CODES, lambda b: b.put_code(uid(), code(client_id=bad), 60.0)),
        ("code-subject", C.CODES, lambda b: b.put_code(uid(), code(subject=bad), 60.0)),
        ("code-grant_id", C.CODES, lambda b: b.put_code(uid(), code(grant_id=bad), 60.0)),
        (
            "access-grant_id",
            C.TOKENS,
            lambda b: b.put_access_token(uid(), access(grant_id=bad), 60.0),
        ),
        (
            "refresh-grant_id",
            C.REFRESH,
            lambda b: b.put_refresh_token(uid(), refresh(grant_id=bad), 60.0),
        ),
        (
            "refresh-client_id",
            C.REFRESH,
            lambda b: b.put_refresh_token(uid(), refresh(client_id=bad), 60.0),
        ),
        ("state-client_id", C.STATES, lambda b: b.put_state(uid(), state(client_id=bad), 60.0)),
        (
            "challenge-subject",
            C.CHALLENGES,
            lambda b: b.put_challenge(uid(), "a", challenge(subject=bad), 60.0),
        ),
        (
            "reset-subject",
            C.RESET_TOKENS,
            lambda b: b.put_reset_token(uid(), reset(subject=bad), 60.0),
        ),
        (
            "session-subject",
            C.SESSIONS,
            lambda b: b.create_session(uid(), session(subject=bad), 60.0, 60.0),
        ),
    ]


def ttl_rows(bad: Any) -> list[Row]:
    """Every operation with ``bad`` as its TTL, window or maximum lifetime."""
    return [
        ("put_code", C.CODES, lambda b: b.put_code(uid(), code(), bad)),
        ("put_access_token", C.TOKENS, lambda b: b.put_access_token(uid(), access(), bad)),
        ("put_refresh_token", C.REFRESH, lambda b: b.put_refresh_token(uid(), refresh(), bad)),
        ("rotate", C.REFRESH, lambda b: b.rotate_refresh_token(uid(), uid(), bad)),
        ("put_state", C.STATES, lambda b: b.put_state(uid(), state(), bad)),
        ("put_challenge", C.CHALLENGES, lambda b: b.put_challenge(uid(), "a", challenge(), bad)),
        ("put_reset_token", C.RESET_TOKENS, lambda b: b.put_reset_token(uid(), reset(), bad)),
        ("create_session-ttl", C.SESSIONS, lambda b: b.create_session(uid(), session(), bad, 60.0)),
        (
            "create_session-max_lifetime",
            C.SESSIONS,
            lambda b: b.create_session(uid(), session(), 1.0, bad),
        ),
        ("touch_session", C.SESSIONS, lambda b: b.touch_session(uid(), bad)),
        ("hit-window", C.RATE_LIMITS, lambda b: b.hit(uid(), 5, bad)),
    ]


def payload_rows(bad: Any) -> list[Row]:
    """Every operation with ``bad`` as its extra or metadata."""
    return [
        ("create_client", C.CLIENTS, lambda b: b.create_client(uid(), bad)),
        ("update_client", C.CLIENTS, lambda b: b.update_client(uid(), bad)),
        ("put_code", C.CODES, lambda b: b.put_code(uid(), code(extra=bad), 60.0)),
        (
            "put_access_token",
            C.TOKENS,
            lambda b: b.put_access_token(uid(), access(extra=bad), 60.0),
        ),
        (
            "put_refresh_token",
            C.REFRESH,
            lambda b: b.put_refresh_token(uid(), refresh(extra=bad), 60.0),
        ),
        ("put_state", C.STATES, lambda b: b.put_state(uid(), state(extra=bad), 60.0)),
        (
            "put_challenge",
            C.CHALLENGES,
            lambda b: b.put_challenge(uid(), "a", challenge(extra=bad), 60.0),
        ),
        (
            "put_reset_token",
            C.RESET_TOKENS,
            lambda b: b.put_reset_token(uid(), reset(extra=bad), 60.0),
        ),
        (
            "create_session",
            C.SESSIONS,
            lambda b: b.create_session(uid(), session(extra=bad), 60.0, 60.0),
        ),
    ]


def limit_rows(bad: Any) -> list[Row]:
    """Every operation with ``bad`` as a positive-integer bound."""
    return [
        ("hit-limit", C.RATE_LIMITS, lambda b: b.hit(uid(), bad, 60.0)),
        (
            "put_challenge-max_attempts",
            C.CHALLENGES,
            lambda b: b.put_challenge(uid(), "a", challenge(max_attempts=bad), 60.0),
        ),
    ]


OVERSIZED = {"blob": "x" * (MAX_PAYLOAD_BYTES + 1)}

CASES: dict[str, list[Row]] = {
    "empty_id": id_rows(""),
    "nul_in_id": id_rows("a\x00b"),
    "id_too_long": id_rows("a" * (MAX_ID_LENGTH + 1)),
    "lone_surrogate_in_id": id_rows("a\ud800b"),
    "id_not_str": id_rows(12345),
    "empty_record_id": record_id_rows(""),
    "nul_in_record_id": record_id_rows("u\x00x"),
    "ttl_zero": ttl_rows(0),
    "ttl_negative": ttl_rows(-1.0),
    "ttl_nan": ttl_rows(math.nan),
    "ttl_inf": ttl_rows(math.inf),
    "ttl_minus_inf": ttl_rows(-math.inf),
    "ttl_bool": ttl_rows(True),
    "ttl_str": ttl_rows("60"),
    "ttl_none": ttl_rows(None),
    "ttl_above_max": ttl_rows(MAX_TTL * 2),
    "limit_zero": limit_rows(0),
    "limit_negative": limit_rows(-3),
    "limit_bool": limit_rows(True),
    "limit_float": limit_rows(2.5),
    "limit_above_max": limit_rows(10**9 + 1),
    "payload_oversized": payload_rows(OVERSIZED),
    "payload_not_a_mapping": payload_rows(["a", "list"]),
    "payload_not_json": payload_rows({"a": {1, 2}}),
    "payload_nan": payload_rows({"a": math.nan}),
    "payload_non_str_key": payload_rows({1: "a"}),
    "other": [
        ("rotate-same-token", C.REFRESH, lambda b: b.rotate_refresh_token("same", "same", 60.0)),
        (
            "session-ttl-above-max_lifetime",
            C.SESSIONS,
            lambda b: b.create_session(uid(), session(), 61.0, 60.0),
        ),
        ("put_code-wrong-record-type", C.CODES, lambda b: b.put_code(uid(), access(), 60.0)),
        (
            "put_access_token-wrong-record-type",
            C.TOKENS,
            lambda b: b.put_access_token(uid(), code(), 60.0),
        ),
        ("code-scopes-not-str", C.CODES, lambda b: b.put_code(uid(), code(scopes=(1, 2)), 60.0)),
    ],
}


def params(*cases: str) -> list[Any]:
    return [
        pytest.param(call, id=f"{case}-{label}", marks=requires(capability))
        for case in cases
        for label, capability, call in CASES[case]
    ]


async def rejected(backend: StorageBackend, call: Call) -> None:
    with pytest.raises(InvalidArgument):
        await asyncio.wait_for(call(backend), 15)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("empty_id", "empty_record_id"))
async def test_empty_ids_are_rejected(backend: StorageBackend, call: Call) -> None:
    """An empty id (argument or record field) raises InvalidArgument."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("nul_in_id", "nul_in_record_id"))
async def test_ids_with_nul_are_rejected(backend: StorageBackend, call: Call) -> None:
    """An id containing NUL raises InvalidArgument (many stores truncate or refuse it)."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("id_too_long"))
async def test_ids_longer_than_the_limit_are_rejected(backend: StorageBackend, call: Call) -> None:
    """An id longer than MAX_ID_LENGTH characters raises InvalidArgument."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("lone_surrogate_in_id", "id_not_str"))
async def test_ids_that_are_not_valid_text_are_rejected(
    backend: StorageBackend, call: Call
) -> None:
    """An id that is not a str, or holds a lone surrogate, raises InvalidArgument."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize(
    "call",
    params(
        "ttl_zero",
        "ttl_negative",
        "ttl_nan",
        "ttl_inf",
        "ttl_minus_inf",
        "ttl_bool",
        "ttl_str",
        "ttl_none",
        "ttl_above_max",
    ),
)
async def test_invalid_ttls_are_rejected(backend: StorageBackend, call: Call) -> None:
    """A TTL, window or max lifetime <= 0, not finite, a bool or above MAX_TTL is rejected."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize(
    "call", params("limit_zero", "limit_negative", "limit_bool", "limit_float", "limit_above_max")
)
async def test_invalid_limits_are_rejected(backend: StorageBackend, call: Call) -> None:
    """A rate limit or max_attempts that is not an integer from 1 to 10**9 is rejected."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("payload_oversized"))
async def test_oversized_payloads_are_rejected(backend: StorageBackend, call: Call) -> None:
    """An extra or metadata larger than MAX_PAYLOAD_BYTES as JSON raises InvalidArgument."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize(
    "call",
    params("payload_not_a_mapping", "payload_not_json", "payload_nan", "payload_non_str_key"),
)
async def test_payloads_that_are_not_json_objects_are_rejected(
    backend: StorageBackend, call: Call
) -> None:
    """An extra or metadata that is not a JSON object (non-str keys, sets, NaN) is rejected."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@pytest.mark.parametrize("call", params("other"))
async def test_inconsistent_arguments_are_rejected(backend: StorageBackend, call: Call) -> None:
    """Rotating to the same token, a TTL above max_lifetime, a wrong record type: rejected."""
    await rejected(backend, call)


@spec("CONTRACT-arguments-validated-first", "CONTRACT-fail-closed", level="MUST")
@pytest.mark.parametrize("call", params(*CASES))
async def test_invalid_arguments_are_rejected_before_the_store_is_touched(
    backend_factory: Factory, call: Call
) -> None:
    """With the store down, a bad argument still raises InvalidArgument, not StorageUnavailable."""
    down = backend_factory(outage=True)
    await rejected(down, call)


@spec("CONTRACT-arguments-validated-first", level="MUST")
@requires(Capability.CODES)
async def test_rejected_put_stores_nothing(backend: StorageBackend) -> None:
    """A put rejected for a bad TTL or payload stores nothing: the key is still free."""
    key = uid()
    with pytest.raises(InvalidArgument):
        await backend.put_code(key, code(), 0)
    with pytest.raises(InvalidArgument):
        await backend.put_code(key, code(extra=OVERSIZED), 60.0)
    assert await backend.get_code(key) is None
    await backend.put_code(key, code(), 60.0)
    assert await backend.get_code(key) is not None


@spec("CONTRACT-arguments-validated-first", level="MUST")
@requires(Capability.CLIENTS)
async def test_update_that_would_exceed_the_payload_limit_is_rejected(
    backend: StorageBackend,
) -> None:
    """An update whose merged metadata exceeds MAX_PAYLOAD_BYTES is rejected and changes nothing."""
    client_id = "client-" + uid()
    half = "x" * (MAX_PAYLOAD_BYTES // 2)
    await backend.create_client(client_id, {"a": half})
    with pytest.raises(InvalidArgument):
        await backend.update_client(client_id, {"b": half})
    got = await backend.get_client(client_id)
    assert got is not None
    assert dict(got.metadata) == {"a": half}


@spec("CONTRACT-records-round-trip", level="MUST")
@requires(Capability.CODES, Capability.CLIENTS)
async def test_ids_and_payloads_at_the_limits_are_accepted(backend: StorageBackend) -> None:
    """An id of exactly MAX_ID_LENGTH characters and a payload near the size limit work."""
    longest = uid()
    longest = longest + "\u00e9" * (MAX_ID_LENGTH - len(longest))
    assert len(longest) == MAX_ID_LENGTH
    big = {"blob": "y" * (MAX_PAYLOAD_BYTES - 4096)}
    await backend.put_code(longest, code(extra=big), 60.0)
    got = await backend.get_code(longest)
    assert got is not None
    assert got.extra == big
    created = await backend.create_client(longest, big)
    assert created.client_id == longest
    client = await backend.get_client(longest)
    assert client is not None
    assert dict(client.metadata) == big
