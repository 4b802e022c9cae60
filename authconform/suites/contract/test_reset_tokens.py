"""Password-reset (and e-mail verification) tokens: put, consume once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authconform.contract import (
    Capability,
    Conflict,
    ConsumeStatus,
    ResetTokenRecord,
    StorageBackend,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.RESET_TOKENS)


def reset_record(**changes: object) -> ResetTokenRecord:
    record = ResetTokenRecord(subject="user-" + uid(), extra={"purpose": "password", "n": 1})
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("CONTRACT-single-use", level="MUST")
async def test_reset_token_is_single_use(backend: StorageBackend, clock: TestClock) -> None:
    """The first consume of a reset token gets CONSUMED with its record; a replay ALREADY_USED."""
    token, record = uid(), reset_record(consumed=True)
    before = clock.now()
    stored = await backend.put_reset_token(token, record, 900.0)
    assert stored == replace(record, expires_at=stored.expires_at, consumed=False)
    assert abs(stored.expires_at - (before + 900.0)) <= tolerance(clock)
    first = await backend.consume_reset_token(token)
    assert first.status is ConsumeStatus.CONSUMED
    assert first.record == replace(stored, consumed=True)
    second = await backend.consume_reset_token(token)
    assert second.status is ConsumeStatus.ALREADY_USED
    assert second.record is not None
    assert second.record.consumed is True
    assert second.record.subject == record.subject


@spec("CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_unknown_reset_token_is_not_found(backend: StorageBackend) -> None:
    """A reset token never stored: consume reports NOT_FOUND."""
    result = await backend.consume_reset_token(uid())
    assert result.status is ConsumeStatus.NOT_FOUND
    assert result.record is None


@spec(
    "CONTRACT-expired-distinct-from-not-found", "CONTRACT-half-open-lifetime", level="MUST"
)
async def test_expired_reset_token_is_reported_expired(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A reset token consumed after its TTL reports EXPIRED, not NOT_FOUND and not CONSUMED."""
    alive, expired = uid(), uid()
    await backend.put_reset_token(alive, reset_record(), 0.4)
    await backend.put_reset_token(expired, reset_record(), 0.4)
    await clock.advance(0.1)
    assert (await backend.consume_reset_token(alive)).status is ConsumeStatus.CONSUMED
    await clock.advance(0.5)
    result = await backend.consume_reset_token(expired)
    assert result.status is ConsumeStatus.EXPIRED
    assert result.record is None


@spec(
    "CONTRACT-ttl-kept-across-updates", "CONTRACT-consumed-stays-consumed", level="MUST"
)
async def test_consumed_reset_token_keeps_its_ttl(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A reset token consumed with under 1 s left stays ALREADY_USED until its original expiry.

    Put with TTL 1 s, consume at 0.6 s, replay: ALREADY_USED; at 1.1 s: EXPIRED.
    """
    token = uid()
    await backend.put_reset_token(token, reset_record(), 1.0)
    await clock.advance(0.6)
    assert (await backend.consume_reset_token(token)).status is ConsumeStatus.CONSUMED
    assert (await backend.consume_reset_token(token)).status is ConsumeStatus.ALREADY_USED, (
        "a reset token used with under 1 s left was consumed again: the use was not recorded"
    )
    await clock.advance(0.5)
    assert (await backend.consume_reset_token(token)).status is ConsumeStatus.EXPIRED, (
        "the consumed reset token outlived its expiry"
    )


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_existing_reset_token_is_a_conflict(backend: StorageBackend) -> None:
    """A second put of a used reset token raises Conflict and cannot make it usable again."""
    token = uid()
    await backend.put_reset_token(token, reset_record(), 900.0)
    assert (await backend.consume_reset_token(token)).status is ConsumeStatus.CONSUMED
    with pytest.raises(Conflict):
        await backend.put_reset_token(token, reset_record(), 900.0)
    assert (await backend.consume_reset_token(token)).status is ConsumeStatus.ALREADY_USED


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_reset_token_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned reset token's extra, or the dict given to put, changes nothing."""
    token = uid()
    extra: dict[str, object] = {"k": ["v"]}
    stored = await backend.put_reset_token(token, reset_record(extra=extra), 900.0)
    extra["k"].append("changed")  # type: ignore[attr-defined]
    stored.extra["k"].append("changed-too")
    first = await backend.consume_reset_token(token)
    assert first.record is not None
    assert first.record.extra == {"k": ["v"]}, (
        f"a stored record changed through a caller's or a returned dict: {first.record.extra}"
    )
    first.record.extra["k"].append("mutated")
    replay = await backend.consume_reset_token(token)
    assert replay.record is not None
    assert replay.record.extra == {"k": ["v"]}, (
        f"a stored record changed through a caller's or a returned dict: {replay.record.extra}"
    )


@spec("CONTRACT-single-use", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_consumes_of_one_reset_token_have_one_winner(
    backend: StorageBackend,
) -> None:
    """40 concurrent consumes of one reset token: exactly one CONSUMED, 39 ALREADY_USED.

    gather() on one event loop interleaves only at awaits: for the in-process memory
    backend this catches a read-await-write consume.
    """
    token = uid()
    await backend.put_reset_token(token, reset_record(), 900.0)
    results = await asyncio.gather(*(backend.consume_reset_token(token) for _ in range(40)))
    statuses = [r.status for r in results]
    winners = statuses.count(ConsumeStatus.CONSUMED)
    assert winners == 1, (
        f"{winners} of 40 concurrent consumes of one reset token got CONSUMED: {statuses}"
    )
    assert statuses.count(ConsumeStatus.ALREADY_USED) == 39, statuses
