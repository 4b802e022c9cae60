"""authconform.procs: providers, the fault proxy, and no orphans whatever ends a run.

- The container provider cannot run here (no Docker engine): its configuration is
  checked (pinned images, never ``latest``; the command lines it would run) and so is its
  skip reason; the local-binary provider runs the same checks for real.
- No orphans: a restart-suite run (PostgreSQL with its backends, the reference server)
  is ended by SIGKILL, SIGTERM and SIGINT; afterwards no process it started is left,
  counted through the process ledger (``AUTHCONFORM_PROC_LEDGER``).
- The explicit-URL provider: a run that names its store skips the restart checks unless
  ``--authconform-restart-cmd`` is given, and runs them with it.
- ``authconform serve --profile=production`` refuses a store that loses acknowledged writes.
- The fault proxy: RESP command parsing, injected errors, refusal and recovery.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from authconform.procs import (
    PROVIDER_ENV,
    Fault,
    FaultProxy,
    LocalRedis,
    Unavailable,
    docker_unavailable,
    images,
    leftover_pids,
    redis_commands,
    store_service,
)
from authconform.procs._containers import container_command
from fixtures.mutants.harness import REPO, clean_env, run_suite, service_unavailable


# -- the container provider, as far as it can be checked here ---------------------------------
def test_images_are_pinned_by_tag_never_latest() -> None:
    table = images()
    assert set(table) >= {"redis", "postgres"}
    for service, entry in table.items():
        name, _, tag = entry["image"].rpartition(":")
        assert name and tag and tag != "latest", f"{service}: {entry['image']}"
    for bad in ('[redis]\nimage = "redis:latest"\nport = 6379\n',
                '[redis]\nimage = "redis"\nport = 6379\n'):
        with pytest.raises(ValueError, match="pinned by a tag"):
            images(bad)


def test_container_command_lines_carry_the_store_settings() -> None:
    redis = container_command("redis", {"appendonly": "yes", "appendfsync": "always"})
    assert redis[0] == "redis-server"
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--appendfsync") + 1] == "always"
    pg = container_command("postgres", {"synchronous_commit": "off"})
    assert pg == ["postgres", "-c", "synchronous_commit=off"]


def test_without_a_docker_engine_the_container_provider_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = docker_unavailable()
    if reason is None:
        pytest.skip("not-applicable: a Docker engine answers here; the skip path is moot")
    assert reason.startswith("unavailable: no Docker engine answers at "), reason
    monkeypatch.setenv(PROVIDER_ENV, "container")
    expected = r"^unavailable: no redis could be started \(containers: "
    with pytest.raises(Unavailable, match=expected):
        store_service("redis")
    monkeypatch.setenv(PROVIDER_ENV, "local")
    service = store_service("redis")
    assert service.provider == "local"
    service.close()


# -- no orphans ----------------------------------------------------------------------------------
def _alive_sessions(ledger: Path) -> int:
    return len(leftover_pids(ledger))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_no_process_of_a_run_survives_its_end(tmp_path: Path, sig: int) -> None:
    """A run with PostgreSQL (postmaster and backends) and the reference server running is
    ended by ``sig``: every process it started is gone within 15 s."""
    if shutil.which("initdb") is None and not Path("/usr/lib/postgresql").is_dir():
        pytest.skip("unavailable: no PostgreSQL binaries (initdb) to start")
    ledger = tmp_path / "ledger"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHCONFORM_") and k != "PYTEST_ADDOPTS"}
    env["AUTHCONFORM_PROC_LEDGER"] = str(ledger)
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(REPO / "authconform/suites/restart"),
         "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-p", "no:cacheprovider",
         "-q", "--backend=postgres", "-k", "flow_survives"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        # postgres: postmaster + its children; then the server: wait for both to run
        while time.monotonic() < deadline:
            lines = ledger.read_text().splitlines() if ledger.exists() else []
            if any("serve" in line for line in lines) and _alive_sessions(ledger) >= 4:
                break
            if run.poll() is not None:
                pytest.fail(f"the run ended (rc {run.returncode}) before its processes ran")
            time.sleep(0.1)
        else:
            pytest.fail("the run did not start PostgreSQL and the server within 90 s")
        started = _alive_sessions(ledger)
        os.kill(run.pid, sig)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not end within 60 s of {signal.Signals(sig).name}")
        left: list[int] = []
        for _ in range(150):
            left = leftover_pids(ledger)
            if not left:
                break
            time.sleep(0.1)
        assert not left, (
            f"{len(left)} of the run's processes survive {signal.Signals(sig).name} of the run "
            f"(it had {started} running): pids {left}"
        )
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        for pid in leftover_pids(ledger):  # clean up after a failure: ours only
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for line in ledger.read_text().splitlines() if ledger.exists() else []:
            where = line.partition(" ")[2].strip()
            if where.startswith(tempfile.gettempdir() + "/authconform-"):  # a killed run's
                shutil.rmtree(where, ignore_errors=True)


# -- the explicit-URL provider -------------------------------------------------------------------
def test_a_named_store_or_live_target_is_restarted_only_with_a_restart_command(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store named by URL (--authconform-redis-url) and a live target (--server-url) are
    someone else's: their restart checks skip (disabled) without --authconform-restart-cmd
    and run with one (here a no-op: the shared store and the target are never touched)."""
    if (reason := service_unavailable("redis")) is not None:
        pytest.skip(reason)
    from authconform.procs import LocalServer

    clean_env(monkeypatch)
    store_check = "test_records_survive_a_graceful_restart_of_the_store"
    server_check = "test_a_flow_survives_a_server_restart_between_every_step"
    server = LocalServer(f"sqlite:///{tmp_path / 'live.sqlite3'}", "acselftest_live_r")
    try:
        server.start()
        args = ["--backend=redis", "--authconform-redis-url=redis://127.0.0.1:6379/0",
                f"--server-url={server.url}", "-k",
                "(survive_a_graceful and strict) or flow_survives"]
        without = run_suite(pytester, "restart", *args)
        with_cmd = run_suite(pytester, "restart", *args, "--authconform-restart-cmd=true")
    finally:
        server.close()
    for check in (store_check, server_check):
        (case, outcome), = without.cases(check).items()
        assert outcome == "skipped", without.summary()
        assert "disabled:" in without.messages[case], without.messages[case]
        assert "--authconform-restart-cmd" in without.messages[case], without.messages[case]
    assert with_cmd.by_check() == {store_check: "passed", server_check: "passed"}, (
        with_cmd.summary()
    )


