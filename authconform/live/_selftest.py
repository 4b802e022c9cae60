"""Self-test helper: run the live suite in a pytester subprocess; outcomes from JUnit XML."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository (editable install)


@dataclass
class Outcome:
    outcome: str  # passed, failed, skipped, error, warned
    message: str


def run_live(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str,
             path: str = "suites/live") -> tuple[pytest.RunResult, dict[str, Outcome]]:
    """Run ``pytest <path> args`` like a user; outcomes keyed by ``name[param]``."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        str(ROOT / path) if not Path(path).is_absolute() else path,
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
        "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1",
        *args, timeout=600,
    )
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "") + "\n" + (child.text or "")
            if child.tag == "properties":
                for prop in child:
                    if prop.get("name") == "authconform_outcome" and outcome == "passed":
                        outcome = prop.get("value", outcome)
        outcomes[name] = Outcome(outcome, message)
    return result, outcomes


def summary(outcomes: dict[str, Outcome]) -> str:
    """One line per non-passing check (for assertion messages)."""
    return "\n".join(f"{k}: {v.outcome} {v.message.strip()[:300]}" for k, v in outcomes.items()
                     if v.outcome != "passed")
