"""JUnit XML (xunit1) from the result stream, with per-test ``<properties>``.

Written only when the user did not pass ``--junitxml`` (then pytest writes that file and
the same properties reach it through ``user_properties``).
"""

from __future__ import annotations

import platform
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from authconform.report._model import Report, Result

__all__ = ["write_junit"]

# Characters XML 1.0 cannot carry (pytest's junitxml drops them the same way).
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _ILLEGAL.sub(lambda m: f"#x{ord(m.group(0)):02X}", text)


def properties(result: Result) -> list[tuple[str, str]]:
    """The per-test properties: check id, spec ids, level, backend/target, outcome, seed."""
    props = [("authconform_check", result.check)]
    props += [("authconform_spec", f"{s.id} ({s.level})") for s in result.spec]
    if result.level:
        props.append(("authconform_level", result.level))
    if result.column is not None:
        props.append((f"authconform_{result.column_kind or 'param'}", result.column))
    props.append(("authconform_outcome", result.outcome))
    if result.category:
        props.append(("authconform_skip_category", result.category))
    if result.seed is not None:
        props.append(("authconform_seed", result.seed))
    if result.falsifying_example is not None:
        props.append(("authconform_falsifying_example", result.falsifying_example))
    if result.transcript is not None:
        props.append(("authconform_transcript", result.transcript))
    return props


def _classname(nodeid: str, module: str = "") -> tuple[str, str]:
    """The (classname, name) split of a node id, as pytest makes it (module when known)."""
    parts = nodeid.split("::")
    path = parts[0]
    if path.endswith(".py"):
        path = path[: -len(".py")]
    path = module or path.replace("/", ".").replace("\\", ".")
    return ".".join(n for n in [path, *parts[1:-1]] if n), parts[-1]


def write_junit(report: Report, path: Path, *, run: int = 0) -> None:
    """Write the results of ``run`` as one xunit1 test suite."""
    results = [r for r in report.results if r.run == run]
    counts = report.counts(run)
    meta = report.runs[run] if run < len(report.runs) else None
    suite = ET.Element(
        "testsuite",
        name="authconform",
        errors=str(counts["error"]),
        failures=str(counts["failed"]),
        skipped=str(counts["skipped"] + counts["xfailed"]),
        tests=str(len(results)),
        time=f"{sum(r.duration for r in results):.3f}",
        timestamp=meta.started if meta else "",
        hostname=meta.host if meta else platform.node(),
    )
    for result in results:
        classname, name = _classname(result.nodeid, result.module)
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=name, time=f"{result.duration:.3f}"
        )
        props = ET.SubElement(case, "properties")
        for key, value in properties(result):
            ET.SubElement(props, "property", name=key, value=_clean(value))
        message = _clean(result.message)
        text = _clean(result.evidence or result.message)
        if result.outcome == "failed":
            ET.SubElement(case, "failure", message=message).text = text
        elif result.outcome == "error":
            ET.SubElement(case, "error", message=message).text = text
        elif result.outcome == "skipped":
            ET.SubElement(case, "skipped", type="pytest.skip", message=message).text = text
        elif result.outcome == "xfailed":
            ET.SubElement(case, "skipped", type="pytest.xfail", message=message).text = text
        elif result.outcome == "warned" and text:
            ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites", name="authconform")
    root.append(suite)
    ET.indent(root, space=" ")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
