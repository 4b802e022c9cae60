"""Every kind of record survives a restart of its store, graceful or SIGKILL.

Redis and PostgreSQL: the store the suite started is stopped (SIGTERM; PostgreSQL's fast
shutdown) or killed (SIGKILL to the process and all its children) and started again on
the same port and data directory, in each durability variant (see ``_store``). A kill
under a relaxed variant comes after that variant's loss window, so what it may lose is
measured by the loss-window checks, not here. SQLite: the process that wrote is killed
while it holds a transaction that deletes every row (uncommitted), then a new process
opens the file.

Records are written by one backend instance and checked by a new one (a new server
process); the instance that wrote must then serve again by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from authconform.contract import StorageUnavailable
from authconform.markers import restart, spec
from authconform.suites.restart._fixtures import first_line, need_kill, need_restart
from authconform.suites.restart._records import Written, verify_all, verify_expiry, write_all
from authconform.suites.restart._store import Store

pytestmark = [restart]

#: TTL of the records: long enough to outlive a restart, short enough to wait out (Redis
#: keeps time itself, so its expiry is waited for, not simulated)
TTL = {"redis": 3.0, "postgres": 120.0, "sqlite": 120.0}
RESUME_BOUND = 15.0  # seconds the writing instance may take to serve again


async def _resumes(store: Store, backend: object) -> str | None:
    """None once ``backend`` (the instance from before the restart) answers again."""
    deadline = time.monotonic() + RESUME_BOUND
    last = ""
    while time.monotonic() < deadline:
        try:
            await backend.get_client("probe-after-restart")  # type: ignore[attr-defined]
            return None
        except StorageUnavailable as exc:
            last = first_line(exc)
        await asyncio.sleep(0.2)
    return (
        f"the instance that wrote before the restart still fails {RESUME_BOUND:g} s after "
        f"the store came back ({last}): it does not reconnect by itself"
    )


def _tolerance(store: Store) -> float:
    return 0.01 if store.kind == "redis" else 0.001


def _fail(store: Store, what: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(
            f"{store.describe}, {what}: {len(problems)} problem(s):\n- " + "\n- ".join(problems)
        )


async def _advance(store: Store, clock: object) -> Callable[[float], object]:
    async def advance(seconds: float) -> None:
        if store.spec.uses_clock:
            await clock.advance(seconds)  # type: ignore[attr-defined]
        else:
            await asyncio.sleep(seconds)

    return advance


async def _restart_and_verify(store: Store, clock: object, *, kill: bool) -> None:
    assert store.kind is not None
    ttl = TTL[store.kind] + (store.variant.window if store.variant is not None else 0.0)
    async with store:
        namespace = store.namespace()
        before = store.make(namespace)
        written = await write_all(before, ttl)
        if kill and store.variant is not None and store.variant.window:
            await asyncio.sleep(store.variant.window)  # past the setting's loss window
        ready = await asyncio.to_thread(store.restart, kill=kill)
        after = store.make(namespace)
        how = "SIGKILL" if kill else "graceful restart"
        problems = await verify_all(after, written, tolerance=_tolerance(store))
        _fail(store, f"after a {how} (ready in {ready:.2f} s)", problems)
        problems = await verify_expiry(
            after, written, await _advance(store, clock), raw_redis=store.kind == "redis",
            retention=store.settings().expired_retention,
        )
        _fail(store, f"expiry after a {how}", problems)
        if (problem := await _resumes(store, before)) is not None:
            pytest.fail(f"{store.describe}: {problem}")


@spec("CONTRACT-survives-restarts", "CONTRACT-consumed-stays-consumed", level="MUST")
@pytest.mark.parametrize("variant", ["strict", "relaxed"])
async def test_records_survive_a_graceful_restart_of_the_store(
    stores: Callable[[str], Store], clock: object, variant: str
) -> None:
    """Stop the store cleanly and start it: every record, TTL and flag is as it was."""
    store = stores(variant)
    if store.kind == "sqlite":
        await _sqlite_process_restart(store, clock, kill=False)
        return
    need_restart(store)
    await _restart_and_verify(store, clock, kill=False)


@spec("CONTRACT-survives-restarts", "CONTRACT-consumed-stays-consumed", level="MUST")
@pytest.mark.parametrize("variant", ["strict", "relaxed"])
async def test_records_survive_a_sigkill_of_the_store(
    stores: Callable[[str], Store], clock: object, variant: str
) -> None:
    """SIGKILL the store (SQLite: the writing process, mid-transaction): nothing written
    before the setting's loss window is lost, and no consumed record comes back."""
    store = stores(variant)
    if store.kind == "sqlite":
        await _sqlite_process_restart(store, clock, kill=True)
        return
    need_kill(store)
    await _restart_and_verify(store, clock, kill=True)


