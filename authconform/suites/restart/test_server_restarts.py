"""The authorization server restarted between every step of a flow: nothing is lost.

With no ``--server-url`` the server is the reference server (``authconform serve``) over
the backend under test, on a fixed loopback port (a restart keeps its URL and issuer),
SIGKILLed and started again between registration, authorization, code exchange, the
MCP call, refresh and revocation. Over a backend that keeps its records in process
memory the check fails: that is what such a backend costs. With ``--server-url`` the
live target is restarted with ``--authconform-restart-cmd`` (gracefully), or the check
skips saying that it needs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from authconform._session import run_config
from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings
from authconform.markers import restart, spec
from authconform.procs import LocalServer, Service, external
from authconform.suites.restart._figures import record
from authconform.suites.restart._flow import FlowClient, describe
from authconform.suites.restart._store import option, restart_cmd, store_kind

pytestmark = [restart]

LOST = "state is lost on restart"


def server_backend(
    spec: BackendSpec, settings: BackendSettings, service: Service | None, workdir: Path
) -> str:
    """What ``serve --backend`` gets so the server reaches the store under test."""
    kind = store_kind(spec)
    if ":" in spec.source and "(" not in spec.source:
        return spec.source  # a factory: module:callable (it reads its own settings)
    if kind == "sqlite":
        sync = settings.options.get("sqlite_synchronous", "NORMAL")
        return f"sqlite:///{workdir / 'server.sqlite3'}?synchronous={sync}"
    if kind in ("redis", "postgres") and service is not None:
        return service.url
    return spec.name


def server_args(config: pytest.Config) -> list[str]:
    """``--authconform-server-arg`` values (e.g. a provider wrapper)."""
    return [str(a) for a in option(config, "server_arg", [])]


def _drop(backend: str, namespace: str) -> None:
    """Drop the server's namespace through the backend ``serve --backend`` was given."""
    from authconform._session import run
    from authconform.server.cli import backend_from_spec

    async def drop() -> None:
        store = backend_from_spec(backend, namespace)
        try:
            await store.drop_namespace()
        finally:
            await store.close()

    with contextlib.suppress(Exception):  # a store we started may be gone already
        run(drop())


class _Restarter:
    """The server and how to restart it, with the restart-to-ready times."""

    def __init__(self, server: Service, *, kill: bool) -> None:
        self.server = server
        self.kill = kill
        self.readies: list[float] = []

    async def __call__(self) -> None:
        ready = await asyncio.to_thread(self.server.restart, kill=self.kill)
        self.readies.append(ready)


@pytest.fixture
def served(
    request: pytest.FixtureRequest,
    backend_spec: BackendSpec,
    backend_settings: BackendSettings,
    store_services: Any,
) -> Any:
    """(base URL, restarter, description) of the server under test; stopped at the end."""
    run = run_config(request.config)
    if run.server_urls:
        cmd = restart_cmd(request.config)
        if not cmd:
            pytest.skip(
                "disabled: the live target is someone else's; give --authconform-restart-cmd "
                "(env AUTHCONFORM_RESTART_CMD) to let the suite restart it between the steps"
            )
        target = external("server", run.server_urls[0].rstrip("/"), cmd)
        return target.url, _Restarter(target, kill=False), f"live target {target.url}"
    service = None
    if store_kind(backend_spec) in ("redis", "postgres"):
        service = store_services.get(backend_spec, backend_settings)
    workdir = Path(tempfile.mkdtemp(prefix="authconform-serve-"))
    backend = server_backend(backend_spec, backend_settings, service, workdir)
    namespace = f"{backend_settings.namespace[:28]}_s"
    server = LocalServer(backend, namespace, workdir=workdir, extra=server_args(request.config))

    def stop() -> None:
        server.close()
        _drop(backend, namespace)  # what the flows left in the store (a shared one, too)

    request.addfinalizer(stop)
    server.start()
    what = f"the reference server over {backend_spec.name}"
    return server.url, _Restarter(server, kill=True), what


@pytest.fixture
def http() -> Callable[[], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    """An httpx client factory (no redirects, no proxies from the environment)."""

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            timeout=10.0, follow_redirects=False, trust_env=False
        ) as client:
            yield client

    return make


@spec("CONTRACT-server-state-survives-restarts", "RFC6749-4.1.2", "RFC6749-10.5", level="MUST")
async def test_a_flow_survives_a_server_restart_between_every_step(
    served: Any, http: Any, backend_spec: BackendSpec
) -> None:
    """Register, restart, authorize, restart, exchange, restart, call MCP, restart,
    refresh, restart, revoke, restart: every step succeeds, the revoked token stays
    revoked, the rotated refresh token stays rotated, the redeemed code stays redeemed.
    (The code is replayed last: a replay revokes what the code issued, RFC 6749 4.1.2.)

    RFC 6749 4.1.2: "If an authorization code is used more than once, the authorization
    server MUST deny the request".
    """
    base, restart_server, what = served
    async with http() as client:
        flow = FlowClient(client, base)
        resp = await flow.register()
        assert resp.status_code == 201, f"registration before any restart: {describe(resp)}"
        await restart_server()

        resp, code, verifier = await flow.authorize()
        if code is None:
            pytest.fail(
                f"{what}: the client registered before the restart is unknown after it "
                f"(authorization: {describe(resp)}): {LOST}"
            )
        await restart_server()

        resp = await flow.exchange(code, verifier)
        if resp.status_code != 200:
            pytest.fail(
                f"{what}: the code issued before the restart could not be exchanged after it "
                f"({describe(resp)}): {LOST}"
            )
        tokens = resp.json()
        await restart_server()

        resp = await flow.mcp_call(tokens["access_token"])
        if resp.status_code != 200 or "result" not in resp.json():
            pytest.fail(
                f"{what}: the access token issued before the restart is refused after it "
                f"(MCP: {describe(resp)}): {LOST}"
            )
        await restart_server()

        resp = await flow.refresh(tokens["refresh_token"])
        if resp.status_code != 200:
            pytest.fail(
                f"{what}: the refresh token issued before the restart is refused after it "
                f"({describe(resp)}): {LOST}"
            )
        fresh = resp.json()
        await restart_server()

        resp = await flow.revoke(fresh["access_token"])
        assert resp.status_code == 200, f"{what}: revocation after a restart: {describe(resp)}"
        await restart_server()

        resp = await flow.mcp_call(fresh["access_token"])
        assert resp.status_code == 401, (
            f"{what}: a token revoked before the restart is accepted after it "
            f"(MCP: {describe(resp)}); the revocation is lost on restart"
        )
        reuse = await flow.refresh(tokens["refresh_token"])
        assert reuse.status_code == 400, (
            f"{what}: a refresh token rotated before the restart was accepted again after it "
            f"({describe(reuse)}); the rotation is lost on restart"
        )
        replay = await flow.exchange(code, verifier)
        if replay.status_code == 200:
            pytest.fail(
                f"{what}: a code redeemed before the restarts was redeemed again after them: "
                f"the redemption is lost on restart (replay reopened)"
            )
        assert replay.status_code == 400 and replay.json().get("error") == "invalid_grant", (
            f"{what}: replay of a redeemed code after the restart: {describe(replay)}; "
            "expected 400 invalid_grant"
        )
    readies = ", ".join(f"{r:.2f}" for r in restart_server.readies)
    record("server restart", backend_spec.name, "SIGKILL" if restart_server.kill else "command",
           f"flow completed over {len(restart_server.readies)} restarts",
           f"restart-to-ready {readies} s")
