"""Reports: the result model, ``results.json``, ``summary.html`` and JUnit XML.

One result stream feeds every writer: the pytest sub-plugin (``_pytest``) builds a
``Result`` per test from the test reports on the controller process; ``Report`` is what
``results.json`` holds (schema: ``results.schema.json`` beside this file);
``render_html`` turns a report into the static summary page; ``merge`` joins the runs
of a CI matrix (``authconform report a.json b.json -o DIR``).
"""

from __future__ import annotations

from authconform.redaction._patterns import redact
from authconform.report._html import render_html, write_html
from authconform.report._junit import write_junit
from authconform.report._model import (
    OUTCOMES,
    SCHEMA_VERSION,
    SKIP_CATEGORIES,
    Report,
    Requirement,
    Result,
    Run,
    SpecRef,
    check_id,
    load,
    merge,
)

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
    "redact",
    "render_html",
    "schema_path",
    "write_html",
    "write_junit",
]


def schema_path() -> str:
    """The path of the JSON Schema of ``results.json``."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "results.schema.json")
