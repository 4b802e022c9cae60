"""Storage latency benchmark: ``authconform bench storage --backend memory,redis ...``.

For each backend and operation it reports p50 and p99 latency in microseconds and the ratio
of the operation's p50 to the raw store round trip measured in the same loop:

==========  ===========================================================================
backend     raw round trip
==========  ===========================================================================
memory      a dict lookup behind a ``threading.Lock`` (awaited like an operation)
sqlite      ``SELECT 1`` on the same database file (sqlite3, one connection)
redis       ``EVALSHA`` of ``return 1`` on the backend's own redis-py asyncio client
fakeredis   ``EVALSHA`` of ``return 1`` on the backend's own fakeredis client
postgres    ``SELECT 1`` over a psycopg async connection (autocommit)
other       ``health()`` of the backend itself
==========  ===========================================================================

How it measures: calls are sequential on one connection (latency, not throughput); each
iteration times one operation call and one raw round trip, alternating which goes first,
so a noisy shared machine slows both alike; per-iteration setup (e.g. storing the code a
``consume_code`` redeems) runs outside the timed region; a warm-up precedes the samples;
each operation stops after ``--iterations`` samples or ``--max-seconds`` of wall time.
Every result is checked (a ``consume_code`` must return CONSUMED), so an error path is
never what gets timed.

The backend runs in a fresh namespace ``ac_bench_<random>`` that is dropped at the end (never
a FLUSH). The aims of issue 2 (storage foundation) are printed as PASS/MISS; they do not change
the exit code, which is 1 when a backend could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authconform.contract import (
    AccessTokenRecord,
    AttemptResult,
    AttemptStatus,
    BackendSettings,
    ChallengeRecord,
    CodeRecord,
    ConsumeResult,
    ConsumeStatus,
    RateLimitResult,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SessionRecord,
    StorageBackend,
)
from authconform.errors import AuthconformError, Conflict, InvalidArgument, StorageUnavailable

__all__ = ["AIMS", "OPERATIONS", "main", "run"]

DEFAULT_ITERATIONS = 2000
DEFAULT_MAX_SECONDS = 10.0
SCHEMA_VERSION = 1

OPERATIONS: tuple[str, ...] = (
    "put_code",
    "get_code",
    "consume_code",
    "put_access_token",
    "get_access_token",
    "rotate_refresh_token",
    "hit",
    "create_session",
    "get_session",
    "attempt_challenge",
)

RAW_LABELS: dict[str, str] = {
    "memory": "dict lookup behind threading.Lock",
    "sqlite": "SELECT 1 on the same file (sqlite3)",
    "redis": "EVALSHA 'return 1' (same client)",
    "fakeredis": "EVALSHA 'return 1' (same fakeredis)",
    "postgres": "SELECT 1 (psycopg async, autocommit)",
}

# Record templates; only the ids that must be unique change per iteration.
_CLIENT = "bench-client"
_SUBJECT = "bench-user"
_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B
_REDIRECT = "http://127.0.0.1:9/callback"
_RESOURCE = "http://127.0.0.1:8000/mcp"
_ANSWER = "246810"


class BenchError(AuthconformError):
    """An operation returned something other than its success outcome, or setup failed."""


@dataclass(frozen=True)
class Case:
    """One benchmarked operation: untimed ``prepare(i)``, timed ``run(arg)``, untimed ``ok``."""

    name: str
    prepare: Callable[[int], Awaitable[Any]]
    run: Callable[[Any], Awaitable[Any]]
    ok: Callable[[Any], bool]


@dataclass
class Stats:
    """Latency samples of one series, in nanoseconds."""

    samples: list[int] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile in microseconds (NaN without samples)."""
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1] / 1000.0

    def mean(self) -> float:
        """Mean in microseconds (NaN without samples)."""
        return sum(self.samples) / len(self.samples) / 1000.0 if self.samples else math.nan


@dataclass
class OpResult:
    """Figures of one operation on one backend."""

    name: str
    op: Stats = field(default_factory=Stats)
    raw: Stats = field(default_factory=Stats)
    seconds: float = 0.0
    capped: bool = False
    error: str | None = None

    @property
    def ratio(self) -> float:
        """p50 of the operation over p50 of the raw round trip measured alongside it."""
        raw = self.raw.quantile(0.5)
        if not raw or math.isnan(raw):
            return math.nan
        return self.op.quantile(0.5) / raw

    def to_json(self) -> dict[str, Any]:
        """Plain figures for the JSON report."""
        return {
            "n": len(self.op.samples),
            "p50_us": _num(self.op.quantile(0.5)),
            "p99_us": _num(self.op.quantile(0.99)),
            "mean_us": _num(self.op.mean()),
            "raw_p50_us": _num(self.raw.quantile(0.5)),
            "raw_p99_us": _num(self.raw.quantile(0.99)),
            "ratio": _num(self.ratio),
            "seconds": round(self.seconds, 3),
            "time_capped": self.capped,
            "error": self.error,
        }


