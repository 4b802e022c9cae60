"""Release N callers at once, one barrier per operation, on three executors.

A batch is a list of *programs*, one per caller; a program is a list of ``Call``. Every
caller waits at barrier ``i`` before its ``i``-th call, and barrier ``i`` opens only when
every caller reached it (lockstep: one barrier for the whole batch would let one caller
run ahead and hide races). After the barrier a caller may wait until an absolute
instant (``Call.at``) and then spins for its *jitter*, a few microseconds chosen by the
test. Every call is recorded as an ``Operation`` (``time.time()`` at invocation and at
response, the answer or the exception) so histories feed the linearizability checker.

Executors:

- ``asyncio``: tasks on one event loop sharing one backend instance (its client or pool);
  they interleave only at ``await``.
- ``thread``: OS threads, each with its own event loop and its own backend instance
  (its own client, connection or pool). An in-process store (memory, fakeredis) is
  shared by the instances of one process, so threads are still callers of one store.
- ``process``: OS processes, each with its own instances, built from the backend's
  ``--backend`` value and the settings (so a user's ``module:factory`` works as well as
  a built-in). At most ``MAX_PROCESSES`` processes; more callers than that run on
  threads inside them, each thread with its own instance. Not applicable to an
  in-process store (a factory with ``in_process = True``): another process cannot see it.

The worker processes are a pool kept for the session (``process_pool()``), reused by
every batch and every backend; each keeps its instances per backend and settings until
told to forget them. No worker outlives the run: each gets a parent-death signal (Linux
``PR_SET_PDEATHSIG``) and a watchdog that exits when its parent is gone or its command
pipe closes; the pool is stopped at interpreter exit and on SIGTERM (the pytest plugin
turns SIGTERM into an interrupt, and fixture teardown closes the pool). Worker pids go
to the process ledger (``AUTHCONFORM_PROC_LEDGER``) like every process we start.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from authconform.contract import BackendSettings
from authconform.procs._groups import chain_sigterm, die_with_parent
from authconform.race.history import Operation

__all__ = [
    "EXECUTORS",
    "MAX_PROCESSES",
    "BarrierTimeout",
    "Call",
    "ProcessPool",
    "Runner",
    "process_pool",
]

EXECUTORS = ("asyncio", "thread", "process")
#: worker processes of the pool, at most; more callers run on threads inside them
MAX_PROCESSES = 8
#: threads: seconds from the last arrival at a barrier to the common release instant
#: (a base and a share per thread, for the barrier to wake every waiter first)
RELEASE_MARGIN = 0.0005
RELEASE_PER_THREAD = 0.00003
#: seconds a caller waits at a barrier before the batch is declared broken
BARRIER_TIMEOUT = 30.0
#: seconds a batch may take in all
BATCH_TIMEOUT = 120.0

_LEDGER_ENV = "AUTHCONFORM_PROC_LEDGER"
#: the GIL switch interval while threads race (seconds; CPython's default is 5 ms, which
#: lets a thread run a whole read-modify-write of pure Python before another runs)
SWITCH_INTERVAL = 5e-5


def _empty() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Call:
    """One operation of a caller's program: ``backend.<op>(*args, **kwargs)``.

    ``at``: an instant (``time.time()``) the caller waits for after the barrier, so that
    every caller starts together at, e.g., a record's expiry. ``delay``: seconds the
    caller sleeps after the barrier (and ``at``), so that callers of one round can be
    staggered across another caller's operation.
    """

    op: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=_empty)
    at: float | None = None
    delay: float = 0.0


class BarrierTimeout(RuntimeError):
    """A caller waited at a barrier longer than ``BARRIER_TIMEOUT`` (a stuck caller)."""


def _pause(at: float | None, jitter: float, delay: float = 0.0) -> None:
    """Wait until ``at`` (if given), sleep ``delay``, then spin ``jitter`` seconds."""
    if at is not None:
        left = at - time.time()
        if left > 0.002:
            time.sleep(left - 0.001)
        while time.time() < at:
            pass
    if delay > 0:
        time.sleep(delay)  # releases the GIL: the callers it is staggered against run
    if jitter > 0:
        end = time.perf_counter() + jitter
        while time.perf_counter() < end:
            pass


def _outcome(exc: BaseException) -> BaseException:
    """An exception as it goes into a history (the caller's traceback dropped)."""
    return exc.with_traceback(None)


def _run_program(
    loop: asyncio.AbstractEventLoop,
    backend: Any,
    caller: int,
    program: Sequence[Call | None],
    wait: Callable[[int], None],
    jitter: float,
) -> list[Operation]:
    """Run one caller's program on a thread's own loop, a barrier before every call."""
    out: list[Operation] = []
    for i, call in enumerate(program):
        wait(i)
        if call is None:  # a shorter program still meets every barrier
            continue
        _pause(call.at, jitter, call.delay)
        t0 = time.time()
        try:
            result: Any = loop.run_until_complete(
                getattr(backend, call.op)(*call.args, **dict(call.kwargs))
            )
        except Exception as exc:  # noqa: BLE001 - an answer of the backend, recorded
            result = _outcome(exc)
        out.append(Operation(caller, call.op, call.args, call.kwargs, t0, time.time(), result))
    return out


class _Slot:
    """A thread with its own event loop and its own backend instance, kept between batches."""

    def __init__(self, factory: Callable[[BackendSettings], Any], settings: BackendSettings):
        self._factory = factory
        self._settings = settings
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._main, name="ac-race-slot", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        backend: Any = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if backend is None:
                        backend = self._factory(self._settings)
                    future.set_result(fn(loop, backend))
                except BaseException as exc:  # noqa: BLE001 - handed to the submitter
                    future.set_exception(exc)
        finally:
            if backend is not None:
                try:
                    loop.run_until_complete(asyncio.wait_for(backend.close(), 10))
                except Exception:  # noqa: BLE001, S110 - closing is best effort
                    pass
            loop.close()

    def submit(self, fn: Callable[[asyncio.AbstractEventLoop, Any], Any]) -> Future[Any]:
        """Run ``fn(loop, backend)`` on the slot's thread."""
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future

    def close(self, timeout: float = 15.0) -> None:
        """Close the instance and stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)


def _run_on_slots(
    slots: Sequence[_Slot],
    assignments: Sequence[tuple[int, Sequence[Call | None], float]],
    wait: Callable[[int], None],
) -> list[Operation]:
    def job(
        k: int, program: Sequence[Call | None], jitter: float
    ) -> Callable[[asyncio.AbstractEventLoop, Any], list[Operation]]:
        def run(loop: asyncio.AbstractEventLoop, backend: Any) -> list[Operation]:
            return _run_program(loop, backend, k, program, wait, jitter)

        return run

    futures = [
        slot.submit(job(k, program, jitter))
        for slot, (k, program, jitter) in zip(slots, assignments, strict=False)
    ]
    out: list[Operation] = []
    errors: list[BaseException] = []
    for future in futures:
        try:
            out.extend(future.result(BATCH_TIMEOUT))
        except BaseException as exc:  # noqa: BLE001 - the first one is raised below
            errors.append(exc)
    if errors:
        raise errors[0]
    return out


# the cross-process barrier ----------------------------------------------------------------
class _Gate:
    """A reusable barrier for processes whose number of parties is set per batch.

    Barrier ``i`` releases its waiters through semaphore ``i % 2``: a caller released
    from barrier ``i`` cannot take a token meant for a slower waiter of ``i``, since it
    can pass barrier ``i + 1`` only when everybody arrived there.
    """

    def __init__(self, ctx: Any) -> None:
        self.lock = ctx.Lock()
        self.sems = (ctx.Semaphore(0), ctx.Semaphore(0))
        self.count = ctx.RawValue("i", 0)
        self.parties = ctx.RawValue("i", 0)

    def reset(self, parties: int) -> None:
        with self.lock:
            self.count.value = 0
            self.parties.value = parties

    def wait(self, index: int) -> None:
        sem = self.sems[index % 2]
        with self.lock:
            self.count.value += 1
            last = self.count.value >= self.parties.value
            if last:
                self.count.value = 0
                others = self.parties.value - 1
        if last:
            for _ in range(others):
                sem.release()
        elif not sem.acquire(timeout=BARRIER_TIMEOUT):
            raise BarrierTimeout(f"barrier {index}: a caller did not arrive within the timeout")


# worker processes ------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    die_with_parent()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=watch, name="ac-race-watchdog", daemon=True).start()


def _worker_main(conn: multiprocessing.connection.Connection, gate: _Gate, parent: int) -> None:
    """A pool worker: runs its share of each batch on slot threads, until told to stop."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    sys.setswitchinterval(SWITCH_INTERVAL)  # the threads of a worker race finely too
    from authconform.backends._registry import resolve

    slots: dict[str, list[_Slot]] = {}
    factories: dict[str, Any] = {}
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "stop":
                break
            if kind == "forget":
                for slot in slots.pop(message[1], []):
                    slot.close()
                conn.send(("ok", None))
                continue
            _, key, value, settings, assignments = message
            try:
                if key not in factories:
                    factories[key] = resolve(value).factory
                mine = slots.setdefault(key, [])
                while len(mine) < len(assignments):
                    mine.append(_Slot(factories[key], settings))
                ops = _run_on_slots(mine, assignments, gate.wait)
                conn.send(("ok", _picklable(ops)))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                conn.send(("error", "".join(traceback.format_exception(exc))))
    finally:
        for group in slots.values():
            for slot in group:
                slot.close(5.0)
        conn.close()


def _picklable(ops: list[Operation]) -> list[Operation]:
    import pickle

    out = []
    for o in ops:
        try:
            pickle.dumps(o.result)
            out.append(o)
        except Exception:  # noqa: BLE001 - an answer that cannot travel: its repr does
            result = RuntimeError(f"{type(o.result).__name__}: {o.result!r}")
            out.append(Operation(o.process, o.op, o.args, o.kwargs, o.call, o.ret, result))
    return out


def _start_without_main(proc: Any) -> None:
    """Start a spawned process without re-running the parent's ``__main__`` in it.

    The spawn method imports the parent's main module in the child (a script, pytest's
    entry point, a user's runner); our workers need none of it, and a script without an
    ``if __name__ == "__main__"`` guard would run again. A bare module stands in for
    ``__main__`` while the child's preparation data is taken.
    """
    import types

    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        proc.start()
    finally:
        sys.modules["__main__"] = real


class ProcessPool:
    """Up to ``MAX_PROCESSES`` worker processes, started on demand and kept until closed."""

    def __init__(self, size: int = MAX_PROCESSES) -> None:
        """Nothing starts until a batch needs it."""
        self.size = size
        self._ctx = multiprocessing.get_context("spawn")
        self._gate = _Gate(self._ctx)
        self._workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
        self._lock = threading.Lock()
        self.closed = False

    @property
    def pids(self) -> list[int]:
        """Pids of the live workers."""
        return [p.pid for p, _ in self._workers if p.is_alive()]

    def _grow(self, n: int) -> None:
        while len(self._workers) < min(n, self.size):
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_worker_main,
                args=(child, self._gate, os.getpid()),
                name="authconform-race-worker",
                daemon=True,
            )
            _start_without_main(proc)
            child.close()
            self._workers.append((proc, parent))
            ledger = os.environ.get(_LEDGER_ENV)
            if ledger:
                with open(ledger, "a", encoding="utf-8") as out:
                    out.write(f"{proc.pid} \n")

    def run(
        self,
        key: str,
        value: str,
        settings: BackendSettings,
        programs: Sequence[Sequence[Call | None]],
        jitter: Sequence[float],
    ) -> list[Operation]:
        """Run one batch: callers spread round-robin over the workers."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the process pool is closed")
            self._grow(len(programs))
            used = self._workers[: min(len(programs), self.size)]
            shares: list[list[tuple[int, Sequence[Call | None], float]]] = [[] for _ in used]
            for k, program in enumerate(programs):
                shares[k % len(used)].append((k, list(program), jitter[k]))
            self._gate.reset(len(programs))
            try:
                for (_, conn), share in zip(used, shares, strict=True):
                    conn.send(("run", key, value, settings, share))
                out: list[Operation] = []
                errors: list[str] = []
                deadline = time.monotonic() + BATCH_TIMEOUT
                for proc, conn in used:
                    if not conn.poll(max(0.0, deadline - time.monotonic())):
                        raise BarrierTimeout(f"worker {proc.pid} did not answer in time")
                    status, payload = conn.recv()
                    if status == "ok":
                        out.extend(payload)
                    else:
                        errors.append(payload)
            except BaseException:
                self._stop_locked()  # a broken batch leaves workers mid-barrier
                raise
            if errors:
                raise RuntimeError("a worker process failed:\n" + errors[0])
            return out

    def forget(self, key: str) -> None:
        """Close every worker's instances of ``key`` (its namespace is about to go)."""
        with self._lock:
            for _proc, conn in list(self._workers):
                try:
                    conn.send(("forget", key))
                    if conn.poll(20):
                        conn.recv()
                except (OSError, EOFError):
                    pass

    def _stop_locked(self, grace: float = 5.0) -> None:
        workers, self._workers = self._workers, []
        for _, conn in workers:
            try:
                conn.send(("stop",))
            except (OSError, EOFError):
                pass
        deadline = time.monotonic() + grace
        for proc, conn in workers:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            conn.close()
        self._gate = _Gate(self._ctx)

    def close(self) -> None:
        """Stop every worker (their instances are closed first); the pool may start again."""
        with self._lock:
            self._stop_locked()


