"""Refresh tokens: put, get, rotate with reuse detection (RFC 9700 4.14.2), revoke."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authconform.contract import (
    AccessTokenRecord,
    Capability,
    Conflict,
    RefreshTokenRecord,
    RotateStatus,
    StorageBackend,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.REFRESH)


def refresh_record(grant_id: str | None = None, **changes: object) -> RefreshTokenRecord:
    record = RefreshTokenRecord(
        client_id="client-" + uid(),
        subject="user-" + uid(),
        grant_id=grant_id or "grant-" + uid(),
        scopes=("mcp:read", "offline_access"),
        resource="https://mcp.example/mcp",
        extra={"auth_time": 1_700_000_000, "acr": "mfa", "amr": ["pwd", "otp"]},
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@spec("CONTRACT-records-round-trip", level="MUST")
async def test_stored_refresh_token_reads_back_unrotated_and_unrevoked(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A stored refresh token reads back with its fields, rotated=False, revoked=False."""
    token, record = uid(), refresh_record(rotated=True, revoked=True)
    before = clock.now()
    stored = await backend.put_refresh_token(token, record, 60.0)
    assert stored == replace(record, expires_at=stored.expires_at, rotated=False, revoked=False)
    assert abs(stored.expires_at - (before + 60.0)) <= tolerance(clock)
    assert await backend.get_refresh_token(token) == stored


