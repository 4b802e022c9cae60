"""Process groups we start, and the guarantees that none outlives the run.

Three layers, so that no process of ours is orphaned whatever stops the run:

1. every process starts in its own session (``start_new_session``), so a signal to its
   group reaches its children too (PostgreSQL backends, uvicorn workers);
2. on Linux every process gets a parent-death signal (``PR_SET_PDEATHSIG`` = SIGKILL):
   if the run's process dies, even by SIGKILL, the kernel kills our direct children.
   The signal fires when the *thread* that forked dies, so every spawn goes through one
   long-lived spawner thread (:func:`spawn`) that lives as long as the interpreter;
3. a registry of live groups, stopped at interpreter exit (``atexit``), on SIGTERM (a
   handler installed with the first spawn from the main thread, chained to the previous
   one) and by :func:`reap`; Ctrl-C runs the fixtures' teardown, which closes them.

PostgreSQL's children call ``setsid`` themselves, so a group signal reaches only the
postmaster: :func:`signal_tree` signals a process and every descendant (read from
``/proc``), which is what pause (SIGSTOP) and kill (SIGKILL) of a store use.

Counting what a run left behind: with ``AUTHCONFORM_PROC_LEDGER=<file>`` set, :func:`spawn`
appends each process's pid and working directory to that file, and :func:`leftover_pids`
lists the live processes that are in one of those sessions or whose working directory
is inside one of those directories (our stores chdir into their temp dirs). An
environment tag would not do: PostgreSQL and Redis overwrite their environment block
with their process titles, and PostgreSQL's children leave the session.
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LEDGER_ENV",
    "leftover_pids",
    "own_dir",
    "reap",
    "descendants",
    "signal_group",
    "signal_tree",
    "spawn",
    "stop_group",
    "stop_groups",
]

LEDGER_ENV = "AUTHCONFORM_PROC_LEDGER"
PR_SET_PDEATHSIG = 1

_live: dict[int, subprocess.Popen[bytes]] = {}
_dirs: set[str] = set()  # temp dirs of our services, removed with them or at exit
_live_lock = threading.Lock()
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ac-spawn")
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        _prctl = None


def die_with_parent() -> None:  # pragma: no cover - runs in the child (after fork)
    """Linux: this process gets SIGKILL when its parent dies (a no-op elsewhere)."""
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
    that user (we must be root). The process is forked by the spawner thread, which
    lives as long as the interpreter (see the module docstring).
    """
    _install_term_handler()
    full_env = dict(os.environ if env is None else env)
    out: Any = subprocess.DEVNULL
    handle = None
    if log is not None:
        handle = out = log.open("ab")
    kwargs: dict[str, Any] = {
        "stdout": out,
        "stderr": subprocess.STDOUT,
        "stdin": subprocess.DEVNULL,
        "env": full_env,
        "start_new_session": True,
        "cwd": cwd,
        "preexec_fn": die_with_parent if _prctl is not None else None,
    }
    if user is not None:
        kwargs["user"] = user
        kwargs["group"] = _primary_group(user)
        kwargs["extra_groups"] = []
    try:
        proc = _spawner.submit(_popen, argv, kwargs).result()
    finally:
        if handle is not None:
            handle.close()
    with _live_lock:
        _live[proc.pid] = proc
        ledger = os.environ.get(LEDGER_ENV)
        if ledger:
            with open(ledger, "a", encoding="utf-8") as out:
                out.write(f"{proc.pid} {cwd or ''}\n")
    return proc


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def signal_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``proc`` (one we started) if it still runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _forget(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.pop(proc.pid, None)


def _kill_leftovers(pgid: int) -> None:
    """SIGKILL what is left of a group whose leader is gone (children it left)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0
) -> int | None:
    """Signal the group, wait up to ``grace`` s, SIGKILL it if needed; returns the exit code."""
    signal_group(proc, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait(10)
    _kill_leftovers(proc.pid)
    _forget(proc)
    return proc.returncode


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
        _forget(proc)


def own_dir(path: str | Path, *, remove: bool = False) -> None:
    """Register a temp dir of ours (removed by :func:`reap`), or remove it now."""
    import shutil

    with _live_lock:
        if remove:
            _dirs.discard(str(path))
        else:
            _dirs.add(str(path))
    if remove:
        shutil.rmtree(path, ignore_errors=True)


def reap(grace: float = 2.0) -> int:
    """Stop every group :func:`spawn` started that still runs; remove our temp dirs.

    Returns how many groups were running.
    """
    import shutil

    with _live_lock:
        procs = list(_live.values())
        dirs = list(_dirs)
        _dirs.clear()
    running = [p for p in procs if p.poll() is None]
    stop_groups(procs, grace)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    return len(running)


atexit.register(reap)
_term_installed = False


def chain_sigterm(cleanup: Callable[[], object]) -> bool:
    """On SIGTERM run ``cleanup``, then do what was done before; False off the main thread.

    Python installs handlers from the main thread only. The handler chains to the
    previous one, or re-sends the signal under the default action (ignored stays ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        cleanup()
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous != signal.SIG_IGN else previous)
        if previous != signal.SIG_IGN:
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    return True


def _install_term_handler() -> None:
    """On SIGTERM (a CI cancel), stop our groups first.

    The parent-death signal covers the case where the handler cannot be installed.
    """
    global _term_installed
    if not _term_installed:
        _term_installed = chain_sigterm(lambda: reap(grace=2.0))


def _stat(entry: Path) -> list[str] | None:
    try:
        return (entry / "stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def signal_tree(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the group of ``proc`` and to every descendant (PostgreSQL's setsid)."""
    if proc.poll() is not None:
        return
    pids = descendants(proc.pid)
    signal_group(proc, sig)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def leftover_pids(ledger: str | Path) -> list[int]:
    """Live processes (zombies excluded) started by a run with this ledger (see above)."""
    sessions: set[int] = set()
    dirs: list[str] = []
    try:
        lines = Path(ledger).read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        pid, _, cwd = line.partition(" ")
        if pid.isdigit():
            sessions.add(int(pid))
        if cwd.strip():
            dirs.append(cwd.strip().rstrip("/") + "/")
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        fields = _stat(entry)
        if fields is None or fields[0] == "Z":
            continue
        if int(fields[3]) in sessions:
            found.append(int(entry.name))
            continue
        try:
            where = os.readlink(entry / "cwd").rstrip("/") + "/"
        except OSError:
            continue
        if any(where.startswith(d) for d in dirs):
            found.append(int(entry.name))
    return sorted(found)
