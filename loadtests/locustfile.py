"""Locust users for authconform benchmarks; gates from loadtests/gates.toml decide the exit code.

Always run as a subprocess (never imported inside pytest), e.g. by ``authconform bench server``::

    AUTHCONFORM_BENCH_TOKEN=... locust -f loadtests/locustfile.py --headless \
        -u 32 -r 32 --run-time 15s --host http://127.0.0.1:8000 \
        --bench-kind mcp --gates hot_path \
        --json-file reports/bench/hot.json --csv reports/bench/hot

Users (``--bench-kind``):

- ``mcp``: the hot path, an authenticated MCP ``tools/call`` of ``echo`` at ``--bench-path``
  (default ``/mcp``) with ``Authorization: Bearer $AUTHCONFORM_BENCH_TOKEN``; a response
  that is not a JSON-RPC result counts as a failure.
- ``floor``: ``GET --bench-path`` (the bare endpoint the hot path is compared with).

The token comes from the environment only (never a command-line argument, so it does not
show in process listings) and is never printed.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.runners import WorkerRunner

from authconform.perf.gates import PERCENTILES, evaluate, load_gate_set

HERE = Path(__file__).resolve().parent
GATES_FILE = HERE / "gates.toml"
DEFAULT_REPORT = HERE.parent / "reports" / "bench" / "gates.json"



@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--bench-kind", choices=["mcp", "floor"], default="mcp",
                        help="mcp: authenticated tools/call; floor: GET a bare endpoint")
    parser.add_argument("--bench-path", default="", help="path of the endpoint (default by kind)")
    parser.add_argument("--bench-protocol", default="2025-06-18",
                        help="MCP protocol revision of the tools/call (2026-07-28: single "
                        "exchange, no session machinery)")
    parser.add_argument("--gates", default="", help="gate set of loadtests/gates.toml to apply")
    parser.add_argument("--gates-file", default=str(GATES_FILE), help="the gates file")
    parser.add_argument("--gates-report", default=str(DEFAULT_REPORT),
                        help="where to write the gate results (JSON)")


MODERN = ("2026-07-28",)  # revisions without the initialize handshake (per-request _meta)


def _call_body(protocol: str) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": "bench"}}
    if protocol in MODERN:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": protocol,
            "io.modelcontextprotocol/clientInfo": {"name": "authconform-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return json.dumps(call).encode()


class HotPath(FastHttpUser):
    """A closed-loop user: one request after the other, no think time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.kind = getattr(opts, "bench_kind", "mcp")
        self.path = getattr(opts, "bench_path", "") or ("/mcp" if self.kind == "mcp" else "/floor")
        protocol = getattr(opts, "bench_protocol", "2025-06-18")
        self.body = _call_body(protocol)
        self.headers = {
            "Authorization": "Bearer " + os.environ.get("AUTHCONFORM_BENCH_TOKEN", ""),
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": protocol,
        }
        if protocol in MODERN:
            self.headers |= {"Mcp-Method": "tools/call", "Mcp-Name": "echo"}

    @task
    def hot(self) -> None:
        if self.kind == "floor":
            self.client.get(self.path, name="floor")
            return
        with self.client.post(self.path, data=self.body, headers=self.headers, name="tools/call",
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                body = json.loads(response.content or b"{}")
            except ValueError:
                response.failure("not JSON")
                return
            if "result" not in body or body["result"].get("isError"):
                response.failure("JSON-RPC error")


# --- gates ------------------------------------------------------------------------------
def _observed(stats: Any, duration: float) -> dict[str, float]:
    figures = {m: float(stats.get_response_time_percentile(q)) for m, q in PERCENTILES.items()}
    figures.update(
        avg=float(stats.avg_response_time),
        max=float(stats.max_response_time),
        fail_ratio=float(stats.fail_ratio),
        rps=stats.num_requests / duration if duration > 0 else 0.0,
    )
    return figures


@events.quitting.add_listener
def _evaluate_gates(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    name = getattr(opts, "gates", "") if opts else ""
    if not name or environment.runner is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # with --processes, the master evaluates the aggregated stats
    report_path = Path(getattr(opts, "gates_report", "") or DEFAULT_REPORT)
    try:
        description, gates = load_gate_set(opts.gates_file, name)
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"locustfile: gates {name!r}: {exc}", file=sys.stderr)
        environment.process_exit_code = 2
        return
    stats = environment.stats.total
    start = stats.start_time or 0.0
    end = stats.last_request_timestamp or start
    duration = max(end - start, 1e-9)
    results = [
        {"gate": r.gate.text, "metric": r.gate.metric, "op": r.gate.op, "limit": r.gate.limit,
         "observed": round(r.observed, 4), "passed": r.passed}
        for r in evaluate(gates, _observed(stats, duration))
    ]
    passed = all(r["passed"] for r in results)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps({
        "schema_version": 1, "gate_set": name, "description": description,
        "host": environment.host, "requests": stats.num_requests,
        "failures": stats.num_failures, "duration_s": round(duration, 3),
        "passed": passed, "gates": results,
    }, indent=2))
    for r in results:
        mark = "ok  " if r["passed"] else "FAIL"
        print(f"gate {mark} {r['gate']:<18} observed {r['observed']}", file=sys.stderr)
    environment.process_exit_code = 0 if passed else 1
