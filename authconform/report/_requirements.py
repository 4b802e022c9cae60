"""Requirement files (``authconform/spec/requirements/<doc>.yaml``), when they exist.

Each file lists the normative statements we track, either as a top-level list or under
``requirements:``; each entry has an ``id`` (a spec id), optional ``text`` and ``level``,
and either ``checks`` (check ids covering it) or ``excluded`` (why none does). The
report copies them into results.json so that summary.html can show coverage. No files,
or no YAML parser installed, means no coverage column: coverage is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from authconform.report._model import Requirement

__all__ = ["default_directory", "load_requirements"]


def default_directory() -> Path:
    """Where the shipped requirement files live."""
    return Path(__file__).resolve().parent.parent / "spec" / "requirements"


def load_requirements(directory: Path | None = None) -> tuple[Requirement, ...] | None:
    """Every requirement in ``directory`` (``*.yaml``/``*.yml``/``*.json``), or None."""
    directory = default_directory() if directory is None else directory
    files = sorted(
        p for p in directory.glob("*") if p.suffix in (".yaml", ".yml", ".json")
    ) if directory.is_dir() else []
    if not files:
        return None
    found: list[Requirement] = []
    for path in files:
        data = _read(path)
        if data is None:
            return None
        entries = data.get("requirements", []) if isinstance(data, dict) else data
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                checks = entry.get("checks") or []
                if isinstance(checks, str):
                    checks = [checks]
                found.append(
                    Requirement(
                        id=entry["id"],
                        text=str(entry.get("text", "") or ""),
                        level=entry.get("level"),
                        checks=tuple(str(c) for c in checks),
                        excluded=entry.get("excluded"),
                    )
                )
    return tuple(found)


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        import json

        return json.loads(text)
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(text)
