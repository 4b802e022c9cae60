"""``summary.html``: one static, self-contained page rendered from a ``Report`` alone.

Rows are checks grouped by spec document and section; columns are the backends and
targets of every run; a cell links to its details (pure CSS ``:target``, no script).
Everything that comes from results is HTML-escaped and passed through the pattern
redactor; a Content-Security-Policy forbids scripts and every network fetch.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authconform.redaction._patterns import redact
from authconform.report._model import OUTCOMES, Report, Requirement, Result

__all__ = ["render_html", "write_html"]

_MARKS = {
    "passed": "pass",
    "warned": "WARN",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "skip",
    "xfailed": "xfail",
    "xpassed": "XPASS",
}
_SKIP_MARKS = {
    "not-applicable": "n/a",
    "unavailable": "unavail.",
    "disabled": "disabled",
    "not-advertised": "not adv.",
}
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f3f3f3;text-align:left}
table.matrix thead th{position:sticky;top:0;z-index:1}
table.matrix td.cell{text-align:center;white-space:nowrap;min-width:5.5em}
table.matrix td.cell a{display:block;color:inherit;text-decoration:none}
tr.doc th{background:#dde4ee;font-size:1.05em}tr.sec th{background:#eef1f5;font-weight:600}
tr.counts th,tr.counts td{background:#fafafa;font-size:.85em}
.o-passed{background:#c8ecc8}.o-warned{background:#ffe08a}.o-failed{background:#f5a3a3}
.o-error{background:#d77bd7}.o-xfailed{background:#cfe0f7}.o-xpassed{background:#ffb870}
.o-skipped{background:#e4e4e4;color:#555}.c-unavailable{background:#d3d3d3;color:#333}
.c-disabled{background:#eeeeee;color:#777}.c-not-advertised{background:#e8e3f3;color:#555}
.o-none{background:#fff;color:#aaa}
.lvl{font-size:.8em;color:#555}.muted{color:#777;font-size:.85em}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.5em;white-space:pre-wrap;
word-break:break-word;max-height:40em;overflow:auto}
section.detail{display:none}
section.detail:target{display:block;position:fixed;top:3vh;left:4vw;right:4vw;max-height:92vh;
overflow:auto;border:2px solid #444;padding:.5em 1em;background:#fff;
box-shadow:0 0 0 100vmax rgba(0,0,0,.35)}
a.close{float:right;font-size:1.2em;text-decoration:none}
.legend span{display:inline-block;padding:1px 6px;margin:0 4px 4px 0;border:1px solid #ccc}
body:has(#only-problems:checked) tr.ok{display:none}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:0 1em;margin:0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
"""


def esc(value: object) -> str:
    """HTML-escape (quotes too) the redacted text of ``value``."""
    return html.escape(redact("" if value is None else str(value)), quote=True)


def _href(url: str) -> str | None:
    """A link target only for http(s) URLs; anything else is shown as text."""
    return url if re.match(r"^https?://[^\s\"'<>]+$", url) else None


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


@dataclass
class _Column:
    run: int
    name: str | None
    kind: str | None
    label: str = ""
    results: list[int] = field(default_factory=list)


@dataclass
class _Row:
    check: str
    title: str
    level: str | None
    spec_ids: list[str]
    cells: dict[int, list[int]] = field(default_factory=dict)


def _columns(report: Report) -> tuple[list[_Column], dict[tuple[int, str | None], int]]:
    index: dict[tuple[int, str | None], int] = {}
    columns: list[_Column] = []
    for i, r in enumerate(report.results):
        key = (r.run, r.column)
        if key not in index:
            index[key] = len(columns)
            columns.append(_Column(r.run, r.column, r.column_kind))
        columns[index[key]].results.append(i)
    kinds = {"backend": 0, "target": 1, "param": 2}
    columns.sort(key=lambda c: (c.run, kinds.get(c.kind or "", 3)))  # stable: first seen
    index = {(c.run, c.name): n for n, c in enumerate(columns)}
    names: dict[str, int] = {}
    for col in columns:
        base = col.name if col.name is not None else "(no parameter)"
        names[base] = names.get(base, 0) + 1
    for col in columns:
        base = col.name if col.name is not None else "(no parameter)"
        col.label = f"{base} · run {col.run + 1}" if names[base] > 1 else base
    return columns, index


