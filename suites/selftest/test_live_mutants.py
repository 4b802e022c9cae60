"""Self-test: every live check fails on a mutant server, for the right reason.

One pytest run (a subprocess, the reference server in-process: ``--authconform-in-process``)
holds every mutant of ``fixtures/mutants/servers.py`` as its own target
(``--authconform-variant``) and selects, per mutant, the checks it must fail; the plain
reference runs the same checks and must pass them all (under ``--authconform-strict``,
so SHOULD-level checks count too). Against ``token_endpoint_500`` the whole suite runs:
no check that talked to the token endpoint may pass (a negative check proves nothing
against a server that refuses everything). Every check of the suite is named by some
mutant, or listed in ``UNFAILABLE`` with the reason it reports rather than judges.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixtures.live_harness import Outcome, live_subprocess, summary
from fixtures.mutants.servers import MUTANTS, REFUSE_ALL, SETUP, VARIANTS

#: one xdist worker runs this module: its module fixture (a whole run) is built once
pytestmark = pytest.mark.xdist_group("test_live_mutants")

#: checks that report and never judge (the specification leaves the behaviour open), or
#: whose failing mutant lives in another self-test
UNFAILABLE = {
    "test_confidential_client_refresh_reuse_is_reported": "MAY: a note (RFC 9700 4.14.2)",
    "test_replay_with_invalid_parameters_is_reported": "no normative text: a note",
    "test_token_request_redirect_uri_is_reported": "OAuth 2.1 removed the parameter: a note",
    "test_flow_hops_between_instances": "test_live_targets: two memory processes",
    "test_repeated_flows_all_succeed": "test_live_targets: two memory processes",
    **{f"test_{name}": "test_racy_servers: racy mutants over sqlite, two processes"
       for name in ("parallel_exchanges_of_one_code_have_one_winner",
                    "parallel_code_replays_revoke_the_winners_tokens",
                    "parallel_refreshes_of_one_token_have_at_most_one_winner",
                    "refresh_racing_revocation_leaves_no_usable_refresh_token",
                    "registered_client_is_known_at_once_on_every_instance")},
    "test_server_log_contains_no_issued_secret":
        "test_live_targets: token_logger (a subprocess server, whose log is read)",
}
#: short lifetimes: the expiry checks of each target wait a few seconds, not ten
FLAGS = ("--backend=memory", "--authconform-in-process", "--authconform-strict",
         "--authconform-flows=2", "--authconform-max-wait=8", "--authconform-access-ttl=2",
         "--authconform-code-ttl=1", "--authconform-refresh-ttl=5")


@pytest.fixture(scope="module")
def check_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every check of the live suite, parametrized ones as ``name[param]`` (collected)."""
    done = live_subprocess(tmp_path_factory.mktemp("collect"), "--backend=memory",
                           "--collect-only", "-q")
    names = set()
    for line in done.stdout.splitlines():
        if "::test_" not in line:
            continue
        test = line.split("::", 1)[1]
        name, _, param = test.partition("[")
        param = param[:-1].removeprefix("ref-memory").lstrip("-")
        names.add(f"{name}[{param}]" if param else name)
    return names


def _item(check: str, target: str) -> str:
    """The test id of ``check`` (``name`` or ``name[param]``) against ``target``."""
    name, _, param = check.partition("[")
    return f"{name}[{target}-{param[:-1]}]" if param else f"{name}[{target}]"


def _selection() -> str:
    clauses = [f"{_item(check, 'ref-memory-' + mutant)}"
               for mutant, expected in MUTANTS.items() for check, _ in expected]
    clauses += [_item(check, target) for mutant, checks in SETUP.items()
                for check in checks for target in ("ref-memory-" + mutant, "ref-memory")]
    clauses += [_item(check, "ref-memory") for expected in MUTANTS.values()
                for check, _ in expected]
    clauses += [*(f"ref-memory-{m}" for m in REFUSE_ALL),
                *(f"(ref-memory-{v} and (refresh or code or revok))" for v in VARIANTS)]
    return " or ".join(sorted(set(clauses)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Outcome]]:
    """One run: every mutant, the allowed variants and the plain reference."""
    variants = list(dict.fromkeys([*MUTANTS, *REFUSE_ALL, *VARIANTS]))
    done = live_subprocess(
        tmp_path_factory.mktemp("mutants"), *FLAGS,
        *(f"--authconform-variant=fixtures.mutants.servers:{v}" for v in variants),
        "-k", _selection(),
    )
    return done.stdout + done.stderr, done.outcomes


