"""Every spec id a check cites parses, and every CONTRACT anchor exists in docs/contract.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from authconform.spec import ids

REPO = Path(__file__).resolve().parents[2]
SUITES = REPO / "authconform" / "suites"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _cited() -> list[tuple[str, str, str]]:
    """(file, spec id, level) for every ``@spec(...)`` of the shipped suites."""
    found = []
    for path in sorted(SUITES.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            if func not in ("spec", "markers.spec", "pytest.mark.authconform_spec"):
                continue
            level = "MUST"
            for kw in node.keywords:
                if kw.arg == "level" and isinstance(kw.value, ast.Constant):
                    level = str(kw.value.value)
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((str(path.relative_to(REPO)), arg.value, level))
    return found


def test_checks_cite_spec_ids() -> None:
    """The scan finds the citations (a scan that finds nothing would prove nothing)."""
    cited = _cited()
    assert len(cited) > 100, f"only {len(cited)} spec citations found under authconform/suites/"
    assert any(spec_id.startswith("RFC") for _, spec_id, _ in cited)
    assert any(spec_id.startswith("CONTRACT-") for _, spec_id, _ in cited)


@pytest.mark.parametrize(
    ("where", "spec_id", "level"), sorted(set(_cited())), ids=lambda v: str(v).replace("/", ".")
)
def test_cited_spec_id_parses_and_resolves(where: str, spec_id: str, level: str) -> None:
    """A cited id follows the grammar, names a known document and has a URL."""
    ref = ids.parse(spec_id, level)
    assert ref.url.startswith(("https://", "docs/")), ref.url
    if ref.doc == "CONTRACT":
        anchors = {
            _slug(line[3:])
            for line in (REPO / "docs" / "contract.md").read_text().splitlines()
            if line.startswith("## ")
        }
        assert ref.locator in anchors, (
            f"{where} cites {spec_id}, but docs/contract.md has no heading with anchor "
            f"#{ref.locator}; headings: {', '.join(sorted(anchors))}"
        )


def test_unknown_document_and_bad_grammar_are_rejected() -> None:
    """The parser refuses what the plugin must turn into collection errors."""
    for bad in ("RFC9999-1.2", "rfc6749-4.1", "RFC6749", "CONTRACT-Bad_Slug", "RFC6749-4.1.2-x"):
        with pytest.raises(ValueError):
            ids.parse(bad)
    with pytest.raises(ValueError):
        ids.parse("RFC6749-4.1.2", "OUGHT")
