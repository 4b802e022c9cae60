"""``authconform bench server``: the reference server's hot path against a bare floor.

For each worker count (default 1 and 4) it starts, on 127.0.0.1 only:

- the reference server over Redis (``authconform serve --backend REDIS_URL --workers N
  --mcp-impl IMPL``), once per MCP implementation (``--impls``, default ``lean,sdk``: our
  endpoint and the SDK's stateless transport), gets an access token through the real
  flow (registration, /authorize with PKCE S256, /token) and drives an authenticated MCP
  ``tools/call`` (``echo``) at each protocol revision of ``--protocols``;
- the floor: a bare Starlette endpoint doing one Redis GET, under the same uvicorn
  settings (``--workers N --loop uvloop --http httptools``, no access log).

Load comes from Locust, always as a subprocess (the locustfile shipped in
``authconform.loadtests``, ``--headless``, closed-loop users, bounded ``--run-time``), with
``--json-file`` and ``--csv`` under ``--out`` (default ``reports/bench`` of the current
directory). It reports requests/s, p50 and p99 of each, the ratio of the floor's
requests/s to each hot-path run's and PASS/MISS against the aim (within 2x of the floor,
``--aim``; informational), and writes ``server_bench.json`` there.

Gates decide the exit code: ``--gates FILE`` (default: the shipped
``authconform/loadtests/gates.toml``); its set ``hot_path`` applies to every reference
server run, ``floor`` (optional) to the floor runs. Every breached gate is printed as
``gate hot_path p95: 31 ms > 25 ms (+24%)`` with the run it belongs to. Exit status: 0
every gate met, 1 a gate breached, 2 a usage error (options, gates file), 3 the benchmark
could not run or measure, 130/143 interrupted (Ctrl-C / SIGTERM).

Everything it creates is its own and is removed at the end, on failure, Ctrl-C and
SIGTERM too: the reference server's data lives in a fresh namespace (``--namespace``,
default ``ac_bench_<random>``), the floor's Redis key is ``ac:{<namespace>}:bench:floor``
(hash-tagged like the backends' keys, with a TTL as a safety net), and every process
(uvicorn masters and workers, Locust) runs in its own process group, stopped as a group.

Locust rounds latencies to whole milliseconds and one Locust process tops out near
6-8k req/s on a 2-core machine: a floor figure above that measures Locust, and the
report says so. Everything runs on one machine, so generator and servers share the CPUs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.resources
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlparse

from authconform._net import free_loopback_port
from authconform.perf.gates import Gate, GateResult, describe, load_gate_set
from authconform.procs import stop_groups

__all__ = ["floor_app", "floor_key", "main"]

LOADTESTS = "authconform.loadtests"
LOCUST_CEILING = 6000.0  # req/s of one Locust process on the reference machine
FLOOR_KEY_ENV = "AUTHCONFORM_FLOOR_KEY"
EXIT_BREACH, EXIT_USAGE, EXIT_FAILED = 1, 2, 3


def floor_key(namespace: str) -> str:
    """The floor endpoint's Redis key: inside the run's namespace, hash-tagged."""
    return f"ac:{{{namespace}}}:bench:floor"


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
    key = os.environ[FLOOR_KEY_ENV]
    client = aioredis.Redis.from_url(url, decode_responses=True)

    async def floor(request: Request) -> JSONResponse:
        value = await client.get(key)
        return JSONResponse({"value": value})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(routes=[Route("/floor", floor)], lifespan=lifespan)


# --------------------------------------------------------------------------------------
# processes: each in its own process group, all stopped at the end whatever happens
# --------------------------------------------------------------------------------------
class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the bench; ``code`` is the exit status to end with."""

    def __init__(self, signum: int) -> None:
        """For signal ``signum``."""
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@dataclass
class Children:
    """Every process the bench started (each the leader of its own process group)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``Popen`` in a new session (its own process group), remembered for ``stop``."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """SIGTERM the group(s) of ``proc`` (default: all), SIGKILL after a grace period."""
        procs = [proc] if proc is not None else list(self.procs)
        stop_groups(procs, grace=10.0)
        for p in procs:
            if p.stdout is not None:
                p.stdout.close()
            if p in self.procs:
                self.procs.remove(p)


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
    gate_set: str | None
    gates: list[dict[str, Any]]

    @property
    def breaches(self) -> list[GateResult]:
        """The gates of this run that were not met."""
        results = [
            GateResult(Gate(g["gate"], g["metric"], g["op"], float(g["limit"])), g["observed"])
            for g in self.gates
        ]
        return [r for r in results if not r.passed]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the server exited ({proc.returncode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.2)


def _start_reference(
    children: Children, redis_url: str, namespace: str, workers: int, impl: str
) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [
        sys.executable, "-m", "authconform.cli", "serve",
        "--backend", redis_url, "--namespace", namespace,
        "--host", "127.0.0.1", "--port", "0", "--workers", str(workers),
        "--mcp-impl", impl, "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = children.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if "listening on " not in line:
        children.stop(proc)
        raise RuntimeError(f"authconform serve did not start (said {line!r})")
    base = line.rsplit(" ", 1)[1]
    _wait_http(base + "/.well-known/oauth-authorization-server", proc)
    return proc, base


def _start_floor(
    children: Children, redis_url: str, key: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_loopback_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "authconform.perf.server_bench:floor_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--no-server-header",
    ]  # fmt: skip
    env = {**os.environ, "AUTHCONFORM_FLOOR_REDIS_URL": redis_url, FLOOR_KEY_ENV: key}
    proc = children.start(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_http(base + "/floor", proc)
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
    children: Children,
    locustfile: Path,
    host: str,
    kind: str,
    token: str,
    tag: str,
    gates: tuple[Path, str | None],
    args: argparse.Namespace,
    out_dir: Path,
    protocol: str = "2025-06-18",
) -> dict[str, Any]:
    """One bounded headless Locust run: its report (final figures, gate results)."""
    prefix = out_dir / tag
    gates_file, gate_set = gates
    report = out_dir / f"gates-{tag}.json"
    report.unlink(missing_ok=True)  # a report left by an earlier run must not count
    cmd = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(args.users), "-r", str(args.users), "--run-time", f"{args.duration}s",
        "--host", host, "--only-summary", "--stop-timeout", "2",
        "--json-file", str(prefix), "--csv", str(prefix),
        "--bench-kind", kind, "--bench-protocol", protocol,
        "--gates-file", str(gates_file), "--gates-report", str(report),
        "--loglevel", "WARNING",
    ]  # fmt: skip
    if gate_set:
        cmd += ["--gates", gate_set]
    if args.locust_processes > 1:
        cmd += ["--processes", str(args.locust_processes)]
    env = {**os.environ, "AUTHCONFORM_BENCH_TOKEN": token}
    log_path = out_dir / f"locust-{tag}.log"
    with log_path.open("wb") as log:
        proc = children.start(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            code = proc.wait(timeout=args.duration + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"locust ({tag}) did not finish; see {log_path}") from None
        finally:
            children.stop(proc)
    if code not in (0, 1) or not report.exists():
        tail = log_path.read_text(errors="replace")[-800:]
        raise RuntimeError(f"locust ({tag}) exited {code} without its report: {tail}")
    return dict(json.loads(report.read_text()))


def _result(target: str, workers: int, report: dict[str, Any]) -> Result:
    observed = report["observed"]
    return Result(
        target=target,
        workers=workers,
        requests=int(report["requests"]),
        failures=int(report["failures"]),
        rps=round(float(observed["rps"]), 1),
        p50_ms=float(observed["p50"]),
        p99_ms=float(observed["p99"]),
        gate_set=report["gate_set"],
        gates=list(report["gates"]),
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authconform bench server",
        description="Reference server hot path (authenticated MCP tools/call over redis) "
        "against a bare Starlette endpoint doing one Redis GET; the gates decide the exit "
        "status.",
        epilog="exit status: 0 every gate met, 1 a gate breached, 2 usage error, 3 the "
        "benchmark could not run, 130/143 interrupted (SIGINT/SIGTERM)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="a loopback Redis")
    p.add_argument(
        "--namespace",
        default=None,
        help="namespace of the run's keys (default: a fresh ac_bench_<random>); it must be "
        "empty at the start and is dropped at the end",
    )
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
        "--gates",
        metavar="FILE",
        default=None,
        help="gates file (TOML): set hot_path gates the reference server runs, set floor "
        "(optional) the floor runs (default: the shipped authconform/loadtests/gates.toml)",
    )
    p.add_argument(
        "--aim",
        type=float,
        default=2.0,
        help="PASS when floor req/s / hot-path req/s <= AIM (informational, not a gate)",
    )
    p.add_argument("--duration", type=int, default=15, help="seconds of load per run")
    p.add_argument("--users", type=int, default=32, help="concurrent Locust users")
    p.add_argument("--locust-processes", type=int, default=1, help="Locust --processes")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=os.path.join("reports", "bench"),
        help="report directory (default: reports/bench under the current directory)",
    )
    return p


def _redact(url: str) -> str:
    import re

    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def _namespace_is_empty(redis_url: str, namespace: str) -> bool:
    client = _redis(redis_url)
    try:
        return next(client.scan_iter(match=f"ac:{{{namespace}}}:*", count=1000), None) is None
    finally:
        client.close()


def _set_floor_key(redis_url: str, key: str, ttl: int) -> None:
    """The value the floor reads; its TTL outlives the run only if the bench is SIGKILLed."""
    client = _redis(redis_url)
    try:
        client.set(key, "x" * 64, ex=ttl)
    finally:
        client.close()


def _cleanup(redis_url: str, namespace: str) -> None:
    """Drop what the bench created: its namespace, floor key included; nothing else."""
    import asyncio

    from authconform.server.cli import backend_from_spec

    async def drop() -> None:
        backend = backend_from_spec(redis_url, namespace)
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()

    asyncio.run(drop())
    client = _redis(redis_url)
    try:
        client.delete(floor_key(namespace))
    finally:
        client.close()


def _measure(
    args: argparse.Namespace,
    children: Children,
    locustfile: Path,
    gates: tuple[Path, str | None, str | None],
    namespace: str,
    out_dir: Path,
) -> list[Result]:
    gates_file, hot_set, floor_set = gates
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    key = floor_key(namespace)
    results: list[Result] = []
    for workers in worker_counts:
        # the floor first, then each implementation: one run, same machine state
        _set_floor_key(args.redis_url, key, args.duration + 600)
        proc, base = _start_floor(children, args.redis_url, key, workers)
        _progress(f"floor, {workers} worker(s), at {base}")
        try:
            report = _locust(
                children, locustfile, base, "floor", "", f"floor-w{workers}",
                (gates_file, floor_set), args, out_dir,
            )  # fmt: skip
            results.append(_result("floor (1 Redis GET)", workers, report))
        finally:
            children.stop(proc)
        for impl in impls:
            proc, base = _start_reference(children, args.redis_url, namespace, workers, impl)
            _progress(f"reference server ({impl}), {workers} worker(s), at {base}")
            try:
                token = _token(base)
                for protocol in protocols:
                    tag = f"hot-w{workers}-{impl}-{protocol}"
                    report = _locust(
                        children, locustfile, base, "mcp", token, tag,
                        (gates_file, hot_set), args, out_dir, protocol,
                    )  # fmt: skip
                    target = f"tools/call {impl} {protocol}"
                    results.append(_result(target, workers, report))
            finally:
                children.stop(proc)
    return results


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _usage(message: str) -> int:
    print(f"authconform bench server: {message}", file=sys.stderr)
    return EXIT_USAGE


def _gate_sets(path: Path) -> tuple[str, str | None]:
    """Validate the gates file; ``hot_path`` is required, ``floor`` optional."""
    load_gate_set(path, "hot_path")
    try:
        load_gate_set(path, "floor")
    except ValueError as exc:
        if "no gate set 'floor'" not in str(exc):
            raise
        return "hot_path", None
    return "hot_path", "floor"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status says whether every gate was met (see --help)."""
    import tomllib

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    host = urlparse(args.redis_url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not args.redis_url.startswith("unix"):
        return _usage("only a loopback Redis is allowed (--redis-url)")
    try:
        worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        return _usage("--workers takes numbers, e.g. 1,4")
    if not worker_counts or min(worker_counts) < 1:
        return _usage("--workers takes numbers >= 1, e.g. 1,4")
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if not impls or any(i not in ("lean", "sdk") for i in impls):
        return _usage("--impls takes lean and/or sdk")
    if args.duration < 1 or args.users < 1 or args.locust_processes < 1:
        return _usage("--duration, --users and --locust-processes take numbers >= 1")
    namespace = args.namespace or "ac_bench_" + secrets.token_hex(5)
    from authconform.contract._validate import check_namespace
    from authconform.errors import InvalidArgument

    try:
        check_namespace(namespace)
    except InvalidArgument as exc:
        return _usage(f"--namespace: {exc}")
    shipped = importlib.resources.files(LOADTESTS)
    with contextlib.ExitStack() as stack:
        gates_file = (
            Path(args.gates)
            if args.gates
            else stack.enter_context(importlib.resources.as_file(shipped / "gates.toml"))
        )
        try:
            hot_set, floor_set = _gate_sets(gates_file)
        except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
            return _usage(f"--gates {gates_file}: {exc}")
        locustfile = stack.enter_context(importlib.resources.as_file(shipped / "locustfile.py"))
        out_dir = Path(args.out)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _usage(f"--out {out_dir}: {exc.strerror}")
        return _run(args, locustfile, (gates_file, hot_set, floor_set), namespace, out_dir)
    return EXIT_FAILED  # unreachable; the ExitStack does not swallow exceptions


def _run(
    args: argparse.Namespace,
    locustfile: Path,
    gates: tuple[Path, str | None, str | None],
    namespace: str,
    out_dir: Path,
) -> int:
    import redis

    children = Children()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    results: list[Result] = []
    code = 0
    created = False
    try:
        for sig in handlers:
            signal.signal(sig, _interrupt)
        if not _namespace_is_empty(args.redis_url, namespace):
            return _usage(
                f"namespace {namespace!r} already holds keys in {_redact(args.redis_url)}; "
                "the bench drops its namespace at the end: give a fresh one"
            )
        created = True
        _progress(f"namespace {namespace}, gates {gates[0]}, reports in {out_dir}")
        results = _measure(args, children, locustfile, gates, namespace, out_dir)
    except Interrupted as exc:
        print(f"authconform bench server: interrupted ({exc}); stopping", file=sys.stderr)
        code = exc.code
    except redis.RedisError as exc:
        print(
            f"authconform bench server: Redis at {_redact(args.redis_url)}: {exc} (--redis-url)",
            file=sys.stderr,
        )
        code = EXIT_FAILED
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"authconform bench server: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    finally:
        # the cleanup is bounded (grace periods, socket timeouts): let it finish
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            children.stop()
            if created:
                _cleanup(args.redis_url, namespace)
        except (redis.RedisError, OSError) as exc:
            print(
                f"authconform bench server: cleanup of namespace {namespace!r} failed: {exc}",
                file=sys.stderr,
            )
            code = code or EXIT_FAILED
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    if code:
        return code
    return _report(args, results, gates, out_dir)


def _report(
    args: argparse.Namespace,
    results: list[Result],
    gates: tuple[Path, str | None, str | None],
    out_dir: Path,
) -> int:
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

    gates_file = gates[0]
    gated = [r for r in results if r.gate_set]
    breached = [(r, b) for r in gated for b in r.breaches]
    for res, breach in breached:
        print(f"{describe(breach, res.gate_set or '')}  [{res.target}, {res.workers} worker(s)]")
    runs = len({id(r) for r, _ in breached})
    if breached:
        print(f"gates: {len(breached)} breached in {runs} of {len(gated)} runs ({gates_file})")
    else:
        count = sum(len(r.gates) for r in gated)
        print(f"gates: all {count} met over {len(gated)} runs ({gates_file})")
    path = out_dir / "server_bench.json"
    path.write_text(
        json.dumps(
            {
                "schema_version": 2,
                "redis_url": _redact(args.redis_url),
                "duration_s": args.duration,
                "users": args.users,
                "locust_processes": args.locust_processes,
                "aim_ratio": args.aim,
                "gates_file": str(gates_file),
                "gates_passed": not breached,
                "results": summary,
                "notes": notes,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")
    return EXIT_BREACH if breached else 0


if __name__ == "__main__":
    raise SystemExit(main())
