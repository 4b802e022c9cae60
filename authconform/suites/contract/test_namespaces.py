"""Namespaces: one store, many tenants or runs, no record crosses from one to another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from authconform.contract import (
    AccessTokenRecord,
    AttemptStatus,
    BackendSettings,
    Capability,
    ChallengeRecord,
    CodeRecord,
    Conflict,
    ConsumeStatus,
    RefreshTokenRecord,
    ResetTokenRecord,
    RotateStatus,
    SessionRecord,
    StateRecord,
    StorageBackend,
)
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import fresh_namespace, uid

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


class Fixture:
    """One of each record kind under the same keys, written into a backend."""

    def __init__(self) -> None:
        self.client_id = "client-" + uid()
        self.code, self.access, self.refresh = uid(), uid(), uid()
        self.state, self.reset, self.challenge, self.answer = uid(), uid(), uid(), uid()
        self.session, self.subject, self.grant = uid(), "user-" + uid(), "grant-" + uid()
        self.rate_key = "ip:" + uid()

    async def write(self, backend: StorageBackend, label: str, *, other: str | None = None) -> None:
        """Write every record into ``backend`` (namespace ``label``).

        ``other`` names a namespace that already holds the same keys. Keys are fresh random
        ids, so a ``Conflict`` here can only mean that this namespace sees a record of
        another one: it is reported as that leak, not as a crash.
        """
        seen_in = other or "another namespace"
        c = backend.capabilities
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if Capability.CLIENTS in c:
            steps.append(
                (
                    "client",
                    lambda: backend.create_client(self.client_id, {"owner": label}, secret=label),
                )
            )
        if Capability.CODES in c:
            record = CodeRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            steps.append(("code", lambda: backend.put_code(self.code, record, 60.0)))
        if Capability.TOKENS in c:
            access = AccessTokenRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            steps.append(
                ("access token", lambda: backend.put_access_token(self.access, access, 60.0))
            )
        if Capability.REFRESH in c:
            refresh = RefreshTokenRecord(
                client_id=self.client_id,
                subject=self.subject,
                grant_id=self.grant,
                extra={"owner": label},
            )
            steps.append(
                ("refresh token", lambda: backend.put_refresh_token(self.refresh, refresh, 60.0))
            )
        if Capability.STATES in c:
            record_st = StateRecord(client_id=self.client_id, extra={"owner": label})
            steps.append(("state", lambda: backend.put_state(self.state, record_st, 60.0)))
        if Capability.RESET_TOKENS in c:
            record_r = ResetTokenRecord(subject=self.subject, extra={"owner": label})
            steps.append(
                ("reset token", lambda: backend.put_reset_token(self.reset, record_r, 60.0))
            )
        if Capability.CHALLENGES in c:
            record_c = ChallengeRecord(subject=self.subject, max_attempts=3, extra={"owner": label})
            steps.append(
                (
                    "challenge",
                    lambda: backend.put_challenge(self.challenge, self.answer, record_c, 60.0),
                )
            )
        if Capability.SESSIONS in c:
            record_s = SessionRecord(subject=self.subject, extra={"owner": label})
            steps.append(
                ("session", lambda: backend.create_session(self.session, record_s, 60.0, 120.0))
            )
        for kind, step in steps:
            try:
                await step()
            except Conflict:
                raise AssertionError(
                    f"namespace {label} sees namespace {seen_in}'s {kind}: writing the same "
                    f"key in namespace {label} raised Conflict (CONTRACT-namespace-isolation)"
                ) from None

    async def assert_owned_by(self, backend: StorageBackend, label: str, *, other: str) -> None:
        """Every record is there and is ``label``'s, not ``other``'s (read-only checks)."""
        c = backend.capabilities

        def leak(kind: str, owner: object) -> str:
            if owner == other:
                return f"namespace {label} sees namespace {other}'s {kind}"
            return f"namespace {label}'s {kind} was lost or changed (owner {owner!r})"

        if Capability.CLIENTS in c:
            client = await backend.get_client(self.client_id)
            assert client is not None, leak("client", None)
            assert client.metadata["owner"] == label, leak("client", client.metadata["owner"])
            assert await backend.verify_client_secret(self.client_id, label) is True, (
                f"namespace {label} verifies client secrets against another namespace's client"
            )
        if Capability.CODES in c:
            code = await backend.get_code(self.code)
            assert code is not None, leak("code", None)
            assert code.extra["owner"] == label, leak("code", code.extra["owner"])
            assert code.consumed is False, f"namespace {label}'s code is consumed"
        if Capability.TOKENS in c:
            access = await backend.get_access_token(self.access)
            assert access is not None, leak("access token", None)
            assert access.extra["owner"] == label, leak("access token", access.extra["owner"])
        if Capability.REFRESH in c:
            refresh = await backend.get_refresh_token(self.refresh)
            assert refresh is not None, leak("refresh token", None)
            assert refresh.extra["owner"] == label, leak("refresh token", refresh.extra["owner"])
            assert (refresh.rotated, refresh.revoked) == (False, False), (
                f"namespace {label}'s refresh token is rotated or revoked"
            )
        if Capability.SESSIONS in c:
            session = await backend.get_session(self.session)
            assert session is not None, leak("session", None)
            assert session.extra["owner"] == label, leak("session", session.extra["owner"])
            owners = [s.extra["owner"] for s in await backend.list_sessions(self.subject)]
            assert owners == [label], (
                f"namespace {label} lists the sessions of {owners} for its subject"
            )

    async def assert_absent(self, backend: StorageBackend, label: str, *, other: str) -> None:
        """Nothing of this fixture (written in ``other``) is visible in ``label``."""
        c = backend.capabilities

        def leak(kind: str) -> str:
            return f"namespace {label} sees namespace {other}'s {kind}"

        if Capability.CLIENTS in c:
            assert await backend.get_client(self.client_id) is None, leak("client")
            listed = [x.client_id for x in await backend.list_clients()]
            assert self.client_id not in listed, leak("client in list_clients()")
        if Capability.CODES in c:
            assert await backend.get_code(self.code) is None, leak("code")
        if Capability.TOKENS in c:
            assert await backend.get_access_token(self.access) is None, leak("access token")
        if Capability.REFRESH in c:
            assert await backend.get_refresh_token(self.refresh) is None, leak("refresh token")
        if Capability.SESSIONS in c:
            assert await backend.get_session(self.session) is None, leak("session")
            assert await backend.list_sessions(self.subject) == [], leak("session in the index")


@spec("CONTRACT-namespace-isolation", level="MUST")
@requires(*ALL)
async def test_namespaces_do_not_see_each_others_records(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """The same keys written in two namespaces read back as two separate sets of records.

    First a read-only look: B sees nothing A wrote. Then B writes the same keys: that is
    no Conflict, and each namespace reads back its own records.
    """
    a = backend_factory(fresh_namespace(backend_settings))
    b = backend_factory(fresh_namespace(backend_settings))
    shared, only_a = Fixture(), Fixture()
    await shared.write(a, "A")
    await only_a.write(a, "A")
    await shared.assert_absent(b, "B", other="A")
    await only_a.assert_absent(b, "B", other="A")
    await shared.write(b, "B", other="A")
    await shared.assert_owned_by(a, "A", other="B")
    await shared.assert_owned_by(b, "B", other="A")
    await only_a.assert_absent(b, "B", other="A")


@spec("CONTRACT-namespace-isolation", level="MUST")
@requires(*ALL)
async def test_using_a_record_in_one_namespace_leaves_the_other_untouched(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """Consuming, rotating, revoking and answering in one namespace changes nothing in another."""
    a = backend_factory(fresh_namespace(backend_settings))
    b = backend_factory(fresh_namespace(backend_settings))
    fx = Fixture()
    await fx.write(a, "A")
    await fx.write(b, "B", other="A")
    assert (await a.consume_code(fx.code)).status is ConsumeStatus.CONSUMED
    assert (await a.consume_state(fx.state)).status is ConsumeStatus.CONSUMED
    assert (await a.consume_reset_token(fx.reset)).status is ConsumeStatus.CONSUMED
    rotated = await a.rotate_refresh_token(fx.refresh, uid(), 60.0)
    assert rotated.status is RotateStatus.ROTATED
    assert await a.revoke_grant(fx.grant) >= 1
    for _ in range(3):
        await a.attempt_challenge(fx.challenge, "wrong-" + uid())
    assert await a.revoke_all_sessions(fx.subject) == 1
    assert await a.delete_client(fx.client_id) is True
    for _ in range(3):
        await a.hit(fx.rate_key, 2, 86400.0)

    leak = "namespace B sees namespace A's use of its"
    await fx.assert_owned_by(b, "B", other="A")
    assert (await b.consume_code(fx.code)).status is ConsumeStatus.CONSUMED, f"{leak} code"
    assert (await b.consume_state(fx.state)).status is ConsumeStatus.CONSUMED, f"{leak} state"
    assert (await b.consume_reset_token(fx.reset)).status is ConsumeStatus.CONSUMED, (
        f"{leak} reset token"
    )
    second_rotation = await b.rotate_refresh_token(fx.refresh, uid(), 60.0)
    assert second_rotation.status is RotateStatus.ROTATED, f"{leak} refresh token"
    attempt = await b.attempt_challenge(fx.challenge, fx.answer)
    assert attempt.status is AttemptStatus.SUCCESS, f"{leak} challenge"
    hit = await b.hit(fx.rate_key, 2, 86400.0)
    assert (hit.allowed, hit.count) == (True, 1), f"{leak} rate-limit window"


@spec("CONTRACT-drop-namespace", "CONTRACT-namespace-isolation", level="MUST")
@requires(*ALL, Capability.ADMIN)
async def test_drop_namespace_empties_only_its_namespace(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """drop_namespace removes everything of its namespace; another namespace is intact.

    The other namespace's name starts with the dropped one's (``<ns>`` and ``<ns>_2``),
    so a drop by an unanchored prefix (``SCAN ac:{<ns>*``, ``LIKE '<ns>%'``) is caught.
    Each namespace holds its own keys, so that a store shared by every namespace fails
    here at the drop, not at the first write; the rate-limit key is the same in both.
    """
    dropped = fresh_namespace(backend_settings)
    a, b = backend_factory(dropped), backend_factory(dropped + "_2")
    fx_a, fx_b = Fixture(), Fixture()
    fx_b.rate_key = fx_a.rate_key
    await fx_a.write(a, "A")
    await fx_b.write(b, "B")
    await a.hit(fx_a.rate_key, 1, 86400.0)
    await b.hit(fx_a.rate_key, 1, 86400.0)
    await a.drop_namespace()

    after = backend_factory(dropped)  # a new instance: nothing is left in the store
    await fx_a.assert_absent(after, "A (dropped)", other="A")
    assert (await after.consume_code(fx_a.code)).status is ConsumeStatus.NOT_FOUND
    assert (await after.consume_state(fx_a.state)).status is ConsumeStatus.NOT_FOUND
    assert (await after.consume_reset_token(fx_a.reset)).status is ConsumeStatus.NOT_FOUND
    assert (
        await after.attempt_challenge(fx_a.challenge, fx_a.answer)
    ).status is AttemptStatus.NOT_FOUND
    assert (await after.hit(fx_a.rate_key, 1, 86400.0)).count == 1
    assert all(count == 0 for kind, count in (await after.stats()).items() if kind != "rate_limits")

    dropped_too = "drop_namespace of A removed namespace B's"
    try:
        await fx_b.assert_owned_by(b, "B", other="A")
    except AssertionError as exc:
        raise AssertionError(f"{dropped_too} records: {exc}") from None
    assert (await b.hit(fx_a.rate_key, 1, 86400.0)).count == 2, f"{dropped_too} rate window"
    assert (
        await b.attempt_challenge(fx_b.challenge, fx_b.answer)
    ).status is AttemptStatus.SUCCESS, f"{dropped_too} challenge"
    assert (await b.consume_code(fx_b.code)).status is ConsumeStatus.CONSUMED, f"{dropped_too} code"


@spec("CONTRACT-shared-between-instances", level="MUST")
@requires(Capability.CODES, Capability.CLIENTS, Capability.SESSIONS)
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
