"""``authconform bench server``: the reference server's hot path against a bare floor.

For each worker count (default 1 and 4) it starts, on 127.0.0.1 only:

- the reference server over Redis (``authconform serve --backend REDIS_URL --workers N
  --mcp-impl IMPL``), once per MCP implementation (``--impls``, default ``lean,sdk``: our
  endpoint and the SDK's stateless transport), gets an access token through the real
  flow (registration, /authorize with PKCE S256, /token) and drives an authenticated MCP
  ``tools/call`` (``echo``) at each protocol revision of ``--protocols``;
- the floor: a bare Starlette endpoint doing one Redis GET, under the same uvicorn
  settings (``--workers N --loop uvloop --http httptools``, no access log).

Load comes from Locust, always as a subprocess (``loadtests/locustfile.py --headless``,
closed-loop users, bounded ``--run-time``), with ``--json-file`` and ``--csv`` under
``reports/bench/``. It reports requests/s, p50 and p99 of each, the ratio of the floor's
requests/s to each hot-path run's and PASS/MISS against the aim (within 2x of the floor,
``--aim``), and writes ``reports/bench/server_bench.json``.

Locust rounds latencies to whole milliseconds and one Locust process tops out near
6-8k req/s on a 2-core machine: a floor figure above that measures Locust, and the
report says so. Everything runs on one machine, so generator and servers share the CPUs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from authconform._net import free_loopback_port

__all__ = ["floor_app", "main"]

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
FLOOR_KEY = "authconform_bench:floor"
LOCUST_CEILING = 6000.0  # req/s of one Locust process on the reference machine


# --------------------------------------------------------------------------------------
# the floor: a bare Starlette endpoint doing one Redis GET
# --------------------------------------------------------------------------------------
def floor_app() -> Any:
    """A uvicorn factory (``--factory``): ``GET /floor`` answers after one Redis GET."""
    from contextlib import asynccontextmanager

    import redis.asyncio as aioredis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    url = os.environ.get("AUTHCONFORM_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = aioredis.Redis.from_url(url, decode_responses=True)

    async def floor(request: Request) -> JSONResponse:
        value = await client.get(FLOOR_KEY)
        return JSONResponse({"value": value})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(routes=[Route("/floor", floor)], lifespan=lifespan)


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------
@dataclass
class Result:
    """One measured run."""

    target: str
    workers: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p99_ms: float
    gates_passed: bool | None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_http(url: str, timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.2)


def _start_reference(
    redis_url: str, namespace: str, workers: int, impl: str = "lean"
) -> tuple[Any, str]:
    cmd = [
        sys.executable, "-m", "authconform.cli", "serve",
        "--backend", redis_url, "--namespace", namespace,
        "--host", "127.0.0.1", "--port", "0", "--workers", str(workers),
        "--mcp-impl", impl, "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if "listening on " not in line:
        _stop(proc)
        raise RuntimeError(f"authconform serve did not start (said {line!r})")
    base = line.rsplit(" ", 1)[1]
    _wait_http(base + "/.well-known/oauth-authorization-server")
    return proc, base


def _start_floor(redis_url: str, workers: int) -> tuple[Any, str]:
    port = free_loopback_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "authconform.perf.server_bench:floor_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--no-server-header",
    ]  # fmt: skip
    env = {**os.environ, "AUTHCONFORM_FLOOR_REDIS_URL": redis_url}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_http(base + "/floor")
    return proc, base


def _token(base: str) -> str:
    """An access token through the real flow: DCR, /authorize (PKCE S256), /token."""
    import httpx

    with httpx.Client(timeout=10.0) as client:
        md = client.get(base + "/.well-known/oauth-authorization-server").json()
        prm = client.get(base + "/.well-known/oauth-protected-resource/mcp").json()
        redirect = "http://127.0.0.1:9/callback"
        reg = client.post(
            md["registration_endpoint"],
            json={"redirect_uris": [redirect], "token_endpoint_auth_method": "none",
                  "client_name": "authconform bench"},
        )  # fmt: skip
        reg.raise_for_status()
        client_id = reg.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        auth = client.get(
            md["authorization_endpoint"],
            params={
                "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                "code_challenge": challenge, "code_challenge_method": "S256",
                "state": secrets.token_urlsafe(8), "resource": prm["resource"],
            },
        )  # fmt: skip
        if auth.status_code != 302:
            raise RuntimeError(f"/authorize answered {auth.status_code}, expected a redirect")
        code = parse_qs(urlparse(auth.headers["location"]).query)["code"][0]
        tok = client.post(
            md["token_endpoint"],
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                  "client_id": client_id, "code_verifier": verifier},
        )  # fmt: skip
        tok.raise_for_status()
        return str(tok.json()["access_token"])


def _locust(
    host: str,
    kind: str,
    token: str,
    tag: str,
    args: argparse.Namespace,
    out_dir: Path,
    protocol: str = "2025-06-18",
) -> tuple[dict[str, str], bool | None]:
    prefix = out_dir / tag
    gates = "hot_path" if kind == "mcp" else "floor"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(args.users), "--run-time", f"{args.duration}s",
        "--host", host, "--only-summary", "--stop-timeout", "2",
        "--json-file", str(prefix), "--csv", str(prefix),
        "--bench-kind", kind, "--bench-protocol", protocol, "--gates", gates,
        "--gates-report", str(out_dir / f"gates-{tag}.json"),
        "--loglevel", "WARNING",
    ]  # fmt: skip
    if args.locust_processes > 1:
        cmd += ["--processes", str(args.locust_processes)]
    env = {**os.environ, "AUTHCONFORM_BENCH_TOKEN": token}
    timeout = args.duration + 60
    proc = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout
    )
    rows = list(csv.DictReader((prefix.parent / f"{prefix.name}_stats.csv").open()))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    passed = None
    gates_file = out_dir / f"gates-{tag}.json"
    if gates_file.exists():
        passed = bool(json.loads(gates_file.read_text()).get("passed"))
    if proc.returncode not in (0, 1):
        tail = proc.stderr.decode(errors="replace")[-800:]
        raise RuntimeError(f"locust exited {proc.returncode}: {tail}")
    return total, passed


def _result(target: str, workers: int, row: dict[str, str], *, passed: bool | None) -> Result:
    return Result(
        target=target,
        workers=workers,
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=round(float(row["Requests/s"]), 1),
        p50_ms=float(row["50%"]),
        p99_ms=float(row["99%"]),
        gates_passed=passed,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authconform bench server",
        description="Reference server hot path (authenticated MCP tools/call over redis) "
        "against a bare Starlette endpoint doing one Redis GET.",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--namespace", default="authconform_bench")
    p.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    p.add_argument(
        "--protocols",
        default="2025-06-18,2026-07-28",
        help="MCP protocol revisions to drive (2025-*: the SDK's stateless session "
        "transport; 2026-07-28: its single-exchange path)",
    )
    p.add_argument(
        "--impls",
        default="lean,sdk",
        help="MCP implementations of the reference server to drive (serve --mcp-impl)",
    )
    p.add_argument(
        "--aim", type=float, default=2.0, help="PASS when floor req/s / hot-path req/s <= AIM"
    )
    p.add_argument("--duration", type=int, default=15, help="seconds of load per run")
    p.add_argument("--users", type=int, default=32, help="concurrent Locust users")
    p.add_argument("--locust-processes", type=int, default=1, help="Locust --processes")
    p.add_argument("--out", default=str(REPO / "reports" / "bench"), help="report directory")
    return p


def _cleanup(redis_url: str, namespace: str) -> None:
    """Drop what the bench created in its namespace (and the floor key), nothing else."""
    import asyncio

    from authconform.server.cli import backend_from_spec

    async def drop() -> None:
        backend = backend_from_spec(redis_url, namespace)
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.delete(FLOOR_KEY)
        finally:
            await client.aclose()

    asyncio.run(drop())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (1 if a run failed to start or measure)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    host = urlparse(args.redis_url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not args.redis_url.startswith("unix"):
        print("authconform bench server: only a loopback Redis is allowed", file=sys.stderr)
        return 2
    if not LOCUSTFILE.exists():
        print(f"authconform bench server: {LOCUSTFILE} not found (run from a checkout)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        print("authconform bench server: --workers takes numbers, e.g. 1,4", file=sys.stderr)
        return 2
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if not impls or any(i not in ("lean", "sdk") for i in impls):
        print("authconform bench server: --impls takes lean and/or sdk", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    import redis

    r = redis.Redis.from_url(args.redis_url)
    r.set(FLOOR_KEY, "x" * 64)
    r.close()

    results: list[Result] = []
    try:
        for workers in worker_counts:
            # the floor first, then each implementation: one run, same machine state
            proc, base = _start_floor(args.redis_url, workers)
            try:
                row, passed = _locust(base, "floor", "", f"floor-w{workers}", args, out_dir)
                results.append(_result("floor (1 Redis GET)", workers, row, passed=passed))
            finally:
                _stop(proc)
            for impl in impls:
                proc, base = _start_reference(args.redis_url, args.namespace, workers, impl)
                try:
                    token = _token(base)
                    for protocol in protocols:
                        tag = f"hot-w{workers}-{impl}-{protocol}"
                        row, passed = _locust(base, "mcp", token, tag, args, out_dir, protocol)
                        target = f"tools/call {impl} {protocol}"
                        results.append(_result(target, workers, row, passed=passed))
                finally:
                    _stop(proc)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"authconform bench server: {exc}", file=sys.stderr)
        return 1
    finally:
        _cleanup(args.redis_url, args.namespace)

    print(f"{'target':26} {'workers':>7} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'fail':>5} {'ratio':>6}  aim <= {args.aim:g}x")  # fmt: skip
    summary: list[dict[str, Any]] = []
    misses = 0
    for res in results:
        floor = next(
            (f for f in results if f.workers == res.workers and f.target.startswith("floor")),
            None,
        )
        ratio = floor.rps / res.rps if floor and res.rps else float("nan")
        is_floor = res.target.startswith("floor")
        verdict = "" if is_floor else ("PASS" if ratio <= args.aim and not res.failures else "MISS")
        misses += verdict == "MISS"
        print(f"{res.target:26} {res.workers:>7} {res.rps:>9.1f} {res.p50_ms:>7.0f} "
              f"{res.p99_ms:>7.0f} {res.failures:>5} {ratio:>5.2f}x  {verdict}")  # fmt: skip
        summary.append(
            {**asdict(res), "floor_rps_over_this": round(ratio, 3), "aim": verdict or None}
        )
    hot = [r for r in summary if r["aim"]]
    tail = f", {misses} MISS" if misses else ""
    print(f"aim (within {args.aim:g}x of the floor): {len(hot) - misses}/{len(hot)} PASS{tail}")
    notes = []
    if any(r.rps > LOCUST_CEILING * args.locust_processes for r in results):
        notes.append(
            "a figure above ~6k req/s per Locust process measures Locust more than the "
            "server; raise --locust-processes"
        )
    notes.append("generator and servers share this machine's CPUs; latencies are whole ms")
    for note in notes:
        print(f"note: {note}")
    (out_dir / "server_bench.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "redis_url": args.redis_url,
                "duration_s": args.duration,
                "users": args.users,
                "locust_processes": args.locust_processes,
                "aim_ratio": args.aim,
                "results": summary,
                "notes": notes,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
