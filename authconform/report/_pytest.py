"""pytest sub-plugin: one result stream, three reports (registered by ``pytest_plugin``).

Where the item is (the process that runs it: pytest itself, or a pytest-xdist worker),
``pytest_runtest_makereport`` puts what a result needs from the item into the report's
``user_properties``: check id, spec refs and level, backend or target, the docstring's
first line, and the Hypothesis seed and falsifying example. On the controller,
``pytest_runtest_logreport`` builds one ``Result`` per test from the reports alone
(xdist-safe: only what travels on a ``TestReport`` is read), and at the end of the
session ``reports/results.json``, ``reports/summary.html`` and, unless the user passed
``--junitxml``, ``reports/junit.xml`` are written. Only our suites' items are touched:
a run of the user's own tests gets no properties and writes nothing.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from authconform._options import setting
from authconform._session import is_ours, run_config
from authconform.redaction._patterns import redact
from authconform.report._model import (
    SKIP_CATEGORIES,
    Report,
    Result,
    Run,
    SpecRef,
    check_id,
)

__all__: list[str] = []

_P = "authconform_"
_EVIDENCE_LIMIT = 60_000
_MESSAGE_LIMIT = 1_000
#: Packages whose versions go into the run metadata (those installed).
_PACKAGES = (
    "authconform", "pytest", "hypothesis", "pytest-xdist", "redis", "fakeredis", "psycopg",
    "httpx", "mcp", "starlette", "uvicorn", "locust", "testcontainers",
)


# --------------------------------------------------------------------------- item side


def _spec_marks(item: pytest.Item) -> Iterable[pytest.Mark]:
    return item.iter_markers("authconform_spec")


def _function_name(item: pytest.Item) -> str:
    """The test function's name; for a unittest-style class (a state machine) the class's."""
    name = str(getattr(item, "originalname", None) or item.name.split("[", 1)[0])
    if not name.startswith("test") and isinstance(item.parent, pytest.Class):
        return item.parent.name
    return name


def _column(item: pytest.Item) -> tuple[str, str] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    params = callspec.params
    for key, kind in (("live_target_spec", "target"), ("backend_spec", "backend")):
        if key in params:
            return kind, str(getattr(params[key], "name", params[key]))
    return "param", str(callspec.id)


def _static_properties(item: pytest.Item) -> list[tuple[str, str]]:
    props = [(_P + "check", check_id(_function_name(item)))]
    for mark in _spec_marks(item):
        level = str(mark.kwargs.get("level", "MUST"))
        props += [(_P + "spec", f"{spec_id} ({level})") for spec_id in mark.args]
    column = _column(item)
    if column is not None:
        props.append((_P + column[0], column[1]))
    module = getattr(getattr(item, "module", None), "__name__", None)
    if module:
        props.append((_P + "module", str(module)))
    obj = getattr(item, "obj", None)
    doc = (getattr(obj, "__doc__", None) or "").strip()
    cls: Any = getattr(item, "cls", None)
    if cls is not None and not str(getattr(item, "originalname", "")).startswith("test"):
        # a unittest-style item (Hypothesis state machine): the class's own doc, if any
        doc = str(vars(cls).get("__doc__") or doc).strip()
    if doc:
        props.append((_P + "title", doc.splitlines()[0].strip()))
    return props


def _hypothesis_properties(item: pytest.Item) -> list[tuple[str, str]]:
    obj = getattr(item, "obj", None)
    inner = getattr(obj, "__func__", obj)
    if not getattr(inner, "is_hypothesis_test", False):
        return []
    props: list[tuple[str, str]] = []
    seed = getattr(inner, "_hypothesis_internal_use_seed", None)
    if seed is None:
        seed = item.config.getoption("hypothesis_seed", None)
    if seed is None:
        seed = getattr(inner, "_hypothesis_internal_use_generated_seed", None)
    if seed is None:
        settings = getattr(inner, "_hypothesis_internal_use_settings", None)
        if getattr(settings, "derandomize", False):
            seed = "derandomize"
    if seed is not None:
        props.append((_P + "seed", str(seed)))
    examples = getattr(item, "_hypothesis_failing_examples", None)
    if examples:
        props.append((_P + "falsifying_example", "\n".join(str(e) for e in examples)))
    return props


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Carry what a result needs from our items into ``user_properties``."""
    report = yield
    if not is_ours(item.path):
        return report
    new: list[tuple[str, str]] = []
    if not any(k == _P + "check" for k, _ in item.user_properties):
        new += _static_properties(item)
    if call.when == "call":
        new += _hypothesis_properties(item)
    for prop in new:
        item.user_properties.append(prop)  # later phases (and pytest's JUnit) see them
        if prop not in report.user_properties:
            report.user_properties.append(prop)
    return report


# --------------------------------------------------------------------------- controller


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def _category(reason: str) -> str:
    head = reason.split(":", 1)[0].strip()
    return head if head in SKIP_CATEGORIES else "uncategorised"


