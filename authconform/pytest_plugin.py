"""The pytest plugin (entry point ``pytest11``): options, fixtures, markers, hooks.

Every setting is declared once in ``OPTIONS`` and reachable as a CLI option, an
environment variable and an ini key, in the order CLI > env > ini > default.
Heavy imports (drivers, servers) happen lazily inside fixtures.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from authconform._options import Option
from authconform._urls import safe_url
from authconform.backends._registry import BackendSpec, resolve
from authconform.contract import BackendSettings, Capability, FakeClock, StorageBackend
from authconform.errors import ConfigurationError
from authconform.spec import ids as spec_ids

__all__ = ["OPTIONS", "Option", "TestClock"]

SKIP_CATEGORIES = ("not-applicable:", "unavailable:", "disabled:", "not-advertised:")


OPTIONS: tuple[Option, ...] = (
    Option(
        "backend",
        "storage backend(s): a name (memory, sqlite, fakeredis, redis, postgres, or an "
        "entry point of group authconform.backends) or package.module:factory; repeat the "
        "option or give a comma list",
        default="memory",
        cli="--backend",
        multiple=True,
    ),
    Option("redis_url", "Redis URL for the redis backend", "redis://127.0.0.1:6379/0"),
    Option(
        "postgres_url",
        "PostgreSQL URL for the postgres backend",
        "postgresql://postgres@127.0.0.1:5432/test",
    ),
    Option(
        "namespace",
        "namespace (key prefix / schema) of this run; default: a fresh random one",
    ),
    Option("strict", "fail on SHOULD violations too (they are warnings otherwise)", flag=True),
    Option(
        "hypothesis_profile",
        "budget of the model-based (state machine) checks: dev, ci or nightly",
        "ci",
    ),
)


def _sub_options() -> tuple[Option, ...]:
    """Options declared by the live-suite plugin module (authconform.live._pytest)."""
    live_plugin = _live_plugin()
    return () if live_plugin is None else tuple(getattr(live_plugin, "LIVE_OPTIONS", ()))


def _live_plugin() -> Any:
    """The live-suite sub-plugin module, or None while it does not exist."""
    try:
        return importlib.import_module("authconform.live._pytest")
    except ModuleNotFoundError as exc:
        if exc.name in ("authconform.live._pytest", "authconform.live"):
            return None
        raise


OPTIONS = OPTIONS + _sub_options()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare every option of ``OPTIONS`` on the CLI and in the ini file."""
    group = parser.getgroup("authconform", "authconform conformance suite")
    for opt in OPTIONS:
        env_note = f" [env {opt.env}, ini {opt.ini}]"
        if opt.flag:
            group.addoption(
                opt.flag_name,
                action="store_true",
                default=None,
                dest=opt.ini,
                help=opt.help + env_note,
            )
            parser.addini(opt.ini, opt.help, type="bool", default=False)
        elif opt.multiple:
            group.addoption(
                opt.flag_name, action="append", default=None, dest=opt.ini, help=opt.help + env_note
            )
            parser.addini(
                opt.ini + "s" if not opt.ini.endswith("s") else opt.ini,
                opt.help,
                type="linelist",
                default=[],
            )
        else:
            group.addoption(opt.flag_name, default=None, dest=opt.ini, help=opt.help + env_note)
            parser.addini(opt.ini, opt.help, default=opt.default or "")


def setting(config: pytest.Config, name: str) -> Any:
    """Resolve one option: CLI > env > ini > default. Lists for ``multiple`` options."""
    opt = next(o for o in OPTIONS if o.name == name)
    cli = config.getoption(opt.ini)
    if cli is not None:
        if opt.multiple:
            return [v.strip() for item in cli for v in item.split(",") if v.strip()]
        return cli
    env = os.environ.get(opt.env)
    if env:
        if opt.flag:
            return env.lower() in ("1", "true", "yes", "on")
        if opt.multiple:
            return [v.strip() for v in env.split(",") if v.strip()]
        return env
    ini_name = opt.ini + ("s" if opt.multiple and not opt.ini.endswith("s") else "")
    ini = config.getini(ini_name)
    if opt.flag:
        return bool(ini)
    if opt.multiple:
        values = [v.strip() for item in ini for v in item.split(",") if v.strip()]
        return values or ([opt.default] if opt.default else [])
    return ini or opt.default


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


@dataclass
class RunConfig:
    """What the plugin resolved at session start."""

    specs: list[BackendSpec]
    settings: BackendSettings


def _settings(config: pytest.Config) -> BackendSettings:
    namespace = setting(config, "namespace") or "ac_" + secrets.token_hex(5)
    return BackendSettings(
        namespace=namespace,
        redis_url=setting(config, "redis_url"),
        postgres_url=setting(config, "postgres_url"),
    )