@spec("CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_unknown_refresh_token_is_not_found(backend: StorageBackend) -> None:
    """A refresh token never stored: get returns None, rotate reports NOT_FOUND."""
    token = uid()
    assert await backend.get_refresh_token(token) is None
    result = await backend.rotate_refresh_token(token, uid(), 60.0)
    assert result.status is RotateStatus.NOT_FOUND
    assert await backend.revoke_refresh_token(token) is False


@spec("RFC6749-10.4", "CONTRACT-expired-distinct-from-not-found", level="MUST")
async def test_expired_refresh_token_is_reported_expired(
    backend: StorageBackend, clock: TestClock
) -> None:
    """After its TTL a refresh token is invisible and rotate reports EXPIRED, issuing nothing."""
    token, new = uid(), uid()
    await backend.put_refresh_token(token, refresh_record(), 0.4)
    await clock.advance(0.1)
    assert await backend.get_refresh_token(token) is not None
    await clock.advance(0.5)
    assert await backend.get_refresh_token(token) is None
    result = await backend.rotate_refresh_token(token, new, 60.0)
    assert result.status is RotateStatus.EXPIRED
    assert await backend.get_refresh_token(new) is None


@spec("RFC9700-4.14.2", "RFC6749-10.4", "RFC6749-6", level="MUST")
async def test_rotation_issues_a_new_token_in_the_same_grant(
    backend: StorageBackend, clock: TestClock
) -> None:
    """ROTATED returns the new token's record: same client, subject, grant, scopes, resource.

    RFC 6749 10.4: the authorization server MUST maintain the binding between a refresh
    token and the client to whom it was issued. RFC 6749 6: the new refresh token's
    scope MUST be identical to that of the one in the request.
    """
    old, new, record = uid(), uid(), refresh_record()
    old_stored = await backend.put_refresh_token(old, record, 60.0)
    before = clock.now()
    result = await backend.rotate_refresh_token(old, new, 120.0)
    assert result.status is RotateStatus.ROTATED
    assert result.record is not None
    assert result.record == replace(record, expires_at=result.record.expires_at)
    assert abs(result.record.expires_at - (before + 120.0)) <= tolerance(clock)
    assert await backend.get_refresh_token(new) == result.record
    old_now = await backend.get_refresh_token(old)
    assert old_now is not None, "the rotated token must be kept to recognise reuse"
    assert old_now.rotated is True
    assert old_now.revoked is False
    assert abs(old_now.expires_at - old_stored.expires_at) <= 0.001


@spec("RFC9700-4.14.2", level="MUST")
async def test_refresh_rotation_revokes_previous_token(backend: StorageBackend) -> None:
    """Once rotated, the old token cannot be rotated again: the reuse is reported REUSED.

    RFC 9700 4.14.2: with refresh token rotation, the authorization server issues a new
    refresh token with every refresh and invalidates the previous one.
    """
    old, new, other = uid(), uid(), uid()
    await backend.put_refresh_token(old, refresh_record(), 60.0)
    assert (await backend.rotate_refresh_token(old, new, 60.0)).status is RotateStatus.ROTATED
    reuse = await backend.rotate_refresh_token(old, other, 60.0)
    assert reuse.status is RotateStatus.REUSED, (
        f"the rotated-out token was accepted again ({reuse.status.name}): no reuse detection"
    )
    assert await backend.get_refresh_token(other) is None, "a reused token issued a new one"


@spec("RFC9700-4.14.2", "CONTRACT-refresh-rotation", level="MUST")
@requires(Capability.REFRESH, Capability.TOKENS)
async def test_refresh_token_reuse_revokes_the_whole_grant(backend: StorageBackend) -> None:
    """Reusing a rotated token revokes the grant: access tokens gone, every refresh token revoked.

    RFC 9700 4.14.2: if a refresh token is compromised and subsequently used by both the
    attacker and the legitimate client, one of them will present an invalidated refresh
    token, which will inform the authorization server of the breach; the server cannot
    tell which is legitimate, so the active refresh token is revoked.
    """
    grant = "grant-" + uid()
    first, second, third = uid(), uid(), uid()
    access = uid()
    await backend.put_refresh_token(first, refresh_record(grant), 60.0)
    await backend.put_access_token(
        access,
        AccessTokenRecord(client_id="c-" + uid(), subject="u-" + uid(), grant_id=grant),
        30.0,
    )
    rotated = await backend.rotate_refresh_token(first, second, 60.0)
    assert rotated.status is RotateStatus.ROTATED

    reuse = await backend.rotate_refresh_token(first, third, 60.0)
    assert reuse.status is RotateStatus.REUSED, (
        f"the rotated-out token was accepted again ({reuse.status.name}): no reuse detection"
    )
    assert reuse.record is not None
    assert reuse.record.grant_id == grant

    assert await backend.get_access_token(access) is None, "reuse left the grant's access token"
    current = await backend.get_refresh_token(second)
    assert current is None or current.revoked is True, "reuse left the grant's current token"
    later = await backend.rotate_refresh_token(second, uid(), 60.0)
    assert later.status is RotateStatus.REVOKED, "the token issued before the reuse still works"
    again = await backend.rotate_refresh_token(first, uid(), 60.0)
    assert again.status in (RotateStatus.REVOKED, RotateStatus.REUSED)


@spec("CONTRACT-ttl-kept-across-updates", "RFC9700-4.14.2", level="MUST")
async def test_rotation_keeps_the_ttl_of_the_old_token(
    backend: StorageBackend, clock: TestClock
) -> None:
    """Marking the old token rotated keeps its expiry: kept until then, gone after, not reset.

    Put with TTL 1 s, rotate at 0.6 s: the old token is kept, flagged rotated, so reuse
    is recognised; at 1.2 s it is gone (a reset TTL would keep it until 1.6 s) and rotate
    reports EXPIRED.
    """
    old, new = uid(), uid()
    ttl = 1.0
    await backend.put_refresh_token(old, refresh_record(), ttl)
    await clock.advance(0.6 * ttl)
    assert (await backend.rotate_refresh_token(old, new, 30.0)).status is RotateStatus.ROTATED
    kept = await backend.get_refresh_token(old)
    assert kept is not None
    assert kept.rotated is True
    await clock.advance(0.6 * ttl)
    assert await backend.get_refresh_token(old) is None, "the rotated token outlived its expiry"
    result = await backend.rotate_refresh_token(old, uid(), 30.0)
    assert result.status is RotateStatus.EXPIRED
    assert await backend.get_refresh_token(new) is not None


@spec("CONTRACT-refresh-ttl-is-its-own", "RFC9700-4.14.2", level="MUST")
@requires(Capability.REFRESH, Capability.TOKENS)
async def test_refresh_token_ttl_is_its_own(backend: StorageBackend, clock: TestClock) -> None:
    """The new token lives the TTL given to rotate, not the old token's or the access token's."""
    grant = "grant-" + uid()
    old, new, short_new, access = uid(), uid(), uid(), uid()
    await backend.put_refresh_token(old, refresh_record(grant), 0.4)
    await backend.put_access_token(
        access, AccessTokenRecord(client_id="c-" + uid(), subject="u-" + uid(), grant_id=grant), 0.4
    )
    before = clock.now()
    rotated = await backend.rotate_refresh_token(old, new, 30.0)
    assert rotated.record is not None
    assert abs(rotated.record.expires_at - (before + 30.0)) <= tolerance(clock)

    long_lived = uid()
    await backend.put_refresh_token(long_lived, refresh_record(), 30.0)
    shorter = await backend.rotate_refresh_token(long_lived, short_new, 0.3)
    assert shorter.status is RotateStatus.ROTATED

    await clock.advance(0.6)
    assert await backend.get_access_token(access) is None
    assert await backend.get_refresh_token(old) is None, "the rotated token outlived its expiry"
    assert await backend.get_refresh_token(new) is not None, "the new token died with the old"
    assert await backend.get_refresh_token(short_new) is None, "the new token kept the old TTL"
    assert await backend.get_refresh_token(long_lived) is not None


@spec("RFC7009-2.1", level="MUST")
async def test_revoked_refresh_token_cannot_be_rotated(backend: StorageBackend) -> None:
    """revoke_refresh_token marks the token revoked; rotate then reports REVOKED."""
    token, new = uid(), uid()
    await backend.put_refresh_token(token, refresh_record(), 60.0)
    assert await backend.revoke_refresh_token(token) is True
    got = await backend.get_refresh_token(token)
    assert got is None or got.revoked is True
    assert await backend.revoke_refresh_token(token) is False
    result = await backend.rotate_refresh_token(token, new, 60.0)
    assert result.status is RotateStatus.REVOKED
    assert await backend.get_refresh_token(new) is None


@spec("CONTRACT-ttl-kept-across-updates", level="MUST")
async def test_revocation_keeps_the_ttl_of_a_refresh_token(
    backend: StorageBackend, clock: TestClock
) -> None:
    """Marking a refresh token revoked keeps its original expiry (neither dropped nor reset)."""
    token = uid()
    ttl = 1.0
    await backend.put_refresh_token(token, refresh_record(), ttl)
    await clock.advance(0.6 * ttl)
    assert await backend.revoke_refresh_token(token) is True
    await clock.advance(0.6 * ttl)
    assert await backend.get_refresh_token(token) is None, "the revoked token outlived its expiry"
    result = await backend.rotate_refresh_token(token, uid(), 30.0)
    assert result.status is RotateStatus.EXPIRED


@spec("CONTRACT-refresh-rotation", "CONTRACT-existing-keys-conflict", level="MUST")
async def test_rotation_to_an_existing_token_is_a_conflict_and_changes_nothing(
    backend: StorageBackend,
) -> None:
    """rotate(old, new) where new exists raises Conflict; old stays unrotated and rotatable."""
    old, existing = uid(), uid()
    await backend.put_refresh_token(old, refresh_record(), 60.0)
    existing_record = await backend.put_refresh_token(existing, refresh_record(), 60.0)
    with pytest.raises(Conflict):
        await backend.rotate_refresh_token(old, existing, 60.0)
    old_now = await backend.get_refresh_token(old)
    assert old_now is not None
    assert old_now.rotated is False
    assert await backend.get_refresh_token(existing) == existing_record
    assert (await backend.rotate_refresh_token(old, uid(), 60.0)).status is RotateStatus.ROTATED


@spec("CONTRACT-existing-keys-conflict", level="MUST")
async def test_putting_an_existing_refresh_token_is_a_conflict(backend: StorageBackend) -> None:
    """A second put of a rotated refresh token raises Conflict and does not un-rotate it."""
    token = uid()
    await backend.put_refresh_token(token, refresh_record(), 60.0)
    assert (await backend.rotate_refresh_token(token, uid(), 60.0)).status is RotateStatus.ROTATED
    with pytest.raises(Conflict):
        await backend.put_refresh_token(token, refresh_record(), 60.0)
    got = await backend.get_refresh_token(token)
    assert got is not None
    assert got.rotated is True


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_refresh_token_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned record's extra, or the dict given to put, changes nothing stored."""
    token, new = uid(), uid()
    extra: dict[str, object] = {"k": "v"}
    stored = await backend.put_refresh_token(token, refresh_record(extra=extra), 60.0)
    extra["k"] = "changed"
    stored.extra["k"] = "changed-too"  # type: ignore[index]
    got = await backend.get_refresh_token(token)
    assert got is not None
    assert got.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {got.extra}"
    )
    got.extra["added"] = 1  # type: ignore[index]
    again = await backend.get_refresh_token(token)
    assert again is not None
    assert again.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {again.extra}"
    )
    rotated = await backend.rotate_refresh_token(token, new, 60.0)
    assert rotated.record is not None
    assert rotated.record.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {rotated.record.extra}"
    )
    rotated.record.extra["k"] = "mutated"  # type: ignore[index]
    fresh = await backend.get_refresh_token(new)
    assert fresh is not None
    assert fresh.extra == {"k": "v"}, (
        f"a stored record changed through a caller's or a returned dict: {fresh.extra}"
    )


