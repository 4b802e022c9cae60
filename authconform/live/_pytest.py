"""pytest sub-plugin of the live suite (registered by ``authconform.pytest_plugin``).

Options (``LIVE_OPTIONS``), the ``live`` fixture (parametrized by target), response
checks after every live test, redaction of every report, and SHOULD-level severity:
a failed SHOULD check passes with a ``warned`` property and a summary line, and fails
only under ``--authconform-strict``. No pytest warning is emitted (filterwarnings=error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from authconform._options import Option
from authconform.live._checks import run_checks
from authconform.live._flows import BUILTIN_DRIVERS, Live, LiveConfig, load_driver
from authconform.live._record import LiveFailure, Recorder, format_exchanges
from authconform.live._redact import Redactor
from authconform.live._reference import (
    ReferenceServer,
    StartError,
    backend_argument,
    start_reference,
)
from authconform.live._target import Target
from authconform.spec import ids as spec_ids

__all__ = ["LIVE_OPTIONS", "TargetSpec", "run_last"]

LIVE_OPTIONS: tuple[Option, ...] = (
    Option(
        "server_url",
        "URL of the deployment under test (an MCP endpoint or an authorization server's "
        "issuer); repeat for several instances of one deployment; default: the reference "
        "server over --backend",
        cli="--server-url",
        multiple=True,
    ),
    Option(
        "driver",
        "authorization driver: auto, redirect, form or package.module:callable (called with "
        "an authconform.live.AuthorizationRequest, returns the final redirect URL)",
        "auto",
    ),
    Option(
        "client_id",
        "a pre-registered client id, used for the flows (checks of dynamic registration "
        "still run when the server advertises it); needs --authconform-redirect-uri",
    ),
    Option(
        "client_secret",
        "the pre-registered client's secret (a confidential client; prefer the env variable)",
    ),
    Option(
        "client_auth",
        "how the pre-registered confidential client authenticates: client_secret_post "
        "or client_secret_basic",
        "client_secret_post",
    ),
    Option("redirect_uri", "redirect URI of the pre-registered client"),
    Option("scope", "scope to request (default: none)"),
    Option("max_wait", "longest token lifetime (s) the expiry check waits out", "5"),
    Option(
        "server_log",
        "the target's log file, checked for leaked tokens and secrets (repeat for the log "
        "of each process)",
        multiple=True,
    ),
    Option("flows", "how many flows the repeated-flow check runs", "20"),
    Option("timeout", "HTTP timeout per request (s)", "10"),
    Option(
        "instances",
        "reference-server processes over one backend (auto: 1 for memory/fakeredis, else 2)",
        "auto",
    ),
    Option(
        "server_arg",
        "extra argument for the reference server, e.g. "
        "--authconform-server-arg=--provider-wrapper=pkg.mod:fn (repeatable)",
        multiple=True,
    ),
    Option("access_ttl", "access-token lifetime of the reference server (s)", "4"),
)

_LIVE = pytest.StashKey[Live]()
_WARNED = pytest.StashKey[list[str]]()
_NOTES = pytest.StashKey[list[str]]()
_SOFT = ("SHOULD", "SHOULD NOT", "MAY")
_PROCESS_LOCAL = ("memory", "fakeredis")
_CLIENT_AUTH = ("client_secret_post", "client_secret_basic")


def run_last(order: int) -> Any:
    """Decorator: run this live check after the others (cleanup 1, log scan 2)."""

    def mark(fn: Any) -> Any:
        fn.authconform_last = order
        return fn

    return mark


@dataclass(frozen=True)
class TargetSpec:
    """A target to parametrize by: a deployment's URLs, or the reference server."""

    name: str
    urls: tuple[str, ...] = ()
    backend: Any = None


def _setting(config: pytest.Config, name: str) -> Any:
    from authconform.pytest_plugin import setting

    return setting(config, name)


def _number(config: pytest.Config, name: str) -> float:
    value = _setting(config, name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"--authconform-{name.replace('_', '-')}={value!r} is not a number"
        ) from None


