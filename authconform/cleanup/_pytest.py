"""pytest sub-plugin: every kind of stop ends as cleanly as Ctrl-C, while our checks run.

- SIGTERM (what a CI cancel or a job timeout sends) becomes the same interrupt as Ctrl-C,
  so fixture teardown stops the processes we started and drops the namespaces. A further
  SIGTERM during that cleanup is ignored (a CI sends SIGINT, then SIGTERM, then SIGKILL).
  The handler is installed only when the run holds checks of ours, only in the main
  thread, and the previous one is restored at the end of the session.
- On the built-in shared stores (redis, postgres) the run holds a lease on its namespace
  (``authconform.cleanup``); after teardown the sweep drops whatever of the namespace
  family is left, then releases the lease. A hard kill leaves the lease to expire, and
  ``authconform clean`` removes the data then.

Imports nothing heavy at import time.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest

from authconform._session import is_ours, run_config

__all__ = ["StopGuard"]

_GUARD = pytest.StashKey["StopGuard"]()


@dataclass
class StopGuard:
    """The SIGTERM handler and the leases of one session."""

    config: pytest.Config
    phase: str = "idle"  # running, cleanup
    terminated: int = 0
    previous: Any = None
    installed: bool = False
    leases: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM while checks run: interrupt; later ones: keep cleaning up."""
        self.terminated += 1
        if self.phase == "running" and self.terminated == 1:
            raise KeyboardInterrupt(
                "SIGTERM: authconform stops the run, its processes and its namespaces"
            )
        sys.stderr.write("\nauthconform: SIGTERM again: still cleaning up\n")

    def install(self) -> None:
        """Take over SIGTERM (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.installed = True

    def restore(self) -> None:
        """Give SIGTERM back to whoever had it."""
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)
            self.installed = False

    def acquire_leases(self) -> None:
        """A lease per built-in shared store of this run (best effort: noted on failure)."""
        from authconform.cleanup import LEASED_BACKENDS, Lease

        run = run_config(self.config)
        for spec in run.specs:
            if spec.name in LEASED_BACKENDS and spec.source == "authconform (built-in)":
                try:
                    self.leases.append(Lease(spec.name, run.settings).acquire())
                except Exception as exc:  # noqa: BLE001 - the probe passed; say and go on
                    self.notes.append(
                        f"no lease on {spec.name} ({type(exc).__name__}: {exc}): a hard "
                        "kill of this run would leave its namespace for you to drop"
                    )

    def release_leases(self) -> None:
        """Sweep each store and release its lease."""
        for lease in self.leases:
            dropped, problem = lease.release()
            if dropped:
                self.notes.append(
                    f"{lease.service}: swept {', '.join(dropped)} (left after teardown)"
                )
            if problem:
                self.notes.append(f"{lease.service}: {problem}")
        self.leases.clear()


def _ours(session: pytest.Session) -> bool:
    return any(is_ours(getattr(item, "path", None)) for item in session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    """While our checks run: SIGTERM interrupts cleanly, the stores hold our leases."""
    if session.config.option.collectonly or not _ours(session):
        return (yield)
    guard = StopGuard(session.config)
    session.config.stash[_GUARD] = guard
    guard.install()
    guard.acquire_leases()
    guard.phase = "running"
    try:
        return (yield)
    finally:
        guard.phase = "cleanup"


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, Any, Any]:
    """After fixture teardown: sweep, release the leases, restore SIGTERM."""
    try:
        return (yield)
    finally:
        guard = session.config.stash.get(_GUARD, None)
        if guard is not None:
            guard.phase = "cleanup"
            try:
                guard.release_leases()
            finally:
                guard.restore()
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            for note in guard.notes:
                if reporter is not None:
                    reporter.write_line(f"authconform: {note}")
                else:
                    sys.stderr.write(f"authconform: {note}\n")
            del session.config.stash[_GUARD]
