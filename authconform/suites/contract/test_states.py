"""Pending authorization state: put, consume once (RFC 9700 4.7.1 one-time CSRF tokens)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authconform.contract import (
    Capability,
    Conflict,
    ConsumeStatus,
    StateRecord,
    StorageBackend,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.STATES)


def state_record(**changes: object) -> StateRecord:
    record = StateRecord(
        client_id="client-" + uid(),
        extra={
            "redirect_uri": "https://client.example/cb",
            "code_challenge": uid(),
            "scopes": ["mcp:read"],
        },
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("RFC9700-4.7.1", "CONTRACT-single-use", level="MUST")
async def test_state_is_single_use(backend: StorageBackend, clock: TestClock) -> None:
    """The first consume of a state gets CONSUMED with its record; a replay gets ALREADY_USED.

    RFC 9700 4.7.1: one-time use CSRF tokens carried in the state parameter MUST be used.
    """
    state, record = uid(), state_record(consumed=True)
    before = clock.now()
    stored = await backend.put_state(state, record, 600.0)
    assert stored == replace(record, expires_at=stored.expires_at, consumed=False)
    assert abs(stored.expires_at - (before + 600.0)) <= tolerance(clock)
    first = await backend.consume_state(state)
    assert first.status is ConsumeStatus.CONSUMED
    assert first.record == replace(stored, consumed=True)
    second = await backend.consume_state(state)
    assert second.status is ConsumeStatus.ALREADY_USED
    assert second.record is not None
    assert second.record.consumed is True
    assert second.record.extra == record.extra


@spec("CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_unknown_state_is_not_found(backend: StorageBackend) -> None:
    """A state never stored: consume_state reports NOT_FOUND."""
    result = await backend.consume_state(uid())
    assert result.status is ConsumeStatus.NOT_FOUND
    assert result.record is None


@spec(
    "CONTRACT-expired-distinct-from-not-found", "CONTRACT-half-open-lifetime", level="MUST"
)
async def test_expired_state_is_reported_expired(backend: StorageBackend, clock: TestClock) -> None:
    """A state consumed after its TTL reports EXPIRED, not NOT_FOUND and not CONSUMED."""
    alive, expired = uid(), uid()
    await backend.put_state(alive, state_record(), 0.4)
    await backend.put_state(expired, state_record(), 0.4)
    await clock.advance(0.1)
    assert (await backend.consume_state(alive)).status is ConsumeStatus.CONSUMED
    await clock.advance(0.5)
    result = await backend.consume_state(expired)
    assert result.status is ConsumeStatus.EXPIRED
    assert result.record is None


@spec(
    "CONTRACT-ttl-kept-across-updates", "CONTRACT-consumed-stays-consumed", level="MUST"
)
async def test_consumed_state_keeps_its_ttl(backend: StorageBackend, clock: TestClock) -> None:
    """A state consumed with under 1 s left stays ALREADY_USED until its original expiry.

    Put with TTL 1 s, consume at 0.6 s (a backend rounding the remaining TTL to whole
    seconds loses this write), replay: ALREADY_USED; at 1.1 s: EXPIRED (a reset TTL
    would keep it until 1.6 s).
    """
    state = uid()
    await backend.put_state(state, state_record(), 1.0)
    await clock.advance(0.6)
    assert (await backend.consume_state(state)).status is ConsumeStatus.CONSUMED
    assert (await backend.consume_state(state)).status is ConsumeStatus.ALREADY_USED, (
        "a state used with under 1 s left was consumed again: the use was not recorded"
    )
    await clock.advance(0.5)
    assert (await backend.consume_state(state)).status is ConsumeStatus.EXPIRED, (
        "the consumed state outlived its expiry"
    )


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_existing_state_is_a_conflict(backend: StorageBackend) -> None:
    """A second put of a used state raises Conflict and cannot make it usable again."""
    state = uid()
    await backend.put_state(state, state_record(), 600.0)
    assert (await backend.consume_state(state)).status is ConsumeStatus.CONSUMED
    with pytest.raises(Conflict):
        await backend.put_state(state, state_record(), 600.0)
    assert (await backend.consume_state(state)).status is ConsumeStatus.ALREADY_USED


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_state_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned state's extra, or the dict given to put, changes nothing stored."""
    state = uid()
    extra: dict[str, object] = {"k": "v"}
    stored = await backend.put_state(state, state_record(extra=extra), 600.0)
    extra["k"] = "changed"
    stored.extra["k"] = "changed-too"  # type: ignore[index]
    first = await backend.consume_state(state)
    assert first.record is not None
    assert first.record.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {first.record.extra}"
    )
    first.record.extra["k"] = "mutated"  # type: ignore[index]
    replay = await backend.consume_state(state)
    assert replay.record is not None
    assert replay.record.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {replay.record.extra}"
    )


@spec("RFC9700-4.7.1", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_consumes_of_one_state_have_one_winner(backend: StorageBackend) -> None:
    """40 concurrent consumes of one state: exactly one CONSUMED, 39 ALREADY_USED.

    gather() on one event loop interleaves only at awaits: for the in-process memory
    backend this catches a read-await-write consume.
    """
    state = uid()
    await backend.put_state(state, state_record(), 600.0)
    results = await asyncio.gather(*(backend.consume_state(state) for _ in range(40)))
    statuses = [r.status for r in results]
    winners = statuses.count(ConsumeStatus.CONSUMED)
    assert winners == 1, (
        f"{winners} of 40 concurrent consumes of one state got CONSUMED: {statuses}"
    )
    assert statuses.count(ConsumeStatus.ALREADY_USED) == 39, statuses
