"""Client registrations (RFC 7591): create, get, update, delete, list, verify the secret."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authconform.contract import (
    AccessTokenRecord,
    Capability,
    CodeRecord,
    Conflict,
    ConsumeStatus,
    RefreshTokenRecord,
    RotateStatus,
    StateRecord,
    StorageBackend,
    hash_secret,
)
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import tolerance, uid

pytestmark = requires(Capability.CLIENTS)

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


def metadata() -> dict[str, object]:
    return {
        "client_name": "Test client",
        "redirect_uris": ["https://client.example/cb", "http://127.0.0.1:33418/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "mcp:read mcp:write",
    }


@spec("RFC7591-3.2.1", level="MUST")
async def test_registered_client_reads_back_with_all_its_metadata(
    backend: StorageBackend, clock: TestClock
) -> None:
    """A created client reads back with its metadata, the secret's hash and creation times.

    RFC 7591 3.2.1: the server MUST return all registered metadata about the client.
    """
    client_id, secret, meta = "client-" + uid(), uid(), metadata()
    before = clock.now()
    created = await backend.create_client(client_id, meta, secret=secret)
    assert created.client_id == client_id
    assert dict(created.metadata) == meta
    assert created.secret_hash == hash_secret(secret)
    assert abs(created.created_at - before) <= tolerance(clock)
    assert abs(created.updated_at - before) <= tolerance(clock)
    assert await backend.get_client(client_id) == created


@spec("RFC7591-3.2.1", level="MUST")
async def test_public_client_has_no_secret(backend: StorageBackend) -> None:
    """A client created without a secret has secret_hash None and verifies no secret."""
    client_id = "client-" + uid()
    created = await backend.create_client(client_id, {"token_endpoint_auth_method": "none"})
    assert created.secret_hash is None
    assert await backend.verify_client_secret(client_id, uid()) is False


@spec("CONTRACT-clients-persist-without-ttl", level="MUST")
async def test_unknown_client_is_none(backend: StorageBackend) -> None:
    """get_client of an unknown id returns None; delete returns False; verify returns False."""
    client_id = "client-" + uid()
    assert await backend.get_client(client_id) is None
    assert await backend.delete_client(client_id) is False
    assert await backend.verify_client_secret(client_id, uid()) is False


@spec(
    "CONTRACT-existing-keys-conflict", "CONTRACT-clients-persist-without-ttl", level="MUST"
)
async def test_registering_an_existing_client_id_is_a_conflict(backend: StorageBackend) -> None:
    """A second create of an id raises Conflict and keeps the first client's metadata and secret."""
    client_id, secret = "client-" + uid(), uid()
    first = await backend.create_client(client_id, {"client_name": "first"}, secret=secret)
    with pytest.raises(Conflict):
        await backend.create_client(client_id, {"client_name": "second"}, secret=uid())
    assert await backend.get_client(client_id) == first
    assert await backend.verify_client_secret(client_id, secret) is True


@spec("CONTRACT-client-update-merges", level="MUST")
async def test_update_keeps_fields_it_was_not_given(
    backend: StorageBackend, clock: TestClock
) -> None:
    """update_client merges metadata: given keys replaced, others kept, secret kept."""
    client_id, secret = "client-" + uid(), uid()
    created = await backend.create_client(
        client_id, {"a": 1, "b": {"x": 1}, "c": "keep"}, secret=secret
    )
    await clock.advance(0.01)
    updated = await backend.update_client(client_id, {"b": {"y": 2}, "d": [1]})
    assert updated is not None
    assert dict(updated.metadata) == {"a": 1, "b": {"y": 2}, "c": "keep", "d": [1]}
    assert updated.secret_hash == created.secret_hash
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert await backend.get_client(client_id) == updated
    assert await backend.verify_client_secret(client_id, secret) is True