_POOL: ProcessPool | None = None
_POOL_LOCK = threading.Lock()


def process_pool() -> ProcessPool:
    """The pool of this interpreter (one per pytest worker), stopped at exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ProcessPool()
            atexit.register(_POOL.close)
            chain_sigterm(_stop_pool_now)
        return _POOL


def close_pool() -> None:
    """Stop the pool's workers, if any ran."""
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()


def _stop_pool_now() -> None:
    """SIGTERM: stop the workers (if the pool is not busy for more than a second)."""
    if _POOL is not None and _POOL._lock.acquire(timeout=1):
        try:
            _POOL._stop_locked(grace=1.0)
        finally:
            _POOL._lock.release()


# the runner of one backend ---------------------------------------------------------------
class Runner:
    """Runs batches against one backend (factory + settings) on any executor.

    ``value`` is the ``--backend`` value a worker process resolves (``module:factory``
    or a name). ``backend`` is the instance the asyncio executor uses (on the caller's
    event loop, run by ``run_async``). Call ``close()`` before the namespace is dropped.
    """

    def __init__(
        self,
        *,
        value: str,
        factory: Callable[[BackendSettings], Any],
        settings: BackendSettings,
        backend: Any,
        run_async: Callable[[Any], Any],
        pool: ProcessPool | None = None,
    ) -> None:
        """Nothing starts until a batch needs it."""
        self.value = value
        self.factory = factory
        self.settings = settings
        self.backend = backend
        self.run_async = run_async
        self.pool = pool
        self.key = f"{value}|{settings.namespace}|{id(self)}"
        self._slots: list[_Slot] = []
        self._used_pool = False

    @property
    def in_process(self) -> bool:
        """True when the store lives in this process (processes cannot share it)."""
        return bool(getattr(self.factory, "in_process", False))

    def executors(self) -> tuple[str, ...]:
        """The executors that apply to this backend."""
        if self.in_process or self.pool is None:
            return ("asyncio", "thread")
        return EXECUTORS

    def not_applicable(self, executor: str) -> str | None:
        """Why ``executor`` does not apply here, or None."""
        if executor == "process" and self.in_process:
            return (
                "not-applicable: the store of this backend lives in one process (in_process); "
                "another process cannot share it"
            )
        if executor == "process" and self.pool is None:
            return "disabled: no process pool was given"
        return None

    def run(
        self,
        executor: str,
        programs: Sequence[Sequence[Call]],
        jitter: Sequence[float] | None = None,
    ) -> list[Operation]:
        """Run the batch; the history is sorted by invocation time."""
        jitter = list(jitter) if jitter is not None else [0.0] * len(programs)
        if len(jitter) != len(programs):
            raise ValueError("one jitter per program")
        reason = self.not_applicable(executor)
        if reason:
            raise ValueError(reason)
        rounds = max((len(p) for p in programs), default=0)
        programs = [[*p, *([None] * (rounds - len(p)))] for p in programs]  # type: ignore[list-item]
        if executor == "asyncio":
            ops = self.run_async(self._asyncio(programs, jitter))
        elif executor == "thread":
            while len(self._slots) < len(programs):
                self._slots.append(_Slot(self.factory, self.settings))
            # A barrier wakes its waiters one after another (each needs its lock and the
            # GIL): the last to arrive runs a whole operation before the first it woke is
            # back. So the barrier only gathers; the release is a common instant a little
            # later, which every thread sleeps until (the OS wakes them together).
            released = [0.0]
            margin = RELEASE_MARGIN + RELEASE_PER_THREAD * len(programs)

            def release() -> None:
                released[0] = time.time() + margin

            barrier = threading.Barrier(len(programs), action=release, timeout=BARRIER_TIMEOUT)

            def wait(_: int) -> None:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    raise BarrierTimeout("a thread did not reach its barrier") from None
                left = released[0] - time.time()
                if left > 0:
                    time.sleep(left)

            assignments = [(k, list(p), jitter[k]) for k, p in enumerate(programs)]
            before = sys.getswitchinterval()
            sys.setswitchinterval(min(before, SWITCH_INTERVAL))
            try:
                ops = _run_on_slots(self._slots, assignments, wait)
            finally:
                sys.setswitchinterval(before)
        elif executor == "process":
            assert self.pool is not None
            self._used_pool = True
            ops = self.pool.run(self.key, self.value, self.settings, programs, jitter)
        else:
            raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
        return sorted(ops, key=lambda o: (o.call, o.process))

    async def _asyncio(
        self, programs: Sequence[Sequence[Call | None]], jitter: Sequence[float]
    ) -> list[Operation]:
        barrier = asyncio.Barrier(len(programs))
        out: list[Operation] = []

        async def caller(k: int, program: Sequence[Call | None]) -> None:
            for call in program:
                await asyncio.wait_for(barrier.wait(), BARRIER_TIMEOUT)
                if call is None:  # a shorter program still meets every barrier
                    continue
                if call.at is not None:
                    await asyncio.sleep(max(0.0, call.at - time.time()))
                if call.delay > 0:
                    await asyncio.sleep(call.delay)
                for _ in range(int(jitter[k] * 1e5)):  # ~10 us a turn of the loop
                    await asyncio.sleep(0)
                t0 = time.time()
                try:
                    result: Any = await getattr(self.backend, call.op)(
                        *call.args, **dict(call.kwargs)
                    )
                except Exception as exc:  # noqa: BLE001 - an answer, recorded
                    result = _outcome(exc)
                out.append(Operation(k, call.op, call.args, call.kwargs, t0, time.time(), result))

        await asyncio.gather(*(caller(k, p) for k, p in enumerate(programs)))
        return out

    def close(self) -> None:
        """Close the thread instances and the workers' instances of this runner."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.close()
        if self.pool is not None and self._used_pool:
            self.pool.forget(self.key)
