"""Second-factor challenges: put, attempt (atomic counter, dies on success or lock-out)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authconform.contract import (
    AttemptStatus,
    Capability,
    ChallengeRecord,
    Conflict,
    StorageBackend,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.CHALLENGES)


def challenge_record(max_attempts: int = 3, **changes: object) -> ChallengeRecord:
    record = ChallengeRecord(
        subject="user-" + uid(), max_attempts=max_attempts, extra={"method": "totp"}
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("CONTRACT-challenge-attempts", level="MUST")
async def test_right_answer_succeeds_once(backend: StorageBackend, clock: TestClock) -> None:
    """The right answer gets SUCCESS (attempt counted) and the challenge is gone afterwards."""
    cid, answer = uid(), uid()
    record = challenge_record(attempts=2)
    before = clock.now()
    stored = await backend.put_challenge(cid, answer, record, 300.0)
    assert stored == replace(record, attempts=0, expires_at=stored.expires_at)
    assert abs(stored.expires_at - (before + 300.0)) <= tolerance(clock)
    result = await backend.attempt_challenge(cid, answer)
    assert result.status is AttemptStatus.SUCCESS
    assert result.attempts_left == 2
    assert result.record is not None
    assert result.record.attempts == 1
    assert result.record.subject == record.subject
    again = await backend.attempt_challenge(cid, answer)
    assert again.status is AttemptStatus.NOT_FOUND, "a solved challenge answered twice"


@spec("CONTRACT-challenge-attempts", level="MUST")
async def test_wrong_answers_count_down_then_lock(backend: StorageBackend) -> None:
    """Wrong answers get WRONG with 2, then 1 attempts left, then LOCKED; then all is refused."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=3), 300.0)
    first = await backend.attempt_challenge(cid, "wrong-" + uid())
    assert (first.status, first.attempts_left) == (AttemptStatus.WRONG, 2)
    second = await backend.attempt_challenge(cid, "wrong-" + uid())
    assert (second.status, second.attempts_left) == (AttemptStatus.WRONG, 1)
    third = await backend.attempt_challenge(cid, "wrong-" + uid())
    assert (third.status, third.attempts_left) == (AttemptStatus.LOCKED, 0)
    after = await backend.attempt_challenge(cid, answer)
    assert after.status is AttemptStatus.NOT_FOUND, "a locked challenge accepted its answer"


@spec("CONTRACT-challenge-attempts", level="MUST")
async def test_right_answer_after_a_wrong_one_succeeds(backend: StorageBackend) -> None:
    """A wrong answer then the right one: WRONG (2 left), then SUCCESS with 1 left."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=3), 300.0)
    wrong = await backend.attempt_challenge(cid, "wrong-" + uid())
    assert wrong.status is AttemptStatus.WRONG
    right = await backend.attempt_challenge(cid, answer)
    assert (right.status, right.attempts_left) == (AttemptStatus.SUCCESS, 1)


@spec("CONTRACT-challenge-attempts", level="MUST")
async def test_single_attempt_challenge_locks_on_the_first_wrong_answer(
    backend: StorageBackend,
) -> None:
    """With max_attempts=1 the first wrong answer is LOCKED with no attempts left."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=1), 300.0)
    result = await backend.attempt_challenge(cid, "wrong-" + uid())
    assert (result.status, result.attempts_left) == (AttemptStatus.LOCKED, 0)
    assert (await backend.attempt_challenge(cid, answer)).status is AttemptStatus.NOT_FOUND


@spec("CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_unknown_challenge_is_not_found(backend: StorageBackend) -> None:
    """A challenge never stored: attempt reports NOT_FOUND."""
    assert (await backend.attempt_challenge(uid(), uid())).status is AttemptStatus.NOT_FOUND


@spec(
    "CONTRACT-expired-distinct-from-not-found", "CONTRACT-half-open-lifetime", level="MUST"
)
async def test_expired_challenge_is_reported_expired_even_with_the_right_answer(
    backend: StorageBackend, clock: TestClock
) -> None:
    """After its TTL a challenge reports EXPIRED, even for the right answer."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(), 0.4)
    await clock.advance(0.6)
    result = await backend.attempt_challenge(cid, answer)
    assert result.status is AttemptStatus.EXPIRED


@spec("CONTRACT-ttl-kept-across-updates", level="MUST")
async def test_wrong_answer_keeps_the_ttl_of_a_challenge(
    backend: StorageBackend, clock: TestClock
) -> None:
    """Counting a wrong answer keeps the challenge's original expiry (neither dropped nor reset).

    Put with TTL 1 s, answer wrong at 0.6 s, answer right at 1.2 s: EXPIRED (a reset
    TTL would let it succeed until 1.6 s).
    """
    cid, answer = uid(), uid()
    ttl = 1.0
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=5), ttl)
    await clock.advance(0.6 * ttl)
    assert (await backend.attempt_challenge(cid, "wrong-" + uid())).status is AttemptStatus.WRONG
    await clock.advance(0.6 * ttl)
    assert (await backend.attempt_challenge(cid, answer)).status is AttemptStatus.EXPIRED, (
        "the challenge outlived its expiry after a wrong answer"
    )


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_existing_challenge_is_a_conflict(backend: StorageBackend) -> None:
    """A second put of a live challenge raises Conflict and keeps the first answer and counter."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=3), 300.0)
    assert (await backend.attempt_challenge(cid, "wrong-" + uid())).status is AttemptStatus.WRONG
    other = uid()
    with pytest.raises(Conflict):
        await backend.put_challenge(cid, other, challenge_record(max_attempts=3), 300.0)
    assert (await backend.attempt_challenge(cid, other)).status is AttemptStatus.WRONG
    result = await backend.attempt_challenge(cid, answer)
    assert (result.status, result.attempts_left) == (AttemptStatus.SUCCESS, 0)


@spec("CONTRACT-challenge-attempts", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_wrong_answers_count_no_more_than_max_attempts(
    backend: StorageBackend,
) -> None:
    """30 concurrent wrong answers to a 3-attempt challenge: 2 WRONG, 1 LOCKED, 27 NOT_FOUND.

    gather() on one event loop interleaves only at awaits: for the in-process memory
    backend this catches a read-await-write counter.
    """
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=3), 300.0)
    results = await asyncio.gather(
        *(backend.attempt_challenge(cid, f"wrong-{i}") for i in range(30))
    )
    statuses = [r.status for r in results]
    assert statuses.count(AttemptStatus.WRONG) == 2, statuses
    assert statuses.count(AttemptStatus.LOCKED) == 1, statuses
    assert statuses.count(AttemptStatus.NOT_FOUND) == 27, statuses
    assert sorted(r.attempts_left for r in results if r.status is AttemptStatus.WRONG) == [1, 2]


@spec("CONTRACT-challenge-attempts", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_right_answers_succeed_once(backend: StorageBackend) -> None:
    """30 concurrent right answers: exactly one SUCCESS, the rest NOT_FOUND."""
    cid, answer = uid(), uid()
    await backend.put_challenge(cid, answer, challenge_record(max_attempts=3), 300.0)
    results = await asyncio.gather(*(backend.attempt_challenge(cid, answer) for _ in range(30)))
    statuses = [r.status for r in results]
    assert statuses.count(AttemptStatus.SUCCESS) == 1, statuses
    assert statuses.count(AttemptStatus.NOT_FOUND) == 29, statuses