@spec(
    "CONTRACT-client-update-merges", "CONTRACT-client-secret-verification", level="MUST"
)
async def test_update_with_a_secret_replaces_the_secret(backend: StorageBackend) -> None:
    """update_client(secret=...) replaces the secret: the new one verifies, the old one not."""
    client_id, old, new = "client-" + uid(), uid(), uid()
    await backend.create_client(client_id, {"a": 1}, secret=old)
    updated = await backend.update_client(client_id, {}, secret=new)
    assert updated is not None
    assert updated.secret_hash == hash_secret(new)
    assert dict(updated.metadata) == {"a": 1}
    assert await backend.verify_client_secret(client_id, new) is True
    assert await backend.verify_client_secret(client_id, old) is False


@spec("CONTRACT-client-update-merges", level="MUST")
async def test_update_of_an_unknown_client_creates_nothing(backend: StorageBackend) -> None:
    """update_client of an unknown id returns None and does not create the client."""
    client_id = "client-" + uid()
    assert await backend.update_client(client_id, {"a": 1}, secret=uid()) is None
    assert await backend.get_client(client_id) is None


@spec("RFC7591-3.2.1", level="MUST")
async def test_deleted_client_is_gone(backend: StorageBackend) -> None:
    """delete_client returns True once; the client is then unknown and its secret fails."""
    client_id, secret = "client-" + uid(), uid()
    await backend.create_client(client_id, {"a": 1}, secret=secret)
    assert await backend.delete_client(client_id) is True
    assert await backend.get_client(client_id) is None
    assert await backend.verify_client_secret(client_id, secret) is False
    assert await backend.delete_client(client_id) is False
    assert client_id not in [c.client_id for c in await backend.list_clients()]


@spec("CONTRACT-client-deletion", level="MUST")
@requires(Capability.CODES, Capability.STATES, Capability.TOKENS, Capability.REFRESH)
async def test_deleting_a_client_revokes_what_was_issued_to_it(backend: StorageBackend) -> None:
    """delete_client deletes the client's codes, states and access tokens, revokes its
    refresh tokens, and leaves other clients' records (a case variant of the id) alone.

    RFC 7592 2.3: the server "SHOULD immediately invalidate all existing authorization
    grants and currently-active tokens associated with this client"; docs/contract.md
    makes it a MUST of the storage contract.
    """
    client_id, other = "client-" + uid(), "Client-" + uid()
    grant = "grant-" + uid()
    await backend.create_client(client_id, {})
    code, state, access, refresh = (uid() for _ in range(4))
    kept_code = uid()
    await backend.put_code(code, CodeRecord(client_id, "sub", grant), 60)
    await backend.consume_code(code)
    await backend.put_state(state, StateRecord(client_id), 60)
    await backend.put_access_token(access, AccessTokenRecord(client_id, "sub", grant), 60)
    await backend.put_refresh_token(refresh, RefreshTokenRecord(client_id, "sub", grant), 60)
    await backend.put_code(kept_code, CodeRecord(other, "sub", "grant-" + uid()), 60)

    assert await backend.delete_client(client_id) is True
    left = {
        "the consumed code": (await backend.consume_code(code)).status,
        "the pending state": (await backend.consume_state(state)).status,
        "the access token": await backend.get_access_token(access) is not None,
    }
    assert left == {
        "the consumed code": ConsumeStatus.NOT_FOUND,
        "the pending state": ConsumeStatus.NOT_FOUND,
        "the access token": False,
    }, f"a deleted client's records survived its deletion: {left}"
    rotated = await backend.rotate_refresh_token(refresh, uid(), 60)
    assert rotated.status is RotateStatus.REVOKED, (
        f"a deleted client's refresh token rotated: {rotated.status.name} (expected REVOKED)"
    )
    kept = await backend.consume_code(kept_code)
    assert kept.status is ConsumeStatus.CONSUMED, "another client's code was revoked"


@spec("CONTRACT-clients-persist-without-ttl", level="MUST")
async def test_list_clients_lists_every_client_sorted_by_id(backend: StorageBackend) -> None:
    """list_clients includes every created client, sorted by client id."""
    prefix = "client-" + uid() + "-"
    created = [prefix + suffix for suffix in ("b", "a", "c")]
    for client_id in created:
        await backend.create_client(client_id, {"n": client_id})
    listed = await backend.list_clients()
    listed_ids = [c.client_id for c in listed]
    assert listed_ids == sorted(listed_ids)
    assert [i for i in listed_ids if i.startswith(prefix)] == sorted(created)
    mine = {c.client_id: dict(c.metadata) for c in listed if c.client_id.startswith(prefix)}
    assert mine == {i: {"n": i} for i in created}