# -- the reference server's production profile -----------------------------------------------
def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authconform.cli", "serve", "--port", "0", "--profile",
         "production", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )


def test_serve_refuses_production_on_a_store_that_loses_acknowledged_writes(
    tmp_path: Path,
) -> None:
    done = _serve("--backend", "memory")
    assert done.returncode == 2, done.stderr
    assert "refusing to start on a store that loses acknowledged writes" in done.stderr
    redis = LocalRedis({"appendonly": "yes", "appendfsync": "everysec"})
    try:
        redis.start()
        done = _serve("--backend", redis.url)
        assert done.returncode == 2 and "appendfsync everysec" in done.stderr, done.stderr
    finally:
        redis.close()
    done = _serve("--backend", f"sqlite:///{tmp_path / 'a.db'}")
    assert done.returncode == 2 and "synchronous NORMAL" in done.stderr, done.stderr
    evicting = LocalRedis({"appendonly": "yes", "appendfsync": "always",
                           "maxmemory-policy": "allkeys-lru"})
    try:
        evicting.start()
        done = _serve("--backend", evicting.url)
        assert done.returncode == 2 and "allkeys-lru evicts live grants" in done.stderr, (
            done.stderr
        )
    finally:
        evicting.close()


@pytest.mark.parametrize(
    ("durability", "loses", "evicts"),
    [
        ({"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"},
         False, False),
        ({"appendonly": "yes", "appendfsync": "everysec"}, True, False),
        ({"appendonly": "no", "save": "3600 1"}, True, False),
        ({"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "volatile-lru"},
         False, True),
        ({"synchronous_commit": "on", "fsync": "on", "full_page_writes": "on"}, False, False),
        ({"synchronous_commit": "off", "fsync": "on"}, True, False),
        ({"synchronous_commit": "on", "fsync": "off"}, True, False),
        ({"journal_mode": "wal", "synchronous": "FULL"}, False, False),
        ({"journal_mode": "wal", "synchronous": "NORMAL"}, True, False),
        ({"persistence": "none (process memory)"}, True, False),
        ({"acknowledged_writes": "kept: replicated to a quorum"}, False, False),
        ({"engine": "mystery"}, None, False),
    ],
)
def test_durability_verdicts(durability: dict[str, str], loses: bool | None,
                             evicts: bool) -> None:
    from authconform.backends._durability import assess

    verdict = assess(durability)
    assert (verdict.loses, verdict.evicts) == (loses, evicts), verdict.summary()


def test_serve_starts_in_production_on_a_durable_store(tmp_path: Path) -> None:
    from authconform.procs import LocalServer

    durable = LocalRedis({"appendonly": "yes", "appendfsync": "always"})
    try:
        durable.start()
        server = LocalServer(durable.url, "acselftest_prod", extra=["--profile", "production"])
        try:
            server.start()
            import httpx

            health = httpx.get(server.url + "/health", timeout=10, trust_env=False)
            body = health.json()
            assert health.status_code == 200 and body["status"] == "up", body
            assert body["loses_acknowledged_writes"] is False, body
            assert body["durability"]["appendfsync"] == "always", body
        finally:
            server.close()
    finally:
        durable.close()


# -- the fault proxy ---------------------------------------------------------------------------
def test_redis_commands_are_split_from_a_byte_stream() -> None:
    buffer = bytearray(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*2\r\n$3\r\nGE")
    names = [name for name, _ in redis_commands(buffer)]
    assert names == ["PING", "GET", "PING"]
    assert bytes(buffer) == b"*2\r\n$3\r\nGE"  # an incomplete command waits for more bytes


def test_the_proxy_injects_errors_refuses_and_recovers() -> None:
    redis = LocalRedis()
    try:
        redis.start()
        with FaultProxy(("127.0.0.1", redis.port), "redis") as proxy:

            def ask() -> bytes:
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
                    sock.sendall(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n")
                    time.sleep(0.2)
                    return sock.recv(1024)

            assert ask() == b"+PONG\r\n+PONG\r\n"
            with proxy.injecting(Fault("error", reply=b"-LOADING wait\r\n")):
                assert ask() == b"-LOADING wait\r\n-LOADING wait\r\n"
            proxy.set(Fault("refuse"))
            with pytest.raises(OSError):
                ask()
            proxy.set(Fault())
            assert ask() == b"+PONG\r\n+PONG\r\n"
    finally:
        redis.close()
