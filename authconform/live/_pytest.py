"""pytest sub-plugin of the live suite (registered by ``authconform.pytest_plugin``).

Target parametrization, a preflight of ``--server-url`` targets before any check runs
(an unreachable target, or one that answers nothing like OAuth or MCP, is one usage
error: exit 4), redaction of every report of a live check, and severity by level: a
failed SHOULD check of ours passes with a ``warned`` property and a summary line, and
fails only under ``--authconform-strict``; a finding with no normative text behind it is
a ``note`` (neither pass nor fail). It applies to our items only and imports nothing
heavy at import time (httpx and the rest load when a live check runs).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from authconform._options import setting
from authconform._session import is_ours, run_config
from authconform.live._drivers import BUILTIN_DRIVERS, load_driver

__all__ = [
    "NOTES",
    "PROCESS_LOCAL",
    "TargetSpec",
    "aging",
    "attach_live",
    "note",
    "preflight_error",
    "run_last",
]

_LIVE = pytest.StashKey[Any]()
WARNED = pytest.StashKey[list[str]]()
NOTES = pytest.StashKey[list[str]]()
_AGING = pytest.StashKey[set[str]]()
_SOFT = ("SHOULD", "SHOULD NOT", "MAY")
PROCESS_LOCAL = ("memory", "fakeredis")


def run_last(order: int) -> Any:
    """Decorator: run this live check after the others, in ``order``.

    1: the run-wide checks (response rules over every exchange, findings of other
    checks, token entropy); 2: the expiry checks (their material aged meanwhile);
    3: the brute-force check (it may make the target rate-limit us); 4: cleanup;
    5: the log scan.
    """

    def mark(fn: Any) -> Any:
        fn.authconform_last = order
        return fn

    return mark


def aging(fn: Any) -> Any:
    """Decorator: the check uses material that ages from the run's first check on."""
    fn.authconform_ages = True
    return fn


@dataclass(frozen=True)
class TargetSpec:
    """A target to parametrize by: a deployment's URLs, or the reference server."""

    name: str
    urls: tuple[str, ...] = ()
    backend: Any = None
    #: a reference-server variant (``module:callable`` wrapper), for self-tests
    variant: str | None = None


def targets(config: pytest.Config) -> list[TargetSpec]:
    """The live targets of this run: ``--server-url`` instances, or one reference per backend."""
    urls = [u for u in setting(config, "server_url") if u]
    if urls:
        host = urlsplit(urls[0]).hostname or "target"
        return [TargetSpec(f"live-{host}", tuple(urls))]
    variants = list(dict.fromkeys(v for v in setting(config, "variant") if v))
    found = []
    for spec in run_config(config).specs:
        found.append(TargetSpec(f"ref-{spec.name}", backend=spec))
        for variant in variants:
            short = variant.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            found.append(TargetSpec(f"ref-{spec.name}-{short}", backend=spec, variant=variant))
    return found


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the warning and note lists; check the driver and client options."""
    config.stash[WARNED] = []
    config.stash[NOTES] = []
    driver = setting(config, "driver") or "auto"
    if driver not in BUILTIN_DRIVERS:
        try:
            load_driver(driver)
        except ValueError as exc:
            raise pytest.UsageError(
                f"--authconform-driver={driver!r}: {exc} (use {', '.join(BUILTIN_DRIVERS)} "
                "or an importable package.module:callable)"
            ) from None
    if setting(config, "client_id") and not setting(config, "redirect_uri"):
        raise pytest.UsageError(
            "--authconform-client-id needs --authconform-redirect-uri: the redirect URI "
            "registered for that client"
        )
    if setting(config, "client_secret") and not setting(config, "client_id"):
        raise pytest.UsageError("--authconform-client-secret needs --authconform-client-id")
    for variant in (v for v in setting(config, "variant") if v):
        try:
            load_driver(variant)
        except ValueError as exc:
            raise pytest.UsageError(f"--authconform-variant={variant!r}: {exc}") from None


def _uses_our(metafunc: pytest.Metafunc, name: str) -> bool:
    """True when fixture ``name`` of this test is authconform's (not a host project's)."""
    from authconform import fixtures

    defs = metafunc._arg2fixturedefs.get(name)  # noqa: SLF001
    ours = getattr(fixtures, name, None)
    if not defs or ours is None:
        return False
    return getattr(defs[-1], "func", None) is getattr(ours, "_get_wrapped_function", lambda: ours)()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize live checks by target (ids ``ref-<backend>`` or ``live-<host>``)."""
    if "live_target_spec" in metafunc.fixturenames and _uses_our(metafunc, "live_target_spec"):
        specs = targets(metafunc.config)
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
    moved = False
    for index, item in enumerate(items):
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("live_target_spec") if callspec is not None else None
        if not isinstance(spec, TargetSpec):
            keys[id(item)] = (index, 0)
            continue
        moved = True
        group = first.setdefault(spec.name, index)
        order = int(getattr(getattr(item, "function", None), "authconform_last", 0))
        keys[id(item)] = (group, order)
    if moved:
        items.sort(key=lambda item: keys[id(item)])
        if config.pluginmanager.hasplugin("xdist"):
            _group_by_target(items)
    aging: set[str] = set()
    for item in items:
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("live_target_spec") if callspec is not None else None
        if isinstance(spec, TargetSpec) and getattr(
            getattr(item, "function", None), "authconform_ages", False
        ):
            aging.add(spec.name)
    config.stash[_AGING] = aging
    urls = [u for u in setting(config, "server_url") if u]
    live_items = [i for i in items if is_ours(getattr(i, "path", None))
                  and i.get_closest_marker("authconform_live") is not None]
    if urls and live_items:
        problem = preflight_error(config, urls)
        if problem is not None:
            raise pytest.UsageError(problem)


