"""Self-test: the reference server (``authconform serve``) as a client developer uses it.

What the live suite cannot show, because it needs control over the server's process, its
store or its knobs:

1. a store outage: our own ``redis-server`` on a free loopback port, killed mid-run; every
   endpoint answers 503 (``temporarily_unavailable`` on the OAuth endpoints), never 500,
   never 401 for a still-valid token, never a JSON-RPC -32000; the server stays up and
   serves again once redis is back on the same port, without a restart;
2. the knobs: access/code/refresh lifetimes, ``--consent form``, ``--fault`` (always, and
   at a rate with ``--fault-seed``: some but not all, the same pattern for the same seed),
   ``--delay``;
3. ``--workers 2`` (uvicorn processes on uvloop + httptools) over the shared redis: a full
   flow, ten tool calls and a refresh, answered by both workers.

Every process is ours: started on 127.0.0.1, in its own session, and stopped (SIGTERM,
then SIGKILL) when its test ends. Tokens and codes are never printed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest

from authconform.procs import signal_group, stop_groups

REDIRECT_URI = "http://127.0.0.1:9/callback"  # loopback, never contacted (no redirects followed)
LISTENING = re.compile(r"authconform serve: listening on (http://\S+)")
MCP_HEADERS = {"accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2025-06-18"}
SHARED_REDIS = os.environ.get("AUTHCONFORM_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT = httpx.Timeout(10.0)


# -- processes ----------------------------------------------------------------------------
@dataclass
class Procs:
    """Processes a test started; each in its own session, so a group kill gets workers too."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout+stderr to ``log``."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
            )
        self.running.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the process group of ``proc`` (ours) and wait for it."""
        signal_group(proc, sig)
        proc.wait(10)

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every group still running, SIGKILL what is left after ``grace``."""
        stop_groups(self.running, grace)
        self.running.clear()


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Processes started by the test, stopped when it ends (also on failure)."""
    started = Procs()
    try:
        yield started
    finally:
        started.stop_all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace")
        match = LISTENING.search(text)
        if match:
            return match.group(1).rstrip("/")
        if proc.poll() is not None:
            pytest.fail(f"`authconform serve` exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"`authconform serve` did not report listening within {timeout:g} s")


@dataclass
class Served:
    """A running ``authconform serve``: its process, URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def _serve(procs: Procs, tmp_path: Path, *args: str) -> Served:
    """Start ``authconform serve --port 0 ARGS`` and wait for its listening line."""
    log = tmp_path / f"serve-{secrets.token_hex(3)}.log"
    proc = procs.start([sys.executable, "-m", "authconform.cli", "serve", "--host", "127.0.0.1",
                        "--no-access-log", "--port", "0", *args], log)
    return Served(proc, _wait_for_url(proc, log), log)


def _serve_many(procs: Procs, tmp_path: Path, *argvs: list[str]) -> list[str]:
    """Start several servers at once (their start-up overlaps); their URLs in order."""
    started = []
    for args in argvs:
        log = tmp_path / f"serve-{secrets.token_hex(3)}.log"
        proc = procs.start([sys.executable, "-m", "authconform.cli", "serve", "--host",
                            "127.0.0.1", "--no-access-log", "--port", "0", *args], log)
        started.append((proc, log))
    return [_wait_for_url(proc, log) for proc, log in started]


