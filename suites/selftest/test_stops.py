"""However a live run over Redis stops, it leaves no process and no key behind.

Each case runs the live suite as a user would (``pytest --pyargs authconform.suites.live
--backend=redis``, two reference-server processes over the shared Redis, a namespace we
choose) in a subprocess tagged through its environment, stops it mid-way, and counts:

- processes whose environment carries the tag (the reference servers and their workers);
- Redis keys of the run's namespace family and its lease (``*{<ns>*``).

Stops: SIGTERM (what a CI cancel sends; before the fix, 2 orphaned servers and 27 keys),
SIGINT, a fixture that fails from the fourth check on (``-x``), a check that hangs on our
event loop until pytest-timeout (signal method) fails it, and SIGKILL, which runs no
cleanup at all: there the processes die with the run (parent-death signal), the keys
stay under the run's lease, ``authconform clean`` keeps them while the lease is live and
drops them once it has expired.

Cost: one live run per case, stopped after three checks (~10-15 s each on 2 cores).
Figures: ``reports/selftest/stops.json``.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.mutants.harness import REDIS_URL, REPO, service_unavailable

FIGURES = REPO / "reports" / "selftest" / "stops.json"


@pytest.fixture(scope="module")
def redis_client() -> Iterator[Any]:
    reason = service_unavailable("redis")
    if reason is not None:
        pytest.skip(reason)
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def _env(tag: str, **extra: str) -> dict[str, str]:
    drop = ("AUTHCONFORM_", "PYTEST_", "HYPOTHESIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["AC_STOP_TAG"] = tag
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def tagged_pids(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``AC_STOP_TAG=<tag>``."""
    needle = f"AC_STOP_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def run_keys(client: Any, namespace: str) -> list[str]:
    """Keys of the run's namespace family and its lease."""
    return sorted(client.scan_iter(match=f"*{{{namespace}*", count=1000))


