"""Installed from the wheel into fresh venvs outside the repo, authconform works and is harmless.

A user's project (``fixtures/userproject``: its own backend on public names only, its own
tests with skips, markers, a ``suites/`` folder and fixtures named ``backend`` and
``clock``; an async variant under pytest-asyncio's auto mode) is copied to a temp dir and
driven from there, as a user's CI would:

- the wheel holds the suites, the locustfile and gates, the license; no self-tests, no mutants;
- with every extra: the contract suite on the user's backend, the live suite against
  ``authconform serve`` on a free loopback port, the user's own tests (outcomes identical
  to a run with ``-p no:authconform``), ``authconform bench server`` with the user's gates;
- with no extra at all: the plugin loads, the user's tests are unchanged, the contract
  suite runs, ``authconform --version`` works, and each feature whose extra is missing
  says which extra in one line (no traceback, no collection errors).

Cost: the wheel is built each run (~5 s); its dependencies come from a wheelhouse cached
under ``~/.cache/authconform-selftest`` keyed by the wheel's Requires-Dist (built once from
the index through pip's cache), and both venvs install from it with ``--no-index``, in
parallel. About 60-90 s in all on a 2-core machine; figures go to
``reports/selftest/fresh-venv.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: one xdist worker runs this module: its module fixture (a whole run) is built once
pytestmark = pytest.mark.xdist_group("test_fresh_venv")

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "fixtures" / "userproject"
EXTRAS = "server,redis,bench"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "authconform-selftest"
#: what the wheel must carry for a user who never clones this repository
SHIPPED = (
    "authconform/suites/contract/test_authorization_codes.py",
    "authconform/suites/live/test_pkce.py",
    "authconform/loadtests/locustfile.py",
    "authconform/loadtests/gates.toml",
    "authconform/py.typed",
)


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """The machine's environment without ours, pytest's or a venv's (a user's shell)."""
    drop = ("AUTHCONFORM_", "PYTEST_", "PYTHON", "HYPOTHESIS_", "VIRTUAL_ENV", "COV_CORE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
    )


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Fresh:
    """The wheel, the two venvs and the user's project copies."""

    root: Path
    wheel: Path
    full: Path
    bare: Path
    project: Path
    project_async: Path
    figures: dict[str, object] = field(default_factory=dict)

    def env(self, venv: Path) -> dict[str, str]:
        return _clean_env(venv)

    def run(self, venv: Path, args: list[str], cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        exe = venv / "bin" / args[0]
        return _run([str(exe), *args[1:]], cwd or self.project, self.env(venv), timeout)


def _build_wheel(root: Path) -> Path:
    """Build from a copy of what the sdist would hold (the repo's tree stays untouched)."""
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "authconform", src / "authconform",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = root / "dist"
    proc = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        root, _clean_env(),
    )
    wheels = list(dist.glob("authconform-*.whl"))
    if proc.returncode != 0 or not wheels:
        if "No matching distribution" in proc.stdout or "Could not find" in proc.stdout:
            reason = _tail(proc.stdout, 3)
            pytest.skip(f"unavailable: the build backend cannot be installed: {reason}")
        raise AssertionError(f"pip wheel failed ({proc.returncode}):\n{_tail(proc.stdout)}")
    return wheels[0]


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:"))