# -- SQLite: the writing process ------------------------------------------------------------
_WRITER = r"""
import asyncio, json, sqlite3, sys, time
from authconform.backends._registry import resolve
from authconform.contract import BackendSettings, FakeClock
from authconform.suites.restart._records import Written, write_all

args = json.loads(sys.stdin.readline())
settings = BackendSettings(namespace=args["namespace"], sqlite_path=args["path"],
                           clock=FakeClock(args["now"]), options=args["options"])
async def main():
    backend = resolve(args["backend"]).factory(settings)
    written = await write_all(backend, args["ttl"], Written.from_json(args["written"]))
    await backend.close()
    return written
written = asyncio.run(main())
print("WRITTEN " + written.to_json(), flush=True)
if args["hold"]:
    conn = sqlite3.connect(args["path"], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ?",
        ("ns_" + args["namespace"] + "_%",))]
    for table in tables:
        conn.execute(f'DELETE FROM "{table}"')  # uncommitted: must never be seen
    print("HOLDING " + str(len(tables)), flush=True)
    time.sleep(600)
"""


async def _sqlite_process_restart(store: Store, clock: object, *, kill: bool) -> None:
    """A child process writes everything; graceful: it exits; kill: SIGKILL mid-transaction."""
    from authconform.procs import spawn, stop_group

    settings = store.settings()
    namespace = store.namespace()
    now = clock.now()  # type: ignore[attr-defined]
    written = Written(ttl=TTL["sqlite"])
    args = {
        "backend": store.spec.source if ":" in store.spec.source else store.spec.name,
        "namespace": namespace,
        "path": settings.sqlite_path,
        "now": now,
        "options": dict(settings.options),
        "ttl": TTL["sqlite"],
        "written": written.to_json(),
        "hold": kill,
    }
    workdir = Path(settings.sqlite_path).parent
    log = workdir / f"writer-{namespace}.log"
    script = workdir / f"writer-{namespace}.py"
    script.write_text(_WRITER)
    stdin = workdir / f"writer-{namespace}.json"
    stdin.write_text(json.dumps(args) + "\n")
    proc = spawn(
        ["sh", "-c", f'exec "{sys.executable}" "{script}" < "{stdin}"'],
        log=log,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    marker = "HOLDING" if kill else "WRITTEN"
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace") if log.exists() else ""
        if marker in text or proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    if marker not in text:
        stop_group(proc, 9)
        pytest.fail(f"the writing process did not get to {marker}: {text[-800:]}")
    for line in text.splitlines():
        if line.startswith("WRITTEN "):
            written = Written.from_json(line[len("WRITTEN ") :])
    if kill:
        await asyncio.to_thread(stop_group, proc, 9, 5.0)
    else:
        await asyncio.to_thread(proc.wait, 30)
    async with store:
        after = store.make(namespace)
        how = "SIGKILL of the writing process mid-transaction" if kill else "process restart"
        problems = await verify_all(after, written, tolerance=_tolerance(store))
        _fail(store, f"after a {how}", problems)
        problems = await verify_expiry(after, written, await _advance(store, clock))
        _fail(store, f"expiry after a {how}", problems)
