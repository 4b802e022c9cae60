"""Authorization codes: put, get, consume (single use, RFC 6749 4.1.2 and 10.5).

Times: on clock backends ``clock.advance`` moves a fake clock; on Redis it sleeps, so the
TTLs here are short and every "still alive" check leaves at least 0.25 s of margin.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authconform.contract import (
    Capability,
    CodeRecord,
    Conflict,
    ConsumeStatus,
    StorageBackend,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.CODES)

TTL = 0.4  # alive at +0.1, gone at +0.6
ALIVE_AT = 0.1
GONE_AT = 0.6

ids = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=200
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), json_values)


def code_record(**changes: object) -> CodeRecord:
    record = CodeRecord(
        client_id="client-" + uid(),
        subject="user-" + uid(),
        grant_id="grant-" + uid(),
        redirect_uri="https://client.example/cb",
        scopes=("mcp:read", "mcp:write"),
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        resource="https://mcp.example/mcp",
        extra={"nonce": uid(), "nested": {"list": [1, 2.5, None, True, "x"]}},
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("RFC6749-4.1.2", "RFC7636-4.4", level="MUST")
async def test_stored_code_reads_back_with_its_grant(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A stored code reads back with every field it was given, unconsumed, expiring at now + ttl.

    RFC 7636 4.4: the server MUST associate the code_challenge and code_challenge_method
    values with the authorization code so it can be verified later.
    """
    code, record = uid(), code_record()
    before = clock.now()
    stored = await backend.put_code(code, record, 30.0)
    assert stored == replace(record, expires_at=stored.expires_at, consumed=False)
    assert abs(stored.expires_at - (before + 30.0)) <= tolerance(clock)
    got = await backend.get_code(code)
    assert got == stored


@spec("CONTRACT-records-round-trip", level="MUST")
async def test_put_ignores_the_consumed_flag_of_the_input(backend: StorageBackend) -> None:
    """A code put with consumed=True is stored unconsumed: the backend owns that flag."""
    code = uid()
    stored = await backend.put_code(code, code_record(consumed=True), 30.0)
    assert stored.consumed is False
    result = await backend.consume_code(code)
    assert result.status is ConsumeStatus.CONSUMED