def _wheelhouse(wheel: Path, root: Path) -> Path:
    """Every dependency wheel, built once per Requires-Dist set and Python (then cached)."""
    key_src = "\n".join([*_requires(wheel), EXTRAS, "pytest-asyncio", sys.version, sys.platform])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    house = CACHE / f"wheelhouse-{key}"
    if (house / ".complete").exists():
        return house
    tmp = root / "wheelhouse"
    proc = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(tmp),
         f"{wheel}[{EXTRAS}]", "pytest-asyncio"],
        root, _clean_env(), timeout=600,
    )
    if proc.returncode != 0:
        pytest.skip(f"unavailable: cannot fetch the dependencies' wheels: {_tail(proc.stdout, 3)}")
    for own in tmp.glob("authconform-*.whl"):
        own.unlink()
    (tmp / ".complete").write_text(key_src)
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(tmp, staging)
    try:
        staging.rename(house)
    except OSError:  # another run made it first
        shutil.rmtree(staging, ignore_errors=True)
    return house


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _size_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 2**20, 1)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Fresh:
    root = tmp_path_factory.mktemp("fresh-venv")
    assert not root.resolve().is_relative_to(REPO), "the fresh venv must live outside the repo"
    started = time.monotonic()
    wheel = _build_wheel(root)
    built = time.monotonic()
    house = _wheelhouse(wheel, root)
    housed = time.monotonic()
    full, bare = root / "venv-all", root / "venv-bare"
    pip = [sys.executable, "-m", "pip"]
    links = ["--no-index", "--find-links", str(house), "--find-links", str(wheel.parent)]
    procs = {}
    for venv, spec, extra in (
        (full, f"authconform[{EXTRAS}]", ["pytest-asyncio", "--no-compile"]),
        (bare, "authconform", []),
    ):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        argv = [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", *links,
                spec, *extra]
        procs[venv] = (time.monotonic(), subprocess.Popen(
            argv, cwd=root, env=_clean_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        ))
    took = {}
    for venv, (t0, proc) in procs.items():
        out, _ = proc.communicate(timeout=600)
        took[venv] = round(time.monotonic() - t0, 1)
        assert proc.returncode == 0, f"pip install into {venv.name} failed:\n{_tail(out)}"
    project = root / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    project_async = root / "project-async"
    shutil.copytree(project, project_async)
    (project_async / "pytest.ini").write_text((project / "pytest-asyncio.ini").read_text())
    dists = len(list(_site_packages(bare).glob("*.dist-info")))
    fresh = Fresh(root, wheel, full, bare, project, project_async)
    fresh.figures.update(
        wheel_build_s=round(built - started, 1),
        wheelhouse_s=round(housed - built, 1),
        install_all_extras_s=took[full],
        install_no_extras_s=took[bare],
        no_extras_site_packages_mb=_size_mb(_site_packages(bare)),
        no_extras_distributions=dists,
        all_extras_site_packages_mb=_size_mb(_site_packages(full)),
        wheel_kb=round(wheel.stat().st_size / 1024),
    )
    yield fresh
    fresh.figures["total_s"] = round(time.monotonic() - started, 1)
    out = REPO / "reports" / "selftest" / "fresh-venv.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fresh.figures, indent=2) + "\n")


# the wheel ---------------------------------------------------------------------------------


def test_wheel_ships_the_suites_and_not_the_selftests(fresh: Fresh) -> None:
    with zipfile.ZipFile(fresh.wheel) as zf:
        names = zf.namelist()
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no license file"
    leaked = [n for n in names if n.startswith(("suites/", "fixtures/", "conftest"))]
    assert not leaked, f"the wheel ships repo-only files: {leaked[:5]}"
    meta = next(n for n in names if n.endswith("METADATA"))
    with zipfile.ZipFile(fresh.wheel) as zf:
        text = zf.read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "Provides-Extra: dev" in text and "Provides-Extra: all" in text
    all_extra = [line for line in text.splitlines() if 'extra == "all"' in line]
    assert not any(tool in line for line in all_extra for tool in ("ruff", "mypy")), (
        "dev tools belong outside the all extra"
    )


# with every extra --------------------------------------------------------------------------


def _outcomes(text: str) -> tuple[list[str], str]:
    """The short summary lines (-rA) and the closing counts of a pytest run, timing dropped."""
    lines = text.splitlines()
    summary = [
        line for line in lines
        if re.match(r"^(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR) ", line)
    ]
    counts = re.sub(r" in [\d.]+s.*$", "", lines[-1].strip("= ")) if lines else ""
    return sorted(summary), counts


