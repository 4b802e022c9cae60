"""The pytest fixtures of authconform's suites.

They reach the shipped suites through ``authconform/suites/conftest.py`` only, so their
short names (``backend``, ``clock``, ``live``) never shadow or clash with a host project's
fixtures. To use them in your own tests, opt in from your root ``conftest.py``::

    pytest_plugins = ["authconform.fixtures"]

- ``backend``: the backend under test (parametrized by ``--backend``), in this run's
  namespace, dropped at the end; checks marked ``requires(...)`` skip as not-applicable
  on a backend that does not declare the capability.
- ``backend_factory``: ``make(namespace=None, outage=False)`` more instances (another
  process of the same deployment, a fresh namespace, or one whose store is down).
- ``backend_settings``, ``backend_spec``, ``clock`` (a ``TestClock``).
- ``live``: the live target of a check (parametrized by ``--server-url`` or, without one,
  the reference server over each ``--backend``).

Heavy imports (httpx, the reference server) happen inside the fixtures that need them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from authconform._session import async_fixture, run_config
from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings, Capability, FakeClock, StorageBackend

__all__ = [
    "BackendFactory",
    "TestClock",
    "backend",
    "backend_factory",
    "backend_settings",
    "backend_spec",
    "clock",
    "live",
    "live_session",
    "live_target_spec",
]


class TestClock:
    """Time for TTL checks: a fake clock the backend reads, or real time (Redis)."""

    __test__ = False

    def __init__(self, *, fake: bool) -> None:
        """``fake=True`` gives a FakeClock; otherwise real time and real sleeps."""
        self.fake = FakeClock(start=time.time()) if fake else None

    def now(self) -> float:
        """The time the backend sees."""
        return self.fake.now() if self.fake is not None else time.time()

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the backend (sleeping only if the store keeps time)."""
        if self.fake is not None:
            self.fake.advance(seconds)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
def backend_spec(request: pytest.FixtureRequest) -> BackendSpec:
    """The backend under test (parametrized by the plugin from ``--backend``)."""
    param = getattr(request, "param", None)
    if param is None:  # requested outside our parametrization: the first selected backend
        return run_config(request.config).specs[0]  # type: ignore[no-any-return]
    return param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def clock(backend_spec: BackendSpec) -> TestClock:
    """The clock the backend under test reads."""
    return TestClock(fake=backend_spec.uses_clock)


@pytest.fixture(scope="session")
def backend_settings(
    request: pytest.FixtureRequest, backend_spec: BackendSpec, clock: TestClock
) -> BackendSettings:
    """Settings of the run's namespace for the backend under test."""
    base = run_config(request.config).settings
    if clock.fake is not None:
        base = replace(base, clock=clock.fake)
    if backend_spec.name == "sqlite" or "sqlite" in backend_spec.source:
        tmp = request.config._tmp_path_factory.mktemp("sqlite")  # type: ignore[attr-defined]
        base = replace(base, sqlite_path=str(tmp / "authconform.sqlite3"))
    return base


def check_capabilities(item: pytest.Item, backend: StorageBackend) -> None:
    """Skip (not-applicable) when the backend lacks a capability the check requires."""
    marker = item.get_closest_marker("authconform_requires")
    if marker is None:
        return
    wanted = [c for c in marker.args if isinstance(c, Capability)]
    missing = [c for c in wanted if c not in backend.capabilities]
    if missing and (not marker.kwargs.get("any_of") or len(missing) == len(wanted)):
        names = ", ".join(c.value for c in missing)
        pytest.skip(f"not-applicable: backend {backend.name} does not declare {names}")


@async_fixture(scope="session")  # type: ignore[untyped-decorator]
async def _authconform_session_backend(
    backend_spec: BackendSpec, backend_settings: BackendSettings
) -> AsyncIterator[StorageBackend]:
    backend = backend_spec.factory(backend_settings)
    try:
        yield backend
    finally:
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()


@pytest.fixture
def backend(
    request: pytest.FixtureRequest, _authconform_session_backend: StorageBackend
) -> StorageBackend:
    """The backend under test, in this run's namespace; skips by ``requires``."""
    check_capabilities(request.node, _authconform_session_backend)
    return _authconform_session_backend


BackendFactory = Callable[..., StorageBackend]


@async_fixture
async def backend_factory(
    request: pytest.FixtureRequest,
    backend_spec: BackendSpec,
    backend_settings: BackendSettings,
) -> AsyncIterator[BackendFactory]:
    """Make more instances: ``make(namespace=None, outage=False)``.

    ``namespace=None`` shares the run's namespace (another process of the same
    deployment); a new namespace is dropped at teardown; ``outage=True`` gives a
    backend whose store is down (skips as not-applicable if the backend has none).
    """
    made: list[tuple[StorageBackend, bool]] = []

    def make(namespace: str | None = None, *, outage: bool = False) -> StorageBackend:
        settings = backend_settings
        if namespace is not None:
            settings = replace(settings, namespace=namespace)
        if outage:
            down = backend_spec.outage_settings(settings)
            if down is None:
                pytest.skip(
                    f"not-applicable: backend {backend_spec.name} has no store that can be down"
                )
            settings = down
        instance = backend_spec.factory(settings)
        check_capabilities(request.node, instance)
        made.append((instance, namespace is not None and not outage))
        return instance

    yield make
    for instance, drop in reversed(made):
        try:
            if drop:
                await instance.drop_namespace()
        finally:
            await instance.close()


# live targets ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_target_spec(request: pytest.FixtureRequest) -> Any:
    """The live target under test (parametrized by the live plugin)."""
    return request.param


@async_fixture(scope="session")  # type: ignore[untyped-decorator]
async def live_session(request: pytest.FixtureRequest, live_target_spec: Any) -> AsyncIterator[Any]:
    """The live target of this parametrization: discovery, clients, cleanup at the end."""
    from authconform.live._session import open_live_session

    async with open_live_session(request.config, live_target_spec) as live:
        yield live


@pytest.fixture
def live(request: pytest.FixtureRequest, live_session: Any) -> Any:
    """The live target for one check; its exchanges are recorded for this check only."""
    from authconform.live._pytest import attach_live

    return attach_live(request, live_session)
