"""No token, code, verifier or client secret the run issued appears in any of its output.

The live suite runs over Redis as a user's most verbose CI job would
(``--log-cli-level=DEBUG -rA -vv``, JUnit XML, the reference servers at ``--log-level
debug``), with ``fixtures/secret_recorder.py`` wrapped around the reference server: it
records every secret the server issues. Then every recorded value is searched, in each of
its spellings (raw, URL-encoded, inside HTTP Basic credentials), in the run's terminal
output, every file the run wrote (reports, the servers' logs, pytest's temp dir).

The scan proves it can fail: the same run of one check without the plugin's redaction
(``-p no:authconform-authconform.redaction._pytest``) must show it leaked secrets
(httpcore's DEBUG log of the ``Location`` header carries the code).

Cost: one live run (~25 s on 2 cores) and one single-check run (~10 s).
Figures: ``reports/selftest/secret-scan.json``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from fixtures.mutants.harness import REPO, service_unavailable

FIGURES = REPO / "reports" / "selftest" / "secret-scan.json"
NO_REDACTION = "authconform-authconform.redaction._pytest"


def _spellings(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value)}


def issued(record: Path) -> dict[str, str]:
    """value -> kind of every secret the servers recorded (client secrets with Basic forms)."""
    found: dict[str, str] = {}
    if not record.exists():
        return found
    for line in record.read_text().splitlines():
        item = json.loads(line)
        found[item["value"]] = item["kind"]
    return found


def scan(secrets: dict[str, str], texts: dict[str, str]) -> dict[str, list[str]]:
    """Where each secret appears: value -> the names of the texts holding it."""
    where: dict[str, list[str]] = {}
    for value in secrets:
        needles = _spellings(value)
        for name, text in texts.items():
            if any(n in text for n in needles):
                where.setdefault(value, []).append(name)
    return where


def _texts(root: Path, skip: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path != skip and path.stat().st_size < 50 * 2**20:
            out[str(path.relative_to(root))] = path.read_text("utf-8", "replace")
    return out


def run_live(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    work, basetemp, record = tmp / "work", tmp / "basetemp", tmp / "secrets.jsonl"
    work.mkdir()
    drop = ("AUTHCONFORM_", "PYTEST_", "HYPOTHESIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["AC_SECRET_RECORD"] = str(record)
    argv = [
        sys.executable, "-m", "pytest", "--pyargs", "authconform.suites.live",
        "--backend=redis", "--log-cli-level=DEBUG", "-rA", "-vv", "-p", "no:cacheprovider",
        f"--basetemp={basetemp}", f"--junitxml={work / 'reports' / 'junit.xml'}",
        "--authconform-server-arg=--provider-wrapper=fixtures.secret_recorder:record",
        "--authconform-server-arg=--log-level=debug",
        *args,
    ]
    proc = subprocess.run(
        argv, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600, check=False,
    )
    return proc, tmp, record


def _basic_forms(secrets: dict[str, str], output: str) -> None:
    """Client secrets also travel as HTTP Basic credentials: search those too."""
    for value, kind in list(secrets.items()):
        if kind == "client_secret":
            for token in output.split():
                if len(token) > 20 and token.isascii():
                    try:
                        decoded = base64.b64decode(token.strip("'\",()[]"), validate=True)
                    except ValueError:
                        continue
                    if value.encode() in decoded:
                        secrets[token.strip("'\",()[]")] = "client_secret (Basic)"


@pytest.fixture(scope="module")
def redis_up() -> None:
    reason = service_unavailable("redis")
    if reason is not None:
        pytest.skip(reason)


def test_live_run_at_debug_level_prints_no_issued_secret(tmp_path: Path, redis_up: None) -> None:
    proc, root, record = run_live(tmp_path)
    secrets = issued(record)
    output = proc.stdout + "\n" + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    kinds = Counter(secrets.values())
    for kind in ("code", "access_token", "refresh_token", "code_verifier", "client_secret"):
        assert kinds[kind] > 0, f"the run issued no {kind}: the recorder saw {dict(kinds)}"
    _basic_forms(secrets, output)
    texts = {"terminal output": output, **_texts(root, skip=record)}
    assert any("server-0.log" in name for name in texts), sorted(texts)[:20]
    assert "reports/junit.xml" in " ".join(texts) or "work/reports/junit.xml" in texts
    assert "httpcore" in output and "DEBUG" in output, "the run logged no DEBUG of httpcore"
    where = scan(secrets, texts)
    found = Counter(secrets[v] for v in where)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps({
        "issued": dict(sorted(kinds.items())),
        "found": dict(sorted(found.items())),
        "places_scanned": len(texts),
        "output_chars": len(output),
    }, indent=2) + "\n")
    leaks = [f"{secrets[v]} in {', '.join(names[:3])}" for v, names in where.items()]
    assert not where, f"{len(where)} of {len(secrets)} issued secrets leaked: {leaks[:10]}"


def test_scan_finds_the_leaks_of_a_run_without_redaction(
    tmp_path: Path, redis_up: None
) -> None:
    proc, root, record = run_live(
        tmp_path, "-p", f"no:{NO_REDACTION}", "-k", "test_code_exchange_issues_bearer_token",
        "--authconform-instances=1",
    )
    secrets = issued(record)
    output = proc.stdout + "\n" + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    where = scan(secrets, {"terminal output": output})
    leaked = Counter(secrets[v] for v in where)
    assert leaked["code"] > 0, (
        f"without redaction the scan should find the codes httpcore logs; found {dict(leaked)}"
    )