def _headline(report: pytest.TestReport | pytest.CollectReport) -> str:
    """Line one of the failure (observed vs expected), at most ``_MESSAGE_LIMIT`` long."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= _MESSAGE_LIMIT else line[:_MESSAGE_LIMIT] + " ..."
    return report.outcome


def _clip(text: str) -> str:
    if len(text) <= _EVIDENCE_LIMIT:
        return text
    return text[:_EVIDENCE_LIMIT] + f"\n... ({len(text) - _EVIDENCE_LIMIT} more characters)"


@dataclass
class _Partial:
    """The phases of one test as they arrive."""

    nodeid: str
    props: list[tuple[str, str]] = field(default_factory=list)
    outcome: str | None = None
    category: str | None = None
    message: str = ""
    evidence: list[str] = field(default_factory=list)
    duration: float = 0.0

    def add(self, report: pytest.TestReport) -> None:
        for prop in report.user_properties:
            pair = (str(prop[0]), str(prop[1]))
            if pair not in self.props:
                self.props.append(pair)
        self.duration += float(getattr(report, "duration", 0.0) or 0.0)
        wasxfail = getattr(report, "wasxfail", None)
        if report.when == "setup":
            if report.failed:
                self._set("error", _headline(report), report.longreprtext)
            elif report.skipped:
                if wasxfail is not None:
                    self._set("xfailed", str(wasxfail) or _skip_reason(report))
                else:
                    reason = _skip_reason(report)
                    self._set("skipped", reason)
                    self.category = _category(reason)
        elif report.when == "call":
            if report.failed:
                self._set("failed", _headline(report), report.longreprtext)
            elif report.skipped:
                if wasxfail is not None:
                    self._set("xfailed", str(wasxfail), report.longreprtext)
                else:
                    reason = _skip_reason(report)
                    self._set("skipped", reason)
                    self.category = _category(reason)
            elif wasxfail is not None:
                self._set("xpassed", str(wasxfail) or "unexpectedly passed")
            elif (_P + "outcome", "warned") in report.user_properties:
                warning = dict(report.user_properties).get(_P + "warning", "")
                section = "\n".join(t for title, t in report.sections if "warning" in title)
                self._set("warned", str(warning), section)
            else:
                self._set("passed", "")
        elif report.when == "teardown" and report.failed:
            text = f"teardown: {_headline(report)}"
            if self.outcome in (None, "passed", "warned", "skipped", "xfailed", "xpassed"):
                self.category = None
                self._set("error", text, report.longreprtext)
            else:
                self.evidence.append(f"--- teardown ---\n{report.longreprtext}")

    def _set(self, outcome: str, message: str, evidence: str = "") -> None:
        self.outcome, self.message = outcome, message
        if evidence:
            self.evidence.append(evidence)

    def result(self, outcome: str | None = None, message: str | None = None) -> Result:
        values: dict[str, list[str]] = {}
        for key, value in self.props:
            values.setdefault(key, []).append(value)
        refs = []
        for text in values.get(_P + "spec", []):
            m = re.match(r"^(\S+) \((.+)\)$", text)
            spec_id, level = (m.group(1), m.group(2)) if m else (text, "MUST")
            try:
                refs.append(SpecRef.parse(spec_id, level))
            except ValueError:
                refs.append(SpecRef(spec_id, spec_id.split("-", 1)[0], "", level, ""))
        column = kind = None
        for candidate in ("target", "backend", "param"):
            if _P + candidate in values:
                kind, column = candidate, values[_P + candidate][0]
                break
        name = self.nodeid.split("::")[-1]
        return Result(
            check=values.get(_P + "check", [check_id(name)])[0],
            nodeid=self.nodeid,
            module=values.get(_P + "module", [""])[0],
            outcome=outcome or self.outcome or "error",
            spec=tuple(refs),
            level=refs[0].level if refs else None,
            title=values.get(_P + "title", [""])[0],
            column=column,
            column_kind=kind,
            category=self.category if (outcome or self.outcome) == "skipped" else None,
            message=redact(message if message is not None else self.message),
            evidence=redact(_clip("\n\n".join(self.evidence))),
            duration=self.duration,
            seed=values.get(_P + "seed", [None])[0],
            falsifying_example=_falsifying(values, self.evidence),
            transcript=values.get(_P + "transcript", [None])[0],
        )


_EXAMPLE_HEAD = re.compile(r"^(?:E\s+)?(?:Falsifying example|Failing test case): ?(.*)$")
_REPRODUCE = re.compile(r"(@reproduce_failure\([^)]*\))")


def _falsifying(values: dict[str, list[str]], evidence: list[str]) -> str | None:
    """Hypothesis's minimal failing example (or state machine steps), and its blob."""
    found = values.get(_P + "falsifying_example")
    example = found[0] if found and not found[0].startswith("<") else None
    text = "\n".join(evidence)
    if example is None:
        lines = text.splitlines()
        for n, line in enumerate(lines):
            m = _EXAMPLE_HEAD.match(line)
            if not m:
                continue
            body = [m.group(1)] if m.group(1) and not m.group(1).startswith("<") else []
            for nxt in lines[n + 1 :]:
                if not nxt.startswith("E") or not nxt[1:].strip():
                    break
                body.append(re.sub(r"^E {0,7}", "", nxt))
            example = "\n".join(body).strip() or None
            break
    blob = _REPRODUCE.search(text)
    if blob is not None:
        example = f"{example}\n{blob.group(1)}" if example else blob.group(1)
    return None if example is None else redact(example)


