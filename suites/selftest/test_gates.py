"""Performance gates: the grammar, the evaluation, and a real Locust run whose gate fails."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from authconform.perf.gates import evaluate, load_gate_set, parse_gate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p95:25ms", "p95", "<=", 25.0),
        ("p99.9:1.5s", "p99.9", "<=", 1500.0),
        ("avg:<10ms", "avg", "<", 10.0),
        ("fail_ratio:1%", "fail_ratio", "<=", 0.01),
        ("fail_ratio:0.02", "fail_ratio", "<=", 0.02),
        ("rps:>=500", "rps", ">=", 500.0),
        (" rps : > 1 ", "rps", ">", 1.0),
    ],
)
def test_gate_grammar(text: str, metric: str, op: str, limit: float) -> None:
    gate = parse_gate(text)
    assert (gate.metric, gate.op, gate.limit) == (metric, op, pytest.approx(limit))


@pytest.mark.parametrize(
    "text",
    ["p95:25", "p95", "rps:500ms", "latency:5ms", "fail_ratio:1ms", "p95:=25ms", "p95:1.2.3ms"],
)
def test_bad_gates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="gate"):
        parse_gate(text)


def test_evaluation_passes_and_fails() -> None:
    gates = [parse_gate("p95:25ms"), parse_gate("rps:>=500"), parse_gate("fail_ratio:0%")]
    good = evaluate(gates, {"p95": 25.0, "rps": 500.0, "fail_ratio": 0.0})
    assert all(r.passed for r in good)
    bad = evaluate(gates, {"p95": 26.0, "rps": 499.0, "fail_ratio": 0.001})
    assert [r.passed for r in bad] == [False, False, False]
    with pytest.raises(ValueError, match="no observed figure for rps"):
        evaluate(gates, {"p95": 1.0, "fail_ratio": 0.0})


def test_the_repository_gate_sets_parse() -> None:
    for name in ("hot_path", "floor", "smoke"):
        description, gates = load_gate_set(REPO / "loadtests" / "gates.toml", name)
        assert description and gates, name
    with pytest.raises(ValueError, match="no gate set 'nope'"):
        load_gate_set(REPO / "loadtests" / "gates.toml", "nope")


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """A loopback HTTP server answering 200 to every GET."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("gate_set", "exit_code"), [("reachable", 0), ("impossible", 1)])
def test_locust_run_exit_code_follows_its_gates(
    plain_http_server: str, tmp_path: Path, gate_set: str, exit_code: int
) -> None:
    """A bounded headless Locust run (a subprocess) sets its exit code from the gates."""
    if importlib.util.find_spec("locust") is None:  # never import Locust inside pytest
        pytest.skip("unavailable: locust is not installed (pip install 'authconform[bench]')")
    gates_file = tmp_path / "gates.toml"
    gates_file.write_text(
        '[gates.reachable]\ndescription = "x"\nchecks = ["fail_ratio:0%", "rps:>=1"]\n'
        '[gates.impossible]\ndescription = "y"\nchecks = ["fail_ratio:0%", "rps:>=10000000"]\n'
    )
    report = tmp_path / "gates.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"),
            "--headless", "-u", "2", "-r", "2", "--run-time", "2s", "--stop-timeout", "1",
            "--host", plain_http_server, "--bench-kind", "floor", "--bench-path", "/",
            "--gates", gate_set, "--gates-file", str(gates_file), "--gates-report", str(report),
            "--only-summary",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["passed"] is (exit_code == 0)
    assert result["requests"] > 0
    assert {g["gate"] for g in result["gates"]} >= {"fail_ratio:0%"}