@dataclass
class BackendResult:
    """Everything measured for one backend, or why it could not be measured."""

    name: str
    raw_label: str = ""
    ops: list[OpResult] = field(default_factory=list)
    error: str | None = None
    cleanup_error: str | None = None

    @property
    def failed(self) -> bool:
        """True if the backend or any of its operations could not be measured."""
        return self.error is not None or any(o.error for o in self.ops)

    def raw(self) -> Stats:
        """Every raw round trip sample of the run, pooled."""
        return Stats([s for o in self.ops for s in o.raw.samples])

    def op(self, name: str) -> OpResult | None:
        """The result of one operation, if measured."""
        return next((o for o in self.ops if o.name == name and not o.error), None)

    def to_json(self) -> dict[str, Any]:
        """Plain figures for the JSON report."""
        raw = self.raw()
        return {
            "status": "failed" if self.failed else "ok",
            "error": self.error,
            "cleanup_error": self.cleanup_error,
            "raw": {
                "what": self.raw_label,
                "n": len(raw.samples),
                "p50_us": _num(raw.quantile(0.5)),
                "p99_us": _num(raw.quantile(0.99)),
            },
            "operations": {o.name: o.to_json() for o in self.ops},
        }


@dataclass(frozen=True)
class Aim:
    """A target from the issue, evaluated on the figures of a run."""

    text: str
    evaluate: Callable[[dict[str, BackendResult]], tuple[str, str]]


def _aim_redis_consume(results: dict[str, BackendResult]) -> tuple[str, str]:
    backend = results.get("redis")
    op = backend.op("consume_code") if backend else None
    if op is None:
        return "NOT RUN", "redis consume_code was not measured"
    verdict = "PASS" if op.ratio <= 1.5 else "MISS"
    return verdict, (
        f"consume_code p50 {op.op.quantile(0.5):.1f} us = {op.ratio:.2f}x "
        f"EVALSHA p50 {op.raw.quantile(0.5):.1f} us"
    )


def _aim_memory_20us(results: dict[str, BackendResult]) -> tuple[str, str]:
    backend = results.get("memory")
    ops = [o for o in backend.ops if not o.error] if backend else []
    if not ops:
        return "NOT RUN", "memory was not measured"
    worst = max(ops, key=lambda o: o.op.quantile(0.5))
    p50 = worst.op.quantile(0.5)
    verdict = "PASS" if p50 <= 20.0 else "MISS"
    return verdict, f"slowest p50: {worst.name} {p50:.1f} us over {len(ops)} operations"


AIMS: tuple[Aim, ...] = (
    Aim("redis consume_code p50 <= 1.5x bare EVALSHA p50", _aim_redis_consume),
    Aim("memory operations p50 <= 20 us", _aim_memory_20us),
)


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _token() -> str:
    return secrets.token_urlsafe(32)


def _redact_url(url: str) -> str:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


# cases --------------------------------------------------------------------------------------


