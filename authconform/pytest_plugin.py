"""The pytest plugin (entry point ``pytest11``): options, markers, collection of our suites.

It loads in every project where authconform is installed, so it changes nothing that is
not ours: its policies (spec marks required, ``<category>:`` skip reasons, SHOULD breaches
reported as warned) apply to the items of the shipped suites only (``authconform/suites``);
its marks are prefixed ``authconform_``; its fixtures reach our suites only (see
``authconform.fixtures``); it needs no ini line of the host project (our checks run on our
own event loop, are collected whatever ``python_files``/``python_functions`` say, and are
imported by module name without touching ``sys.path``); and it imports nothing heavy until
a feature is used.

Settings: one table, ``authconform._options.OPTIONS`` (CLI > env > ini > default).
Sub-plugins (``SUBPLUGINS``) add the live suite's hooks and the reports.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import secrets
import types
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from authconform import _options, _session
from authconform._extras import extra_for, missing_modules, sentence
from authconform._options import SettingError, resolve, setting
from authconform._session import (
    SUITES_DIR,
    RunConfig,
    close_loop,
    is_ours,
    open_loop,
    prepare_module,
    run,
    run_config,
    set_run_config,
)
from authconform._urls import safe_url
from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings
from authconform.errors import ConfigurationError
from authconform.markers import MARKERS

__all__ = ["SKIP_CATEGORIES", "SUBPLUGINS", "SuiteModule"]

SKIP_CATEGORIES = ("not-applicable:", "unavailable:", "disabled:", "not-advertised:")

#: pytest sub-plugins registered when present (each imports nothing heavy at import time)
SUBPLUGINS = (
    "authconform.cleanup._pytest",
    "authconform.live._pytest",
    "authconform.redaction._pytest",
    "authconform.report._pytest",
)


def _subplugins() -> list[Any]:
    found = []
    for name in SUBPLUGINS:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
    return found


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare every option of ``authconform._options.OPTIONS`` (CLI and ini)."""
    _options.register(parser)


def _namespace(config: pytest.Config) -> tuple[str, str]:
    value, source = resolve(config, "namespace")
    if value:
        from authconform.contract._validate import check_namespace

        try:
            check_namespace(value)
        except ValueError as exc:
            raise pytest.UsageError(f"--authconform-namespace={value!r}: {exc}") from None
        if len(value) > 30:
            raise pytest.UsageError(
                f"--authconform-namespace={value!r}: at most 30 characters (the live "
                "suite derives longer names from it)"
            )
        return value, source
    return "ac_" + secrets.token_hex(5), "random"