def test_every_check_fails_on_some_mutant_or_says_why_not(check_names: set[str]) -> None:
    """A check that cannot fail is a defect: each one is named by a mutant (or explained)."""
    assert len(check_names) > 80, sorted(check_names)
    assert "test_redirect_uri_must_match_exactly[added-path]" in check_names
    named = {check for expected in MUTANTS.values() for check, _ in expected}
    covered = named | set(UNFAILABLE)
    bare = {c for c in covered if "[" not in c}
    missing = sorted(c for c in check_names
                     if c not in covered and c.split("[", 1)[0] not in bare)
    assert not missing, f"checks no mutant fails: {missing}"
    stale = sorted(c for c in covered if c not in check_names
                   and not any(n.startswith(c + "[") for n in check_names))
    assert not stale, f"mutant table names checks that do not exist: {stale}"
    names = list(MUTANTS)
    assert not [a for a in names for b in names if a != b and b.startswith(a)], \
        "a mutant name is a prefix of another (the -k selection would mix them)"


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_fails_its_checks_for_the_right_reason(
    batch: tuple[str, dict[str, Outcome]], mutant: str
) -> None:
    out, outcomes = batch
    assert "INTERNALERROR" not in out, out[-3000:]
    for check, pattern in MUTANTS[mutant]:
        got = outcomes.get(_item(check, f"ref-memory-{mutant}"))
        assert got is not None, f"{check} did not run against {mutant}:\n{summary(outcomes)}"
        assert got.outcome == "failed", (
            f"mutant {mutant}: {check} {got.outcome}\n{got.message[:1500]}")
        assert "observed:" in got.message and "spec: " in got.message, got.message[:800]
        assert re.search(pattern, got.message, re.S), (
            f"mutant {mutant}: {check} failed for another reason than /{pattern}/:\n"
            f"{got.message[:1500]}")


def test_reference_passes_every_check_the_mutants_fail(
    batch: tuple[str, dict[str, Outcome]]
) -> None:
    _, outcomes = batch
    mine = {k: v for k, v in outcomes.items() if k.endswith("[ref-memory]")
            or "[ref-memory-" in k and not any(f"ref-memory-{m}" in k for m in
                                               [*MUTANTS, *REFUSE_ALL, *VARIANTS])}
    assert len(mine) >= len({c for e in MUTANTS.values() for c, _ in e}) - 5, summary(outcomes)
    bad = {k: v for k, v in mine.items() if v.outcome not in ("passed", "skipped")}
    assert not bad, summary(bad)


@pytest.mark.parametrize("variant", VARIANTS)
def test_allowed_variant_passes_every_check(
    batch: tuple[str, dict[str, Outcome]], variant: str
) -> None:
    _, outcomes = batch
    mine = {k: v for k, v in outcomes.items() if f"[ref-memory-{variant}" in k}
    assert len(mine) > 15, summary(outcomes)
    bad = {k: v for k, v in mine.items() if v.outcome not in ("passed", "skipped")}
    assert not bad, summary(bad)


@pytest.mark.parametrize(
    ("target", "reported"),
    [("ref-memory", "refused"),
     ("ref-memory-rotation_without_reuse_detection", "refused-family-kept"),
     ("ref-memory-confidential_reuse_grace", "grace-period")],
)
def test_confidential_refresh_reuse_is_reported_never_failed(
    batch: tuple[str, dict[str, Outcome]], target: str, reported: str
) -> None:
    """Public clients MUST get reuse detection; for confidential ones it is only reported."""
    _, outcomes = batch
    got = outcomes.get(f"test_confidential_client_refresh_reuse_is_reported[{target}]")
    assert got is not None and got.outcome == "passed", got
    assert got.properties.get("authconform_refresh_reuse") == reported, got.properties


@pytest.mark.parametrize("mutant", sorted(REFUSE_ALL))
def test_no_check_passes_against_an_endpoint_answering_500(
    batch: tuple[str, dict[str, Outcome]], mutant: str
) -> None:
    """Every check that sent a request to the broken endpoint failed or was unavailable."""
    _, outcomes = batch
    purpose = REFUSE_ALL[mutant]
    mine = {k: v for k, v in outcomes.items() if f"[ref-memory-{mutant}" in k}
    assert len(mine) > 80, summary(outcomes)
    passed_with_it = sorted(
        k for k, v in mine.items() if v.outcome in ("passed", "warned")
        and any(e.startswith(purpose + ":") for e in v.properties.get(
            "authconform_exchanges", "").split())
    )
    assert not passed_with_it, passed_with_it
    unavailable = [k for k, v in mine.items() if v.outcome == "skipped"
                   and "positive control failed" in v.message]
    assert len(unavailable) > 10, summary(mine)


def test_unknown_variant_is_a_usage_error(tmp_path: Path) -> None:
    done = live_subprocess(tmp_path, "--backend=memory",
                           "--authconform-variant=fixtures.mutants.servers:no_such_mutant")
    assert done.ret == pytest.ExitCode.USAGE_ERROR, done.stdout[-1000:]
    assert "no_such_mutant" in done.stderr