async def build_cases(backend: StorageBackend) -> list[Case]:
    """The operations to time, with their one-time setup done (outside any timed region)."""
    b = backend

    def code_record(i: int) -> CodeRecord:
        return CodeRecord(
            client_id=_CLIENT,
            subject=_SUBJECT,
            grant_id=f"grant-code-{i}",
            redirect_uri=_REDIRECT,
            scopes=("mcp",),
            code_challenge=_CHALLENGE,
            resource=_RESOURCE,
        )

    def access_record(i: int) -> AccessTokenRecord:
        return AccessTokenRecord(
            client_id=_CLIENT,
            subject=_SUBJECT,
            grant_id=f"grant-at-{i}",
            scopes=("mcp",),
            resource=_RESOURCE,
        )

    def refresh_record(i: int) -> RefreshTokenRecord:
        return RefreshTokenRecord(
            client_id=_CLIENT,
            subject=_SUBJECT,
            grant_id=f"grant-rt-{i}",
            scopes=("mcp",),
            resource=_RESOURCE,
        )

    read_code, read_token, read_session = _token(), _token(), _token()
    await b.put_code(read_code, code_record(-1), 3600)
    await b.put_access_token(read_token, access_record(-1), 3600)
    await b.create_session(read_session, SessionRecord(subject=_SUBJECT), 3600, 86400)

    async def fresh(_: int) -> str:
        return _token()

    async def same_code(_: int) -> str:
        return read_code

    async def same_token(_: int) -> str:
        return read_token

    async def same_session(_: int) -> str:
        return read_session

    async def stored_code(i: int) -> str:
        code = _token()
        await b.put_code(code, code_record(i), 600)
        return code

    async def stored_refresh(i: int) -> tuple[str, str]:
        old = _token()
        await b.put_refresh_token(old, refresh_record(i), 86400)
        return old, _token()

    async def stored_challenge(i: int) -> str:
        cid = _token()
        await b.put_challenge(cid, _ANSWER, ChallengeRecord(subject=_SUBJECT, max_attempts=3), 300)
        return cid

    async def session_args(i: int) -> tuple[str, SessionRecord]:
        return _token(), SessionRecord(subject=f"bench-user-{i}")

    async def code_args(i: int) -> tuple[str, CodeRecord]:
        return _token(), code_record(i)

    async def access_args(i: int) -> tuple[str, AccessTokenRecord]:
        return _token(), access_record(i)

    def status_is(expected: object) -> Callable[[Any], bool]:
        return lambda result: getattr(result, "status", None) is expected

    def present(result: Any) -> bool:
        return result is not None

    cases = [
        Case("put_code", code_args, lambda a: b.put_code(a[0], a[1], 600), present),
        Case("get_code", same_code, b.get_code, present),
        Case(
            "consume_code",
            stored_code,
            b.consume_code,
            lambda r: isinstance(r, ConsumeResult) and r.status is ConsumeStatus.CONSUMED,
        ),
        Case(
            "put_access_token",
            access_args,
            lambda a: b.put_access_token(a[0], a[1], 3600),
            present,
        ),
        Case("get_access_token", same_token, b.get_access_token, present),
        Case(
            "rotate_refresh_token",
            stored_refresh,
            lambda a: b.rotate_refresh_token(a[0], a[1], 86400),
            lambda r: isinstance(r, RotateResult) and r.status is RotateStatus.ROTATED,
        ),
        Case(
            "hit",
            fresh,
            lambda _: b.hit("bench-key", 10**9, 60.0),
            lambda r: isinstance(r, RateLimitResult) and r.allowed,
        ),
        Case(
            "create_session",
            session_args,
            lambda a: b.create_session(a[0], a[1], 3600, 86400),
            present,
        ),
        Case("get_session", same_session, b.get_session, present),
        Case(
            "attempt_challenge",
            stored_challenge,
            lambda cid: b.attempt_challenge(cid, _ANSWER),
            lambda r: isinstance(r, AttemptResult) and r.status is AttemptStatus.SUCCESS,
        ),
    ]
    assert [c.name for c in cases] == list(OPERATIONS)
    return cases


# raw round trips ------------------------------------------------------------------------------

RawCall = Callable[[], Awaitable[Any]]


@dataclass
class Raw:
    """The raw store round trip of a backend and how to release it."""

    label: str
    call: RawCall
    close: Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


def _redis_client_of(backend: object) -> Any | None:
    """The redis-py (or fakeredis) asyncio client a redis backend uses, if it exposes one."""
    for attr in ("client", "_client", "redis", "_redis", "_r"):
        candidate = getattr(backend, attr, None)
        if candidate is not None and hasattr(candidate, "evalsha"):
            return candidate
    return None


async def _evalsha_raw(client: Any, label: str, close: Callable[[], Awaitable[None]]) -> Raw:
    sha = await client.script_load("return 1")

    async def call() -> Any:
        return await client.evalsha(sha, 0)

    return Raw(label, call, close)