class _Collector:
    """Controller-side state: results as reports arrive, the files at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.partial: dict[str, _Partial] = {}
        self.results: list[Result] = []
        self.collected_ours = False
        self.started = datetime.now(UTC)
        self.t0 = time.monotonic()
        self.written: list[Path] = []
        self.problem: str | None = None

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        if not self.collected_ours and is_ours(item.path):
            self.collected_ours = True

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.failed or not report.nodeid:
            return
        path = self.config.rootpath / report.nodeid.split("::")[0]
        if not is_ours(path):
            return
        self.collected_ours = True
        stem = Path(report.nodeid.split("::")[0]).stem
        self.results.append(
            Result(
                check=check_id(stem),
                nodeid=report.nodeid,
                outcome="error",
                message=redact(f"collection failed: {_headline(report)}"),
                evidence=redact(_clip(report.longreprtext)),
            )
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        ours = report.nodeid in self.partial or any(
            p[0] == _P + "check" for p in report.user_properties
        )
        if not ours:
            return
        partial = self.partial.setdefault(report.nodeid, _Partial(report.nodeid))
        partial.add(report)
        if report.when == "teardown":
            self.results.append(self.partial.pop(report.nodeid).result())

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        for partial in self.partial.values():  # interrupted mid-test
            self.results.append(
                partial.result(
                    partial.outcome if partial.outcome in ("failed", "error") else "error",
                    partial.message or "interrupted before the test finished",
                )
            )
        self.partial.clear()
        if not (self.results or self.collected_ours) or self.config.option.collectonly:
            return
        try:
            self.written = self._write(int(exitstatus))
        except OSError as exc:
            self.problem = f"authconform: cannot write the reports: {exc}"

    def _write(self, exitstatus: int) -> list[Path]:
        from authconform.report._html import write_html
        from authconform.report._junit import write_junit
        from authconform.report._requirements import load_requirements

        directory = self.config.invocation_params.dir / str(setting(self.config, "report_dir"))
        report = Report((self._run(exitstatus),), tuple(self.results), load_requirements())
        written = []
        if not getattr(self.config.option, "xmlpath", None):
            write_junit(report, directory / "junit.xml")
            written.append(directory / "junit.xml")
        report.write(directory / "results.json")
        write_html(report, directory / "summary.html")
        return [*written, directory / "results.json", directory / "summary.html"]

    def _run(self, exitstatus: int) -> Run:
        finished = datetime.now(UTC)
        host = platform.node()
        py = platform.python_version()
        return Run(
            label=f"{host} · Python {py} · {self.started:%Y-%m-%d %H:%M} UTC",
            started=self.started.isoformat(timespec="seconds"),
            finished=finished.isoformat(timespec="seconds"),
            exit_status=exitstatus,
            python=f"{platform.python_implementation()} {py}",
            platform=platform.platform(),
            host=host,
            packages=_versions(),
            selection=_selection(self.config, self.results),
        )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.problem:
            terminalreporter.write_line(self.problem, red=True)
        if self.written:
            terminalreporter.write_line(
                "authconform reports: " + " ".join(_shown(p) for p in self.written)
            )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _selection(config: pytest.Config, results: list[Result]) -> dict[str, Any]:
    """What the run selected: namespace, backends (with where each came from), targets."""
    from authconform._urls import safe_url

    try:
        run = run_config(config)
    except KeyError:  # the plugin did not configure this run
        return {}
    selection: dict[str, Any] = {
        "namespace": run.settings.namespace,
        "namespace_from": run.namespace_source,
        "backends": [
            {"name": s.name, "source": s.source, "origin": run.backend_source} for s in run.specs
        ],
    }
    names = list(dict.fromkeys(r.column for r in results if r.column_kind == "target"))
    urls = [safe_url(u) for u in run.server_urls]
    if urls or names:
        selection["targets"] = [{"name": n} for n in names] + ([{"urls": urls}] if urls else [])
    return selection


def pytest_configure(config: pytest.Config) -> None:
    """On the controller (never on an xdist worker), collect results for the reports."""
    if hasattr(config, "workerinput"):
        return
    name = "authconform-report-collector"
    if config.pluginmanager.get_plugin(name) is None:
        config.pluginmanager.register(_Collector(config), name)

