"""Administration: health, stats, purge_expired, drop_namespace."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import pytest

from authconform.backends._registry import BackendSpec
from authconform.contract import (
    AccessTokenRecord,
    BackendSettings,
    Capability,
    ChallengeRecord,
    CodeRecord,
    ConsumeStatus,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
)
from authconform.contract._validate import KINDS
from authconform.fixtures import TestClock
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import fresh_namespace, uid

Factory = Callable[..., StorageBackend]

STORED = (
    Capability.CLIENTS,
    Capability.CODES,
    Capability.TOKENS,
    Capability.REFRESH,
    Capability.STATES,
    Capability.CHALLENGES,
    Capability.RESET_TOKENS,
    Capability.SESSIONS,
)


def code_record() -> CodeRecord:
    return CodeRecord(client_id="c-" + uid(), subject="u-" + uid(), grant_id="g-" + uid())


async def put_one_of_each(backend: StorageBackend, ttl: float) -> None:
    """One record of every kind with a TTL (clients have none)."""
    subject, grant = "u-" + uid(), "g-" + uid()
    await backend.put_code(uid(), code_record(), ttl)
    await backend.put_access_token(
        uid(), AccessTokenRecord(client_id="c", subject=subject, grant_id=grant), ttl
    )
    await backend.put_refresh_token(
        uid(), RefreshTokenRecord(client_id="c", subject=subject, grant_id=grant), ttl
    )
    await backend.put_state(uid(), StateRecord(client_id="c-" + uid()), ttl)
    await backend.put_challenge(uid(), uid(), ChallengeRecord(subject=subject), ttl)
    await backend.put_reset_token(uid(), ResetTokenRecord(subject=subject), ttl)
    await backend.create_session(uid(), SessionRecord(subject=subject), ttl, ttl)


@spec("CONTRACT-health-reports-durability", level="MUST")
@requires(Capability.ADMIN)
async def test_health_reports_latency_and_durability(backend: StorageBackend) -> None:
    """health() is ok, with a finite non-negative latency and the store's durability settings."""
    health = await backend.health()
    assert health.ok is True, health.detail
    assert isinstance(health.latency_ms, float | int)
    assert math.isfinite(health.latency_ms)
    assert health.latency_ms >= 0
    assert isinstance(health.durability, Mapping)
    assert health.durability, "durability must name the store's persistence settings"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in health.durability.items())


@spec("CONTRACT-stats-count-live-records", level="MUST")
@requires(Capability.ADMIN, *STORED)
async def test_stats_count_live_records_per_kind(
    backend_factory: Factory, backend_settings: BackendSettings, clock: TestClock
) -> None:
    """stats() counts the live records of each kind in the namespace, and not expired ones."""
    backend = backend_factory(fresh_namespace(backend_settings))
    empty = await backend.stats()
    assert set(KINDS) <= set(empty), f"stats() misses kinds: {set(KINDS) - set(empty)}"
    assert all(empty[kind] == 0 for kind in KINDS), (
        f"stats() of a fresh namespace counts records it never stored: {empty}"
    )

    await backend.create_client("client-" + uid(), {})
    await backend.create_client("client-" + uid(), {})
    await put_one_of_each(backend, 60.0)
    await put_one_of_each(backend, 60.0)
    await put_one_of_each(backend, 0.4)
    counts = await backend.stats()
    assert {k: counts[k] for k in KINDS if k != "rate_limits"} == {
        k: 2 if k == "clients" else 3 for k in KINDS if k != "rate_limits"
    }
    await clock.advance(0.6)
    counts = await backend.stats()
    assert {k: counts[k] for k in KINDS if k != "rate_limits"} == {
        k: 2 for k in KINDS if k != "rate_limits"
    }, "stats() counts expired records"


@spec(
    "CONTRACT-purge-expired", "CONTRACT-expired-distinct-from-not-found", level="MUST"
)
@requires(Capability.ADMIN, Capability.CODES)
async def test_purge_expired_removes_expired_records_and_counts_them(
    backend_spec: BackendSpec, backend_settings: BackendSettings, clock: TestClock
) -> None:
    """purge_expired() removes the expired records the store remembers and counts them.

    Before the purge an expired code is EXPIRED (remembered); after it, NOT_FOUND; a live
    code stays. On a store that keeps time itself (Redis) the expired records are the
    tombstones kept for ``expired_retention``: the backend is made here with a retention
    of 60 s, so they are still there when the purge runs (real sleeps, short TTLs).
    """
    settings = replace(
        backend_settings, namespace=fresh_namespace(backend_settings), expired_retention=60.0
    )
    backend = backend_spec.factory(settings)
    missing = {Capability.ADMIN, Capability.CODES} - backend.capabilities
    if missing:  # made here, not by a fixture: check the requires marker by hand
        await backend.close()
        names = ", ".join(sorted(c.value for c in missing))
        pytest.skip(f"not-applicable: backend {backend.name} does not declare {names}")
    try:
        expired, live = [uid(), uid()], uid()
        for code in expired:
            await backend.put_code(code, code_record(), 0.3)
        await backend.put_code(live, code_record(), 60.0)
        await clock.advance(0.6)
        assert (await backend.consume_code(expired[0])).status is ConsumeStatus.EXPIRED
        purged = await backend.purge_expired()
        assert purged == 2, f"purge_expired() removed {purged} records, expected the 2 expired"
        for code in expired:
            assert (await backend.consume_code(code)).status is ConsumeStatus.NOT_FOUND, (
                "an expired code is still remembered after purge_expired()"
            )
        assert await backend.get_code(live) is not None, "purge_expired() removed a live code"
        assert await backend.purge_expired() == 0, "a second purge found more to remove"
    finally:
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()


@spec("CONTRACT-purge-expired", level="MUST")
@requires(Capability.ADMIN, Capability.CODES, Capability.CLIENTS)
async def test_purge_expired_keeps_live_records(
    backend_factory: Factory, backend_settings: BackendSettings, clock: TestClock
) -> None:
    """In a namespace of live records only, purge_expired() removes nothing and returns 0.

    Live codes (consumed or not) and clients are left alone.
    """
    backend = backend_factory(fresh_namespace(backend_settings))
    live, used, client_id = uid(), uid(), "client-" + uid()
    await backend.put_code(live, code_record(), 60.0)
    await backend.put_code(used, code_record(), 60.0)
    assert (await backend.consume_code(used)).status is ConsumeStatus.CONSUMED
    await backend.create_client(client_id, {"a": 1})
    await clock.advance(0.1)
    purged = await backend.purge_expired()
    assert isinstance(purged, int)
    assert purged == 0, f"purge_expired() removed {purged} records of a namespace of live ones"
    assert (await backend.consume_code(live)).status is ConsumeStatus.CONSUMED
    assert (await backend.consume_code(used)).status is ConsumeStatus.ALREADY_USED
    assert await backend.get_client(client_id) is not None


@spec("CONTRACT-drop-namespace", level="MUST")
@requires(Capability.ADMIN, *STORED)
async def test_drop_namespace_removes_every_record_of_the_namespace(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """After drop_namespace() the namespace is empty: stats all zero, no clients left."""
    namespace = fresh_namespace(backend_settings)
    backend = backend_factory(namespace)
    client_id = "client-" + uid()
    await backend.create_client(client_id, {})
    await put_one_of_each(backend, 60.0)
    await backend.hit("ip:" + uid(), 5, 60.0)
    await backend.drop_namespace()
    after = backend_factory(namespace)
    counts = await after.stats()
    assert all(counts[kind] == 0 for kind in KINDS), counts
    assert await after.list_clients() == []
    assert client_id not in await after.dump_raw()
