"""Login sessions: create, get, touch (bounded by a maximum lifetime), list, revoke."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authconform.contract import (
    Capability,
    Conflict,
    SessionRecord,
    StorageBackend,
    hash_secret,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.SESSIONS)


def session_record(subject: str | None = None, **changes: object) -> SessionRecord:
    record = SessionRecord(
        subject=subject or "user-" + uid(), extra={"ip": "192.0.2.1", "ua": "test"}
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("CONTRACT-session-lifetime", level="MUST")
async def test_created_session_reads_back_with_its_lifetimes(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A session reads back with handle = sha256(id), expires_at = now + ttl, max = now + max."""
    sid, record = uid(), session_record()
    before = clock.now()
    stored = await backend.create_session(sid, record, 60.0, 3600.0)
    assert stored.subject == record.subject
    assert stored.extra == record.extra
    assert stored.handle == hash_secret(sid)
    assert abs(stored.created_at - before) <= tolerance(clock)
    assert abs(stored.expires_at - (before + 60.0)) <= tolerance(clock)
    assert abs(stored.max_expires_at - (before + 3600.0)) <= tolerance(clock)
    assert await backend.get_session(sid) == stored


@spec("CONTRACT-half-open-lifetime", level="MUST")
async def test_unknown_session_is_none(backend: StorageBackend) -> None:
    """A session never created: get and touch return None, revoke returns False."""
    sid = uid()
    assert await backend.get_session(sid) is None
    assert await backend.touch_session(sid, 60.0) is None
    assert await backend.revoke_session(sid) is False
    assert await backend.list_sessions("user-" + uid()) == []


@spec("CONTRACT-half-open-lifetime", level="MUST")
async def test_session_is_gone_after_its_ttl(backend: StorageBackend, clock: TestClock) -> None:
    """An untouched session is live before its TTL and gone after it; touch cannot revive it."""
    sid = uid()
    await backend.create_session(sid, session_record(), 0.4, 3600.0)
    await clock.advance(0.1)
    assert await backend.get_session(sid) is not None
    await clock.advance(0.5)
    assert await backend.get_session(sid) is None
    assert await backend.touch_session(sid, 60.0) is None
    assert await backend.get_session(sid) is None


@spec("CONTRACT-session-lifetime", level="MUST")
async def test_touch_extends_a_session(backend: StorageBackend, clock: TestClock) -> None:
    """touch(ttl) moves the expiry to now + ttl: a 0.8 s session touched at 0.3 s outlives 0.8 s."""
    sid = uid()
    await backend.create_session(sid, session_record(), 0.8, 60.0)
    await clock.advance(0.3)
    before = clock.now()
    touched = await backend.touch_session(sid, 1.0)
    assert touched is not None
    assert abs(touched.expires_at - (before + 1.0)) <= tolerance(clock)
    await clock.advance(0.6)
    got = await backend.get_session(sid)
    assert got is not None, "the touched session expired at its first expiry"
    assert abs(got.expires_at - touched.expires_at) <= 0.001
    await clock.advance(0.5)
    assert await backend.get_session(sid) is None


@spec("CONTRACT-session-lifetime", level="MUST")
async def test_touch_never_extends_beyond_the_maximum_lifetime(
    backend: StorageBackend, clock: TestClock
) -> None:
    """touch(10 s) on a session with a 0.8 s maximum lifetime extends it to 0.8 s, no further."""
    sid = uid()
    stored = await backend.create_session(sid, session_record(), 0.3, 0.8)
    touched = await backend.touch_session(sid, 10.0)
    assert touched is not None
    assert abs(touched.expires_at - stored.max_expires_at) <= 0.001
    await clock.advance(0.45)
    assert await backend.get_session(sid) is not None, "touch did not extend the session"
    await clock.advance(0.45)
    assert await backend.get_session(sid) is None, "the session outlived its maximum lifetime"
    assert await backend.touch_session(sid, 10.0) is None