async def make_raw(name: str, backend: StorageBackend, settings: BackendSettings) -> Raw:
    """Open the raw round trip for ``name`` next to ``backend`` (raises if the store is down)."""
    if name == "memory":
        lock = threading.Lock()
        table = {"key": "value"}

        async def lookup() -> Any:
            with lock:
                return table.get("key")

        return Raw(RAW_LABELS[name], lookup, _noop)
    if name == "sqlite":
        conn = sqlite3.connect(settings.sqlite_path, timeout=settings.operation_timeout)

        async def select_sqlite() -> Any:
            return conn.execute("SELECT 1").fetchone()

        async def close_sqlite() -> None:
            conn.close()

        return Raw(RAW_LABELS[name], select_sqlite, close_sqlite)
    if name in ("redis", "fakeredis"):
        client = _redis_client_of(backend)
        if client is not None:
            return await _evalsha_raw(client, RAW_LABELS[name], _noop)
        if name == "fakeredis":
            raise BenchError(
                "the fakeredis backend exposes no client (looked for .client/._client/.redis), "
                "so its own EVALSHA cannot be measured"
            )
        import redis.asyncio as aioredis

        own = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.operation_timeout,
        )

        async def close_redis() -> None:
            await own.aclose()

        return await _evalsha_raw(own, "EVALSHA 'return 1' (own client, same URL)", close_redis)
    if name == "postgres":
        import psycopg

        pg = await psycopg.AsyncConnection.connect(
            settings.postgres_url,
            autocommit=True,
            connect_timeout=max(1, math.ceil(settings.connect_timeout)),
        )

        async def select_pg() -> Any:
            cur = await pg.execute("SELECT 1")
            return await cur.fetchone()

        async def close_pg() -> None:
            await pg.close()

        return Raw(RAW_LABELS[name], select_pg, close_pg)
    return Raw("health() of the backend", backend.health, _noop)


# measurement ----------------------------------------------------------------------------------


async def measure(
    case: Case, raw: RawCall, iterations: int, max_seconds: float, warmup: int
) -> OpResult:
    """Time ``case`` and the raw round trip alternately, sequentially, on one connection."""
    result = OpResult(case.name)
    clock = time.perf_counter_ns
    gc.collect()
    started = time.perf_counter()
    warm_deadline = started + max_seconds * 0.2
    deadline = started + max_seconds
    i = 0
    measured = 0
    while measured < iterations:
        arg = await case.prepare(i)
        if i % 2:
            t0 = clock()
            await raw()
            t1 = clock()
            out = await case.run(arg)
            t2 = clock()
            op_ns, raw_ns = t2 - t1, t1 - t0
        else:
            t0 = clock()
            out = await case.run(arg)
            t1 = clock()
            await raw()
            t2 = clock()
            op_ns, raw_ns = t1 - t0, t2 - t1
        if not case.ok(out):
            shown = getattr(out, "status", type(out).__name__)
            raise BenchError(f"{case.name} returned {shown} (expected its success outcome)")
        i += 1
        now = time.perf_counter()
        if i <= warmup and now < warm_deadline:
            continue
        result.op.samples.append(op_ns)
        result.raw.samples.append(raw_ns)
        measured += 1
        if now >= deadline:
            result.capped = measured < iterations
            break
    result.seconds = time.perf_counter() - started
    return result


def _store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store is unreachable or failed" (drivers imported if present)."""
    errors: list[type[BaseException]] = [StorageUnavailable, OSError, sqlite3.Error]
    with contextlib.suppress(ImportError):
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.Error)
    return tuple(errors)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, AuthconformError) and text:
        return text  # our own messages already say what happened
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unavailable_hint(name: str, settings: BackendSettings) -> str:
    if name == "redis":
        return f" (probed {_redact_url(settings.redis_url)}; start Redis or pass --redis-url)"
    if name == "postgres":
        return (
            f" (probed {_redact_url(settings.postgres_url)}; start PostgreSQL or pass "
            "--postgres-url)"
        )
    if name == "sqlite":
        return f" (file {settings.sqlite_path})"
    return ""