@spec("RFC9700-4.14.2", "CONTRACT-atomic-operations", level="MUST")
async def test_concurrent_rotations_of_one_token_have_one_winner(backend: StorageBackend) -> None:
    """30 concurrent rotations of one token: exactly one ROTATED; the others are reuse.

    The losers see REUSED (the first of them revokes the grant) or REVOKED, and none of
    their new tokens is stored. gather() on one event loop interleaves only at awaits:
    for the in-process memory backend this catches a read-await-write rotation.
    """
    old = uid()
    news = [uid() for _ in range(30)]
    await backend.put_refresh_token(old, refresh_record(), 60.0)
    results = await asyncio.gather(*(backend.rotate_refresh_token(old, n, 60.0) for n in news))
    statuses = [r.status for r in results]
    winners = statuses.count(RotateStatus.ROTATED)
    assert winners == 1, f"{winners} concurrent rotations of one token got ROTATED: {statuses}"
    assert RotateStatus.REUSED in statuses, statuses
    assert set(statuses) <= {RotateStatus.ROTATED, RotateStatus.REUSED, RotateStatus.REVOKED}
    for new, result in zip(news, results, strict=True):
        got = await backend.get_refresh_token(new)
        if result.status is RotateStatus.ROTATED:
            assert got is None or got.revoked is True, "the winner survived a reuse"
        else:
            assert got is None, "a losing rotation stored its new token"
