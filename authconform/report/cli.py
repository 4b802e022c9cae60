"""``authconform report a.json b.json ... [-o DIR]``: merge runs into one report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from authconform.report._html import write_html
from authconform.report._model import load, merge

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Merge the given results.json files; write results.json and summary.html to DIR."""
    parser = argparse.ArgumentParser(
        prog="authconform report",
        description="Merge the results.json of several runs (a CI matrix) into one "
        "results.json and one summary.html with the columns of every run.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="results.json files to merge")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("reports"),
        help="output directory (default: reports)",
    )
    args = parser.parse_args(argv)
    try:
        reports = [load(path) for path in args.files]
    except ValueError as exc:
        print(f"authconform report: {exc}", file=sys.stderr)
        return 2
    merged = merge(reports)
    out: Path = args.output
    merged.write(out / "results.json")
    write_html(merged, out / "summary.html")
    counts = ", ".join(f"{n} {k}" for k, n in merged.counts().items() if n) or "no results"
    print(
        f"authconform report: {len(merged.runs)} run(s), {counts}: "
        f"{out / 'results.json'} {out / 'summary.html'}"
    )
    return 0