def pytest_configure(config: pytest.Config) -> None:
    """Register marks and sub-plugins; validate settings; resolve the backends."""
    open_loop()
    for plugin in _subplugins():
        if not config.pluginmanager.is_registered(plugin):
            config.pluginmanager.register(plugin, "authconform-" + plugin.__name__)
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    try:
        _options.validate(config)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    from authconform.backends._registry import resolve as resolve_backend

    values, source = resolve(config, "backend")
    try:
        specs = [resolve_backend(v) for v in values]
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise pytest.UsageError(f"--backend lists a backend twice: {', '.join(names)}")
    namespace, ns_source = _namespace(config)
    settings = BackendSettings(
        namespace=namespace,
        redis_url=setting(config, "redis_url"),
        postgres_url=setting(config, "postgres_url"),
    )
    server_urls = [u for u in setting(config, "server_url") if u]
    set_run_config(config, RunConfig(specs, settings, source, ns_source, server_urls))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the session event loop."""
    close_loop()


# collection of our suites -------------------------------------------------------------


#: the package's own suites directory (``is_ours`` may be pointed elsewhere by self-tests)
_PACKAGE_SUITES = SUITES_DIR


def _module_name(path: Path) -> str | None:
    path = path.resolve()
    if not path.is_relative_to(_PACKAGE_SUITES):
        return None
    rel = path.relative_to(_PACKAGE_SUITES.parent.parent)
    return ".".join(rel.with_suffix("").parts)


class SuiteModule(pytest.Module):
    """A module of the shipped suites: imported by its module name, coroutines made sync.

    Collected whatever the host project's ``python_files`` / ``python_functions`` say and
    whatever its ``--import-mode`` (nothing is added to ``sys.path``).
    """

    def _getobj(self) -> Any:
        name = _module_name(self.path)
        if name is None:  # a self-test's stand-in for our suites: import as pytest does
            module = super()._getobj()  # type: ignore[no-untyped-call]
            prepare_module(module)
            return module
        try:
            module = importlib.import_module(name)
        except pytest.skip.Exception:
            raise
        except ModuleNotFoundError as exc:
            extra = extra_for(exc.name)
            if extra is None:
                raise self.CollectError(
                    f"cannot import {name} ({self.path}): {type(exc).__name__}: {exc}"
                ) from exc
            # one usage error for the whole run (pytest_collection_modifyitems), not one
            # collection error per module: this module collects nothing
            suite = name.split(".")[2] if name.count(".") >= 2 else name
            _missing(self.config)[f"the {suite} suite"] = (str(exc.name), extra)
            return types.ModuleType(name)
        except (ImportError, SyntaxError) as exc:
            raise self.CollectError(
                f"cannot import {name} ({self.path}): {type(exc).__name__}: {exc}"
            ) from exc
        found = Path(getattr(module, "__file__", "") or "").resolve()
        if found != self.path.resolve():
            raise self.CollectError(
                f"{name} imports from {found}, not from {self.path}: two copies of "
                "authconform are installed; remove one"
            )
        self.config.pluginmanager.consider_module(module)
        prepare_module(module)
        return module

    def funcnamefilter(self, name: str) -> bool:
        """Our checks are the functions named ``test*``."""
        return name.startswith("test")

    def classnamefilter(self, name: str) -> bool:
        """Our test classes are named ``Test*``."""
        return name.startswith("Test")


_MISSING = pytest.StashKey[dict[str, tuple[str, str]]]()


def _missing(config: pytest.Config) -> dict[str, tuple[str, str]]:
    """Features of our suites whose extra is missing: feature -> (module, extra)."""
    return config.stash.setdefault(_MISSING, {})


def _check_extras(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One usage error when a collected suite of ours needs an extra that is missing."""
    missing = _missing(config)
    if missing:
        feature, (module, extra) = next(iter(missing.items()))
        raise pytest.UsageError(sentence(feature, [module], [extra]))
    if setting(config, "server_url"):
        return
    if any(
        is_ours(getattr(i, "path", None)) and "live_target_spec" in getattr(i, "fixturenames", ())
        for i in items
    ):
        modules = missing_modules("server")
        if modules:
            raise pytest.UsageError(
                sentence(
                    "the live suite without --server-url starts the reference server, which",
                    modules,
                    ["server"],
                )
                + " (or check a deployment with --server-url=URL)"
            )


def _is_suite_file(path: Path) -> bool:
    return path.suffix == ".py" and path.name.startswith("test_") and is_ours(path)


_FIXTURES_AT = pytest.StashKey[set[str]]()


def _register_fixtures(parent: pytest.Collector) -> None:
    """Make our fixtures visible to the items under ``authconform/suites`` only.

    ``authconform.fixtures`` is registered at the node of the suites' package, and a
    suite's own ``_fixtures.py`` (e.g. ``authconform/suites/restart/_fixtures.py``) at
    that suite's node. There is deliberately no ``conftest.py`` in the package: a
    conftest outside the host's rootdir would make its fixtures global.
    """
    done = parent.session.stash.setdefault(_FIXTURES_AT, set())
    for node in parent.iter_parents():
        path = getattr(node, "path", None)
        if path is None or not isinstance(node, pytest.Collector):
            continue
        path = Path(path).resolve()
        if path == _session.SUITES_DIR:
            module = "authconform.fixtures"
        elif path.parent == _PACKAGE_SUITES and (path / "_fixtures.py").exists():
            module = f"authconform.suites.{path.name}._fixtures"
        else:
            continue
        key = f"{module}@{node.nodeid}"
        if key not in done:
            done.add(key)
            manager = parent.session._fixturemanager  # noqa: SLF001
            manager.parsefactories(holder=importlib.import_module(module), node=node)


def _make_module(parent: pytest.Collector, path: Path) -> SuiteModule:
    """A ``SuiteModule`` whose node id is its place in the package.

    Node ids of files outside the host's rootdir would otherwise be relative to the
    command-line argument (``test_clients.py::...``), the same for the contract and the
    live suite's ``test_authorization_codes.py``; ``authconform/suites/contract/...`` is
    unique, stable across installs, and what ``--deselect`` and the reports show.
    """
    _register_fixtures(parent)
    name = _module_name(path)
    if name is None:
        return SuiteModule.from_parent(parent, path=path)
    nodeid = "/".join(name.split(".")) + ".py"
    return SuiteModule.from_parent(parent, path=path, nodeid=nodeid)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    """Collect our suite files as ``SuiteModule``."""
    if _is_suite_file(module_path):
        return _make_module(parent, module_path)
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    """Collect our suite files even when the host's ``python_files`` would not match them."""
    if not _is_suite_file(file_path) or parent.session.isinitpath(file_path):
        return None
    from _pytest.pathlib import fnmatch_ex

    patterns = parent.config.getini("python_files")
    if any(fnmatch_ex(p, file_path) for p in patterns):
        return None  # the python plugin collects it (through pytest_pycollect_makemodule)
    return _make_module(parent, file_path)