def preflight_error(config: pytest.Config, urls: list[str]) -> str | None:
    """One line saying why the ``--server-url`` target cannot be tested, or None."""
    from authconform._session import run

    try:
        from authconform.live._session import preflight
    except ModuleNotFoundError as exc:
        from authconform._extras import extra_for, sentence

        extra = extra_for(exc.name)
        if extra is None:
            raise
        return sentence("the live suite", [str(exc.name)], [extra])
    return run(preflight(config, urls))


def _group_by_target(items: list[pytest.Item]) -> None:
    """Under pytest-xdist ``--dist loadgroup``: one worker runs all checks of a target.

    A target's session (the reference server we start, the clients it registers) is made
    once, and its run-last checks (cleanup, log scan) see every exchange of the run.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("live_target_spec") if callspec is not None else None
        if isinstance(spec, TargetSpec) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(f"authconform-{spec.name}"))


def attach_live(request: pytest.FixtureRequest, live_session: Any) -> Any:
    """Give one check the session's target with a fresh exchange recorder.

    A target that went down earlier makes the check ``unavailable`` with that one cause;
    before the first check that needs it, the material of the expiry checks starts aging.
    """
    from authconform.live._record import Recorder

    if live_session.target.down is not None:
        pytest.skip(f"unavailable: the target stopped answering earlier in this run "
                    f"({live_session.target.redactor.redact(live_session.target.down)})")
    live_session.target.recorder = Recorder()
    request.node.stash[_LIVE] = live_session
    if live_session.target.name in request.config.stash.get(_AGING, set()):
        from authconform._session import run

        run(live_session.start_aging())
        run(live_session.roll())
        live_session.target.recorder = Recorder()
    return live_session


def note(request: pytest.FixtureRequest, text: str) -> None:
    """Report a finding that is neither pass nor fail (shown in the summary)."""
    live = request.node.stash.get(_LIVE, None)
    if live is not None:
        text = live.target.redactor.redact(text)
    request.node.user_properties.append(("authconform_note", text))
    request.config.stash[NOTES].append(f"{request.node.nodeid}: {text}")


def _spec_lines(item: pytest.Item, failure: Any) -> tuple[list[str], str]:
    from authconform.spec import ids as spec_ids

    lines: list[str] = []
    level = "MUST"
    if failure is not None and failure.spec:
        ref = spec_ids.parse(failure.spec, failure.level or "MUST")
        lines.append(f"spec: {ref.id} ({ref.level}) {ref.url}")
        level = ref.level
    marker_level = None
    for mark in item.iter_markers("authconform_spec"):
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


def _redact_report(report: pytest.TestReport, redactor: Any) -> None:
    if isinstance(report.longrepr, tuple):
        path, lineno, reason = report.longrepr
        report.longrepr = (path, lineno, redactor.redact(str(reason)))
    elif report.longrepr is not None:
        report.longrepr = redactor.redact(str(report.longrepr))
    report.sections = [(title, redactor.redact(text)) for title, text in report.sections]


def _live_failure(call: pytest.CallInfo[None]) -> Any:
    if call.excinfo is None:
        return None
    record = __import__("sys").modules.get("authconform.live._record")
    if record is not None and isinstance(call.excinfo.value, record.LiveFailure):
        return call.excinfo.value
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """Format live failures, redact live reports, and downgrade SHOULD failures to warnings.

    Applies to our checks only. The severity comes from the check's ``authconform_spec``
    marker (``level=``), or from the ``LiveFailure`` when it names its own spec reference.
    """
    report: Any = yield
    if not is_ours(getattr(item, "path", None)):
        return report
    live = item.stash.get(_LIVE, None)
    failure = _live_failure(call)
    level = "MUST"
    if report.failed:
        lines, level = _spec_lines(item, failure)
        if failure is not None:
            from authconform.live._record import format_exchanges

            text = "\n".join(
                [failure.headline(), *lines, "", format_exchanges(failure.exchanges)]
            ).rstrip()
            report.longrepr = text
    if live is not None:
        _redact_report(report, live.target.redactor)
        if report.when == "call":
            seen = sorted({f"{ex.purpose}:{ex.status}" for ex in live.target.recorder.exchanges})
            prop = ("authconform_exchanges", " ".join(seen))
            report.user_properties.append(prop)
            item.user_properties.append(prop)
    if (
        report.when == "call"
        and report.failed
        and call.excinfo is not None
        and level in _SOFT
    ):
        if not setting(item.config, "strict"):
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
            item.config.stash[WARNED].append(f"{item.nodeid}: {headline}")
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """Show warned checks as ``W`` / ``WARNED``."""
    if report.when == "call" and report.passed:
        if ("authconform_outcome", "warned") in report.user_properties:
            return "warned", "W", ("WARNED", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List SHOULD-level warnings and notes (grace periods, cleanup problems)."""
    warned = config.stash.get(WARNED, [])
    notes = config.stash.get(NOTES, [])
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