def _wait_gone(tag: str, seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        pids = tagged_pids(tag)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def _lines(stream: Any, out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def run_live_and_stop(
    tmp: Path, namespace: str, tag: str, *, sig: int | None, after_passed: int = 3,
    args: tuple[str, ...] = (), env: dict[str, str] | None = None, limit: float = 240,
) -> tuple[int, str, dict[str, Any]]:
    """Run the live suite over redis; send ``sig`` after ``after_passed`` checks passed."""
    argv = [sys.executable, "-m", "pytest", "--pyargs", "authconform.suites.live",
            "--backend=redis", f"--authconform-namespace={namespace}", "-v",
            "-p", "no:cacheprovider", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=tmp, env=env or _env(tag), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    passed, sent_at, servers = 0, None, 0
    try:
        while True:
            remaining = limit - (time.monotonic() - started)
            if remaining <= 0:
                raise AssertionError("the run did not end in time:\n" + "".join(output[-30:]))
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                break
            output.append(line)
            if " PASSED" in line:
                passed += 1
            if passed >= after_passed and not servers:
                servers = len(tagged_pids(tag)) - 1  # the run itself carries the tag too
            if sig is not None and sent_at is None and passed >= after_passed:
                proc.send_signal(sig)
                sent_at = time.monotonic()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
    facts = {
        "checks_passed_before_stop": passed,
        "processes_before_stop": servers,
        "exit_code": proc.returncode,
        "seconds_to_exit_after_signal": (
            round(time.monotonic() - sent_at, 1) if sent_at is not None else None
        ),
    }
    return proc.returncode, "".join(output), facts


def _record(case: str, facts: dict[str, Any]) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[case] = facts
    FIGURES.write_text(json.dumps(data, indent=2) + "\n")


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


CASES = {
    "sigterm": {"sig": signal.SIGTERM, "rc": 2},
    "sigint": {"sig": signal.SIGINT, "rc": 2},
    "failing-fixture": {"sig": None, "rc": 1, "mode": "fixture", "args": ("-x",)},
    "timeout": {
        "sig": None, "rc": 1, "mode": "hang",
        "args": ("-x", "--timeout=8", "--timeout-method=signal"),
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_stopped_run_leaves_no_process_and_no_key(
    case: str, tmp_path: Path, redis_client: Any
) -> None:
    spec = CASES[case]
    if case == "timeout":
        pytest.importorskip("pytest_timeout", reason="unavailable: pytest-timeout (dev extra)")
    namespace = f"ac_stop_{secrets.token_hex(4)}"
    tag = secrets.token_hex(8)
    env = _env(tag, AC_STOPS_MODE=spec.get("mode", ""))
    args = ("-p", "fixtures.stops", *spec.get("args", ()))
    try:
        rc, out, facts = run_live_and_stop(
            tmp_path, namespace, tag, sig=spec["sig"], args=args, env=env
        )
        pids = _wait_gone(tag)
        keys = run_keys(redis_client, namespace)
        facts.update(processes_after=len(pids), keys_after=len(keys))
        _record(case, facts)
        assert facts["checks_passed_before_stop"] >= 3, _tail(out)
        assert rc == spec["rc"], f"exit code {rc}:\n{_tail(out)}"
        if case == "timeout":
            assert "Timeout" in out, _tail(out)
        if case == "sigterm":
            assert "KeyboardInterrupt: SIGTERM: authconform stops the run" in out, _tail(out)
        assert not pids, f"{len(pids)} processes of the run outlived it: {pids}\n{_tail(out)}"
        assert not keys, f"{len(keys)} keys of the run remain, e.g. {keys[:3]}\n{_tail(out)}"
    finally:
        for pid in tagged_pids(tag):
            os.kill(pid, signal.SIGKILL)
        for key in run_keys(redis_client, namespace):
            redis_client.delete(key)


def test_sigkill_leaves_no_process_and_clean_drops_the_keys_once_the_lease_expired(
    tmp_path: Path, redis_client: Any
) -> None:
    namespace = f"ac_kill_{secrets.token_hex(4)}"
    tag = secrets.token_hex(8)
    clean = [sys.executable, "-m", "authconform.cli", "clean", "--backend", "redis"]
    try:
        rc, out, facts = run_live_and_stop(tmp_path, namespace, tag, sig=signal.SIGKILL)
        assert rc == -signal.SIGKILL, _tail(out)
        pids = _wait_gone(tag)
        keys = run_keys(redis_client, namespace)
        lease = f"ac:lease:{{{namespace}}}"
        facts.update(processes_after=len(pids), keys_after_kill=len(keys))
        assert not pids, f"{len(pids)} processes outlived a SIGKILL of the run: {pids}"
        assert lease in keys, f"no lease for {namespace}: {keys[:5]}"

        kept = subprocess.run(clean, capture_output=True, text=True, timeout=60, check=False)
        assert kept.returncode == 0, kept.stderr
        assert f"{namespace}: lease live" in kept.stdout, kept.stdout
        assert run_keys(redis_client, namespace) == keys, "clean dropped a live lease's keys"

        record = json.loads(redis_client.get(lease))
        record["expires_at"] = time.time() - 1  # as if LEASE_TTL had passed
        redis_client.set(lease, json.dumps(record))
        dropped = subprocess.run(clean, capture_output=True, text=True, timeout=60, check=False)
        assert dropped.returncode == 0, dropped.stderr
        assert f"{namespace}: lease expired: dropped" in dropped.stdout, dropped.stdout
        left = run_keys(redis_client, namespace)
        facts["keys_after_clean"] = len(left)
        _record("sigkill", facts)
        assert not left, f"authconform clean left {len(left)} keys: {left[:3]}"
    finally:
        for pid in tagged_pids(tag):
            os.kill(pid, signal.SIGKILL)
        for key in run_keys(redis_client, namespace):
            redis_client.delete(key)
