"""Access tokens: put, get, revoke one, revoke a whole grant (RFC 7009, RFC 6749 4.1.2)."""

from __future__ import annotations

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

TTL = 0.4  # alive at +0.1, gone at +0.6
ALIVE_AT = 0.1
GONE_AT = 0.6


def access_record(grant_id: str | None = None, **changes: object) -> AccessTokenRecord:
    record = AccessTokenRecord(
        client_id="client-" + uid(),
        subject="user-" + uid(),
        grant_id=grant_id or "grant-" + uid(),
        scopes=("mcp:read",),
        resource="https://mcp.example/mcp",
        extra={"jti": uid(), "claims": {"aud": ["a", "b"], "n": 1.5}},
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def refresh_record(grant_id: str) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        client_id="client-" + uid(),
        subject="user-" + uid(),
        grant_id=grant_id,
        scopes=("mcp:read",),
    )


@spec("CONTRACT-records-round-trip", level="MUST")
@requires(Capability.TOKENS)
async def test_stored_access_token_reads_back_with_its_grant(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A stored access token reads back with every field it was given, expiring at now + ttl."""
    token, record = uid(), access_record()
    before = clock.now()
    stored = await backend.put_access_token(token, record, 30.0)
    assert stored == replace(record, expires_at=stored.expires_at)
    assert abs(stored.expires_at - (before + 30.0)) <= tolerance(clock)
    assert await backend.get_access_token(token) == stored


@spec("CONTRACT-half-open-lifetime", level="MUST")
@requires(Capability.TOKENS)
async def test_unknown_access_token_is_none(backend: StorageBackend) -> None:
    """get_access_token of a token never stored returns None."""
    assert await backend.get_access_token(uid()) is None


@spec("CONTRACT-half-open-lifetime", level="MUST")
@requires(Capability.TOKENS)
async def test_access_token_is_gone_after_its_ttl(
    backend: StorageBackend, clock: TestClock
) -> None:
    """An access token is valid before its expiry and invisible after it."""
    token = uid()
    await backend.put_access_token(token, access_record(), TTL)
    await clock.advance(ALIVE_AT)
    assert await backend.get_access_token(token) is not None
    await clock.advance(GONE_AT - ALIVE_AT)
    assert await backend.get_access_token(token) is None


@spec("CONTRACT-half-open-lifetime", "CONTRACT-ttl-precision", level="MUST")
@requires(Capability.TOKENS)
async def test_access_token_lives_until_just_before_its_expiry_and_not_at_it(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A 0.35 s access token is valid at 0.348 s and gone at exactly 0.35 s (fake clock)."""
    if clock.fake is None:
        pytest.skip("not-applicable: the store keeps time itself; millisecond edges need a clock")
    ttl = 0.35
    early, late = uid(), uid()
    await backend.put_access_token(early, access_record(), ttl)
    await clock.advance(ttl - 0.002)
    assert await backend.get_access_token(early) is not None, "gone 2 ms before its expiry"
    await backend.put_access_token(late, access_record(), ttl)
    await clock.advance(ttl)
    assert await backend.get_access_token(late) is None, "still valid at its expiry instant"


@spec("RFC7009-2.1", level="MUST")
@requires(Capability.TOKENS)
async def test_revoked_access_token_is_gone(backend: StorageBackend) -> None:
    """revoke_access_token makes the token invalid; True the first time, False after."""
    token, other = uid(), uid()
    record = access_record()
    await backend.put_access_token(token, record, 30.0)
    await backend.put_access_token(other, access_record(grant_id=record.grant_id), 30.0)
    assert await backend.revoke_access_token(token) is True
    assert await backend.get_access_token(token) is None
    assert await backend.revoke_access_token(token) is False
    assert await backend.revoke_access_token(uid()) is False
    assert await backend.get_access_token(other) is not None


@spec("CONTRACT-existing-keys-conflict", level="MUST")
@requires(Capability.TOKENS)
async def test_putting_an_existing_access_token_is_a_conflict(backend: StorageBackend) -> None:
    """A second put of a live access token raises Conflict and keeps the first record."""
    token, record = uid(), access_record()
    await backend.put_access_token(token, record, 30.0)
    with pytest.raises(Conflict):
        await backend.put_access_token(token, access_record(), 30.0)
    got = await backend.get_access_token(token)
    assert got is not None
    assert got.grant_id == record.grant_id


@spec("RFC7009-2.1", "RFC6749-4.1.2", "CONTRACT-revoke-grant", level="MUST")
@requires(Capability.TOKENS, Capability.REFRESH)
async def test_revoke_grant_removes_its_access_and_refresh_tokens(
    backend: StorageBackend,
) -> None:
    """revoke_grant deletes the grant's access tokens and revokes its refresh tokens, only those.

    RFC 7009 2.1: if the token is a refresh token, the authorization server SHOULD also
    invalidate all access tokens based on the same authorization grant; RFC 6749 4.1.2:
    tokens issued from a replayed code SHOULD be revoked. The store makes that possible
    with one call.
    """
    grant, other_grant = "grant-" + uid(), "grant-" + uid()
    access = [uid(), uid()]
    refresh = [uid(), uid()]
    for token in access:
        await backend.put_access_token(token, access_record(grant_id=grant), 30.0)
    for token in refresh:
        await backend.put_refresh_token(token, refresh_record(grant), 60.0)
    other_access, other_refresh = uid(), uid()
    await backend.put_access_token(other_access, access_record(grant_id=other_grant), 30.0)
    await backend.put_refresh_token(other_refresh, refresh_record(other_grant), 60.0)

    revoked = await backend.revoke_grant(grant)
    for token in access:
        assert await backend.get_access_token(token) is None, (
            "an access token of the revoked grant is still valid"
        )
    for token in refresh:
        got = await backend.get_refresh_token(token)
        assert got is None or got.revoked is True, (
            "a refresh token of the revoked grant is not revoked"
        )
        result = await backend.rotate_refresh_token(token, uid(), 60.0)
        assert result.status is RotateStatus.REVOKED, (
            f"a refresh token of the revoked grant still rotates ({result.status.name})"
        )
    assert revoked == 4, f"revoke_grant() counted {revoked} tokens; the grant had 2 + 2 live"
    assert await backend.get_access_token(other_access) is not None
    other = await backend.get_refresh_token(other_refresh)
    assert other is not None
    assert other.revoked is False
    assert await backend.revoke_grant(grant) == 0


@spec("CONTRACT-revoke-grant", level="MUST")
@requires(Capability.TOKENS)
async def test_revoke_grant_of_an_unknown_grant_revokes_nothing(backend: StorageBackend) -> None:
    """revoke_grant of a grant with no tokens returns 0."""
    assert await backend.revoke_grant("grant-" + uid()) == 0


@spec("CONTRACT-records-are-copies", level="MUST")
@requires(Capability.TOKENS)
async def test_returned_access_token_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned record's extra, or the dict given to put, changes nothing stored."""
    token = uid()
    extra: dict[str, object] = {"k": "v", "list": [1]}
    stored = await backend.put_access_token(token, access_record(extra=extra), 30.0)
    extra["k"] = "changed"
    stored.extra["list"].append(2)
    got = await backend.get_access_token(token)
    assert got is not None
    got.extra["k"] = "changed-too"  # type: ignore[index]
    again = await backend.get_access_token(token)
    assert again is not None
    assert again.extra == {"k": "v", "list": [1]}, (
        f"a stored record changed through a caller's or a returned dict: {again.extra}"
    )