@spec(
    "CONTRACT-client-secret-verification", "CONTRACT-secrets-hashed-at-rest", level="MUST"
)
async def test_verify_client_secret_accepts_only_the_right_secret(
    backend: StorageBackend,
) -> None:
    """verify_client_secret is True for the registered secret and False for any other."""
    client_id, secret = "client-" + uid(), uid()
    record = await backend.create_client(client_id, {}, secret=secret)
    assert record.secret_hash != secret
    assert await backend.verify_client_secret(client_id, secret) is True
    assert await backend.verify_client_secret(client_id, secret + "x") is False
    assert await backend.verify_client_secret(client_id, secret[:-1]) is False
    assert await backend.verify_client_secret(client_id, hash_secret(secret)) is False


@spec(
    "CONTRACT-clients-persist-without-ttl", "CONTRACT-ttl-kept-across-updates", level="MUST"
)
async def test_clients_never_expire(backend: StorageBackend, clock: TestClock) -> None:
    """A client, updated or not, is still there after a long time (400 days on a fake clock).

    On a store that keeps time itself the wait is real, so it is only 0.3 s there: that
    still catches a client stored with a sub-second or default TTL by mistake.
    """
    plain, updated = "client-" + uid(), "client-" + uid()
    await backend.create_client(plain, {"a": 1})
    await backend.create_client(updated, {"a": 1}, secret=uid())
    assert await backend.update_client(updated, {"b": 2}) is not None
    await clock.advance(400 * 86400.0 if clock.fake is not None else 0.3)
    assert await backend.get_client(plain) is not None
    got = await backend.get_client(updated)
    assert got is not None
    assert dict(got.metadata) == {"a": 1, "b": 2}


@spec("CONTRACT-records-are-copies", level="MUST")
async def test_returned_client_records_are_copies(backend: StorageBackend) -> None:
    """Mutating a returned client's metadata, or the dict given to create, changes nothing."""
    client_id = "client-" + uid()
    meta: dict[str, object] = {"redirect_uris": ["https://a.example/cb"]}
    created = await backend.create_client(client_id, meta)
    meta["redirect_uris"].append("https://evil.example/cb")  # type: ignore[attr-defined]
    meta["added"] = True
    created.metadata["redirect_uris"].append("https://evil2.example/cb")
    got = await backend.get_client(client_id)
    assert got is not None
    got.metadata["redirect_uris"].append("https://evil3.example/cb")
    (listed,) = [c for c in await backend.list_clients() if c.client_id == client_id]
    listed.metadata["added"] = True  # type: ignore[index]
    again = await backend.get_client(client_id)
    assert again is not None
    assert dict(again.metadata) == {"redirect_uris": ["https://a.example/cb"]}, (
        f"a stored record changed through a caller's or a returned dict: {dict(again.metadata)}"
    )


@spec("CONTRACT-records-round-trip", "RFC7591-3.2.1", level="MUST")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(client_suffix=ids, meta=payloads)
async def test_any_client_id_and_metadata_round_trip(
    backend: StorageBackend, client_suffix: str, meta: dict[str, object]
) -> None:
    """Any Unicode client id and JSON metadata read back equal, also through list and update."""
    client_id = secrets.token_hex(8) + client_suffix  # unique per example, still arbitrary text
    created = await backend.create_client(client_id, meta)
    assert dict(created.metadata) == meta
    got = await backend.get_client(client_id)
    assert got is not None
    assert got.client_id == client_id
    assert dict(got.metadata) == meta
    assert client_id in [c.client_id for c in await backend.list_clients()]
    updated = await backend.update_client(client_id, {"extra": meta})
    assert updated is not None
    assert dict(updated.metadata) == {**meta, "extra": meta}
    assert await backend.delete_client(client_id) is True
