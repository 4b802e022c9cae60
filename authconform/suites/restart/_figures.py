"""Figures the restart suite measures (loss windows, restart-to-ready, recovery times).

Checks add rows with :func:`record`; the suite's conftest prints them at the end of the
run (``restart suite figures``) and each row also goes into the JUnit properties of its
check. Nothing here asserts: the checks do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Figure", "figures", "record"]


@dataclass(frozen=True)
class Figure:
    """One measured row: what, for which store and setting, the value and its unit."""

    topic: str
    store: str
    setting: str
    value: str
    detail: str = ""


_rows: list[Figure] = []
_lock = threading.Lock()


def record(topic: str, store: str, setting: str, value: str, detail: str = "") -> Figure:
    """Keep one figure for the end-of-run table."""
    row = Figure(topic, store, setting, value, detail)
    with _lock:
        _rows.append(row)
    return row


def figures() -> list[Figure]:
    """Every figure recorded so far, in order."""
    with _lock:
        return list(_rows)
