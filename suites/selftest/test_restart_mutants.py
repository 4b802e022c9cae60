"""The restart suite proves itself: each durability mutant fails the checks aimed at it.

Each case runs ``authconform/suites/restart`` in a pytest subprocess over one mutant of
``fixtures/mutants/durability.py`` (Redis-based: the suite starts its own redis-server)
or the reference server with a mutant of ``fixtures/mutants/durability_servers.py``,
selecting only the checks aimed at the bug (``-k``) to keep the cost down, and reads the
failure messages from the JUnit file: a check counts as catching the mutant only when it
fails with the message of that bug. The built-in backends passing the same checks is
the CI run of the restart suite itself (``.ci/run``).

Cost: the mutant runs mostly wait (store restarts, an outage and its recovery bound, TTLs
running out), so they run three at a time, once per session (``mutant_runs``); each case
then reads its own run's outcomes.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.mutants.durability import MUTANTS
from fixtures.mutants.durability_servers import MUTANTS as SERVER_MUTANTS
from fixtures.mutants.harness import (
    REPO,
    SuiteRun,
    clean_env,
    parse_junit,
    run_suite,
    service_unavailable,
)

#: one xdist worker runs this module: its module fixture (a whole run) is built once
pytestmark = pytest.mark.xdist_group("test_restart_mutants")

_LOST = r"state is lost on restart"

#: mutant -> (checks to select with -k, extra args, {check: failure-message regex})
CAUGHT_BY: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "persistence_off_presented_as_durable": (
        "(survive_a_graceful and strict) or (loss_window and strict) or "
        "(health_reports and none)",
        [],
        {
            "test_records_survive_a_graceful_restart_of_the_store": (
                r"written before the restart is gone after it"
            ),
            "test_loss_window_of_each_durability_setting": (
                r"acknowledged writes were lost over 5 SIGKILLs, but health\(\) presents the "
                r"store as durable .*persistence off presented as durable"
            ),
            "test_health_reports_the_durability_the_store_has": (
                r"presents the store as durable .*persistence off presented as durable"
            ),
        },
    ),
    "consumed_flags_in_process_memory": (
        "(survive_a_graceful and strict) or flow_survives",
        [],
        {
            "test_records_survive_a_graceful_restart_of_the_store": (
                r"a code consumed before the restart came back unconsumed \(replay reopened\)"
            ),
            "test_a_flow_survives_a_server_restart_between_every_step": (
                r"a code redeemed before the restarts was redeemed again after them"
            ),
        },
    ),
    "never_reconnects": (
        "resumes_by_itself",
        ["--authconform-outages=1,6"],
        {
            "test_service_resumes_by_itself_after_store_outages": (
                r"6 s outage: the instance does not serve again 15 s after the 6 s outage "
                r"ended .*does not reconnect by itself"
            ),
        },
    ),
    "not_found_on_timeout": (
        "(fails_closed_under and stalled) or slow_store_past",
        [],
        {
            "test_every_operation_fails_closed_under_a_store_fault": (
                r"store stalled: .*returned (None|ConsumeResult\(status=<ConsumeStatus"
                r"\.NOT_FOUND).* instead of raising StorageUnavailable"
            ),
            "test_a_slow_store_past_the_timeout_fails_closed": (
                r"returned .* instead of raising StorageUnavailable"
            ),
        },
    ),
    "retries_consume_after_lost_reply": (
        "reply_was_lost",
        [],
        {
            "test_a_state_changing_operation_whose_reply_was_lost_is_not_sent_again": (
                r"A consume whose reply was lost was sent again \(blind retry\): the caller "
                r"sees ALREADY_USED"
            ),
        },
    ),
    "falls_back_to_memory": (
        "resumes_by_itself or (fails_closed_under and refused)",
        ["--authconform-outages=1"],
        {
            "test_service_resumes_by_itself_after_store_outages": (
                r"a write \(put_code\) returned CodeRecord while the store was away"
            ),
            "test_every_operation_fails_closed_under_a_store_fault": (
                r"store refused: .*put_code returned CodeRecord.* instead of raising "
                r"StorageUnavailable"
            ),
        },
    ),
}

SERVER_CAUGHT_BY: dict[str, dict[str, str]] = {
    "registrations_cached_in_memory": {
        "test_a_flow_survives_a_server_restart_between_every_step": (
            r"the client registered before the restart is unknown after it .*" + _LOST
        ),
    },
}


def _need_binaries() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("unavailable: no redis-server on PATH (the restart suite starts its own)")
    reason = service_unavailable("redis")  # the server mutants' factory default
    if reason is not None:
        pytest.skip(reason)


def _not_caught(run: SuiteRun, check: str, pattern: str) -> list[str]:
    cases = run.cases(check)
    if not cases:
        return [f"{check}: not run (renamed, or -k selects nothing)"]
    failures = run.failures(check)
    if any(re.search(pattern, message, re.S) for message in failures.values()):
        return []
    return [
        f"{case}: {outcome} ({(run.messages.get(case, '').splitlines() or [''])[0][:300]})"
        for case, outcome in sorted(cases.items())
    ]


def test_every_mutant_has_named_checks() -> None:
    assert sorted(CAUGHT_BY) == sorted(MUTANTS)
    assert sorted(SERVER_CAUGHT_BY) == sorted(SERVER_MUTANTS)
    for _, _, checks in CAUGHT_BY.values():
        assert checks and all(re.compile(p) for p in checks.values())


def _run(workdir: Path, name: str, args: list[str]) -> SuiteRun:
    """``authconform/suites/restart`` in a subprocess with the repo's ini, from ``workdir``."""
    junit = workdir / f"junit-{name}.xml"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHCONFORM_") and k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "authconform" / "suites" / "restart"),
         "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-p", "no:cacheprovider",
         "-q", f"--junitxml={junit}", f"--authconform-report-dir={workdir / name}", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    outcomes, messages = parse_junit(junit)
    return SuiteRun(done.returncode, outcomes, messages, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def mutant_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SuiteRun]:
    """One restart run per backend mutant, three at a time."""
    _need_binaries()
    workdir = tmp_path_factory.mktemp("restart-mutants")
    jobs = {
        mutant: ["--backend=fixtures.mutants.durability:" + mutant, "-k", select, *extra]
        for mutant, (select, extra, _) in CAUGHT_BY.items()
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {m: pool.submit(_run, workdir, m, args) for m, args in jobs.items()}
        return {m: f.result() for m, f in futures.items()}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_durability_mutant_fails_the_checks_aimed_at_its_bug(
    mutant_runs: dict[str, SuiteRun], mutant: str
) -> None:
    """Each backend mutant fails its named restart checks, with its bug's message."""
    _, _, checks = CAUGHT_BY[mutant]
    run = mutant_runs[mutant]
    assert run.outcomes, f"the restart run reported no checks:\n{run.summary()}"
    survived = {c: why for c, p in checks.items() if (why := _not_caught(run, c, p))}
    assert not survived, (
        f"mutant {mutant} ({MUTANTS[mutant]}) was not caught, or not for its bug:\n"
        + "\n".join(f"{c}: {why}" for c, why in survived.items())
    )


@pytest.mark.parametrize("mutant", sorted(SERVER_MUTANTS))
def test_server_mutant_fails_the_server_restart_check(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    """The reference server with a durability bug fails the server-restart check."""
    _need_binaries()
    clean_env(monkeypatch)
    run = run_suite(
        pytester, "restart", "--backend=sqlite", "-k", "flow_survives",
        f"--authconform-server-arg=--provider-wrapper=fixtures.mutants.durability_servers:"
        f"{mutant}",
    )
    survived = {
        c: why for c, p in SERVER_CAUGHT_BY[mutant].items() if (why := _not_caught(run, c, p))
    }
    assert not survived, f"server mutant {mutant} was not caught:\n{survived}"


def test_a_server_over_process_memory_fails_the_server_restart_check(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over memory (and fakeredis) the check fails, saying the state is lost on restart."""
    clean_env(monkeypatch)
    run = run_suite(pytester, "restart", "--backend=memory,fakeredis", "-k", "flow_survives")
    failures = run.failures("test_a_flow_survives_a_server_restart_between_every_step")
    assert len(failures) == 2, run.summary()
    for case, message in failures.items():
        assert re.search(_LOST, message), f"{case}: {message[:300]}"