def _user_tests_unchanged(fresh: Fresh, venv: Path, project: Path) -> tuple[list[str], str]:
    args = ["pytest", "-rA", "-p", "no:cacheprovider"]
    with_plugin = fresh.run(venv, args, cwd=project)
    without = fresh.run(venv, [*args, "-p", "no:authconform"], cwd=project)
    ours, theirs = _outcomes(with_plugin.stdout), _outcomes(without.stdout)
    assert ours == theirs, (
        f"authconform changed the user's tests in {project.name}:\n--- with the plugin\n"
        f"{_tail(with_plugin.stdout)}\n--- with -p no:authconform\n{_tail(without.stdout)}"
    )
    assert with_plugin.returncode == without.returncode == 1  # the one deliberate failure
    summary, counts = ours
    joined = "\n".join(summary)
    for expected in (
        "SKIPPED [1] tests/test_store.py:26: needs network",
        "SKIPPED [1] tests/test_store.py:29: flaky",
        "FAILED tests/test_store.py::test_fails_on_purpose",
        "PASSED suites/test_user_suite.py::test_user_spec_marker",
        "PASSED tests/test_store.py::test_marked_live",
        "PASSED tests/test_store.py::test_backend_is_mine",
        "XFAIL tests/test_store.py::test_known_bug",
    ):
        assert expected in joined, f"{expected!r} not in the user's outcomes:\n{joined}"
    return summary, counts


def test_users_tests_are_unchanged(fresh: Fresh) -> None:
    _, counts = _user_tests_unchanged(fresh, fresh.full, fresh.project)
    fresh.figures["user_tests"] = counts


def test_users_async_tests_are_unchanged_under_pytest_asyncio_auto(fresh: Fresh) -> None:
    summary, counts = _user_tests_unchanged(fresh, fresh.full, fresh.project_async)
    assert "PASSED tests_async/test_async.py::test_state_is_single_use" in summary
    fresh.figures["user_tests_async"] = counts


def test_contract_suite_on_the_users_backend(fresh: Fresh) -> None:
    proc = fresh.run(
        fresh.full,
        ["pytest", "--pyargs", "authconform.suites.contract", "--backend=mystore.backend:make",
         "-q", "-p", "no:cacheprovider"],
        cwd=fresh.project_async,
    )
    last = proc.stdout.rstrip().splitlines()[-1]
    assert proc.returncode == 0, f"contract suite on mystore:\n{_tail(proc.stdout)}"
    assert re.search(r"\b\d{2,} passed", last) and "failed" not in last, last
    assert "(mystore.backend:make) [from cli]" in proc.stdout
    fresh.figures["contract_on_mystore"] = re.sub(r" in [\d.]+s.*", "", last.strip("= "))


def test_state_machine_on_the_users_backend_uses_only_what_it_declares(fresh: Fresh) -> None:
    """mystore keeps codes and states only: the model suite never calls anything else."""
    proc = fresh.run(
        fresh.full,
        ["pytest", "--pyargs", "authconform.suites.race.test_state_machine",
         "--backend=mystore.backend:make", "--authconform-hypothesis-profile=dev",
         "-q", "-p", "no:cacheprovider"],
        cwd=fresh.project_async,
    )
    last = proc.stdout.rstrip().splitlines()[-1]
    assert proc.returncode == 0, f"state machine on mystore:\n{_tail(proc.stdout)}"
    assert "1 passed" in last, last


def _start_serve(fresh: Fresh, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    argv = [str(fresh.full / "bin" / "authconform"), "serve", "--backend", "memory",
            "--host", "127.0.0.1", "--port", "0", "--access-ttl", "2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=fresh.project_async, env=fresh.env(fresh.full), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace")
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"authconform serve did not start:\n{_tail(log.read_text())}")


