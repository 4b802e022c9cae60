"""Rate limits: ``hit(key, limit, window)`` counts in fixed windows aligned to their length."""

from __future__ import annotations

import asyncio
import math
import secrets

import pytest

from authconform.contract import Capability, StorageBackend
from authconform.pytest_plugin import TestClock

pytestmark = pytest.mark.requires(Capability.RATE_LIMITS)


def uid() -> str:
    return secrets.token_urlsafe(24)


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


@pytest.mark.spec("CONTRACT-rate-limit-fixed-window", level="MUST")
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


@pytest.mark.spec("CONTRACT-rate-limit-fixed-window", level="MUST")
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


@pytest.mark.spec("CONTRACT-rate-limit-fixed-window", level="MUST")
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


@pytest.mark.spec("CONTRACT-rate-limit-fixed-window", "CONTRACT-atomic-operations", level="MUST")
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
    assert sum(r.allowed for r in results) == limit
    assert sorted(r.count for r in results) == list(range(1, 3 * limit + 1))
    assert all(r.allowed == (r.count <= limit) for r in results)
