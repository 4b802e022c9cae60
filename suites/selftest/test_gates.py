"""Performance gates: the grammar, the evaluation, a real Locust run whose gate fails, and
real bounded ``authconform bench server`` runs whose exit status follows their gates file.

The bench runs cost about 30 s together (two runs of a few seconds of load each, plus one
stopped by SIGTERM as soon as Locust runs).
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.resources
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authconform.perf.gates import describe, evaluate, load_gate_set, parse_gate

REPO = Path(__file__).resolve().parents[2]
SHIPPED = importlib.resources.files("authconform.loadtests")
REDIS_URL = os.environ.get("AUTHCONFORM_REDIS_URL", "redis://127.0.0.1:6379/0")


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


@pytest.mark.parametrize(
    ("gate", "observed", "line"),
    [
        ("p95:25ms", 31.0, "gate hot_path p95: 31 ms > 25 ms (+24%)"),
        ("p95:25ms", 12.0, "gate hot_path p95: 12 ms <= 25 ms"),
        ("rps:>=500", 412.0, "gate hot_path rps: 412 req/s < 500 req/s (-18%)"),
        ("rps:>=100000", 1234.5, "gate hot_path rps: 1234.5 req/s < 100000 req/s (-99%)"),
        ("fail_ratio:0%", 0.005, "gate hot_path fail_ratio: 0.5% > 0% (+0.5 points)"),
        ("p99:100ms", 102.0, "gate hot_path p99: 102 ms > 100 ms (+2.0%)"),
    ],
)
def test_a_gate_reads_as_observed_vs_limit_and_by_how_much(
    gate: str, observed: float, line: str
) -> None:
    parsed = parse_gate(gate)
    (result,) = evaluate([parsed], {parsed.metric: observed})
    assert describe(result, "hot_path") == line


def test_the_shipped_gate_sets_parse() -> None:
    with importlib.resources.as_file(SHIPPED / "gates.toml") as path:
        for name in ("hot_path", "floor", "smoke"):
            description, gates = load_gate_set(path, name)
            assert description and gates, name
        with pytest.raises(ValueError, match="no gate set 'nope'"):
            load_gate_set(path, "nope")
    assert (SHIPPED / "locustfile.py").is_file()
    assert not (REPO / "loadtests").exists(), "the load tests live in authconform/loadtests"


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
    locustfile = str(SHIPPED / "locustfile.py")
    proc = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", locustfile,
            "--headless", "-u", "2", "-r", "2", "--run-time", "2s", "--stop-timeout", "1",
            "--host", plain_http_server, "--bench-kind", "floor", "--bench-path", "/",
            "--gates", gate_set, "--gates-file", str(gates_file), "--gates-report", str(report),
            "--only-summary",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["passed"] is (exit_code == 0)
    assert result["requests"] > 0
    assert {g["gate"] for g in result["gates"]} >= {"fail_ratio:0%"}


# -- authconform bench server, for real (a few seconds of load per run) ------------------------
def _bench_prerequisites() -> None:
    for module in ("locust", "uvicorn", "mcp"):
        if importlib.util.find_spec(module) is None:  # never import Locust inside pytest
            pytest.skip(f"unavailable: {module} is not installed (pip install 'authconform[all]')")
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no redis here
        pytest.skip(f"unavailable: redis at {REDIS_URL} ({type(exc).__name__}); set "
                    "AUTHCONFORM_REDIS_URL")


def _keys(namespace: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"ac:{{{namespace}}}:*", count=1000))
    finally:
        client.close()


def _gates_file(tmp_path: Path, hot_path: list[str]) -> Path:
    path = tmp_path / "my-gates.toml"
    path.write_text(
        f'[gates.hot_path]\ndescription = "mine"\nchecks = {json.dumps(hot_path)}\n'
        '[gates.floor]\ndescription = "mine"\nchecks = ["fail_ratio:0%", "rps:>=1"]\n'
    )
    return path


def _bench_cmd(namespace: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "authconform.cli", "bench", "server", "--redis-url", REDIS_URL,
        "--namespace", namespace, "--workers", "1", "--impls", "lean",
        "--protocols", "2025-06-18", "--duration", "2", "--users", "2", *extra,
    ]  # fmt: skip


def _marked(marker: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every process whose environment carries ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def test_bench_server_exits_nonzero_and_names_the_breached_gate(tmp_path: Path) -> None:
    """An unreachable gate in the user's gates file: exit 1, the gate named with its margin."""
    _bench_prerequisites()
    namespace = "ac_selftest_" + secrets.token_hex(4)
    gates = _gates_file(tmp_path, ["fail_ratio:0%", "rps:>=100000"])
    out = tmp_path / "out"
    proc = subprocess.run(
        _bench_cmd(namespace, "--gates", str(gates), "--out", str(out)),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    breaches = [line for line in proc.stdout.splitlines() if line.startswith("gate ")]
    assert len(breaches) == 1, proc.stdout
    assert breaches[0].startswith("gate hot_path rps: "), breaches
    assert "req/s < 100000 req/s (-" in breaches[0], breaches
    assert "[tools/call lean 2025-06-18, 1 worker(s)]" in breaches[0], breaches
    report = json.loads((out / "server_bench.json").read_text())
    assert report["gates_passed"] is False and report["gates_file"] == str(gates)
    assert _keys(namespace) == [], "the bench left keys in its namespace (floor key included)"
    assert not (tmp_path / "reports").exists(), "--out was given: nothing under ./reports"


def test_bench_server_exits_zero_when_every_gate_is_met(tmp_path: Path) -> None:
    """Reachable gates: exit 0; reports land under ./reports/bench of the current directory."""
    _bench_prerequisites()
    namespace = "ac_selftest_" + secrets.token_hex(4)
    gates = _gates_file(tmp_path, ["fail_ratio:0%", "rps:>=1"])
    proc = subprocess.run(
        _bench_cmd(namespace, "--gates", str(gates)),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gates: all 4 met over 2 runs" in proc.stdout, proc.stdout
    report = json.loads((tmp_path / "reports" / "bench" / "server_bench.json").read_text())
    assert report["gates_passed"] is True
    assert [r["gate_set"] for r in report["results"]] == ["floor", "hot_path"]
    assert _keys(namespace) == []


def test_bench_server_on_sigterm_leaves_no_process_and_no_key(tmp_path: Path) -> None:
    """SIGTERM while Locust drives the floor: every process the bench started is gone after
    it, and so is every key of its namespace (the floor key included); exit 143."""
    _bench_prerequisites()
    namespace = "ac_selftest_" + secrets.token_hex(4)
    marker = "AUTHCONFORM_SELFTEST_MARKER=" + secrets.token_hex(8)
    name, value = marker.split("=", 1)
    env = {**os.environ, name: value}
    proc = subprocess.Popen(
        _bench_cmd(namespace, "--out", str(tmp_path / "out"), "--duration", "30"),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any("locust" in cmd for _, cmd in _marked(marker)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "Locust did not start within 60 s"
            time.sleep(0.2)
        started = _marked(marker)
        assert len(started) >= 3, started  # the bench, the floor's uvicorn, Locust
        assert _keys(namespace), "the floor key should exist while the floor runs"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        leftovers = _marked(marker)
    finally:  # whatever happened, stop what this test started (marked), nothing else
        alive = [(proc.pid, "")] if proc.poll() is None else []
        for pid, _ in [*alive, *_marked(marker)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 143, err.decode(errors="replace")
    assert leftovers == [], "processes outlived the bench"
    assert _keys(namespace) == [], "the bench left keys in its namespace"
