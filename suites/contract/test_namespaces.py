"""Namespaces: one store, many tenants or runs, no record crosses from one to another."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from authconform.contract import (
    AccessTokenRecord,
    AttemptStatus,
    Capability,
    ChallengeRecord,
    CodeRecord,
    ConsumeStatus,
    RefreshTokenRecord,
    ResetTokenRecord,
    RotateStatus,
    SessionRecord,
    StateRecord,
    StorageBackend,
)

ALL = (
    Capability.CLIENTS,
    Capability.CODES,
    Capability.TOKENS,
    Capability.REFRESH,
    Capability.STATES,
    Capability.CHALLENGES,
    Capability.RESET_TOKENS,
    Capability.SESSIONS,
    Capability.RATE_LIMITS,
)

Factory = Callable[..., StorageBackend]


def uid() -> str:
    return secrets.token_urlsafe(24)


def fresh_namespace() -> str:
    return "ac_" + secrets.token_hex(4)


class Fixture:
    """One of each record kind under the same keys, written into a backend."""

    def __init__(self) -> None:
        self.client_id = "client-" + uid()
        self.code, self.access, self.refresh = uid(), uid(), uid()
        self.state, self.reset, self.challenge, self.answer = uid(), uid(), uid(), uid()
        self.session, self.subject, self.grant = uid(), "user-" + uid(), "grant-" + uid()
        self.rate_key = "ip:" + uid()

    async def write(self, backend: StorageBackend, label: str) -> None:
        c = backend.capabilities
        if Capability.CLIENTS in c:
            await backend.create_client(self.client_id, {"owner": label}, secret=label)
        if Capability.CODES in c:
            record = CodeRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            await backend.put_code(self.code, record, 60.0)
        if Capability.TOKENS in c:
            access = AccessTokenRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            await backend.put_access_token(self.access, access, 60.0)
        if Capability.REFRESH in c:
            refresh = RefreshTokenRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            await backend.put_refresh_token(self.refresh, refresh, 60.0)
        if Capability.STATES in c:
            await backend.put_state(
                self.state, StateRecord(client_id=self.client_id, extra={"owner": label}), 60.0
            )
        if Capability.RESET_TOKENS in c:
            record_r = ResetTokenRecord(subject=self.subject, extra={"owner": label})
            await backend.put_reset_token(self.reset, record_r, 60.0)
        if Capability.CHALLENGES in c:
            record_c = ChallengeRecord(subject=self.subject, max_attempts=3, extra={"owner": label})
            await backend.put_challenge(self.challenge, self.answer, record_c, 60.0)
        if Capability.SESSIONS in c:
            record_s = SessionRecord(subject=self.subject, extra={"owner": label})
            await backend.create_session(self.session, record_s, 60.0, 120.0)

    async def assert_owned_by(self, backend: StorageBackend, label: str) -> None:
        """Every record is there and is ``label``'s (read-only checks)."""
        c = backend.capabilities
        if Capability.CLIENTS in c:
            client = await backend.get_client(self.client_id)
            assert client is not None
            assert client.metadata["owner"] == label
            assert await backend.verify_client_secret(self.client_id, label) is True
        if Capability.CODES in c:
            code = await backend.get_code(self.code)
            assert code is not None
            assert code.extra["owner"] == label
            assert code.consumed is False
        if Capability.TOKENS in c:
            access = await backend.get_access_token(self.access)
            assert access is not None
            assert access.extra["owner"] == label
        if Capability.REFRESH in c:
            refresh = await backend.get_refresh_token(self.refresh)
            assert refresh is not None
            assert refresh.extra["owner"] == label
            assert (refresh.rotated, refresh.revoked) == (False, False)
        if Capability.SESSIONS in c:
            session = await backend.get_session(self.session)
            assert session is not None
            assert session.extra["owner"] == label
            assert [s.extra["owner"] for s in await backend.list_sessions(self.subject)] == [label]

    async def assert_absent(self, backend: StorageBackend) -> None:
        """Nothing of this fixture is visible (read-only checks)."""
        c = backend.capabilities
        if Capability.CLIENTS in c:
            assert await backend.get_client(self.client_id) is None
            assert self.client_id not in [x.client_id for x in await backend.list_clients()]
        if Capability.CODES in c:
            assert await backend.get_code(self.code) is None
        if Capability.TOKENS in c:
            assert await backend.get_access_token(self.access) is None
        if Capability.REFRESH in c:
            assert await backend.get_refresh_token(self.refresh) is None
        if Capability.SESSIONS in c:
            assert await backend.get_session(self.session) is None
            assert await backend.list_sessions(self.subject) == []


@pytest.mark.spec("CONTRACT-namespace-isolation", level="MUST")
@pytest.mark.requires(*ALL)
async def test_namespaces_do_not_see_each_others_records(backend_factory: Factory) -> None:
    """The same keys written in two namespaces read back as two separate sets of records."""
    first, second = backend_factory(fresh_namespace()), backend_factory(fresh_namespace())
    shared = Fixture()
    await shared.write(first, "first")
    only_first = Fixture()
    await only_first.write(first, "first")
    await shared.write(second, "second")
    await shared.assert_owned_by(first, "first")
    await shared.assert_owned_by(second, "second")
    await only_first.assert_absent(second)