def _group(result: Result) -> tuple[str, str, str]:
    if not result.spec:
        return ("(no spec reference)", "", "")
    first = result.spec[0]
    return (first.doc, first.doc_title, first.section)


def _worst(outcomes: Iterable[str]) -> str:
    found = set(outcomes)
    return next((o for o in OUTCOMES if o in found), "passed")


def _cell(report: Report, ids: list[int]) -> str:
    results = [report.results[i] for i in ids]
    worst = _worst(r.outcome for r in results)
    pick = next(i for i in ids if report.results[i].outcome == worst)
    chosen = report.results[pick]
    classes = f"cell o-{worst}"
    mark = _MARKS.get(worst, worst)
    if worst == "skipped" and chosen.category:
        classes += f" c-{chosen.category}"
        mark = _SKIP_MARKS.get(chosen.category, chosen.category)
    if len(results) > 1:
        mark += f" ×{len(results)}"
    tip = chosen.message.splitlines()[0][:300] if chosen.message else worst
    return (
        f'<td class="{esc(classes)}" data-outcome="{esc(worst)}">'
        f'<a href="#r{pick}" title="{esc(tip)}">{esc(mark)}</a></td>'
    )


def _section_key(section: str) -> list[Any]:
    return _natural(section) if section else [""]


def _requirement_doc_section(req_id: str) -> tuple[str, str]:
    m = re.match(r"^([A-Z][A-Z0-9]*)-(.+?)(?:-(\d+))?$", req_id)
    if not m:
        return ("", "")
    return m.group(1), m.group(2)


def _render_matrix(
    report: Report,
    columns: list[_Column],
    index: dict[tuple[int, str | None], int],
    covering: dict[str, list[str]],
) -> str:
    groups: dict[tuple[str, str], dict[str, _Row]] = {}
    titles: dict[str, str] = {}
    for i, r in enumerate(report.results):
        doc, doc_title, section = _group(r)
        titles.setdefault(doc, doc_title)
        rows = groups.setdefault((doc, section), {})
        row = rows.get(r.check)
        if row is None:
            row = rows[r.check] = _Row(r.check, r.title, r.level, [s.id for s in r.spec])
        row.cells.setdefault(index[(r.run, r.column)], []).append(i)
    coverage = report.requirements is not None
    width = 3 + len(columns) + (1 if coverage else 0)
    out = ['<table class="matrix"><thead><tr><th>Check</th><th>Level</th><th>Spec</th>']
    if coverage:
        out.append("<th>Covers</th>")
    for col in columns:
        kind = f'<br><span class="muted">{esc(col.kind)}</span>' if col.kind else ""
        run = report.runs[col.run].label if col.run < len(report.runs) else ""
        out.append(f'<th title="{esc(run)}">{esc(col.label)}{kind}</th>')
    out.append("</tr></thead><tbody>")
    last_doc = None
    req_by_section = _requirements_by_section(report.requirements or ())
    for doc, section in sorted(groups, key=lambda k: (_natural(k[0]), _section_key(k[1]))):
        if doc != last_doc:
            title = titles.get(doc) or ""
            sep = f" — {esc(title)}" if title else ""
            out.append(f'<tr class="doc"><th colspan="{width}">{esc(doc)}{sep}</th></tr>')
            last_doc = doc
        if section:
            note = ""
            reqs = req_by_section.get((doc, section))
            if coverage and reqs:
                note = f' <span class="muted">{esc(_coverage_note(report, reqs))}</span>'
            out.append(
                f'<tr class="sec"><th colspan="{width}">{esc(doc)} § {esc(section)}{note}</th></tr>'
            )
        for row in groups[(doc, section)].values():
            outcomes = [report.results[i].outcome for ids in row.cells.values() for i in ids]
            ok = all(o == "passed" for o in outcomes)
            title = f'<br><span class="muted">{esc(row.title)}</span>' if row.title else ""
            out.append(
                f'<tr class="{"ok" if ok else "problem"}"><th>{esc(row.check)}{title}</th>'
                f'<td class="lvl">{esc(row.level or "")}</td>'
                f'<td>{esc(", ".join(row.spec_ids))}</td>'
            )
            if coverage:
                out.append(f"<td>{esc(', '.join(covering.get(row.check, [])))}</td>")
            for n in range(len(columns)):
                ids = row.cells.get(n)
                out.append(_cell(report, ids) if ids else '<td class="cell o-none">—</td>')
            out.append("</tr>")
    out.append("</tbody><tfoot>")
    for outcome in OUTCOMES:
        lead = 3 + (1 if coverage else 0)
        out.append(f'<tr class="counts"><th colspan="{lead}">{esc(outcome)}</th>')
        for col in columns:
            n = sum(1 for i in col.results if report.results[i].outcome == outcome)
            cls = f"o-{outcome}" if n else ""
            out.append(f'<td class="{cls}" data-count="{esc(outcome)}">{n}</td>')
        out.append("</tr>")
    out.append("</tfoot></table>")
    return "".join(out)