async def bench_backend(
    name: str,
    settings: BackendSettings,
    iterations: int,
    max_seconds: float,
    operations: Sequence[str],
    progress: Callable[[str], None],
) -> BackendResult:
    """Measure one backend; never raises for an unreachable store (the result says why)."""
    from authconform.backends._registry import resolve

    result = BackendResult(name)
    store_errors = _store_errors()
    cleanup_errors: tuple[type[BaseException], ...] = (*store_errors, AuthconformError)
    backend: StorageBackend | None = None
    raw: Raw | None = None
    wrote = False
    try:
        spec = resolve(name)
        backend = spec.factory(settings)
        health = await backend.health()
        if not health.ok:
            detail = f": {health.detail}" if health.detail else ""
            raise StorageUnavailable(f"health check failed{detail}")
        builtin = spec.source == "authconform (built-in)"
        raw = await make_raw(spec.name if builtin else "", backend, settings)
        result.raw_label = raw.label
        wrote = True
        cases = [c for c in await build_cases(backend) if c.name in operations]
        warmup = min(200, max(20, iterations // 10))
        for case in cases:
            progress(f"{name}: {case.name}")
            try:
                result.ops.append(await measure(case, raw.call, iterations, max_seconds, warmup))
            except store_errors:
                raise  # the store went away: stop this backend
            except (BenchError, Conflict, InvalidArgument) as exc:
                result.ops.append(OpResult(case.name, error=_describe(exc)))
            except Exception as exc:  # a bug in the backend: show it, go on with the next op
                traceback.print_exc(file=sys.stderr)
                result.ops.append(OpResult(case.name, error=f"crashed: {_describe(exc)}"))
    except store_errors as exc:
        result.error = f"unavailable: {_describe(exc)}{_unavailable_hint(name, settings)}"
    except AuthconformError as exc:  # unknown backend, a setup that the backend refused
        result.error = f"error: {_describe(exc)}"
    except ModuleNotFoundError as exc:
        from authconform._extras import extra_for, sentence

        extra = extra_for(exc.name)
        if extra is None:
            traceback.print_exc(file=sys.stderr)
            result.error = f"crashed: {_describe(exc)}"
        else:  # one line, no traceback: the backend's extra is not installed
            result.error = "unavailable: " + sentence(f"backend {name}", [str(exc.name)], [extra])
    except Exception as exc:  # a bug: show it, keep going with the other backends
        traceback.print_exc(file=sys.stderr)
        result.error = f"crashed: {_describe(exc)}"
    finally:
        if raw is not None:
            with contextlib.suppress(*cleanup_errors):
                await raw.close()
        if backend is not None:
            try:
                if wrote:
                    await backend.drop_namespace()
            except cleanup_errors as exc:
                result.cleanup_error = (
                    f"could not drop namespace {settings.namespace}: {_describe(exc)}"
                )
            with contextlib.suppress(*cleanup_errors):
                await backend.close()
    return result


# output ---------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def render_table(results: Sequence[BackendResult]) -> str:
    """A plain aligned text table of every figure."""
    header = ("backend", "operation", "n", "p50 us", "p99 us", "raw p50 us", "ratio")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for res in results:
        if res.error:
            notes.append(f"{res.name}: {res.error}")
        if res.cleanup_error:
            notes.append(f"{res.name}: cleanup: {res.cleanup_error}")
        if not res.ops:
            continue
        raw = res.raw()
        rows.append(
            (
                res.name,
                f"raw: {res.raw_label}",
                str(len(raw.samples)),
                _fmt(raw.quantile(0.5)),
                _fmt(raw.quantile(0.99)),
                "",
                "",
            )
        )
        for op in res.ops:
            if op.error:
                rows.append((res.name, op.name, "0", "error", "", "", ""))
                notes.append(f"{res.name} {op.name}: error: {op.error}")
                continue
            rows.append(
                (
                    res.name,
                    op.name + (" (time-capped)" if op.capped else ""),
                    str(len(op.op.samples)),
                    _fmt(op.op.quantile(0.5)),
                    _fmt(op.op.quantile(0.99)),
                    _fmt(op.raw.quantile(0.5)),
                    _fmt(op.ratio, 2) + "x",
                )
            )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    left = {0, 1}

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])] if rows else []
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            out.append("")
        out.append(line(row))
        previous = row[0]
    out.extend(notes)
    return "\n".join(out)