def _targets(config: pytest.Config) -> list[TargetSpec]:
    urls = [u for u in _setting(config, "server_url") if u]
    if urls:
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise pytest.UsageError(f"--server-url {url!r} is not an http(s) URL")
        host = urlsplit(urls[0]).hostname or "target"
        return [TargetSpec(f"live-{host}", tuple(urls))]
    from authconform.pytest_plugin import run_config

    return [TargetSpec(f"ref-{spec.name}", backend=spec) for spec in run_config(config).specs]


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the warning and note lists; check the driver and client options."""
    config.stash[_WARNED] = []
    config.stash[_NOTES] = []
    driver = _setting(config, "driver") or "auto"
    if driver not in BUILTIN_DRIVERS:
        try:
            load_driver(driver)
        except ValueError as exc:
            raise pytest.UsageError(
                f"--authconform-driver={driver!r}: {exc} (use {', '.join(BUILTIN_DRIVERS)} "
                "or an importable package.module:callable)"
            ) from None
    if _setting(config, "client_id") and not _setting(config, "redirect_uri"):
        raise pytest.UsageError(
            "--authconform-client-id needs --authconform-redirect-uri: the redirect URI "
            "registered for that client"
        )
    if _setting(config, "client_secret") and not _setting(config, "client_id"):
        raise pytest.UsageError("--authconform-client-secret needs --authconform-client-id")
    auth = _setting(config, "client_auth")
    if auth not in _CLIENT_AUTH:
        raise pytest.UsageError(
            f"--authconform-client-auth={auth!r}: use {' or '.join(_CLIENT_AUTH)}"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize live checks by target (ids ``ref-<backend>`` or ``live-<host>``)."""
    if "live_target_spec" in metafunc.fixturenames:
        specs = _targets(metafunc.config)
        metafunc.parametrize(
            "live_target_spec", specs, ids=[s.name for s in specs], indirect=True,
            scope="session",
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Move ``run_last`` checks to the end of their target's group, in their order."""
    first: dict[str, int] = {}
    keys: dict[int, tuple[int, int]] = {}
    for index, item in enumerate(items):
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("live_target_spec") if callspec is not None else None
        if not isinstance(spec, TargetSpec):
            keys[id(item)] = (index, 0)
            continue
        group = first.setdefault(spec.name, index)
        order = int(getattr(getattr(item, "function", None), "authconform_last", 0))
        keys[id(item)] = (group, order)
    items.sort(key=lambda item: keys[id(item)])


@pytest.fixture(scope="session")
def live_target_spec(request: pytest.FixtureRequest) -> TargetSpec:
    """The target under test (parametrized)."""
    return request.param  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def live_session(
    request: pytest.FixtureRequest, live_target_spec: TargetSpec
) -> AsyncIterator[Live]:
    """The live target of this parametrization: discovery, clients, cleanup at the end."""
    config = request.config
    cfg = LiveConfig(
        driver=_setting(config, "driver"),
        client_id=_setting(config, "client_id"),
        client_secret=_setting(config, "client_secret"),
        redirect_uri=_setting(config, "redirect_uri"),
        scope=_setting(config, "scope"),
        max_wait=_number(config, "max_wait"),
        flows=int(_number(config, "flows")),
        server_log=tuple(p for p in _setting(config, "server_log") if p),
        client_auth_method=_setting(config, "client_auth"),
    )
    timeout = _number(config, "timeout")
    server: ReferenceServer | None = None
    drop: tuple[Any, str, Path] | None = None
    urls = list(live_target_spec.urls)
    if not urls:
        from authconform.pytest_plugin import run_config

        run = run_config(config)
        spec = live_target_spec.backend
        workdir = config._tmp_path_factory.mktemp("live")  # type: ignore[attr-defined]
        wanted = _setting(config, "instances")
        if wanted == "auto":
            count = 1 if spec.name in _PROCESS_LOCAL else 2
        else:
            count = int(_number(config, "instances"))
        namespace = run.settings.namespace[:35] + "_live"
        backend_arg = backend_argument(
            spec.name, spec.source, run.settings.redis_url, run.settings.postgres_url, workdir
        )
        extra = ["--access-ttl", str(_setting(config, "access_ttl"))]
        extra += [a for a in _setting(config, "server_arg") if a]
        try:
            server = await start_reference(
                backend_arg, namespace, workdir, instances=count, extra=extra
            )
        except StartError as exc:
            pytest.skip(f"unavailable: reference server over {spec.name}: {exc}")
        urls = [u if _as_only(extra) else u + "/mcp" for u in server.urls]
        if spec.name not in _PROCESS_LOCAL:
            drop = (spec, namespace, workdir)
    redactor = Redactor()
    target = Target(live_target_spec.name, urls, timeout=timeout, redactor=redactor)
    live = Live(target, cfg)
    if server is not None:
        live.log_source = server.log_text
    elif cfg.server_log:
        log_paths = [Path(p) for p in cfg.server_log]
        live.log_source = lambda: "\n".join(
            p.read_text("utf-8", "replace") for p in log_paths if p.exists()
        )
    try:
        yield live
    finally:
        if cfg.client_id:
            used = live.issued_to.get(cfg.client_id, 0)
            config.stash[_NOTES].append(
                f"{target.name}: pre-registered client {cfg.client_id}: {used} token "
                f"responses; {live.registered} clients registered dynamically"
            )
        target.recorder = Recorder()
        try:
            problems = await live.cleanup()
            for problem in problems:
                config.stash[_NOTES].append(f"{target.name}: cleanup: {redactor.redact(problem)}")
        finally:
            await target.aclose()
            if server is not None:
                server.stop()
            if drop is not None:
                await _drop(config, *drop)


def _as_only(args: list[str]) -> bool:
    """True when the reference server's arguments make it an authorization server only."""
    if "--no-mcp" in args or "--role=as" in args:
        return True
    return any(a == "--role" and b == "as" for a, b in zip(args, args[1:], strict=False))


async def _drop(config: pytest.Config, spec: Any, namespace: str, workdir: Path) -> None:
    from authconform.pytest_plugin import run_config

    settings = replace(
        run_config(config).settings, namespace=namespace,
        sqlite_path=str(workdir / "live.sqlite3"),
    )
    backend = spec.factory(settings)
    try:
        await backend.drop_namespace()
    finally:
        await backend.close()


@pytest.fixture
def live(request: pytest.FixtureRequest, live_session: Live) -> Live:
    """The live target for one check; its exchanges are recorded for this check only."""
    live_session.target.recorder = Recorder()
    request.node.stash[_LIVE] = live_session
    return live_session


def note(request: pytest.FixtureRequest, text: str) -> None:
    """Report a finding that is neither pass nor fail (shown in the summary)."""
    request.node.user_properties.append(("authconform_note", text))
    live = request.node.stash.get(_LIVE, None)
    if live is not None:
        text = live.target.redactor.redact(text)
    request.config.stash[_NOTES].append(f"{request.node.nodeid}: {text}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """After a live check passes, run every response check on its exchanges."""
    result = yield
    live = item.stash.get(_LIVE, None)
    if live is not None:
        failures = run_checks(live.target.recorder.exchanges, live.target)
        if failures:
            first = failures[0]
            hard = [f for f in failures if (f.level or "MUST") not in _SOFT]
            raise LiveFailure(
                "; ".join(f.observed for f in failures[:3])
                + (f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""),
                first.expected,
                [ex for f in failures[:3] for ex in f.exchanges],
                spec=(hard or failures)[0].spec,
                level=(hard or failures)[0].level,
            )
    return result


def _spec_lines(item: pytest.Item, failure: LiveFailure | None) -> tuple[list[str], str]:
    lines: list[str] = []
    level = "MUST"
    if failure is not None and failure.spec:
        ref = spec_ids.parse(failure.spec, failure.level or "MUST")
        lines.append(f"spec: {ref.id} ({ref.level}) {ref.url}")
        level = ref.level
    marker_level = None
    for mark in item.iter_markers("spec"):
        mlevel = mark.kwargs.get("level", "MUST")
        marker_level = marker_level or mlevel
        for spec_id in mark.args:
            ref = spec_ids.parse(spec_id, mlevel)
            line = f"spec: {ref.id} ({ref.level}) {ref.url}"
            if line not in lines:
                lines.append(line)
    if failure is None or not failure.spec:
        level = marker_level or "MUST"
    elif failure.level is None and marker_level is not None:
        level = marker_level
    return lines, level


def _redact_report(report: pytest.TestReport, redactor: Redactor) -> None:
    if isinstance(report.longrepr, tuple):
        path, lineno, reason = report.longrepr
        report.longrepr = (path, lineno, redactor.redact(str(reason)))
    elif report.longrepr is not None:
        report.longrepr = redactor.redact(str(report.longrepr))
    report.sections = [(title, redactor.redact(text)) for title, text in report.sections]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """Format live failures, redact live reports, and downgrade SHOULD failures to warnings.

    The severity comes from the check's ``spec`` marker (``level=``), or from the
    ``LiveFailure`` when it names its own spec reference, so it applies to every test
    with ``@pytest.mark.spec(..., level="SHOULD")``, live or not.
    """
    report: Any = yield
    live = item.stash.get(_LIVE, None)
    failure = None
    if call.excinfo is not None and isinstance(call.excinfo.value, LiveFailure):
        failure = call.excinfo.value
    level = "MUST"
    if report.failed:
        lines, level = _spec_lines(item, failure)
        if failure is not None:
            text = "\n".join(
                [failure.headline(), *lines, "", format_exchanges(failure.exchanges)]
            ).rstrip()
            report.longrepr = text
    if live is not None:
        _redact_report(report, live.target.redactor)
    if (
        report.when == "call"
        and report.failed
        and call.excinfo is not None
        and level in _SOFT
    ):
        if not _setting(item.config, "strict"):
            if failure is None:
                headline = (call.excinfo.exconly().strip().splitlines() or ["failed"])[0]
                if live is not None:
                    headline = live.target.redactor.redact(headline)
            else:
                headline = str(report.longrepr).splitlines()[0] if report.longrepr else "failed"
            report.outcome = "passed"
            for prop in (("authconform_outcome", "warned"), ("authconform_warning", headline)):
                report.user_properties.append(prop)
                item.user_properties.append(prop)  # JUnit XML reads the teardown report's
            report.sections.append(("authconform warning", str(report.longrepr)))
            report.longrepr = None
            item.config.stash[_WARNED].append(f"{item.nodeid}: {headline}")
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """Show warned checks as ``W`` / ``WARNED``."""
    if report.when == "call" and report.passed:
        if ("authconform_outcome", "warned") in report.user_properties:
            return "warned", "W", ("WARNED", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List SHOULD-level warnings and notes (grace periods, cleanup problems)."""
    warned = config.stash.get(_WARNED, [])
    notes = config.stash.get(_NOTES, [])
    if warned:
        terminalreporter.section(
            "authconform: SHOULD-level warnings (fail with --authconform-strict)"
        )
        for line in warned:
            terminalreporter.line("WARNED " + line)
    if notes:
        terminalreporter.section("authconform: notes")
        for line in notes:
            terminalreporter.line(line)