def uses_our_fixture(metafunc: pytest.Metafunc, name: str) -> bool:
    """True when fixture ``name`` of this test resolves to authconform's own definition."""
    if name not in metafunc.fixturenames:
        return False
    from authconform import fixtures

    defs = metafunc._arg2fixturedefs.get(name)  # noqa: SLF001
    ours = getattr(fixtures, name, None)
    if not defs or ours is None:
        return False
    unwrap = getattr(ours, "_get_wrapped_function", None)
    return defs[-1].func is (unwrap() if unwrap is not None else ours)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that uses our ``backend_spec`` by the selected backends."""
    if uses_our_fixture(metafunc, "backend_spec"):
        specs = run_config(metafunc.config).specs
        metafunc.parametrize(
            "backend_spec", specs, ids=[s.name for s in specs], indirect=True, scope="session"
        )


def _uses_our_fixtures(item: pytest.Function) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        func = getattr(defs[-1], "func", None) if defs else None
        if getattr(func, "__module__", "").startswith("authconform."):
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A host project's coroutine test that uses our fixtures runs on our event loop.

    (Our own checks are plain functions by now; this is for projects that opted in with
    ``pytest_plugins = ["authconform.fixtures"]``: their backend lives on our loop.)
    """
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or not _uses_our_fixtures(pyfuncitem):
        return None
    names = pyfuncitem._fixtureinfo.argnames  # noqa: SLF001
    run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


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
    except ModuleNotFoundError as exc:
        extra = extra_for(exc.name)
        if extra is None:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        else:
            raise pytest.UsageError(
                sentence(f"backend {spec.name}", [str(exc.name)], [extra])
            ) from None
    except Exception as exc:  # a broken factory is a usage error too
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        url = settings.redis_url if spec.service == "redis" else settings.postgres_url
        opt = "redis_url" if spec.service == "redis" else "postgres_url"
        raise pytest.UsageError(
            f"backend {spec.name}: cannot reach {spec.service} at {safe_url(url)} ({detail}). "
            f"Start {spec.service} there, or point at one with "
            f"{_options.option(opt).spellings()}."
        )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Our checks must cite their spec; probe the stores our collected checks will use."""
    from authconform.spec import ids as spec_ids

    _check_extras(config, items)
    needs_backend = False
    for item in items:
        if "backend_spec" in getattr(item, "fixturenames", ()):
            needs_backend = True
        if not is_ours(getattr(item, "path", None)):
            continue
        marks = list(item.iter_markers("authconform_spec"))
        if not marks:
            raise pytest.UsageError(f"{item.nodeid}: a check needs @spec(...) (authconform_spec)")
        for mark in marks:
            level = mark.kwargs.get("level", "MUST")
            for spec_id in mark.args:
                try:
                    spec_ids.parse(spec_id, level)
                except ValueError as exc:
                    raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
    if needs_backend:
        run = run_config(config)
        for spec in run.specs:
            _probe(spec, run.settings)


def selection_lines(config: pytest.Config) -> list[str]:
    """What this run selected, with where each setting came from (run header, reports)."""
    run = run_config(config)
    source = run.backend_source
    backends = ", ".join(f"{s.name} ({s.source})" for s in run.specs)
    lines = [f"authconform: backends: {backends} [from {source}]"]
    if run.server_urls:
        lines.append(f"authconform: targets: {', '.join(run.server_urls)}")
    lines.append(f"authconform: namespace: {run.settings.namespace} [{run.namespace_source}]")
    return lines


def pytest_collection_finish(session: pytest.Session) -> None:
    """Print the selection when the run collected checks of ours."""
    if not any(is_ours(getattr(i, "path", None)) for i in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in selection_lines(session.config):
            reporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skip of ours without a ``<category>: <sentence>`` reason is a failure."""
    report = yield
    if not is_ours(getattr(item, "path", None)):
        return report
    if report.skipped and isinstance(report.longrepr, tuple) and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if not reason.startswith(SKIP_CATEGORIES):
            report.outcome = "failed"
            report.longrepr = (
                f"skip reason must start with one of {', '.join(SKIP_CATEGORIES)}; got {reason!r}"
            )
    return report