def evaluate_aims(results: Sequence[BackendResult]) -> list[dict[str, str]]:
    """Each aim with its verdict (PASS, MISS or NOT RUN) and the figures behind it."""
    by_name = {r.name: r for r in results}
    out = []
    for aim in AIMS:
        verdict, detail = aim.evaluate(by_name)
        out.append({"aim": aim.text, "verdict": verdict, "detail": detail})
    return out


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("authconform", "redis", "fakeredis", "psycopg"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    out["sqlite"] = sqlite3.sqlite_version
    return out


# entry points ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _sqlite_file(given: str | None) -> Iterator[str]:
    """The sqlite file: the one given, or a fresh temporary one removed afterwards."""
    if given:
        yield given
        return
    folder = tempfile.mkdtemp(prefix="ac_bench_")
    try:
        yield str(Path(folder) / "bench.sqlite3")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run(
    backends: Sequence[str],
    *,
    iterations: int = DEFAULT_ITERATIONS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    operations: Sequence[str] = OPERATIONS,
    redis_url: str | None = None,
    postgres_url: str | None = None,
    sqlite_path: str = "",
    progress: Callable[[str], None] = lambda _: None,
) -> list[BackendResult]:
    """Benchmark each backend in turn, each in its own fresh namespace."""
    defaults = BackendSettings()
    results = []
    for name in backends:
        settings = BackendSettings(
            namespace=f"ac_bench_{secrets.token_hex(6)}",
            redis_url=redis_url or defaults.redis_url,
            postgres_url=postgres_url or defaults.postgres_url,
            sqlite_path=sqlite_path or defaults.sqlite_path,
        )
        progress(f"{name}: connecting (namespace {settings.namespace})")
        results.append(
            await bench_backend(name, settings, iterations, max_seconds, operations, progress)
        )
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authconform bench storage",
        description=(
            "Latency of each storage operation (p50/p99, microseconds) and its ratio to the "
            "raw store round trip measured alternately in the same loop."
        ),
    )
    parser.add_argument(
        "--backend",
        action="append",
        metavar="NAMES",
        help="comma-separated backend names (memory, sqlite, fakeredis, redis, postgres, or a "
        "plug-in name); repeatable. Default: $AUTHCONFORM_BACKEND or memory",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"timed calls per operation (default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"wall-time cap per operation, setup included (default {DEFAULT_MAX_SECONDS:g})",
    )
    parser.add_argument(
        "--operations",
        metavar="NAMES",
        help="comma-separated subset of: " + ", ".join(OPERATIONS),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AUTHCONFORM_REDIS_URL"),
        help="Redis URL (default $AUTHCONFORM_REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AUTHCONFORM_POSTGRES_URL"),
        help="PostgreSQL URL (default $AUTHCONFORM_POSTGRES_URL or "
        "postgresql://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument(
        "--sqlite-path",
        help="sqlite database file (default: a fresh temporary file, removed afterwards)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _split(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            if item.strip() and item.strip() not in out:
                out.append(item.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    """``authconform bench storage ...``; returns 1 if any backend failed, 2 on usage errors."""
    parser = _parser()
    args = parser.parse_args(argv)
    backends = _split(args.backend or [os.environ.get("AUTHCONFORM_BACKEND") or "memory"])
    if not backends:
        parser.error("--backend: no backend named")
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if not args.max_seconds > 0:
        parser.error("--max-seconds must be > 0")
    operations = _split([args.operations]) if args.operations else list(OPERATIONS)
    unknown = [op for op in operations if op not in OPERATIONS]
    if unknown:
        parser.error(f"--operations: unknown {', '.join(unknown)}; valid: {', '.join(OPERATIONS)}")

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"bench: {text}", file=sys.stderr, flush=True)

    started = time.time()
    load_before = _machine()["loadavg"]
    with _sqlite_file(args.sqlite_path) as sqlite_path:
        results = asyncio.run(
            run(
                backends,
                iterations=args.iterations,
                max_seconds=args.max_seconds,
                operations=operations,
                redis_url=args.redis_url,
                postgres_url=args.postgres_url,
                sqlite_path=sqlite_path,
                progress=progress,
            )
        )
    aims = evaluate_aims(results)
    machine = {**_machine(), "loadavg_before": load_before}
    print(
        f"storage latency, sequential calls on one connection: up to {args.iterations} "
        f"samples per operation (cap {args.max_seconds:g} s); python {machine['python']}, "
        f"{machine['cpus']} CPUs, load before/after {load_before[0]}/{machine['loadavg'][0]}"
    )
    print("ratio = p50 of the operation / p50 of the raw round trip timed alternately with it")
    print()
    print(render_table(results))
    print()
    print("aims (issue 2):")
    for aim in aims:
        print(f"  {aim['verdict']:7}  {aim['aim']}: {aim['detail']}")
    if args.json:
        report = {
            "schema_version": SCHEMA_VERSION,
            "kind": "storage",
            "started_at": started,
            "finished_at": time.time(),
            "settings": {
                "iterations": args.iterations,
                "max_seconds": args.max_seconds,
                "operations": operations,
                "redis_url": _redact_url(args.redis_url or BackendSettings().redis_url),
                "postgres_url": _redact_url(args.postgres_url or BackendSettings().postgres_url),
                "sqlite_path": args.sqlite_path or "(temporary file)",
            },
            "machine": machine,
            "versions": _versions(),
            "backends": {r.name: r.to_json() for r in results},
            "aims": aims,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
    failed = [r.name for r in results if r.failed]
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