def _probe(spec: BackendSpec, settings: BackendSettings) -> None:
    """Reach the backend's store once; raise UsageError with one line if it is down."""
    if spec.service is None:
        return

    async def probe() -> tuple[bool, str]:
        backend = spec.factory(settings)
        try:
            health = await backend.health()
            return health.ok, health.detail
        finally:
            await backend.close()

    try:
        ok, detail = asyncio.run(probe())
    except Exception as exc:  # a broken factory is a usage error too
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        url = settings.redis_url if spec.service == "redis" else settings.postgres_url
        opt = "redis_url" if spec.service == "redis" else "postgres_url"
        raise pytest.UsageError(
            f"backend {spec.name}: cannot reach {spec.service} at {safe_url(url)} ({detail}). "
            f"Start {spec.service} there, or point at one with "
            f"--authconform-{opt.replace('_', '-')}, env AUTHCONFORM_{opt.upper()} "
            f"or ini authconform_{opt}."
        )


def pytest_configure(config: pytest.Config) -> None:
    """Register markers and sub-plugins; resolve backends (unknown ones are usage errors)."""
    live_plugin = _live_plugin()
    if live_plugin is not None:
        if not config.pluginmanager.is_registered(live_plugin):
            config.pluginmanager.register(live_plugin, "authconform-live")
    config.addinivalue_line(
        "markers", "spec(*ids, level='MUST'): normative text this check enforces"
    )
    config.addinivalue_line(
        "markers", "requires(*capabilities): storage capabilities the check needs"
    )
    config.addinivalue_line("markers", "race: a concurrency check")
    config.addinivalue_line("markers", "restart: a check that restarts or kills a process")
    config.addinivalue_line("markers", "live: a check of a live server over HTTP")
    try:
        specs = [resolve(v) for v in setting(config, "backend")]
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise pytest.UsageError(f"--backend lists a backend twice: {', '.join(names)}")
    config.stash[_RUN] = RunConfig(specs, _settings(config))


_RUN = pytest.StashKey[RunConfig]()


def run_config(config: pytest.Config) -> RunConfig:
    """The resolved configuration of this run."""
    return config.stash[_RUN]


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Validate spec markers; probe the stores the collected tests will use."""
    needs_backend = False
    for item in items:
        for mark in item.iter_markers("spec"):
            level = mark.kwargs.get("level", "MUST")
            for spec_id in mark.args:
                try:
                    spec_ids.parse(spec_id, level)
                except ValueError as exc:
                    raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        is_suite = "suites" in item.path.parts and "selftest" not in item.path.parts
        if is_suite and item.get_closest_marker("spec") is None:
            raise pytest.UsageError(f"{item.nodeid}: a check needs @pytest.mark.spec(...)")
        if "backend_spec" in getattr(item, "fixturenames", ()):
            needs_backend = True
    if needs_backend:
        run = run_config(config)
        for spec in run.specs:
            _probe(spec, run.settings)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that uses a backend by the selected backends."""
    if "backend_spec" in metafunc.fixturenames:
        specs = run_config(metafunc.config).specs
        metafunc.parametrize(
            "backend_spec", specs, ids=[s.name for s in specs], indirect=True, scope="session"
        )


@pytest.fixture(scope="session")
def backend_spec(request: pytest.FixtureRequest) -> BackendSpec:
    """The backend under test (parametrized)."""
    return request.param  # type: ignore[no-any-return]


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


def _check_capabilities(item: pytest.Item, backend: StorageBackend) -> None:
    marker = item.get_closest_marker("requires")
    if marker is None:
        return
    missing = [
        c for c in marker.args if isinstance(c, Capability) and c not in backend.capabilities
    ]
    if missing:
        names = ", ".join(c.value for c in missing)
        pytest.skip(f"not-applicable: backend {backend.name} does not declare {names}")


try:  # pytest-asyncio is a dependency; keep import errors readable
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover
    raise ImportError("authconform needs pytest-asyncio: pip install pytest-asyncio") from exc


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _session_backend(
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
def backend(request: pytest.FixtureRequest, _session_backend: StorageBackend) -> StorageBackend:
    """The backend under test, in this run's namespace; skips by ``requires``."""
    _check_capabilities(request.node, _session_backend)
    return _session_backend


BackendFactory = Callable[..., StorageBackend]


@pytest_asyncio.fixture(loop_scope="session")
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
        _check_capabilities(request.node, instance)
        made.append((instance, namespace is not None and not outage))
        return instance

    yield make
    for instance, drop in reversed(made):
        try:
            if drop:
                await instance.drop_namespace()
        finally:
            await instance.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a skip without a ``<category>: <sentence>`` reason into a failure."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if not reason.startswith(SKIP_CATEGORIES):
            report.outcome = "failed"
            report.longrepr = (
                f"skip reason must start with one of {', '.join(SKIP_CATEGORIES)}; got {reason!r}"
            )
    return report
