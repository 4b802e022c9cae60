"""Rate limits: ``hit(key, limit, window)`` counts in fixed windows aligned to their length."""

from __future__ import annotations

import asyncio
import math

import pytest

from authconform.contract import Capability, StorageBackend
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import uid

pytestmark = requires(Capability.RATE_LIMITS)


async def start_of_a_window(clock: TestClock, window: float, *, room: float) -> float:
    """Wait (if needed) until at least ``room`` seconds are left in the current window.

    Returns the end of that window. On a fake clock this only moves the clock.
    """
    now = clock.now()
    end = math.floor(now / window) * window + window
    if end - now < room:
        await clock.advance(end - now + 0.01)
        now = clock.now()
        end = math.floor(now / window) * window + window
    return end


@spec("CONTRACT-rate-limit-fixed-window", level="MUST")
async def test_rate_limit_allows_exactly_limit_hits_per_window(
    backend: StorageBackend, clock: TestClock
) -> None:
    """With limit 3, hits 1-3 are allowed and hits 4-5 refused; count keeps growing."""
    key, window = "login:" + uid(), 60.0
    end = await start_of_a_window(clock, window, room=5.0)
    results = [await backend.hit(key, 3, window) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert [r.count for r in results] == [1, 2, 3, 4, 5]
    assert all(r.limit == 3 for r in results)
    assert all(abs(r.reset_at - end) <= 0.001 for r in results), (
        f"reset_at should be the window end {end}, got {[r.reset_at for r in results]}"
    )


@spec("CONTRACT-rate-limit-fixed-window", level="MUST")
async def test_next_window_starts_from_zero(backend: StorageBackend, clock: TestClock) -> None:
    """After the window ends, the same key is allowed again with count 1."""
    key, window = "login:" + uid(), 0.5
    end = await start_of_a_window(clock, window, room=0.35)
    assert (await backend.hit(key, 1, window)).allowed is True
    refused = await backend.hit(key, 1, window)
    assert (refused.allowed, refused.count) == (False, 2)
    await clock.advance(end - clock.now() + 0.05)
    fresh = await backend.hit(key, 1, window)
    assert (fresh.allowed, fresh.count) == (True, 1), "the window did not reset"
    assert abs(fresh.reset_at - (end + window)) <= 0.001


@spec("CONTRACT-rate-limit-fixed-window", level="MUST")
async def test_rate_limit_keys_are_counted_separately(
    backend: StorageBackend, clock: TestClock
) -> None:
    """Hits on one key do not count against another key."""
    first, second, window = "ip:" + uid(), "ip:" + uid(), 60.0
    await start_of_a_window(clock, window, room=5.0)
    assert (await backend.hit(first, 1, window)).allowed is True
    assert (await backend.hit(first, 1, window)).allowed is False
    other = await backend.hit(second, 1, window)
    assert (other.allowed, other.count) == (True, 1)


async def at_a_common_window_start(clock: TestClock, long: float, short: float) -> float:
    """Move to just after a multiple of ``long``: windows of both lengths start there.

    Returns that start. Leaves at least ``short - 0.06`` seconds before the short window
    ends (on real time: waits at most ``long``; retried if the scheduler was late).
    """
    for _ in range(3):
        now = clock.now()
        start = math.floor(now / long) * long
        if now - start > 0.05:
            await clock.advance(start + long - now + 0.01)
            now = clock.now()
            start = math.floor(now / long) * long
        if now - start <= 0.05:
            return start
    pytest.fail("could not reach the start of a rate-limit window (scheduler too slow)")


@spec("CONTRACT-rate-limit-fixed-window", level="MUST")
async def test_windows_of_different_lengths_on_one_key_are_counted_separately(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A counter is identified by key, window length and window start.

    Five hits of ``hit(key, 5, long)``, then ``hit(key, 3, short)`` is allowed with count
    1, and the long window's count goes on at 6. Both windows start at the same instant
    here, where a counter keyed by key and window start alone would be shared (a burst
    limiter exhausted by a per-minute limiter on the same key). Windows are 60 s / 10 s
    on a fake clock, 1 s / 0.5 s on real time.
    """
    key = "login:" + uid()
    long, short = (60.0, 10.0) if clock.fake is not None else (1.0, 0.5)
    start = await at_a_common_window_start(clock, long, short)
    results = [await backend.hit(key, 5, long) for _ in range(5)]
    assert [(r.allowed, r.count) for r in results] == [(True, n) for n in range(1, 6)]
    other = await backend.hit(key, 3, short)
    assert (other.allowed, other.count) == (True, 1), (
        f"a {short:g} s window on a key shares its counter with the {long:g} s window of the "
        f"same key (count {other.count}): a counter is identified by key, window length and "
        f"window start"
    )
    assert abs(other.reset_at - (start + short)) <= 0.001
    again = await backend.hit(key, 5, long)
    assert (again.allowed, again.count) == (False, 6), (
        f"the {long:g} s window counted the hit of the {short:g} s window "
        f"(count {again.count}, expected 6)"
    )
    assert abs(again.reset_at - (start + long)) <= 0.001


@spec("CONTRACT-rate-limit-fixed-window", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_hits_allow_exactly_limit(
    backend: StorageBackend, clock: TestClock
) -> None:
    """30 concurrent hits with limit 10: exactly 10 allowed, counts 1..30 each seen once.

    gather() on one event loop interleaves only at awaits: for the in-process memory
    backend this catches a read-await-write counter.
    """
    key, window, limit = "token:" + uid(), 60.0, 10
    await start_of_a_window(clock, window, room=5.0)
    results = await asyncio.gather(*(backend.hit(key, limit, window) for _ in range(3 * limit)))
    allowed = sum(r.allowed for r in results)
    assert allowed == limit, f"{allowed} of {3 * limit} concurrent hits allowed with limit {limit}"
    assert sorted(r.count for r in results) == list(range(1, 3 * limit + 1)), (
        "concurrent hits were lost or counted twice"
    )
    assert all(r.allowed == (r.count <= limit) for r in results)