def _requirements_by_section(
    requirements: Iterable[Requirement],
) -> dict[tuple[str, str], list[Requirement]]:
    found: dict[tuple[str, str], list[Requirement]] = {}
    for req in requirements:
        found.setdefault(_requirement_doc_section(req.id), []).append(req)
    return found


def _coverage_note(report: Report, reqs: list[Requirement]) -> str:
    ran = {r.check for r in report.results}
    covered = sum(1 for q in reqs if any(c in ran for c in q.checks))
    excluded = sum(1 for q in reqs if q.excluded and not q.checks)
    text = f"requirements: {covered}/{len(reqs)} covered by checks that ran"
    return text + (f", {excluded} excluded" if excluded else "")


def _render_coverage(report: Report) -> str:
    if report.requirements is None:
        return ""
    outcomes: dict[str, list[str]] = {}
    for r in report.results:
        outcomes.setdefault(r.check, []).append(r.outcome)
    out = [
        "<h2>Requirement coverage</h2>",
        "<table class=\"coverage\"><thead><tr><th>Requirement</th><th>Level</th>"
        "<th>Statement</th><th>Checks</th><th>Status</th></tr></thead><tbody>",
    ]
    for req in report.requirements:
        ran = [c for c in req.checks if c in outcomes]
        if req.excluded and not req.checks:
            status, cls = f"excluded: {req.excluded}", "o-skipped"
        elif ran:
            worst = _worst(o for c in ran for o in outcomes[c])
            status, cls = f"covered ({worst})", f"o-{worst}"
        elif req.checks:
            status, cls = "covered by checks that did not run", "o-none"
        else:
            status, cls = "not covered", "o-failed"
        out.append(
            f"<tr><td>{esc(req.id)}</td><td>{esc(req.level or '')}</td><td>{esc(req.text)}</td>"
            f"<td>{esc(', '.join(req.checks))}</td><td class=\"{cls}\">{esc(status)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _value(value: Any) -> str:
    """Escaped text of a metadata value (lists and mappings flattened)."""
    if isinstance(value, Mapping):
        return "; ".join(f"{esc(k)}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value) or "—"
    return esc(value) if value not in (None, "") else "—"


def _render_runs(report: Report) -> str:
    out = ["<h2>Runs</h2>"]
    for n, run in enumerate(report.runs):
        counts = report.counts(n)
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        out.append(f"<h3>{esc(run.label or f'run {n + 1}')}</h3><dl class=\"meta\">")
        sel = dict(run.selection)
        items: list[tuple[str, str]] = [
            ("started", esc(run.started)),
            ("finished", esc(run.finished)),
            ("exit status", esc(run.exit_status)),
            ("results", esc(summary or "none")),
            ("namespace", _value(sel.pop("namespace", None))),
            ("backends", _backends(sel.pop("backends", None))),
            ("targets", _value(sel.pop("targets", None))),
        ]
        items += [(str(k), _value(v)) for k, v in sel.items()]
        items += [
            ("python", esc(run.python)),
            ("platform", esc(run.platform)),
            ("host", esc(run.host)),
            ("packages", _value(dict(run.packages))),
        ]
        out += [f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items]
        out.append("</dl>")
    return "".join(out)


def _backends(value: Any) -> str:
    if not isinstance(value, list):
        return _value(value)
    parts = []
    for b in value:
        if isinstance(b, Mapping):
            where = [str(b[k]) for k in ("source", "origin") if b.get(k)]
            parts.append(esc(b.get("name", "?")) + (f" ({esc('; '.join(where))})" if where else ""))
        else:
            parts.append(esc(b))
    return ", ".join(parts) or "—"


def _render_details(report: Report, columns: list[_Column]) -> str:
    label = {(c.run, c.name): c.label for c in columns}
    out = ['<div class="details">']
    for i, r in enumerate(report.results):
        outcome = r.outcome + (f" ({r.category})" if r.category else "")
        refs = []
        for s in r.spec:
            link = _href(s.url)
            text = f"{esc(s.id)} ({esc(s.level)})"
            refs.append(f'<a href="{esc(link)}">{text}</a>' if link else f"{text} {esc(s.url)}")
        rows = [
            ("outcome", f'<span class="o-{esc(r.outcome)}">{esc(outcome)}</span>'),
            ("where", esc(label.get((r.run, r.column), r.column))),
            ("node", f"<code>{esc(r.nodeid)}</code>"),
            ("module", f"<code>{esc(r.module)}</code>" if r.module else "—"),
            ("spec", "<br>".join(refs) or "—"),
            ("duration", f"{r.duration:.3f} s"),
        ]
        if r.seed is not None:
            rows.append(("seed", f"<code>{esc(r.seed)}</code>"))
        if r.falsifying_example is not None:
            rows.append(("falsifying example", f"<pre>{esc(r.falsifying_example)}</pre>"))
        if r.transcript is not None:
            rows.append(("transcript", f"<code>{esc(r.transcript)}</code>"))
        out.append(
            f'<section class="detail o-border-{esc(r.outcome)}" id="r{i}" '
            f'data-outcome="{esc(r.outcome)}"><a class="close" href="#matrix" title="close">✕</a>'
            f"<h3>{esc(r.check)} — {esc(outcome)}</h3>"
        )
        if r.title:
            out.append(f"<p>{esc(r.title)}</p>")
        if r.message:
            out.append(f'<p class="message"><strong>{esc(r.message.splitlines()[0])}</strong></p>')
        out.append('<dl class="meta">')
        out += [f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows]
        out.append("</dl>")
        if r.evidence:
            out.append(f'<h4>Evidence</h4><pre class="evidence">{esc(r.evidence)}</pre>')
        out.append('<p><a href="#matrix">back to the matrix</a></p></section>')
    out.append("</div>")
    return "".join(out)


def render_html(report: Report) -> str:
    """The whole page as one string."""
    columns, index = _columns(report)
    covering: dict[str, list[str]] = {}
    for req in report.requirements or ():
        for check in req.checks:
            covering.setdefault(check, []).append(req.id)
    totals = report.counts()
    total_line = ", ".join(f"{v} {k}" for k, v in totals.items() if v) or "no results"
    legend = "".join(
        f'<span class="o-{o}">{esc(_MARKS[o])} = {esc(o)}</span>' for o in OUTCOMES
    ) + "".join(
        f'<span class="o-skipped c-{c}">{esc(m)} = skipped, {esc(c)}</span>'
        for c, m in _SKIP_MARKS.items()
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        "<title>authconform results</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>authconform results</h1><p>{esc(total_line)} "
        f'<span class="muted">({len(report.runs)} run(s), {len(report.results)} results)</span></p>'
        f'<p class="legend">{legend}</p>'
        '<p><label><input type="checkbox" id="only-problems"> show only checks that did not '
        "pass everywhere</label></p>"
        f'<h2 id="matrix">Checks by specification section</h2>'
        f"{_render_matrix(report, columns, index, covering)}"
        f"{_render_coverage(report)}"
        f"{_render_runs(report)}"
        f"{_render_details(report, columns)}"
        "</body></html>\n"
    )


def write_html(report: Report, path: Path) -> None:
    """Write ``summary.html``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
