"""Store faults beyond "connection refused": every operation fails closed, in bounded time.

The backend under test reaches its store through a fault proxy (``authconform.procs.
FaultProxy``) or meets a real store-side condition. Which mechanism each fault uses:

=======================  ========================================================================
fault                    mechanism
=======================  ========================================================================
refused                  proxy stops listening and resets connections (a store that is down)
stalled                  SIGSTOP of the store we started (real: the kernel still accepts);
                         the proxy's stall for a store given by URL. SQLite: another process
                         holds the write lock past the busy timeout
readonly (Redis)         real: the backend talks to a replica (``replicaof``): ``-READONLY``
oom (Redis)              real: ``maxmemory 1`` with ``noeviction``: ``-OOM``
loading (Redis)          proxy injection of ``-LOADING`` (no way to hold a real load open)
read-only (PostgreSQL)   real: ``default_transaction_read_only = on`` (ALTER SYSTEM + reload)
admin shutdown (PG)      real: ``pg_terminate_backend`` of the connection while its
                         statement waits for a lock we hold
corrupt (SQLite)         real: the file is not a database
slow                     proxy delays every reply (within and past the operation timeout)
dropped                  proxy forwards a state-changing command, lets the store run it,
                         then resets the connection before the reply (the reply is lost)
=======================  ========================================================================

After each fault is lifted, the same backend instance must serve again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from authconform.contract import (
    CodeRecord,
    ConsumeStatus,
    RefreshTokenRecord,
    RotateStatus,
    StorageBackend,
    StorageUnavailable,
)
from authconform.markers import restart, spec
from authconform.procs import Fault, FaultProxy, LocalRedis
from authconform.suites.restart._ops import Outcome, Prepared, prepare_writes, run_all, run_prepared
from authconform.suites.restart._records import _uid
from authconform.suites.restart._store import CONNECT_TIMEOUT, OPERATION_TIMEOUT, RETRIES, Store

pytestmark = [restart]

#: every operation must end within this (retries x (connect + operation timeout) + slack)
BOUND = (RETRIES + 1) * (CONNECT_TIMEOUT + OPERATION_TIMEOUT) + 4.0
RESUME_BOUND = 15.0
SQLITE_BUSY = OPERATION_TIMEOUT  # the sqlite backend's busy timeout follows it

FAULTS_BY_KIND = {
    "redis": ("refused", "stalled", "readonly", "oom", "loading"),
    "postgres": ("refused", "stalled", "read-only"),
    "sqlite": ("refused", "stalled", "corrupt"),
}
WRITE_ONLY = {"readonly", "oom", "read-only"}
LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"


def _kind(store: Store) -> str:
    assert store.kind is not None
    return store.kind


def _proxied(store: Store, proxy: FaultProxy) -> dict[str, Any]:
    assert store.service is not None
    url = proxy.url(store.service.url)
    return {"redis_url": url} if store.kind == "redis" else {"postgres_url": url}


@contextlib.asynccontextmanager
async def _proxy(store: Store) -> AsyncIterator[FaultProxy]:
    assert store.service is not None
    from authconform.procs._readiness import split_hostport

    host, port = split_hostport(store.service.url, 6379 if store.kind == "redis" else 5432)
    proxy = FaultProxy((host, port), store.kind or "raw")
    await asyncio.to_thread(proxy.start)
    try:
        yield proxy
    finally:
        await asyncio.to_thread(proxy.close)


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def _psql(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)


async def _warm(b: StorageBackend) -> None:
    """Connect, load scripts / create the schema, so the fault meets a working instance."""
    await b.put_code(_uid(), CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
    await b.consume_code(_uid())


async def _resumes(b: StorageBackend) -> str | None:
    """None once the instance answers a write and a read again."""
    deadline = time.monotonic() + RESUME_BOUND
    last = ""
    while time.monotonic() < deadline:
        try:
            code = _uid()
            await b.put_code(code, CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
            if await b.get_code(code) is not None:
                return None
            last = "a code written after the fault was not found"
        except StorageUnavailable as exc:
            last = str(exc)[:200]
        await asyncio.sleep(0.2)
    return f"the instance does not serve again {RESUME_BOUND:g} s after the fault ended ({last})"


async def _judge_prepared(
    b: StorageBackend, ran: list[tuple[Prepared, Outcome, object]], bound: float
) -> list[str]:
    """A write that fails closed is right; one that claims success must really have happened."""
    bad: list[str] = []
    for prepared, outcome, result in ran:
        if outcome.kind == "unavailable":
            if outcome.seconds > bound:
                bad.append(
                    f"{outcome.name} took {outcome.seconds:.1f} s to fail (bound {bound:g} s)"
                )
        elif outcome.kind == "result":
            if (problem := await prepared.verify(b, result)) is not None:
                bad.append(f"{problem} (a success for a write that did not happen)")
        else:
            bad.append(f"{outcome.name} {outcome.kind}: {outcome.detail}")
    return bad


def _judge(store: Store, fault: str, outcomes: list[Outcome], *, writes_only: bool) -> list[str]:
    bad: list[str] = []
    for o in outcomes:
        if writes_only and not o.writes:
            if o.kind in ("hung", "error"):
                bad.append(f"{o.name} (a read) {o.kind}: {o.detail}")
            continue
        if o.kind == "unavailable":
            if o.seconds > BOUND:
                bad.append(f"{o.name} took {o.seconds:.1f} s to fail (bound {BOUND:g} s)")
            continue
        if o.kind == "result":
            bad.append(f"{o.name} returned {o.detail} instead of raising StorageUnavailable")
        else:
            bad.append(f"{o.name} {o.kind}: {o.detail}")
    return bad


class Faulted:
    """The backend under a fault; ``await lift()`` ends the fault (the proxy stays)."""

    def __init__(
        self, backend: StorageBackend, stack: contextlib.AsyncExitStack,
        calls: list[Prepared] | None, checker: StorageBackend | None = None,
    ) -> None:
        self.backend = backend
        self.calls = calls  # writes on existing records, prepared before the fault
        self.checker = checker  # where to verify them (the primary, for a replica)
        self._stack = stack

    async def lift(self) -> None:
        """End the fault now."""
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def _faulted(store: Store, fault: str, namespace: str) -> AsyncIterator[Faulted]:
    """The fault inside the block, liftable early; the proxy lives until the block ends."""
    async with contextlib.AsyncExitStack() as outer:
        proxy: FaultProxy | None = None
        if store.kind in ("redis", "postgres") and fault not in ("readonly",):
            proxy = await outer.enter_async_context(_proxy(store))
        inner = contextlib.AsyncExitStack()
        outer.push_async_callback(inner.aclose)
        prepared: list[Prepared] = []
        backend = await inner.enter_async_context(
            _inject(store, fault, namespace, proxy, prepared)
        )
        checker = store.make(namespace) if fault == "readonly" else None
        yield Faulted(backend, inner, prepared or None, checker)


@contextlib.asynccontextmanager
async def _inject(
    store: Store, fault: str, namespace: str, proxy: FaultProxy | None,
    prepared: list[Prepared],
) -> AsyncIterator[StorageBackend]:
    """A warmed backend instance that meets ``fault`` inside the block."""
    kind = _kind(store)
    service = store.service
    if kind == "sqlite":
        async with _sqlite_fault(store, fault, namespace, prepared) as b:
            yield b
        return
    assert service is not None
    ours = service.provider != "external"
    if fault in ("oom", "read-only", "readonly") and not ours:
        pytest.skip(
            f"not-applicable: the {fault} fault reconfigures the store; the store at the given "
            "URL is someone else's"
        )
    if fault == "readonly":
        from authconform.procs._readiness import split_hostport

        host, port = split_hostport(service.url, 6379)
        replica = LocalRedis({"replicaof": f"{host} {port}"})
        await asyncio.to_thread(replica.start)
        try:
            client = _redis(replica.url)
            deadline = time.monotonic() + 15
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    pytest.fail("untestable: the replica did not sync with its primary in 15 s")
                await asyncio.sleep(0.1)
            primary = store.make(namespace)
            prepared += await prepare_writes(primary)
            source = _redis(service.url)
            try:
                want = source.info("replication").get("master_repl_offset")
                while client.info("replication").get("master_repl_offset") != want:
                    if time.monotonic() > deadline:
                        pytest.fail("untestable: the replica did not catch up in 15 s")
                    await asyncio.sleep(0.05)  # the replica has every prepared record
            finally:
                source.close()
            client.close()
            b = store.make(namespace, redis_url=replica.url)
            await b.get_code(_uid())
            yield b
        finally:
            await asyncio.to_thread(replica.close)
        return
    assert proxy is not None
    b = store.make(namespace, **_proxied(store, proxy))
    await _warm(b)
    if fault in WRITE_ONLY:
        prepared += await prepare_writes(b)
    if fault == "refused":
        with proxy.injecting(Fault("refuse")):
            yield b
    elif fault == "loading":
        with proxy.injecting(Fault("error", reply=LOADING)):
            yield b
    elif fault == "stalled" and not ours:
        with proxy.injecting(Fault("stall")):
            yield b
    elif fault == "stalled":
        await asyncio.to_thread(service.pause)
        try:
            yield b
        finally:
            await asyncio.to_thread(service.resume)
    elif fault == "oom":
        client = _redis(service.url)
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        try:
            yield b
        finally:
            client.config_set("maxmemory", "0")
            client.config_set("maxmemory-policy", policy)
            client.close()
    elif fault == "read-only":
        await asyncio.to_thread(
            _psql, service.url, "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        )
        await asyncio.sleep(0.5)  # every session reads the reloaded default
        try:
            yield b
        finally:
            await asyncio.to_thread(
                _psql, service.url, "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
            )
            await asyncio.sleep(0.3)
    else:  # pragma: no cover - FAULTS_BY_KIND lists the faults
        raise AssertionError(fault)


@contextlib.asynccontextmanager
async def _sqlite_fault(
    store: Store, fault: str, namespace: str, prepared: list[Prepared]
) -> AsyncIterator[StorageBackend]:
    path = store.settings().sqlite_path
    if fault == "refused":
        yield store.make(namespace, sqlite_path="/nonexistent/authconform/down.sqlite3")
    elif fault == "corrupt":
        bad = f"{path}.corrupt-{_uid()[:6]}"
        with open(bad, "wb") as out:
            out.write(os.urandom(8192))
        try:
            yield store.make(namespace, sqlite_path=bad)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(bad)
    else:  # stalled: another process's connection holds the write lock
        b = store.make(namespace)
        await _warm(b)
        calls = await prepare_writes(b)
        keep = ("put_code", "consume_code", "rotate_refresh_token", "hit")
        prepared += [c for c in calls if c.name in keep]  # each waits out the busy timeout
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield b
        finally:
            holder.execute("ROLLBACK")
            holder.close()


@spec("CONTRACT-faults-are-errors", "CONTRACT-fail-closed", level="MUST")
@pytest.mark.parametrize(
    "fault", ["refused", "stalled", "readonly", "oom", "loading", "read-only", "corrupt"]
)
async def test_every_operation_fails_closed_under_a_store_fault(
    store: Store, fault: str
) -> None:
    """Under the fault every operation (every write, for a store that refuses writes only)
    raises StorageUnavailable within the bound; after it, the instance serves again."""
    kind = _kind(store)
    if fault not in FAULTS_BY_KIND[kind]:
        pytest.skip(f"not-applicable: the {fault} fault is not one a {kind} store has")
    writes_only = fault in WRITE_ONLY or (kind == "sqlite" and fault == "stalled")
    bound = SQLITE_BUSY + 3.0 if kind == "sqlite" else BOUND
    async with store:
        namespace = store.namespace()
        async with _faulted(store, fault, namespace) as faulted:
            b = faulted.backend
            concurrent = kind != "sqlite"  # one worker thread: a queue of busy waits
            bad: list[str] = []
            if writes_only:
                assert faulted.calls is not None
                ran = await run_prepared(b, faulted.calls, bound, concurrent=concurrent)
                await faulted.lift()
                bad = await _judge_prepared(faulted.checker or b, ran, bound)
            else:
                outcomes = await run_all(b, bound, concurrent=concurrent)
                await faulted.lift()
                bad = _judge(store, fault, outcomes, writes_only=False)
            if bad:
                pytest.fail(f"{store.describe}, store {fault}: {len(bad)} operation(s) did not "
                            "fail closed:\n- " + "\n- ".join(bad))
            if kind == "sqlite" and fault != "stalled":
                return  # the fault was another file: nothing to resume
            if fault != "readonly" and (problem := await _resumes(b)):
                pytest.fail(f"{store.describe}, after the store was {fault}: {problem}")


@spec("CONTRACT-faults-are-errors", level="MUST")
async def test_a_slow_store_within_the_timeout_gives_right_answers(store: Store) -> None:
    """Replies delayed 0.2 s (under the operation timeout): every answer is still right."""
    if _kind(store) == "sqlite":
        await _sqlite_slow(store)
        return
    async with store, _proxy(store) as proxy:
        b = store.make(store.namespace(), **_proxied(store, proxy))
        await _warm(b)
        code = _uid()
        with proxy.injecting(Fault("slow", delay=0.2)):
            await b.put_code(code, CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
            first = await b.consume_code(code)
            second = await b.consume_code(code)
            missing = await b.get_code(_uid())
        assert first.status is ConsumeStatus.CONSUMED, f"slow store: first consume {first.status}"
        assert second.status is ConsumeStatus.ALREADY_USED, (
            f"slow store: second consume {second.status}"
        )
        assert missing is None


async def _sqlite_slow(store: Store) -> None:
    """SQLite's slow store: a writer holds the lock for 1 s (under the busy timeout)."""
    async with store:
        b = store.make(store.namespace())
        await _warm(b)
        path = store.settings().sqlite_path
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = asyncio.get_running_loop().call_later(1.0, holder.execute, "ROLLBACK")
        code = _uid()
        try:
            await b.put_code(code, CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
            first = await b.consume_code(code)
        finally:
            release.cancel()
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
        assert first.status is ConsumeStatus.CONSUMED, f"slow store: consume {first.status}"


@spec("CONTRACT-faults-are-errors", "CONTRACT-fail-closed", level="MUST")
async def test_a_slow_store_past_the_timeout_fails_closed(store: Store) -> None:
    """Replies delayed 4 s (past the 2 s operation timeout): StorageUnavailable in bound."""
    if _kind(store) == "sqlite":
        pytest.skip("not-applicable: a SQLite file has no network to be slow; the lock held "
                    "past the busy timeout is the stalled fault")
    async with store, _proxy(store) as proxy:
        b = store.make(store.namespace(), **_proxied(store, proxy))
        await _warm(b)
        with proxy.injecting(Fault("slow", delay=4.0)):
            outcomes = await run_all(b, BOUND + 5.0)
        bad = _judge(store, "slow", outcomes, writes_only=False)
        if bad:
            pytest.fail(f"{store.describe}, store slower than the timeout: {len(bad)} "
                        "operation(s) did not fail closed:\n- " + "\n- ".join(bad))
        if (problem := await _resumes(b)) is not None:
            pytest.fail(f"{store.describe}, after the slow store: {problem}")


@spec("CONTRACT-no-blind-retry", "CONTRACT-faults-are-errors", level="MUST")
@pytest.mark.parametrize("operation", ["consume", "rotate", "hit"])
async def test_a_state_changing_operation_whose_reply_was_lost_is_not_sent_again(
    store: Store, operation: str
) -> None:
    """The store runs the command, the connection drops before the reply: the caller gets
    StorageUnavailable, and the command ran exactly once."""
    if _kind(store) == "sqlite":
        pytest.skip("not-applicable: a SQLite file has no connection to drop mid-command")
    async with store, _proxy(store) as proxy:
        b = store.make(store.namespace(), **_proxied(store, proxy))
        await _warm(b)
        code, old, new, key = _uid(), _uid(), _uid(), _uid()
        await b.put_code(code, CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
        await b.put_refresh_token(old, RefreshTokenRecord("c", "u", "g-" + _uid()), 60.0)
        commands = {"EVALSHA", "EVAL"} if store.kind == "redis" else {
            "consume": {"UPDATE"}, "rotate": {"COMMIT"}, "hit": {"INSERT"}}[operation]
        with proxy.injecting(Fault("drop", commands=frozenset(commands))):
            try:
                if operation == "consume":
                    outcome: object = await asyncio.wait_for(b.consume_code(code), BOUND)
                elif operation == "rotate":
                    outcome = await asyncio.wait_for(b.rotate_refresh_token(old, new, 60.0), BOUND)
                else:
                    outcome = await asyncio.wait_for(b.hit(key, 5, 3600.0), BOUND)
            except StorageUnavailable:
                outcome = None
        if proxy.dropped == 0:
            pytest.fail(f"untestable: the proxy saw no {operation} command to drop")
        if outcome is not None:
            status = getattr(outcome, "status", outcome)
            retried = {
                "consume": "ALREADY_USED for the code it had just redeemed",
                "rotate": "REUSED (and the grant revoked) for its own first rotation",
                "hit": "a count of 2 for its first hit",
            }[operation]
            pytest.fail(
                f"{store.describe}: the reply to {operation} was lost, yet the caller got "
                f"{status!r} instead of StorageUnavailable. A {operation} whose reply was "
                f"lost was sent again (blind retry): the caller sees {retried}"
            )
        if operation == "consume":
            after = await b.consume_code(code)
            assert after.status is ConsumeStatus.ALREADY_USED, (
                f"the dropped consume did not run in the store ({after.status}): untestable"
            )
        elif operation == "rotate":
            again = await b.rotate_refresh_token(old, _uid(), 60.0)
            assert again.status is RotateStatus.REUSED, (
                f"the dropped rotation did not run in the store ({again.status}): untestable"
            )


@spec("CONTRACT-faults-are-errors", "CONTRACT-fail-closed", level="MUST")
async def test_a_connection_terminated_by_the_administrator_mid_command_fails_closed(
    store: Store,
) -> None:
    """PostgreSQL: ``pg_terminate_backend`` while a consume waits for a lock: the consume
    raises StorageUnavailable (it did not happen), and the instance serves again."""
    if _kind(store) != "postgres":
        pytest.skip(f"not-applicable: an administrator shutdown is a PostgreSQL fault "
                    f"({store.kind} store)")
    assert store.service is not None
    if store.service.provider == "external":
        pytest.skip("not-applicable: the suite does not terminate sessions of a store it did "
                    "not start")
    import psycopg

    async with store:
        b = store.make(store.namespace())
        await _warm(b)
        code = _uid()
        await b.put_code(code, CodeRecord(client_id="c", subject="u", grant_id="g"), 60.0)
        admin = await psycopg.AsyncConnection.connect(store.service.url, autocommit=True)
        try:
            cur = await admin.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
            tables = [r[0] for r in await cur.fetchall()]
            await admin.execute("BEGIN")
            for table in tables:
                await admin.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            task = asyncio.create_task(b.consume_code(code))
            killed = 0
            deadline = time.monotonic() + 10
            while not killed and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                cur = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
                row = await cur.fetchone()
                killed = int(row[0]) if row else 0
            await admin.execute("ROLLBACK")
        finally:
            await admin.close()
        if not killed:
            task.cancel()
            pytest.fail("untestable: the consume never waited for the lock")
        try:
            result: object = await asyncio.wait_for(task, BOUND)
        except StorageUnavailable:
            result = None
        assert result is None, (
            f"{store.describe}: the consume whose connection the administrator terminated "
            f"returned {result!r} instead of raising StorageUnavailable"
        )
        if (problem := await _resumes(b)) is not None:
            pytest.fail(f"{store.describe}, after an administrator shutdown: {problem}")
        after = await b.consume_code(code)
        assert after.status is ConsumeStatus.CONSUMED, (
            f"{store.describe}: the terminated consume left the code {after.status.name}; it "
            "must not have happened"
        )
