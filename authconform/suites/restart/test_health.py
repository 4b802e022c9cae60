"""health() tells the truth about the store: up or down, latency, durability settings.

- In each durability variant of the store the suite started, ``health()`` reports the
  settings the store itself has, and they judge as they should (the strict variant
  keeps acknowledged writes, the others lose them): a backend that presents a store
  without persistence as durable fails here.
- With the store away, ``health()`` says down, promptly, and never raises; back, up.
- ``--authconform-profile=production``: the store the run is configured with (the
  explicit URL, or the default one) must keep every acknowledged write and must not
  evict live records (Redis ``maxmemory-policy``), judged from its own configuration.
  Without the profile the verdict is reported, not enforced.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from authconform.backends._durability import assess
from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings
from authconform.markers import restart, spec
from authconform.procs import Fault, FaultProxy
from authconform.suites.restart._figures import record
from authconform.suites.restart._store import Store, option

pytestmark = [restart]

#: what each variant's settings mean for acknowledged writes
LOSES = {"strict": False, "relaxed": True, "none": True}


@spec("CONTRACT-health-reports-durability", "CONTRACT-acknowledged-writes-are-durable",
      level="MUST")
@pytest.mark.parametrize("variant", ["strict", "relaxed", "none"])
async def test_health_reports_the_durability_the_store_has(
    stores: Callable[[str], Store], variant: str
) -> None:
    """health() is up, with a latency, and the durability settings it reports are the
    store's own: they judge as durable exactly when the store's settings are."""
    store = stores(variant)
    if store.external:
        pytest.skip("not-applicable: the suite does not set the durability of a store it "
                    "did not start; the production-profile check judges it")
    async with store:
        health = await store.make(store.namespace()).health()
    assert health.ok, f"{store.describe}: health() says down with the store up: {health.detail}"
    assert math.isfinite(health.latency_ms) and health.latency_ms >= 0, (
        f"{store.describe}: health() latency {health.latency_ms!r}"
    )
    verdict = assess(health.durability)
    if verdict.loses is None:
        pytest.fail(f"{store.describe}: health() reports no durability settings authconform "
                    f"can judge: {dict(health.durability)}")
    if verdict.loses != LOSES[variant]:
        said = "durable" if not verdict.loses else "lossy"
        runs = store.variant.label if store.variant else "?"
        pytest.fail(
            f"{store.describe}: health() presents the store as {said} "
            f"({dict(health.durability)}), but the store runs {runs}"
            + (": persistence off presented as durable" if not verdict.loses else "")
        )


@spec("CONTRACT-health-reports-durability", "CONTRACT-fail-closed", level="MUST")
async def test_health_says_down_while_the_store_is_away(store: Store) -> None:
    """With the store away health() answers ok=False within the bound, without raising;
    with it back, ok=True (the same instance)."""
    if store.kind not in ("redis", "postgres"):
        pytest.skip(f"not-applicable: a {store.kind} store is a file; the contract suite's "
                    "outage check covers it")
    assert store.service is not None
    from authconform.procs._readiness import split_hostport

    host, port = split_hostport(store.service.url, 6379 if store.kind == "redis" else 5432)
    key = "redis_url" if store.kind == "redis" else "postgres_url"
    with FaultProxy((host, port), store.kind) as proxy:
        async with store:
            b = store.make(store.namespace(), **{key: proxy.url(store.service.url)})
            assert (await b.health()).ok
            proxy.set(Fault("refuse"))
            try:
                down = await asyncio.wait_for(b.health(), 15)
            except TimeoutError:
                pytest.fail(f"{store.describe}: health() hung for 15 s with the store away")
            proxy.set(Fault())
            assert down.ok is False and down.detail, (
                f"{store.describe}: health() with the store away: ok={down.ok}, "
                f"detail={down.detail!r}"
            )
            back = None
            for _ in range(50):
                back = await b.health()
                if back.ok:
                    break
                await asyncio.sleep(0.2)
            assert back is not None and back.ok, (
                f"{store.describe}: health() still down 10 s after the store returned"
            )


@spec("CONTRACT-acknowledged-writes-are-durable", level="MUST")
async def test_the_configured_store_keeps_acknowledged_writes(
    request: pytest.FixtureRequest, backend_spec: BackendSpec, backend_settings: BackendSettings
) -> None:
    """Under --authconform-profile=production, the run's store must keep every
    acknowledged write and must not evict live records, by its own configuration."""
    backend = backend_spec.factory(backend_settings)
    try:
        health = await backend.health()
    finally:
        await backend.close()
    verdict = assess(health.durability)
    profile = option(request.config, "profile", "default")
    record("durability verdict", backend_spec.name, f"profile {profile}", verdict.summary())
    if profile != "production":
        return
    if not health.ok:
        pytest.fail(f"{backend_spec.name}: the store is down ({health.detail})")
    if verdict.loses is None:
        pytest.fail(f"untestable: {backend_spec.name}: {verdict.summary()} "
                    f"({dict(health.durability)})")
    problems = []
    if verdict.loses:
        problems.append(
            f"its settings lose acknowledged writes (process crash: {verdict.process_crash}; "
            f"machine crash: {verdict.machine_crash})"
        )
    if verdict.evicts:
        problems.append("it may evict live records under memory pressure")
    if problems:
        pytest.fail(
            f"{backend_spec.name} under --authconform-profile=production: "
            + "; ".join(problems) + f". {'; '.join(verdict.reasons)}"
        )
