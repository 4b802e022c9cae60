"""The result model: one record per check and parametrization, runs, and the JSON file.

``results.json`` is ``Report.to_json()``; its JSON Schema is ``results.schema.json`` in
this package. A report holds one or more runs (``authconform report`` merges the runs
of a CI matrix); each result names its run by index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SKIP_CATEGORIES",
    "Report",
    "Requirement",
    "Result",
    "Run",
    "SpecRef",
    "check_id",
    "load",
    "merge",
]

SCHEMA_VERSION = 1

#: Every outcome a result can have, worst first (a cell with several shows the worst).
OUTCOMES = ("error", "failed", "xpassed", "warned", "skipped", "xfailed", "passed")
SKIP_CATEGORIES = ("not-applicable", "unavailable", "disabled", "not-advertised")


def check_id(function_name: str) -> str:
    """The check id of a test: drop ``test_``, hyphenate (``TestCodesMachine`` too)."""
    name = function_name.split("[", 1)[0]
    if name.startswith("test_"):
        name = name[len("test_") :]
    elif name.startswith("Test"):
        name = name[len("Test") :]
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    return name.strip("_").replace("_", "-") or function_name


@dataclass(frozen=True)
class SpecRef:
    """A spec id a check cites, with its document, section, level and derived URL."""

    id: str
    doc: str
    section: str
    level: str
    url: str
    doc_title: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "id": self.id,
            "doc": self.doc,
            "doc_title": self.doc_title,
            "section": self.section,
            "level": self.level,
            "url": self.url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpecRef:
        """Read one back."""
        return cls(
            id=str(data["id"]),
            doc=str(data["doc"]),
            section=str(data["section"]),
            level=str(data["level"]),
            url=str(data["url"]),
            doc_title=str(data.get("doc_title", "")),
        )

    @classmethod
    def parse(cls, spec_id: str, level: str = "MUST") -> SpecRef:
        """Build one from an id (``authconform.spec.ids`` derives document and URL)."""
        from authconform.spec import ids

        ref = ids.parse(spec_id, level)
        return cls(ref.id, ref.doc, ref.locator, ref.level, ref.url, ids.DOCS[ref.doc][0])


@dataclass(frozen=True)
class Result:
    """One check on one backend or target: what happened and the evidence."""

    check: str
    nodeid: str
    outcome: str
    module: str = ""
    spec: tuple[SpecRef, ...] = ()
    level: str | None = None
    title: str = ""
    column: str | None = None
    column_kind: str | None = None
    category: str | None = None
    message: str = ""
    evidence: str = ""
    duration: float = 0.0
    seed: str | None = None
    falsifying_example: str | None = None
    transcript: str | None = None
    run: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "run": self.run,
            "check": self.check,
            "nodeid": self.nodeid,
            "module": self.module,
            "title": self.title,
            "column": self.column,
            "column_kind": self.column_kind,
            "outcome": self.outcome,
            "category": self.category,
            "level": self.level,
            "spec": [s.to_json() for s in self.spec],
            "message": self.message,
            "evidence": self.evidence,
            "duration": round(self.duration, 6),
            "seed": self.seed,
            "falsifying_example": self.falsifying_example,
            "transcript": self.transcript,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        """Read one back."""
        return cls(
            check=str(data["check"]),
            nodeid=str(data["nodeid"]),
            outcome=str(data["outcome"]),
            module=str(data.get("module", "")),
            spec=tuple(SpecRef.from_json(s) for s in data.get("spec", ())),
            level=data.get("level"),
            title=str(data.get("title", "")),
            column=data.get("column"),
            column_kind=data.get("column_kind"),
            category=data.get("category"),
            message=str(data.get("message", "")),
            evidence=str(data.get("evidence", "")),
            duration=float(data.get("duration", 0.0)),
            seed=data.get("seed"),
            falsifying_example=data.get("falsifying_example"),
            transcript=data.get("transcript"),
            run=int(data.get("run", 0)),
        )


@dataclass(frozen=True)
class Run:
    """One pytest run: when, where, with what, and what it selected."""

    label: str
    started: str
    finished: str
    exit_status: int | None = None
    python: str = ""
    platform: str = ""
    host: str = ""
    packages: Mapping[str, str] = field(default_factory=dict)
    selection: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "label": self.label,
            "started": self.started,
            "finished": self.finished,
            "exit_status": self.exit_status,
            "python": self.python,
            "platform": self.platform,
            "host": self.host,
            "packages": dict(self.packages),
            "selection": dict(self.selection),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        """Read one back."""
        return cls(
            label=str(data.get("label", "")),
            started=str(data.get("started", "")),
            finished=str(data.get("finished", "")),
            exit_status=data.get("exit_status"),
            python=str(data.get("python", "")),
            platform=str(data.get("platform", "")),
            host=str(data.get("host", "")),
            packages=dict(data.get("packages", {})),
            selection=dict(data.get("selection", {})),
        )


@dataclass(frozen=True)
class Requirement:
    """A tracked normative statement (from ``spec/requirements/*.yaml``) and its checks."""

    id: str
    text: str = ""
    level: str | None = None
    checks: tuple[str, ...] = ()
    excluded: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "id": self.id,
            "text": self.text,
            "level": self.level,
            "checks": list(self.checks),
            "excluded": self.excluded,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Requirement:
        """Read one back."""
        return cls(
            id=str(data["id"]),
            text=str(data.get("text", "")),
            level=data.get("level"),
            checks=tuple(str(c) for c in data.get("checks", ())),
            excluded=data.get("excluded"),
        )


@dataclass(frozen=True)
class Report:
    """What ``results.json`` holds: runs, their results, and optionally requirements."""

    runs: tuple[Run, ...]
    results: tuple[Result, ...]
    requirements: tuple[Requirement, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``schema_version`` first)."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "runs": [r.to_json() for r in self.runs],
            "results": [r.to_json() for r in self.results],
        }
        if self.requirements is not None:
            data["requirements"] = [r.to_json() for r in self.requirements]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        """Read a document back; a schema version we do not know is a ValueError."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"results schema_version {version!r} is not {SCHEMA_VERSION} "
                "(written by another authconform version)"
            )
        reqs = data.get("requirements")
        return cls(
            runs=tuple(Run.from_json(r) for r in data.get("runs", ())),
            results=tuple(Result.from_json(r) for r in data.get("results", ())),
            requirements=None if reqs is None else tuple(Requirement.from_json(r) for r in reqs),
        )

    def write(self, path: Path) -> None:
        """Write ``results.json`` (UTF-8, indented, stable key order)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")

    def counts(self, run: int | None = None) -> dict[str, int]:
        """Results per outcome (of one run, or of all)."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in self.results:
            if run is None or r.run == run:
                counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts


def load(path: Path | str) -> Report:
    """Read a ``results.json``; errors name the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read results: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a results.json object")
    try:
        return Report.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def merge(reports: Sequence[Report]) -> Report:
    """One report holding every run of ``reports`` (result run indexes renumbered)."""
    runs: list[Run] = []
    results: list[Result] = []
    for report in reports:
        offset = len(runs)
        runs.extend(report.runs)
        results.extend(replace(r, run=r.run + offset) for r in report.results)
    return Report(tuple(runs), tuple(results), _merge_requirements(reports))


def _merge_requirements(reports: Iterable[Report]) -> tuple[Requirement, ...] | None:
    merged: dict[str, Requirement] = {}
    seen = False
    for report in reports:
        if report.requirements is None:
            continue
        seen = True
        for req in report.requirements:
            old = merged.get(req.id)
            if old is None:
                merged[req.id] = req
            else:
                checks = tuple(dict.fromkeys([*old.checks, *req.checks]))
                merged[req.id] = replace(old, checks=checks)
    return tuple(merged.values()) if seen else None
