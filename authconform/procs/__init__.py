"""Processes the harness starts and stops: each in its own process group, dying with us.

- :func:`spawn` starts a process in its own session (so a signal to its group reaches its
  children too, e.g. uvicorn workers) and, on Linux, with a parent-death signal
  (``PR_SET_PDEATHSIG`` = SIGKILL): if the run's process dies, even by SIGKILL or
  ``os._exit``, the kernel kills it. The signal fires when the *thread* that forked dies,
  so every spawn goes through one spawner thread that lives as long as the interpreter.
  Started processes are registered until stopped, and stopped at interpreter exit.
- :func:`stop_groups` / :func:`signal_group`: SIGTERM each group, SIGKILL after a grace.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["reap", "signal_group", "spawn", "stop_groups"]

PR_SET_PDEATHSIG = 1

_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ac-spawn")
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _popen(argv: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, **kwargs)


def spawn(
    argv: list[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, dying with us; registered until stopped.

    ``log``: stdout and stderr go there (appended), else to /dev/null. ``user``: run as
    that user (we must be root).
    """
    out: Any = subprocess.DEVNULL
    handle = None
    if log is not None:
        handle = out = log.open("ab")
    kwargs: dict[str, Any] = {
        "stdout": out,
        "stderr": subprocess.STDOUT,
        "stdin": subprocess.DEVNULL,
        "env": dict(os.environ if env is None else env),
        "start_new_session": True,
        "cwd": cwd,
        "preexec_fn": _die_with_parent if _prctl is not None else None,
    }
    if user is not None:
        import pwd

        kwargs["user"] = user
        kwargs["group"] = pwd.getpwnam(user).pw_gid
        kwargs["extra_groups"] = []
    try:
        proc = _spawner.submit(_popen, argv, kwargs).result()
    finally:
        if handle is not None:
            handle.close()
    with _live_lock:
        _live[proc.pid] = proc
    return proc


def signal_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``proc`` (one we started) if it still runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_leftovers(pgid: int) -> None:
    """SIGKILL what is left of a group whose leader is gone (children it left)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(procs: Iterable[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM every group, wait up to ``grace`` seconds in all, SIGKILL what is left."""
    procs = list(procs)
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(5)
        _kill_leftovers(proc.pid)
        with _live_lock:
            _live.pop(proc.pid, None)


def reap(grace: float = 2.0) -> int:
    """Stop every group :func:`spawn` started that still runs; returns how many."""
    with _live_lock:
        procs = list(_live.values())
    running = [p for p in procs if p.poll() is None]
    stop_groups(procs, grace)
    return len(running)


atexit.register(reap)
