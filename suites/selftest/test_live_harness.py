"""Self-test: hostile, broken, rate-limiting and dying targets.

- A target that is unreachable, malformed, or answers nothing like OAuth or MCP (HTML,
  garbage, a foreign redirect, silence) is one clear line and exit 4 before any check
  runs.
- A target whose discovery works but everything after it is broken gives failed checks
  with reasons (or ``unavailable:`` where a positive control failed), never a crash.
- A target that rate-limits is not broken: a 429 whose Retry-After fits is waited out,
  one that does not makes checks ``unavailable: rate-limited``, never failed.
- A target that dies mid-run turns the remaining checks into ``unavailable:`` with one
  cause.
- No request ever goes to a host the user did not name.
"""

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from fixtures.live_harness import ROOT, live_subprocess, run_live, summary

MODES = ("html", "garbage", "redirect", "hang", "broken")
PREFLIGHT_MODES = ("html", "garbage", "redirect", "hang")


class _Sentinel(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    foreign = ""

    def log_message(self, *args: object) -> None:
        pass

    def _mode(self) -> str:
        return next((m for m in MODES if f"/{m}" in self.path), "html")

    def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object, **headers: str) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", **headers)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        mode = self._mode()
        host = f"http://{self.headers['host']}"
        if mode == "html":
            self._send(200, b"<!doctype html><html><body>Welcome!</body></html>", "text/html")
        elif mode == "garbage":
            self._send(200, b"\x00\xff{{{ not json", "application/json")
        elif mode == "redirect":
            self._send(302, b"", "text/plain", location=f"{self.foreign}/steal{self.path}")
        elif mode == "hang":
            time.sleep(20)
            self._send(200, b"late", "text/plain")
        else:
            self._broken(host, body)

    def _broken(self, host: str, body: str) -> None:
        """Discovery works; then HTML tokens, foreign redirects, hangs and garbage."""
        base = f"{host}/broken"
        path = urlsplit(self.path).path
        if path == "/broken/mcp" and "authorization" not in self.headers:
            prm = f"{host}/.well-known/oauth-protected-resource/broken/mcp"
            self._json(401, {"error": "unauthorized"},
                       www_authenticate=f'Bearer resource_metadata="{prm}"')
        elif path == "/broken/mcp":
            time.sleep(20)
        elif path.startswith("/.well-known/oauth-protected-resource"):
            self._json(200, {"resource": f"{base}/mcp", "authorization_servers": [base]})
        elif path.startswith("/.well-known/oauth-authorization-server"):
            self._json(200, {
                "issuer": base, "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token", "registration_endpoint": f"{base}/register",
                "revocation_endpoint": f"{self.foreign}/revoke",
                "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            })
        elif path == "/broken/register":
            meta = json.loads(body or "{}")
            self._json(201, {**meta, "client_id": "c-" + str(time.monotonic_ns())})
        elif path == "/broken/authorize":
            q = parse_qs(urlsplit(self.path).query)
            uri = q.get("redirect_uri", ["http://127.0.0.1:9/cb"])[0]
            state = q.get("state", [""])[0]
            self._send(302, b"", "text/plain",
                       location=f"{uri}?code=hostilecode{time.monotonic_ns()}&state={state}")
        elif path == "/broken/token":
            self._send(200, b"<html><body>token service unavailable</body></html>", "text/html")
        else:
            self._send(404, b"\x00garbage", "application/octet-stream")

    do_GET = _handle  # noqa: N815
    do_POST = _handle  # noqa: N815
    do_DELETE = _handle  # noqa: N815


def _serve(handler: type[BaseHTTPRequestHandler], host: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[str, list[str]]]:
    sentinel = _serve(_Sentinel, "127.0.0.2")  # a host nobody names: it must see nothing
    _Hostile.foreign = f"http://127.0.0.2:{sentinel.server_address[1]}"
    server = _serve(_Hostile, "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Sentinel.hits
    finally:
        for srv in (server, sentinel):
            srv.shutdown()
            srv.server_close()


@pytest.mark.parametrize("mode", PREFLIGHT_MODES)
def test_target_answering_nothing_like_oauth_is_one_usage_error(
    tmp_path: Path, hostile: tuple[str, list[str]], mode: str
) -> None:
    """Exit 4 with one line naming the URL, before any check ran."""
    url, hits = hostile
    done = live_subprocess(tmp_path, f"--server-url={url}/{mode}/mcp",
                           "--authconform-timeout=1")
    assert done.ret == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1 and f"--server-url {url}/{mode}/mcp" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.outcomes == {}, "checks ran against a target that failed its preflight"
    assert hits == [], f"requests reached a host nobody named: {hits}"


@pytest.mark.parametrize(
    ("url", "says"),
    [("http://127.0.0.1:1/mcp", "no answer"), ("not-a-url", "not a http/https URL"),
     ("ftp://127.0.0.1/mcp", "not a http/https URL")],
    ids=["unreachable", "malformed", "not-http"],
)
def test_unusable_server_url_is_one_usage_error(tmp_path: Path, url: str, says: str) -> None:
    done = live_subprocess(tmp_path, f"--server-url={url}", "--authconform-timeout=2")
    assert done.ret == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert done.outcomes == {}


def test_broken_server_gives_failed_checks_with_reasons(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    hostile: tuple[str, list[str]],
) -> None:
    url, hits = hostile
    result, outcomes = run_live(
        pytester, monkeypatch, f"--server-url={url}/broken/mcp", "--authconform-timeout=1",
        "--authconform-flows=2",
    )
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert outcomes, out[-2000:]
    assert not [k for k, v in outcomes.items() if v.outcome == "error"], summary(outcomes)
    failed = {k: v for k, v in outcomes.items() if v.outcome == "failed"}
    assert failed, f"a broken server passed every check:\n{summary(outcomes)}"
    for name, got in failed.items():
        assert got.message.lstrip().startswith("observed:"), f"{name}: {got.message[:500]}"
        assert "spec: " in got.message, name
    for got in outcomes.values():
        if got.outcome == "skipped":
            assert got.message.split(":", 1)[0].strip() in (
                "not-applicable", "unavailable", "disabled", "not-advertised"), got.message
    # negative checks whose positive control (a code exchange) failed are unavailable
    single = next(v for k, v in outcomes.items() if k.startswith("test_code_is_single_use["))
    assert single.outcome == "skipped" and "positive control failed" in single.message, single
    assert hits == [], f"requests reached a host nobody named: {hits}"
    assert "hostilecode" not in out  # redacted codes never show


def test_rate_limiting_target_is_waited_out_or_unavailable_never_failed(tmp_path: Path) -> None:
    """429 with a Retry-After that fits is retried; one that does not is unavailable."""
    done = live_subprocess(
        tmp_path, "--backend=memory", "--authconform-in-process", "--authconform-flows=2",
        # a code outlives the 1 s Retry-After the first token request waits out
        "--authconform-access-ttl=2", "--authconform-code-ttl=3", "--authconform-refresh-ttl=5",
        "--authconform-variant=fixtures.mutants.servers:throttled_once",
        "--authconform-variant=fixtures.mutants.servers:throttled_hard",
        "-k", "ref-memory-throttled",
    )
    assert "INTERNALERROR" not in done.stdout and "Traceback" not in done.stdout
    once = {k: v for k, v in done.outcomes.items() if "throttled_once" in k}
    hard = {k: v for k, v in done.outcomes.items() if "throttled_hard" in k}
    assert len(once) > 50 and len(hard) > 50, summary(done.outcomes)
    assert not [k for k, v in once.items() if v.outcome in ("failed", "error")], summary(once)
    assert "answers were 429" in done.stdout, done.stdout[-3000:]
    assert not [k for k, v in hard.items() if v.outcome in ("failed", "error")], summary(hard)
    limited = [k for k, v in hard.items() if "unavailable: rate-limited" in v.message]
    assert len(limited) > 20, summary(hard)
    assert all("--authconform-rate" in hard[k].message for k in limited)


def test_pacing_spaces_requests(tmp_path: Path) -> None:
    """--authconform-rate N sends at most N requests a second (a lower bound on the time)."""
    import asyncio

    import httpx

    from authconform.live import Target

    async def scenario() -> float:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
        target = Target("paced", ["http://127.0.0.1:9/mcp"], transport=transport, rate=20)
        start = time.monotonic()
        try:
            for _ in range(11):
                await target.request("GET", "http://127.0.0.1:9/x", purpose="metadata")
        finally:
            await target.aclose()
        return time.monotonic() - start

    assert asyncio.run(scenario()) >= 0.5


KILLER = """
import os, signal, time

import pytest

_seen = 0


def pytest_runtest_logfinish(nodeid, location):
    global _seen
    _seen += 1
    if _seen == int(os.environ["KILL_AFTER"]):
        pid = int(os.environ["KILL_PID"])
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
"""


def test_target_dying_mid_run_makes_the_rest_unavailable_with_one_cause(
    tmp_path: Path,
) -> None:
    import asyncio

    from authconform.live._reference import start_reference

    (tmp_path / "srv").mkdir()
    server = asyncio.run(start_reference("memory", "authconform_dying", tmp_path / "srv",
                                         extra=["--access-ttl", "4"]))
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "killer.py").write_text(KILLER)
    try:
        done = live_subprocess(
            tmp_path, f"--server-url={server.urls[0]}/mcp", "-p", "killer",
            "--authconform-timeout=2", "--authconform-flows=2",
            env={"KILL_AFTER": "12", "KILL_PID": str(server.procs[0].pid),
                 "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT)])},
        )
    finally:
        server.stop()
    outcomes = list(done.outcomes.items())
    assert len(outcomes) > 60, done.stdout[-3000:]
    before, after = outcomes[:12], outcomes[12:]
    assert not [k for k, v in before if v.outcome in ("failed", "error")], summary(
        dict(before))
    bad = [k for k, v in after if v.outcome in ("failed", "error")]
    assert not bad, summary(dict(after))
    down = [k for k, v in after if "unavailable: the target stopped answering" in v.message]
    assert len(down) >= len(after) - 2, summary(dict(after))
    assert done.stdout.count("the target stopped answering (") >= 1
    assert "the checks after that are unavailable" in done.stdout, done.stdout[-3000:]


def test_spec_ids_in_the_harness_parse_and_resolve() -> None:
    """Every spec id the live harness writes into a failure or finding parses (with a URL).

    The checks' ``@spec`` marks are scanned by ``test_spec_citations``; this covers the
    ids the harness code itself names: ``spec=`` arguments, response checks, error rules.
    """
    import ast

    from authconform.live._expect import ERROR_RULE
    from authconform.spec import ids

    found: set[str] = set(ERROR_RULE.values())
    for path in [*(ROOT / "authconform" / "live").glob("*.py"),
                 *(ROOT / "authconform" / "suites" / "live").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "spec" and isinstance(
                node.value, ast.Constant
            ) and isinstance(node.value.value, str):
                found.add(node.value.value)
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "response_check", "Finding"
            ) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                value = node.args[1].value if ast.unparse(node.func) == "response_check" else (
                    node.args[0].value if isinstance(node.args[0], ast.Constant) else None)
                if isinstance(value, str):
                    found.add(value)
    assert len(found) > 8, found
    for spec_id in sorted(found):
        ref = ids.parse(spec_id)
        assert ref.url.startswith("https://"), (spec_id, ref.url)