def _start_redis(procs: Procs, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """Our own redis-server on 127.0.0.1:PORT that keeps nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("unavailable: no redis-server on PATH")
    data = tmp_path / "redis"
    data.mkdir(exist_ok=True)
    proc = procs.start([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                        "--appendonly", "no", "--dir", str(data), "--protected-mode", "no"],
                       tmp_path / f"redis-{port}.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"redis-server on port {port} did not answer PING within 10 s")


# -- an OAuth 2.1 + MCP client, just enough -------------------------------------------------
def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


class _Forms(HTMLParser):
    """(action, method, hidden fields, submit name/value) of each form on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"),
                               "id": a.get("id", ""), "fields": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


@dataclass
class Client:
    """A registered public client of one server, and the requests a client makes."""

    http: httpx.Client
    base: str
    client_id: str = ""

    def register(self) -> httpx.Response:
        """RFC 7591 registration of a public client (sets ``client_id`` on success)."""
        resp = self.http.post(self.base + "/register", json={
            "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "client_name": "authconform selftest"})
        if resp.status_code == 201:
            self.client_id = resp.json()["client_id"]
        return resp

    def authorize(self) -> tuple[httpx.Response, str, str]:
        """GET /authorize with PKCE S256: (response, verifier, state)."""
        verifier, challenge = _pkce()
        state = secrets.token_urlsafe(8)
        resp = self.http.get(self.base + "/authorize", params={
            "response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "scope": "mcp"})
        return resp, verifier, state

    def code(self) -> tuple[str, str]:
        """A code from the auto-consent redirect: (code, verifier)."""
        resp, verifier, state = self.authorize()
        assert resp.status_code == 302, f"/authorize: {_describe(resp)}"
        query = _query(resp.headers["location"])
        assert query.get("state") == state and query.get("code"), "redirect without code/state"
        return query["code"], verifier

    def exchange(self, code: str, verifier: str) -> httpx.Response:
        """POST /token (authorization_code)."""
        return self.http.post(self.base + "/token", data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI, "client_id": self.client_id})

    def tokens(self) -> dict[str, Any]:
        """Register (if needed), authorize and exchange: the token response."""
        if not self.client_id:
            resp = self.register()
            assert resp.status_code == 201, f"/register: {_describe(resp)}"
        resp = self.exchange(*self.code())
        assert resp.status_code == 200, f"/token: {_describe(resp)}"
        body: dict[str, Any] = resp.json()
        assert body.get("access_token") and body.get("refresh_token"), sorted(body)
        return body

    def refresh(self, refresh_token: str) -> httpx.Response:
        """POST /token (refresh_token)."""
        return self.http.post(self.base + "/token", data={
            "grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": self.client_id})

    def revoke(self, token: str) -> httpx.Response:
        """POST /revoke (RFC 7009) as a public client."""
        return self.http.post(self.base + "/revoke",
                              data={"token": token, "client_id": self.client_id})

    def mcp(self, token: str, message: dict[str, Any]) -> httpx.Response:
        """One JSON-RPC message to /mcp with the bearer token."""
        return self.http.post(self.base + "/mcp", json=message,
                              headers={**MCP_HEADERS, "authorization": f"Bearer {token}"})

    def mcp_ok(self, token: str, request_id: int, method: str,
               params: dict[str, Any]) -> dict[str, Any]:
        """A JSON-RPC request that must get a result (and, for tools, no isError)."""
        resp = self.mcp(token, {"jsonrpc": "2.0", "id": request_id, "method": method,
                                "params": params})
        assert resp.status_code == 200, f"/mcp {method}: {_describe(resp)}"
        reply = resp.json()
        assert "result" in reply, f"/mcp {method}: {reply}"
        result: dict[str, Any] = reply["result"]
        assert not result.get("isError"), f"/mcp {method}: {result}"
        return result

    def initialize_and_call(self, token: str) -> None:
        """MCP initialize, then tools/call echo (text comes back unchanged)."""
        self.mcp_ok(token, 1, "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "authconform-selftest", "version": "0"}})
        result = self.mcp_ok(token, 2, "tools/call",
                             {"name": "echo", "arguments": {"text": "hello"}})
        assert result["content"][0]["text"] == "hello", result


def _describe(resp: httpx.Response) -> str:
    """Status and error fields only: a body that unexpectedly holds tokens is never shown."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code} ({resp.headers.get('content-type', 'no content-type')})"
    if isinstance(body, dict):
        shown = {k: body[k] for k in ("error", "error_description") if k in body}
        return f"HTTP {resp.status_code} {shown or sorted(body)}"
    return f"HTTP {resp.status_code} ({type(body).__name__})"


def _http() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False)


# -- 1. store outage ---------------------------------------------------------------------------
def _assert_unavailable(resp: httpx.Response, what: str, *, oauth: bool = True) -> None:
    """503 (RFC 6749 4.1.2.1 / 5.2 ``temporarily_unavailable`` for OAuth endpoints)."""
    assert resp.status_code == 503, (
        f"{what} during a store outage: {_describe(resp)}; expected 503 "
        "(issue 3: a store outage gives 503, never 500, never 401 for a valid token)")
    body = resp.json()
    if oauth:
        assert body.get("error") == "temporarily_unavailable", f"{what}: {_describe(resp)}"
    error = body.get("error") if isinstance(body, dict) else None
    assert not (isinstance(error, dict) and error.get("code") == -32000), (
        f"{what}: a JSON-RPC -32000 error instead of HTTP 503: {_describe(resp)}")


def test_store_outage_gives_503_and_service_resumes_when_the_store_returns(
    procs: Procs, tmp_path: Path,
) -> None:
    port = _free_port()
    redis_proc = _start_redis(procs, tmp_path, port)
    namespace = "acselftest_outage_" + secrets.token_hex(4)
    served = _serve(procs, tmp_path, "--backend", f"redis://127.0.0.1:{port}/0",
                    "--namespace", namespace)
    server, url = served.proc, served.url
    with _http() as http:
        client = Client(http, url)
        tokens = client.tokens()
        client.initialize_and_call(tokens["access_token"])

        Procs.kill(redis_proc)  # the store goes away, the server does not know yet

        _assert_unavailable(client.refresh(tokens["refresh_token"]), "POST /token (refresh)")
        _assert_unavailable(Client(http, url).register(), "POST /register")
        resp, _, _ = client.authorize()
        _assert_unavailable(resp, "GET /authorize")
        _assert_unavailable(client.revoke(tokens["access_token"]), "POST /revoke")
        resp = client.mcp(tokens["access_token"], {
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}})
        _assert_unavailable(resp, "POST /mcp with a valid bearer token", oauth=False)
        assert server.poll() is None, "the server died with its store"

        _start_redis(procs, tmp_path, port)  # same port, empty: the data is gone

        again = Client(http, url)
        deadline = time.monotonic() + 10
        while (resp := again.register()).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert resp.status_code == 201, (
            f"/register after the store returned: {_describe(resp)}")
        fresh = again.tokens()
        again.initialize_and_call(fresh["access_token"])
        assert server.poll() is None


# -- 2. knobs ----------------------------------------------------------------------------------
def test_lifetimes_set_expires_in_and_expire_codes_and_tokens(
    procs: Procs, tmp_path: Path,
) -> None:
    url = _serve(procs, tmp_path, "--backend", "memory", "--access-ttl", "2",
                 "--code-ttl", "2", "--refresh-ttl", "3").url
    with _http() as http:
        client = Client(http, url)
        tokens = client.tokens()
        issued = time.monotonic()  # the tokens are at least this old from here on
        assert tokens["expires_in"] == 2, f"expires_in {tokens['expires_in']} with --access-ttl 2"
        client.initialize_and_call(tokens["access_token"])  # well within its 2 s
        late_code, late_verifier = client.code()
        code_issued = time.monotonic()

        time.sleep(max(0.0, 2.3 - (time.monotonic() - code_issued)))
        resp = client.exchange(late_code, late_verifier)
        assert resp.status_code == 400 and resp.json().get("error") == "invalid_grant", (
            f"a code older than --code-ttl 2: {_describe(resp)}; "
            "expected 400 invalid_grant (RFC 6749 5.2)")
        resp = client.mcp(tokens["access_token"], {"jsonrpc": "2.0", "id": 9, "method": "ping"})
        assert resp.status_code == 401, (
            f"an access token older than --access-ttl 2: HTTP {resp.status_code}; expected 401")
        assert 'error="invalid_token"' in resp.headers.get("www-authenticate", "")

        time.sleep(max(0.0, 3.3 - (time.monotonic() - issued)))
        resp = client.refresh(tokens["refresh_token"])
        assert resp.status_code == 400 and resp.json().get("error") == "invalid_grant", (
            f"a refresh token older than --refresh-ttl 3: HTTP {resp.status_code}; "
            "expected 400 invalid_grant")


def test_consent_form_renders_an_unframeable_page_that_leads_to_a_code(
    procs: Procs, tmp_path: Path,
) -> None:
    url = _serve(procs, tmp_path, "--backend", "memory", "--consent", "form").url
    with _http() as http:
        client = Client(http, url)
        assert client.register().status_code == 201
        resp, verifier, state = client.authorize()
        assert resp.status_code == 200, f"/authorize with --consent form: HTTP {resp.status_code}"
        assert resp.headers["content-type"].startswith("text/html")
        # RFC 6749 10.13 / RFC 9700 4.16: the consent page must not be framable
        assert resp.headers.get("x-frame-options", "").upper() == "DENY"
        assert "frame-ancestors 'none'" in resp.headers.get("content-security-policy", "")
        parser = _Forms()
        parser.feed(resp.text)
        approve = next(f for f in parser.forms if f["fields"].get("decision") == "approve")
        assert approve["method"].lower() == "post"
        resp = http.post(urljoin(url + "/", approve["action"]), data=approve["fields"])
        assert resp.status_code in (302, 303), f"consent approval: HTTP {resp.status_code}"
        query = _query(resp.headers["location"])
        assert resp.headers["location"].startswith(REDIRECT_URI + "?")
        assert query.get("state") == state and query.get("code")
        resp = client.exchange(query["code"], verifier)
        assert resp.status_code == 200, f"/token after consent: HTTP {resp.status_code}"


def test_injected_faults_hit_only_their_endpoint_at_their_rate(
    procs: Procs, tmp_path: Path,
) -> None:
    always, seeded, same_seed = _serve_many(
        procs, tmp_path,
        ["--backend", "memory", "--fault", "token:503:1.0"],
        ["--backend", "memory", "--fault", "register:500:0.5", "--fault-seed", "7"],
        ["--backend", "memory", "--fault", "register:500:0.5", "--fault-seed", "7"],
    )
    with _http() as http:
        client = Client(http, always)
        assert client.register().status_code == 201, "register is not a faulted endpoint"
        code, verifier = client.code()  # /authorize is not faulted either
        for _ in range(3):
            resp = client.exchange(code, verifier)
            assert resp.status_code == 503, f"--fault token:503:1.0: HTTP {resp.status_code}"
            assert resp.json()["error"] == "temporarily_unavailable"
            assert resp.headers.get("retry-after") == "1"
        resp = http.get(always + "/.well-known/oauth-authorization-server")
        assert resp.status_code == 200

        patterns = []
        for url in (seeded, same_seed):
            statuses = [Client(http, url).register().status_code for _ in range(20)]
            assert set(statuses) <= {201, 500}, statuses
            patterns.append(statuses)
        failed = patterns[0].count(500)
        assert 0 < failed < 20, f"--fault register:500:0.5 failed {failed} of 20 registrations"
        assert patterns[0] == patterns[1], "the same --fault-seed gave different fault patterns"


def test_injected_delay_slows_only_its_endpoint(procs: Procs, tmp_path: Path) -> None:
    url = _serve(procs, tmp_path, "--backend", "memory", "--delay", "mcp:0.3:1.0").url
    with _http() as http:
        client = Client(http, url)
        tokens = client.tokens()
        start = time.monotonic()
        client.mcp_ok(tokens["access_token"], 1, "ping", {})
        took = time.monotonic() - start
        assert took >= 0.25, f"--delay mcp:0.3:1.0: /mcp answered in {took:.3f} s"


# -- 3. several workers over redis -------------------------------------------------------------
def _workers(log: Path, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of the uvicorn workers once ``count`` have completed their start-up."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text("utf-8", "replace")
        pids = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", text)]
        ready = text.count("Application startup complete")
        if (len(pids) >= count and ready >= count) or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the accepted socket 127.0.0.1:server_port <- 127.0.0.1:client_port."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == local and cols[2] == remote:
            return cols[9]
    return None


def _worker_of(response: httpx.Response, workers: list[int], server_port: int) -> int | None:
    """The worker process holding the connection that carried ``response`` (Linux /proc)."""
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    sock = stream.get_extra_info("socket")
    if sock is None:
        return None
    inode = _server_side_inode(server_port, sock.getsockname()[1])
    if inode is None:
        return None
    return next((pid for pid in workers if inode in _socket_inodes(pid)), None)


def _redis_available() -> None:
    try:
        import redis

        redis.Redis.from_url(SHARED_REDIS, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no redis here
        pytest.skip(f"unavailable: redis at {SHARED_REDIS} ({type(exc).__name__}); set "
                    "AUTHCONFORM_REDIS_URL")


def _drop_namespace(namespace: str) -> None:
    import asyncio

    from authconform.server.cli import backend_from_spec

    async def drop() -> None:
        store = backend_from_spec(SHARED_REDIS, namespace)
        try:
            await store.drop_namespace()
        finally:
            await store.close()

    asyncio.run(drop())


def test_two_workers_over_redis_serve_a_full_flow_with_shared_state(
    procs: Procs, tmp_path: Path,
) -> None:
    _redis_available()
    namespace = "acselftest_workers_" + secrets.token_hex(4)
    try:
        served = _serve(procs, tmp_path, "--backend", SHARED_REDIS, "--namespace",
                        namespace, "--workers", "2")
        server_port = urlparse(served.url).port
        assert server_port is not None
        workers = _workers(served.log, 2)
        assert len(workers) == 2, f"--workers 2 started {len(workers)} worker processes"
        linux = Path("/proc/net/tcp").exists()
        for pid in workers if linux else []:  # the fast stack the CLI picks when installed
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "uvloop" in maps and "httptools" in maps, f"worker {pid}: no uvloop/httptools"

        # A fresh connection per request (the kernel hands each accept to either worker),
        # and the worker that answered looked up in /proc while the connection is open.
        answered: list[int | None] = []

        def record(response: httpx.Response) -> None:
            answered.append(_worker_of(response, workers, server_port))

        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False,
                          limits=httpx.Limits(max_keepalive_connections=0),
                          event_hooks={"response": [record]}) as http:
            client = Client(http, served.url)
            tokens = client.tokens()  # register, authorize, token: each on either worker
            client.initialize_and_call(tokens["access_token"])
            for i in range(10):
                result = client.mcp_ok(tokens["access_token"], 10 + i, "tools/call",
                                       {"name": "echo", "arguments": {"text": f"call {i}"}})
                assert result["content"][0]["text"] == f"call {i}"
            resp = client.refresh(tokens["refresh_token"])
            assert resp.status_code == 200, f"refresh: {_describe(resp)}"
            rotated = resp.json()
            client.initialize_and_call(rotated["access_token"])
            # every request after /register reads state another request wrote; should the
            # kernel have sent them all to one worker, a few more calls give the other one
            # its turn
            for i in range(30):
                if len({pid for pid in answered if pid is not None}) == 2:
                    break
                client.mcp_ok(rotated["access_token"], 100 + i, "tools/call",
                              {"name": "whoami", "arguments": {}})
        seen = {pid for pid in answered if pid is not None}
        if linux:
            assert seen == set(workers), (
                f"workers {sorted(workers)}; only {sorted(seen)} answered {len(answered)} "
                "requests on fresh connections")
    finally:
        procs.stop_all()
        _drop_namespace(namespace)
