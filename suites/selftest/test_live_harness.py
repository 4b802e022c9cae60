"""Self-test: hostile or broken servers give failed checks with reasons, never a crash,
and no request goes to a host the user did not name."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from fixtures.live_harness import run_live, summary

MODES = ("html", "garbage", "redirect", "hang", "broken")


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


@pytest.mark.parametrize("mode", MODES)
def test_hostile_server_gives_failed_checks_with_reasons(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    hostile: tuple[str, list[str]], mode: str,
) -> None:
    url, hits = hostile
    result, outcomes = run_live(
        pytester, monkeypatch, f"--server-url={url}/{mode}/mcp", "--authconform-timeout=1",
        "--authconform-flows=2",
    )
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert outcomes, out[-2000:]
    assert not [k for k, v in outcomes.items() if v.outcome == "error"], summary(outcomes)
    failed = {k: v for k, v in outcomes.items() if v.outcome == "failed"}
    assert failed, f"a {mode} server passed every check:\n{summary(outcomes)}"
    for name, got in failed.items():
        assert got.message.lstrip().startswith("observed:"), f"{name}: {got.message[:500]}"
        assert "spec: " in got.message, name
    for got in outcomes.values():
        if got.outcome == "skipped":
            assert got.message.split(":", 1)[0].strip() in (
                "not-applicable", "unavailable", "disabled", "not-advertised"), got.message
    assert hits == [], f"requests reached a host nobody named: {hits}"
    if mode == "broken":
        assert "hostilecode" not in out  # redacted codes never show
