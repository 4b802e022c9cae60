"""Locust users for authconform benchmarks; gates (gates.toml beside it) decide the exit code.

Always run as a subprocess (never imported inside pytest), e.g. by ``authconform bench server``,
which finds this file in the installed package (``authconform.loadtests``)::

    AUTHCONFORM_BENCH_TOKEN=... locust -f .../authconform/loadtests/locustfile.py --headless \
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

from authconform.perf.gates import PERCENTILES, Gate, describe, evaluate, load_gate_set

GATES_FILE = Path(__file__).resolve().parent / "gates.toml"
DEFAULT_REPORT = Path("reports", "bench", "gates.json")  # under the current directory


def _options(parser: Any) -> None:
    parser.add_argument("--bench-kind", choices=["mcp", "floor"], default="mcp",
                        help="mcp: authenticated tools/call; floor: GET a bare endpoint")
    parser.add_argument("--bench-path", default="", help="path of the endpoint (default by kind)")
    parser.add_argument("--bench-protocol", default="2025-06-18",
                        help="MCP protocol revision of the tools/call (2026-07-28: single "
                        "exchange, no session machinery)")
    parser.add_argument("--gates", default="", help="gate set of the gates file to apply")
    parser.add_argument("--gates-file", default=str(GATES_FILE), help="the gates file")
    parser.add_argument("--gates-report", default=str(DEFAULT_REPORT),
                        help="where to write the gate results (JSON)")


MODERN = ("2026-07-28",)  # revisions without the initialize handshake (per-request _meta)


def _call_body(protocol: str) -> str:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": "bench"}}
    if protocol in MODERN:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": protocol,
            "io.modelcontextprotocol/clientInfo": {"name": "authconform-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return json.dumps(call)


class HotPath(FastHttpUser):
    """A closed-loop user: one request after the other, no think time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        """Read the bench options once: kind, path, protocol revision, headers."""
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
        """One request: the authenticated tools/call, or GET of the floor endpoint."""
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


def _evaluate_gates(environment: Any, **_: Any) -> None:
    """On quitting: the final figures, and the gate set's verdict, into ``--gates-report``.

    The report is written when a gate set is given or ``--gates-report`` is; its
    ``observed`` figures (from the final stats, unlike Locust's CSV, which is written
    once a second) are the ones the gates are judged on.
    """
    opts = environment.parsed_options
    if opts is None or environment.runner is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # with --processes, the master evaluates the aggregated stats
    name = getattr(opts, "gates", "")
    if not name and not getattr(opts, "gates_report", ""):
        return
    report_path = Path(getattr(opts, "gates_report", "") or DEFAULT_REPORT)
    description, gates = "", list[Gate]()
    if name:
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
    observed = _observed(stats, duration)
    evaluated = evaluate(gates, observed)
    results = [
        {"gate": r.gate.text, "metric": r.gate.metric, "op": r.gate.op, "limit": r.gate.limit,
         "observed": round(r.observed, 4), "passed": r.passed}
        for r in evaluated
    ]
    passed = all(r.passed for r in evaluated)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps({
        "schema_version": 2, "gate_set": name or None, "description": description,
        "host": environment.host, "requests": stats.num_requests,
        "failures": stats.num_failures, "duration_s": round(duration, 3),
        "observed": {k: round(v, 4) for k, v in observed.items()},
        "passed": passed if name else None, "gates": results,
    }, indent=2))
    for r in evaluated:
        print(("ok    " if r.passed else "FAIL  ") + describe(r, name), file=sys.stderr)
    if name:
        environment.process_exit_code = 0 if passed else 1


# registered by call, not as decorators: Locust's add_listener is untyped
events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_evaluate_gates)  # type: ignore[no-untyped-call]
