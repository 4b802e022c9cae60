"""Store outages: clean errors while the store is away, service back by itself after.

1. ``test_service_resumes_by_itself_after_store_outages``: for every selected backend
   with a store and every outage length of ``--authconform-outages`` (default 1 s and
   30 s; add 120 for the 2-minute one), all at once in one check so the longest outage
   sets the wall time: the store goes away (Redis/PostgreSQL: a proxy in front of it
   stops listening and resets every connection; SQLite: another process holds the write
   lock, which readers of a WAL database rightly pass), every operation fails closed
   meanwhile (a write that "succeeds" means the
   backend fell back to something that is not the store), and after the store returns
   the *same* backend instance serves again within a bound, with the record written
   before the outage intact. Recovery times are reported.
2. ``test_the_server_answers_503_during_a_store_outage``: the reference server over a
   store that goes away answers 503 with a JSON error on every endpoint (never 500,
   never a JSON-RPC -32000, never a token for a code it could not mark used) and serves
   again, without a restart, when the store is back; the code it could not redeem
   during the outage is redeemable after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from authconform._session import run_config
from authconform.backends._registry import BackendSpec
from authconform.contract import CodeRecord, StorageBackend, StorageUnavailable
from authconform.markers import restart, spec
from authconform.procs import Fault, FaultProxy, LocalServer
from authconform.suites.restart._figures import record
from authconform.suites.restart._flow import FlowClient, describe
from authconform.suites.restart._records import _uid
from authconform.suites.restart._store import Store, option, store_kind
from authconform.suites.restart.test_server_restarts import server_args

pytestmark = [restart]

OP_BOUND = 12.0  # an operation during the outage must fail within this
RECOVERY_BOUND = 15.0  # the instance must serve again within this after the store returns
PROBE_EVERY = 1.0


def _code() -> CodeRecord:
    return CodeRecord(client_id="c-o", subject="u-o", grant_id="g-o")


@dataclasses.dataclass
class Scenario:
    """One backend through one outage."""

    store: Store
    seconds: float
    problems: list[str] = dataclasses.field(default_factory=list)
    recovery: float | None = None
    probes: int = 0

    @property
    def label(self) -> str:
        return f"{self.store.name}, {self.seconds:g} s outage"


@contextlib.asynccontextmanager
async def _outage_backend(
    scenario: Scenario,
) -> AsyncIterator[tuple[StorageBackend, Callable[[bool], Any]]]:
    """A backend instance and ``set_down(bool)`` that takes its store away and back."""
    store = scenario.store
    namespace = store.namespace()
    if store.kind == "sqlite":
        backend = store.make(namespace)
        path = store.settings().sqlite_path
        holder: list[sqlite3.Connection] = []

        def set_down(down: bool) -> None:
            if down:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                conn.execute("BEGIN EXCLUSIVE")
                holder.append(conn)
            else:
                for conn in holder:
                    conn.execute("ROLLBACK")
                    conn.close()
                holder.clear()

        try:
            yield backend, set_down
        finally:
            set_down(False)
        return
    assert store.service is not None
    from authconform.procs._readiness import split_hostport

    host, port = split_hostport(store.service.url, 6379 if store.kind == "redis" else 5432)
    proxy = FaultProxy((host, port), store.kind or "raw")
    await asyncio.to_thread(proxy.start)
    url = proxy.url(store.service.url)
    key = "redis_url" if store.kind == "redis" else "postgres_url"
    try:
        backend = store.make(namespace, **{key: url})

        def set_down(down: bool) -> None:
            proxy.set(Fault("refuse") if down else Fault())

        yield backend, set_down
    finally:
        await asyncio.to_thread(proxy.close)


async def _run(scenario: Scenario) -> None:
    async with _outage_backend(scenario) as (b, set_down):
        before = _uid()
        await b.put_code(before, _code(), 3600.0)
        await asyncio.to_thread(set_down, True)
        reads_continue = scenario.store.kind == "sqlite"
        started = time.monotonic()
        written_during: list[str] = []
        while time.monotonic() - started < scenario.seconds:
            scenario.probes += 1
            code = _uid()
            for what, call in (
                ("a write (put_code)", b.put_code(code, _code(), 3600.0)),
                ("a read (get_code)", b.get_code(before)),
            ):
                t0 = time.monotonic()
                try:
                    result = await asyncio.wait_for(call, OP_BOUND)
                except StorageUnavailable:
                    if time.monotonic() - t0 > OP_BOUND:
                        scenario.problems.append(f"{what} took over {OP_BOUND:g} s to fail")
                    continue
                except TimeoutError:
                    scenario.problems.append(f"{what} hung for {OP_BOUND:g} s during the outage")
                    continue
                if what.startswith("a write"):
                    written_during.append(code)
                elif reads_continue and result is not None:
                    continue  # SQLite (WAL): readers go on past a writer's lock, rightly
                scenario.problems.append(
                    f"{what} returned {type(result).__name__} while the store was away "
                    "instead of raising StorageUnavailable (a fallback to process memory?)"
                )
            left = scenario.seconds - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, min(PROBE_EVERY, left)))
        await asyncio.to_thread(set_down, False)
        back = time.monotonic()
        last = ""
        while time.monotonic() - back < RECOVERY_BOUND:
            try:
                found = await asyncio.wait_for(b.get_code(before), OP_BOUND)
                probe = _uid()
                await b.put_code(probe, _code(), 60.0)
            except (StorageUnavailable, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:160]}"
                await asyncio.sleep(0.2)
                continue
            scenario.recovery = time.monotonic() - back
            if found is None:
                scenario.problems.append(
                    "the code written before the outage is gone after it (the store was not "
                    "what the backend kept it in)"
                )
            for code in written_during:
                if await b.get_code(code) is None:
                    scenario.problems.append(
                        "a write acknowledged during the outage is not in the store after it: "
                        "the backend fell back to process memory"
                    )
                    break
            return
        scenario.problems.append(
            f"the instance does not serve again {RECOVERY_BOUND:g} s after the "
            f"{scenario.seconds:g} s outage ended ({last}): it does not reconnect by itself"
        )


@spec("CONTRACT-recovers-after-an-outage", "CONTRACT-fail-closed", level="MUST")
async def test_service_resumes_by_itself_after_store_outages(
    request: pytest.FixtureRequest, store_services: Any
) -> None:
    """Every backend with a store, every outage length, at once: fail closed during the
    outage, serve again by itself within the bound after it, nothing lost."""
    run = run_config(request.config)
    durations = sorted({float(x) for x in option(request.config, "outages", ["1", "30"])})
    scenarios: list[Scenario] = []
    skipped: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="authconform-outage-"))
    for backend_spec in run.specs:
        kind = store_kind(backend_spec)
        if kind is None:
            skipped.append(f"{backend_spec.name} (process memory)")
            continue
        try:
            service = store_services.get(backend_spec, run.settings)
        except pytest.skip.Exception as exc:
            skipped.append(f"{backend_spec.name} ({exc})")
            continue
        # an external store is taken away by the proxy only: nothing is done to it
        for seconds in durations:
            settings = run.settings
            if kind == "sqlite":  # one file per scenario: each lock is its own outage
                path = workdir / f"{backend_spec.name}-{seconds:g}.sqlite3"
                settings = dataclasses.replace(settings, sqlite_path=str(path))
            scenarios.append(Scenario(Store(backend_spec, settings, service), seconds))
    if not scenarios:
        pytest.skip(f"not-applicable: no selected backend has a store ({', '.join(skipped)})")
    try:
        await asyncio.gather(*(_run(s) for s in scenarios))
    finally:
        for s in scenarios:
            await s.store.close_all()
        shutil.rmtree(workdir, ignore_errors=True)
    for s in scenarios:
        value = (
            "did not recover" if s.recovery is None else f"serving again after {s.recovery:.2f} s"
        )
        record("outage recovery", s.store.name, f"{s.seconds:g} s outage", value,
               f"{s.probes} probe rounds during the outage")
    failures = [f"{s.label}: {p}" for s in scenarios for p in s.problems]
    if failures:
        pytest.fail(f"{len(failures)} problem(s):\n- " + "\n- ".join(failures))


# -- the reference server during an outage ----------------------------------------------------
def _unavailable(resp: httpx.Response, what: str, *, oauth: bool = True) -> str | None:
    """None if ``resp`` is a proper outage answer: 503 with a JSON error."""
    if resp.status_code != 503:
        return f"{what}: {describe(resp)}; expected 503 (never 500, never a success)"
    try:
        body = resp.json()
    except ValueError:
        return f"{what}: 503 without a JSON body ({resp.headers.get('content-type')})"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        if body["error"].get("code") == -32000:
            return f"{what}: a JSON-RPC -32000 error instead of an HTTP 503 JSON error"
    if oauth and body.get("error") != "temporarily_unavailable":
        return f"{what}: 503 {describe(resp)}; expected error temporarily_unavailable"
    return None


@spec("CONTRACT-outage-answers-503", "RFC6749-5.2", "RFC6749-4.1.2.1", level="MUST")
async def test_the_server_answers_503_during_a_store_outage(
    request: pytest.FixtureRequest, backend_spec: BackendSpec, stores: Callable[[str], Store]
) -> None:
    """The reference server over a store that goes away: 503 JSON on every endpoint, no
    token for a code it could not mark used; back without a restart when the store is."""
    if run_config(request.config).server_urls:
        pytest.skip("not-applicable: the suite cannot take a live target's store away")
    store = stores("strict")
    if store.kind not in ("redis", "postgres"):
        pytest.skip(
            f"not-applicable: the proxy takes a networked store away; a {store.kind} store "
            "(a file) is checked at the storage level (the lock fault)"
        )
    assert store.service is not None
    from authconform.procs._readiness import split_hostport

    host, port = split_hostport(store.service.url, 6379 if store.kind == "redis" else 5432)
    problems: list[str] = []
    with FaultProxy((host, port), store.kind) as proxy:
        backend_arg = proxy.url(store.service.url)
        if ":" in backend_spec.source and "(" not in backend_spec.source:
            pytest.skip("not-applicable: a factory backend reads its own store settings; the "
                        "proxy cannot be put in front of it")
        server = LocalServer(backend_arg, f"{store.base.namespace[:28]}_o",
                             extra=server_args(request.config))
        try:
            await asyncio.to_thread(server.start)
            async with httpx.AsyncClient(timeout=20.0, follow_redirects=False,
                                         trust_env=False) as http:
                flow = FlowClient(http, server.url)
                await flow.endpoint("token")  # metadata before the outage
                assert (await flow.register()).status_code == 201
                _, code, verifier = await flow.authorize()
                assert code is not None
                tokens = (await flow.exchange(code, verifier)).json()
                _, pending, pending_verifier = await flow.authorize()
                assert pending is not None
                proxy.set(Fault("refuse"))
                other = FlowClient(http, server.url, metadata=flow.metadata)
                checks = [
                    ("POST /register", await other.register(), True),
                    ("GET /authorize", (await flow.authorize())[0], True),
                    ("POST /token (a code not yet redeemed)",
                     await flow.exchange(pending, pending_verifier), True),
                    ("POST /token (refresh)", await flow.refresh(tokens["refresh_token"]), True),
                    ("POST /revoke", await flow.revoke(tokens["access_token"]), True),
                    ("POST /mcp with a valid token", await flow.mcp(tokens["access_token"]),
                     False),
                ]
                for what, resp, oauth in checks:
                    if what.startswith("POST /token (a code") and resp.status_code == 200:
                        problems.append(f"{what}: 200 with tokens while the store could not mark "
                                        "the code used")
                        continue
                    if (problem := _unavailable(resp, what, oauth=oauth)) is not None:
                        problems.append(problem)
                health = await http.get(server.url + "/health")
                if health.status_code != 503 or health.json().get("status") != "down":
                    problems.append(f"GET /health during the outage: {describe(health)}; "
                                    "expected 503 status down")
                if server.proc is not None and server.proc.poll() is not None:
                    problems.append("the server died with its store")
                proxy.set(Fault())
                deadline = time.monotonic() + RECOVERY_BOUND
                resp = await other.register()
                while resp.status_code == 503 and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
                    resp = await other.register()
                if resp.status_code != 201:
                    problems.append(f"POST /register after the store returned: {describe(resp)}")
                else:
                    resp = await flow.exchange(pending, pending_verifier)
                    if resp.status_code != 200:
                        problems.append(
                            "the code the server could not redeem during the outage is not "
                            f"redeemable after it: {describe(resp)}"
                        )
                    else:
                        call = await flow.mcp_call(resp.json()["access_token"])
                        if call.status_code != 200:
                            problems.append(f"MCP after the outage: {describe(call)}")
        finally:
            await asyncio.to_thread(server.close)
    if problems:
        pytest.fail(f"the reference server over {store.describe}, store outage:\n- "
                    + "\n- ".join(problems))