@pytest.mark.spec("CONTRACT-namespace-isolation", level="MUST")
@pytest.mark.requires(*ALL)
async def test_using_a_record_in_one_namespace_leaves_the_other_untouched(
    backend_factory: Factory,
) -> None:
    """Consuming, rotating, revoking and answering in one namespace changes nothing in another."""
    first, second = backend_factory(fresh_namespace()), backend_factory(fresh_namespace())
    fx = Fixture()
    await fx.write(first, "first")
    await fx.write(second, "second")
    assert (await first.consume_code(fx.code)).status is ConsumeStatus.CONSUMED
    assert (await first.consume_state(fx.state)).status is ConsumeStatus.CONSUMED
    assert (await first.consume_reset_token(fx.reset)).status is ConsumeStatus.CONSUMED
    rotated = await first.rotate_refresh_token(fx.refresh, uid(), 60.0)
    assert rotated.status is RotateStatus.ROTATED
    assert await first.revoke_grant(fx.grant) >= 1
    for _ in range(3):
        await first.attempt_challenge(fx.challenge, "wrong-" + uid())
    assert await first.revoke_all_sessions(fx.subject) == 1
    assert await first.delete_client(fx.client_id) is True
    for _ in range(3):
        await first.hit(fx.rate_key, 2, 86400.0)

    await fx.assert_owned_by(second, "second")
    assert (await second.consume_code(fx.code)).status is ConsumeStatus.CONSUMED
    assert (await second.consume_state(fx.state)).status is ConsumeStatus.CONSUMED
    assert (await second.consume_reset_token(fx.reset)).status is ConsumeStatus.CONSUMED
    second_rotation = await second.rotate_refresh_token(fx.refresh, uid(), 60.0)
    assert second_rotation.status is RotateStatus.ROTATED
    attempt = await second.attempt_challenge(fx.challenge, fx.answer)
    assert attempt.status is AttemptStatus.SUCCESS
    hit = await second.hit(fx.rate_key, 2, 86400.0)
    assert (hit.allowed, hit.count) == (True, 1), "a rate window leaked across namespaces"


@pytest.mark.spec("CONTRACT-drop-namespace", "CONTRACT-namespace-isolation", level="MUST")
@pytest.mark.requires(*ALL, Capability.ADMIN)
async def test_drop_namespace_empties_only_its_namespace(backend_factory: Factory) -> None:
    """drop_namespace removes everything of its namespace; another namespace is intact."""
    dropped = fresh_namespace()
    first, second = backend_factory(dropped), backend_factory(fresh_namespace())
    fx = Fixture()
    await fx.write(first, "first")
    await fx.write(second, "second")
    await first.hit(fx.rate_key, 1, 86400.0)
    await second.hit(fx.rate_key, 1, 86400.0)
    await first.drop_namespace()

    after = backend_factory(dropped)  # a new instance: nothing is left in the store
    await fx.assert_absent(after)
    assert (await after.consume_code(fx.code)).status is ConsumeStatus.NOT_FOUND
    assert (await after.consume_state(fx.state)).status is ConsumeStatus.NOT_FOUND
    assert (await after.consume_reset_token(fx.reset)).status is ConsumeStatus.NOT_FOUND
    assert (
        await after.attempt_challenge(fx.challenge, fx.answer)
    ).status is AttemptStatus.NOT_FOUND
    assert (await after.hit(fx.rate_key, 1, 86400.0)).count == 1
    assert all(count == 0 for kind, count in (await after.stats()).items() if kind != "rate_limits")

    await fx.assert_owned_by(second, "second")
    assert (await second.hit(fx.rate_key, 1, 86400.0)).count == 2


@pytest.mark.spec("CONTRACT-shared-between-instances", level="MUST")
@pytest.mark.requires(Capability.CODES, Capability.CLIENTS, Capability.SESSIONS)
async def test_instances_of_one_namespace_share_their_records(
    backend: StorageBackend, backend_factory: Factory
) -> None:
    """A second instance with the same settings sees the first one's records and uses.

    A code consumed through one instance is ALREADY_USED through the other.
    """
    other = backend_factory()
    code, client_id, session = uid(), "client-" + uid(), uid()
    record = CodeRecord(client_id=client_id, subject="user-" + uid(), grant_id="grant-" + uid())
    await backend.put_code(code, record, 60.0)
    await backend.create_client(client_id, {"a": 1}, secret=client_id)
    await other.create_session(session, SessionRecord(subject="user-" + uid()), 60.0, 120.0)

    assert (await other.consume_code(code)).status is ConsumeStatus.CONSUMED
    assert (await backend.consume_code(code)).status is ConsumeStatus.ALREADY_USED
    assert await other.verify_client_secret(client_id, client_id) is True
    assert await backend.get_session(session) is not None