@spec("CONTRACT-session-lifetime", level="MUST")
async def test_touch_never_shortens_a_session(backend: StorageBackend, clock: TestClock) -> None:
    """touch with a TTL shorter than the time left keeps the later expiry."""
    sid = uid()
    stored = await backend.create_session(sid, session_record(), 0.6, 60.0)
    touched = await backend.touch_session(sid, 0.05)
    assert touched is not None
    assert abs(touched.expires_at - stored.expires_at) <= 0.001
    await clock.advance(0.3)
    assert await backend.get_session(sid) is not None, "touch shortened the session"


@spec("CONTRACT-session-index-lists-live-sessions", level="MUST")
async def test_list_sessions_lists_only_live_sessions_oldest_first(
    backend: StorageBackend, clock: TestClock
) -> None:
    """list_sessions never lists an expired or revoked session, nor another subject's.

    The short session lives 1 s: about six round trips and two short sleeps happen
    between its creation and the first list (margin for a loaded machine on real time);
    the second list comes 1.2 s later.
    """
    subject = "user-" + uid()
    first, second, short, revoked, foreign = uid(), uid(), uid(), uid(), uid()
    for sid, ttl in ((first, 30.0), (second, 30.0), (short, 1.0), (revoked, 30.0)):
        await backend.create_session(sid, session_record(subject), ttl, 60.0)
        await clock.advance(0.01)  # distinct creation times
    await backend.create_session(foreign, session_record(), 30.0, 60.0)
    assert await backend.revoke_session(revoked) is True
    assert await backend.revoke_session(revoked) is False
    assert await backend.get_session(revoked) is None
    listed = await backend.list_sessions(subject)
    assert [s.handle for s in listed] == [
        hash_secret(first),
        hash_secret(second),
        hash_secret(short),
    ], "the index misses a live session, or lists a revoked one"
    await clock.advance(1.2)
    listed = await backend.list_sessions(subject)
    assert [s.handle for s in listed] == [hash_secret(first), hash_secret(second)]
    assert all(s.subject == subject for s in listed)


@spec("CONTRACT-session-index-lists-live-sessions", level="MUST")
async def test_revoke_all_sessions_ends_every_session_of_a_subject(
    backend: StorageBackend,
) -> None:
    """revoke_all_sessions ends the subject's live sessions, returns how many, spares others."""
    subject = "user-" + uid()
    mine = [uid(), uid(), uid()]
    foreign = uid()
    for sid in mine:
        await backend.create_session(sid, session_record(subject), 30.0, 60.0)
    await backend.create_session(foreign, session_record(), 30.0, 60.0)
    assert await backend.revoke_all_sessions(subject) == 3
    for sid in mine:
        assert await backend.get_session(sid) is None
        assert await backend.touch_session(sid, 30.0) is None
    assert await backend.list_sessions(subject) == []
    assert await backend.get_session(foreign) is not None
    assert await backend.revoke_all_sessions(subject) == 0


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_creating_an_existing_session_is_a_conflict(backend: StorageBackend) -> None:
    """A second create of a live session id raises Conflict and keeps the first session."""
    sid, record = uid(), session_record()
    await backend.create_session(sid, record, 30.0, 60.0)
    with pytest.raises(Conflict):
        await backend.create_session(sid, session_record(), 30.0, 60.0)
    got = await backend.get_session(sid)
    assert got is not None
    assert got.subject == record.subject


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_session_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned session's extra, or the dict given to create, changes nothing."""
    sid = uid()
    subject = "user-" + uid()
    extra: dict[str, object] = {"k": "v"}
    stored = await backend.create_session(sid, session_record(subject, extra=extra), 30.0, 60.0)
    extra["k"] = "changed"
    stored.extra["k"] = "changed-too"  # type: ignore[index]
    got = await backend.get_session(sid)
    assert got is not None
    got.extra["k"] = "mutated"  # type: ignore[index]
    (listed,) = await backend.list_sessions(subject)
    assert listed.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {listed.extra}"
    )
    listed.extra["k"] = "mutated-again"  # type: ignore[index]
    again = await backend.get_session(sid)
    assert again is not None
    assert again.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {again.extra}"
    )