def test_live_suite_against_authconform_serve(fresh: Fresh) -> None:
    log = fresh.root / "serve.log"
    server, url = _start_serve(fresh, log)
    try:
        proc = fresh.run(
            fresh.full,
            ["pytest", "--pyargs", "authconform.suites.live", f"--server-url={url}/mcp",
             f"--authconform-server-log={log}", "--authconform-flows=3",
             "--authconform-max-wait=3", "-q", "-p", "no:cacheprovider"],
            cwd=fresh.project_async,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
    last = proc.stdout.rstrip().splitlines()[-1]
    assert proc.returncode == 0, f"live suite against authconform serve:\n{_tail(proc.stdout)}"
    assert re.search(r"\b\d{2,} passed", last) and "failed" not in last, last
    fresh.figures["live_against_serve"] = re.sub(r" in [\d.]+s.*", "", last.strip("= "))


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_bench_server_with_the_users_gates(fresh: Fresh) -> None:
    if not _redis_up():
        pytest.skip("unavailable: no Redis answers on 127.0.0.1:6379 (bench server needs one)")
    gates = fresh.project_async / "release-gates.toml"
    gates.write_text(
        "[gates.hot_path]\n"
        'description = "our release gate, sized for a loaded 2-core CI machine"\n'
        'checks = ["fail_ratio:0%", "rps:>=5"]\n'
    )
    out = fresh.root / "bench"
    proc = fresh.run(
        fresh.full,
        ["authconform", "bench", "server", "--duration", "2", "--workers", "1", "--users", "4",
         "--impls", "lean", "--protocols", "2025-06-18", "--gates", str(gates),
         "--out", str(out)],
        cwd=fresh.project_async,
    )
    assert proc.returncode == 0, f"bench server with the user's gates:\n{_tail(proc.stdout)}"
    assert "gates: all" in proc.stdout and (out / "server_bench.json").exists(), proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("gates:"))
    fresh.figures["bench"] = line


# with no extra at all ----------------------------------------------------------------------


def test_no_extras_plugin_loads_and_changes_nothing(fresh: Fresh) -> None:
    version = fresh.run(fresh.bare, ["authconform", "--version"])
    assert version.returncode == 0 and re.fullmatch(r"authconform \S+\n", version.stdout), (
        version.stdout
    )
    helptext = fresh.run(fresh.bare, ["pytest", "--help"])
    assert helptext.returncode == 0 and "--backend" in helptext.stdout, _tail(helptext.stdout)
    _, counts = _user_tests_unchanged(fresh, fresh.bare, fresh.project)
    fresh.figures["user_tests_no_extras"] = counts


def test_no_extras_contract_suite_runs_on_the_users_backend(fresh: Fresh) -> None:
    proc = fresh.run(
        fresh.bare,
        ["authconform", "test", "contract", "--backend=mystore.backend:make", "-q",
         "-p", "no:cacheprovider", "-k", "authorization_codes or states"],
    )
    assert proc.returncode == 0, _tail(proc.stdout)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["pytest", "--pyargs", "authconform.suites.live", "-p", "no:cacheprovider"], "live"),
        (["pytest", "--pyargs", "authconform.suites.live", "--server-url=http://127.0.0.1:9/mcp",
          "-p", "no:cacheprovider"], "live"),
        (["pytest", "--pyargs", "authconform.suites.contract", "--backend=redis",
          "-p", "no:cacheprovider"], "redis"),
        (["authconform", "serve", "--port", "0"], "server"),
        (["authconform", "bench", "server", "--duration", "1"], "server,bench"),
    ],
    ids=["live", "live-server-url", "backend-redis", "serve", "bench-server"],
)
def test_no_extras_feature_names_its_extra_in_one_line(
    fresh: Fresh, argv: list[str], extra: str
) -> None:
    proc = fresh.run(fresh.bare, argv, timeout=120)
    assert proc.returncode in (2, 4), f"exit {proc.returncode}:\n{_tail(proc.stdout)}"
    hint = f"pip install 'authconform[{extra}]'"
    lines = [ln for ln in proc.stdout.splitlines() if hint in ln]
    assert len(lines) == 1, f"expected one line naming {hint}:\n{_tail(proc.stdout)}"
    assert "Traceback" not in proc.stdout and "errors during collection" not in proc.stdout, (
        _tail(proc.stdout)
    )
    assert not re.search(r"^ERROR (collecting|test_)", proc.stdout, re.M), _tail(proc.stdout)