@spec("CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_unknown_code_is_not_found(backend: StorageBackend) -> None:
    """A code never stored: get_code returns None and consume_code reports NOT_FOUND."""
    code = uid()
    assert await backend.get_code(code) is None
    result = await backend.consume_code(code)
    assert result.status is ConsumeStatus.NOT_FOUND
    assert result.record is None


@spec("RFC6749-4.1.2", "CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_expired_code_is_reported_expired_not_missing(
    backend: StorageBackend, clock: TestClock
) -> None:
    """After its TTL a code is invisible to get_code and consume_code reports EXPIRED.

    RFC 6749 4.1.2: the authorization code MUST expire shortly after it is issued.
    """
    code = uid()
    await backend.put_code(code, code_record(), TTL)
    await clock.advance(ALIVE_AT)
    assert await backend.get_code(code) is not None
    await clock.advance(GONE_AT - ALIVE_AT)
    assert await backend.get_code(code) is None
    result = await backend.consume_code(code)
    assert result.status is ConsumeStatus.EXPIRED
    assert result.record is None


@spec("CONTRACT-half-open-lifetime", "CONTRACT-ttl-precision", level="MUST")
async def test_code_lives_until_just_before_its_expiry_and_not_at_it(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A code with a 0.35 s TTL is alive at 0.348 s and gone at exactly 0.35 s (fake clock).

    On a store that keeps time itself the same check runs with real sleeps and margins.
    """
    ttl = 0.35
    early, late = uid(), uid()
    if clock.fake is None:
        await backend.put_code(early, code_record(), ttl)
        await clock.advance(0.05)
        assert await backend.get_code(early) is not None
        await clock.advance(0.4)
        assert await backend.get_code(early) is None
        assert (await backend.consume_code(early)).status is ConsumeStatus.EXPIRED
        return
    await backend.put_code(early, code_record(), ttl)
    await clock.advance(ttl - 0.002)
    assert await backend.get_code(early) is not None, "gone 2 ms before its expiry"
    assert (await backend.consume_code(early)).status is ConsumeStatus.CONSUMED
    await backend.put_code(late, code_record(), ttl)
    await clock.advance(ttl)
    assert await backend.get_code(late) is None, "still alive at its expiry instant"
    assert (await backend.consume_code(late)).status is ConsumeStatus.EXPIRED


@spec("CONTRACT-ttl-precision", level="MUST")
async def test_sub_second_ttl_is_kept_to_the_millisecond(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A 0.2345 s TTL gives expires_at = put time + 0.2345 s, within 1 ms on a fake clock."""
    code = uid()
    before = clock.now()
    stored = await backend.put_code(code, code_record(), 0.2345)
    assert abs(stored.expires_at - (before + 0.2345)) <= tolerance(clock)
    got = await backend.get_code(code)
    assert got is not None
    assert abs(got.expires_at - stored.expires_at) <= 0.001


@spec("RFC6749-4.1.2", "RFC6749-10.5", "CONTRACT-single-use", level="MUST")
async def test_authorization_code_is_single_use(backend: StorageBackend) -> None:
    """The first consume gets CONSUMED with the record; a replay gets ALREADY_USED with it.

    RFC 6749 4.1.2: the client MUST NOT use the authorization code more than once. If
    an authorization code is used more than once, the authorization server MUST deny
    the request (and SHOULD revoke the tokens issued from it: hence the record).
    """
    code, record = uid(), code_record()
    await backend.put_code(code, record, 30.0)
    first = await backend.consume_code(code)
    assert first.status is ConsumeStatus.CONSUMED
    assert first.record is not None
    assert first.record.consumed is True
    assert first.record.grant_id == record.grant_id
    second = await backend.consume_code(code)
    assert second.status is ConsumeStatus.ALREADY_USED
    assert second.record is not None
    assert second.record.consumed is True
    assert second.record.grant_id == record.grant_id
    assert second.record.client_id == record.client_id
    got = await backend.get_code(code)
    assert got is not None
    assert got.consumed is True


@spec("CONTRACT-consumed-stays-consumed", level="MUST")
async def test_consumed_code_stays_consumed_until_it_expires(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A consumed code reports ALREADY_USED while it lives, then EXPIRED; never CONSUMED again."""
    code = uid()
    await backend.put_code(code, code_record(), TTL)
    assert (await backend.consume_code(code)).status is ConsumeStatus.CONSUMED
    await clock.advance(ALIVE_AT)
    again = await backend.consume_code(code)
    assert again.status is ConsumeStatus.ALREADY_USED, (
        "a consumed code was consumed again: the use was not recorded"
    )
    got = await backend.get_code(code)
    assert got is not None
    assert got.consumed is True
    await clock.advance(GONE_AT - ALIVE_AT)
    assert (await backend.consume_code(code)).status is ConsumeStatus.EXPIRED, (
        "the consumed code outlived its expiry"
    )
    assert await backend.get_code(code) is None


@spec("CONTRACT-ttl-kept-across-updates", level="MUST")
async def test_update_keeps_the_ttl_of_a_consumed_code(
    backend: StorageBackend, clock: TestClock
) -> None:
    """Consuming a code keeps its original expiry: neither dropped nor reset to the full TTL.

    Put with TTL 1 s, consume at 0.6 s, look at 1.2 s: a backend that re-applied the
    TTL on consume would still show the code (it would live until 1.6 s); one that
    dropped the TTL would show it forever.
    """
    code = uid()
    ttl = 1.0
    stored = await backend.put_code(code, code_record(), ttl)
    await clock.advance(0.6 * ttl)
    consumed = await backend.consume_code(code)
    assert consumed.status is ConsumeStatus.CONSUMED
    assert consumed.record is not None
    assert abs(consumed.record.expires_at - stored.expires_at) <= 0.001
    await clock.advance(0.6 * ttl)
    assert await backend.get_code(code) is None, "the consumed code outlived its expiry"
    assert (await backend.consume_code(code)).status is ConsumeStatus.EXPIRED


@spec("CONTRACT-ttl-kept-across-updates", "CONTRACT-single-use", level="MUST")
async def test_consume_with_less_than_a_second_left_is_recorded(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A code consumed with under 1 s of TTL left is marked used: the replay is ALREADY_USED.

    Catches backends that rewrite the record with the remaining TTL rounded down to
    whole seconds (0 s: the write is lost, or the key never expires).
    """
    code = uid()
    await backend.put_code(code, code_record(), 1.0)
    await clock.advance(0.6)
    assert (await backend.consume_code(code)).status is ConsumeStatus.CONSUMED
    replay = await backend.consume_code(code)
    assert replay.status is ConsumeStatus.ALREADY_USED, (
        "a code used with under 1 s left was consumed again: the use was not recorded"
    )
    await clock.advance(0.5)
    assert (await backend.consume_code(code)).status is ConsumeStatus.EXPIRED, (
        "the consumed code outlived its expiry"
    )
    assert await backend.get_code(code) is None


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_existing_code_is_a_conflict_and_changes_nothing(
    backend: StorageBackend,
) -> None:
    """A second put of a held code raises Conflict and cannot make a used code usable again."""
    code, record = uid(), code_record()
    await backend.put_code(code, record, 30.0)
    assert (await backend.consume_code(code)).status is ConsumeStatus.CONSUMED
    with pytest.raises(Conflict):
        await backend.put_code(code, code_record(), 60.0)
    got = await backend.get_code(code)
    assert got is not None
    assert got.grant_id == record.grant_id
    assert got.consumed is True
    assert (await backend.consume_code(code)).status is ConsumeStatus.ALREADY_USED


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_expired_but_remembered_code_is_a_conflict(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A code the store still remembers after expiry cannot be put again: Conflict."""
    code = uid()
    await backend.put_code(code, code_record(), 0.2)
    await clock.advance(0.35)
    assert (await backend.consume_code(code)).status is ConsumeStatus.EXPIRED
    with pytest.raises(Conflict):
        await backend.put_code(code, code_record(), 30.0)


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_code_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned record's extra, or the dict given to put, changes nothing stored."""
    code = uid()
    extra: dict[str, object] = {"k": "v", "nested": {"a": [1]}}
    stored = await backend.put_code(code, code_record(extra=extra), 30.0)
    extra["k"] = "changed"
    extra["nested"]["a"].append(2)  # type: ignore[index]
    stored.extra["k"] = "changed-too"  # type: ignore[index]
    got = await backend.get_code(code)
    assert got is not None
    got.extra["nested"]["a"].append(3)
    got.extra["added"] = True  # type: ignore[index]
    again = await backend.get_code(code)
    assert again is not None
    assert again.extra == {"k": "v", "nested": {"a": [1]}}, (
        f"a stored record changed through a caller's or a returned dict: {again.extra}"
    )
    consumed = await backend.consume_code(code)
    assert consumed.record is not None
    consumed.record.extra["k"] = "mutated"  # type: ignore[index]
    replay = await backend.consume_code(code)
    assert replay.record is not None
    assert replay.record.extra == {"k": "v", "nested": {"a": [1]}}, (
        f"a stored record changed through a caller's or a returned dict: {replay.record.extra}"
    )


@spec("CONTRACT-records-round-trip", level="MUST")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(code_suffix=ids, extra=payloads, subject=ids)
async def test_any_code_and_payload_round_trip(
    backend: StorageBackend, code_suffix: str, extra: dict[str, object], subject: str
) -> None:
    """Any Unicode code value and JSON extra reads back equal to what was put."""
    code = secrets.token_hex(8) + code_suffix  # unique per example, still arbitrary text
    record = code_record(extra=extra, subject=subject)
    await backend.put_code(code, record, 30.0)
    got = await backend.get_code(code)
    assert got is not None
    assert got == replace(record, expires_at=got.expires_at, consumed=False)
    consumed = await backend.consume_code(code)
    assert consumed.record is not None
    assert consumed.record.extra == extra


@spec("RFC6749-4.1.2", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_consumes_of_one_code_have_one_winner(backend: StorageBackend) -> None:
    """40 concurrent consumes of one code: exactly one CONSUMED, 39 ALREADY_USED.

    gather() on one event loop interleaves only at awaits: for the in-process memory
    backend this catches a read-await-write consume; for networked stores the calls
    really overlap on the server.
    """
    code = uid()
    await backend.put_code(code, code_record(), 30.0)
    results = await asyncio.gather(*(backend.consume_code(code) for _ in range(40)))
    statuses = [r.status for r in results]
    winners = statuses.count(ConsumeStatus.CONSUMED)
    assert winners == 1, f"{winners} of 40 concurrent consumes of one code got CONSUMED: {statuses}"
    assert statuses.count(ConsumeStatus.ALREADY_USED) == 39, statuses
