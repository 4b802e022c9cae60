"""The contract suite proves itself: every mutant fails the checks aimed at its bug, and
every built-in backend passes the whole suite.

Each case runs ``suites/contract`` in a pytest subprocess (the repo's ini, a fresh random
namespace) and reads the outcome of every check from a JUnit file. The mutants live in
``fixtures/mutants/storage.py``; all but ``swallowed_outage`` copy the memory backend and
run on the fake clock, so a run takes a second or two.

Concurrency: the racy mutants (``racy_consume``, ``racy_rate_limit``) await between their
read and their write, so the contract suite's ``asyncio.gather`` of callers on one event
loop is enough to catch them. A read-then-write with no await in between (a thread race on
an unlocked dict, or two processes) cannot be produced by ``asyncio.gather``; that is the
race suite's job (threads and processes), not the contract suite's.
"""

from __future__ import annotations

import pytest

from fixtures.mutants.harness import SuiteRun, clean_env, run_suite, service_unavailable
from fixtures.mutants.storage import MUTANTS

#: mutant -> contract checks that MUST fail on it (each one targets the mutant's bug).
#: ``name`` means the check fails (at least one of its cases); ``name[all]``: every case.
CAUGHT_BY: dict[str, list[str]] = {
    "racy_consume": [
        "test_concurrent_consumes_of_one_code_have_one_winner",
        "test_concurrent_consumes_of_one_reset_token_have_one_winner",
        "test_concurrent_consumes_of_one_state_have_one_winner",
    ],
    "dropped_ttl_on_update": [
        "test_consumed_code_stays_consumed_until_it_expires",
        "test_update_keeps_the_ttl_of_a_consumed_code",
        "test_consume_with_less_than_a_second_left_is_recorded",
        "test_wrong_answer_keeps_the_ttl_of_a_challenge",
        "test_rotation_keeps_the_ttl_of_the_old_token",
        "test_refresh_token_ttl_is_its_own",
        "test_revocation_keeps_the_ttl_of_a_refresh_token",
        "test_consumed_reset_token_keeps_its_ttl",
        "test_consumed_state_keeps_its_ttl",
    ],
    "reset_ttl_on_update": [
        "test_update_keeps_the_ttl_of_a_consumed_code",
        "test_consume_with_less_than_a_second_left_is_recorded",
        "test_wrong_answer_keeps_the_ttl_of_a_challenge",
        "test_rotation_keeps_the_ttl_of_the_old_token",
        "test_revocation_keeps_the_ttl_of_a_refresh_token",
        "test_consumed_reset_token_keeps_its_ttl",
        "test_consumed_state_keeps_its_ttl",
    ],
    "records_by_reference": [
        "test_returned_access_token_records_are_copies",
        "test_returned_code_records_are_copies",
        "test_returned_reset_token_records_are_copies",
        "test_returned_session_records_are_copies",
        "test_returned_state_records_are_copies",
        "test_returned_client_records_are_copies",
        "test_returned_refresh_token_records_are_copies",
    ],
    "ignored_namespace": [
        "test_namespaces_do_not_see_each_others_records",
        "test_using_a_record_in_one_namespace_leaves_the_other_untouched",
        "test_drop_namespace_empties_only_its_namespace",
    ],
    "rotation_keeps_old_token": [
        "test_refresh_rotation_revokes_previous_token",
        "test_refresh_token_reuse_revokes_the_whole_grant",
        "test_concurrent_rotations_of_one_token_have_one_winner",
    ],
    "revoke_grant_misses_refresh": [
        "test_revoke_grant_removes_its_access_and_refresh_tokens",
    ],
    "mark_used_skipped_under_one_second": [
        "test_consume_with_less_than_a_second_left_is_recorded",
    ],
    "plaintext_secrets": [
        "test_dump_of_the_store_contains_no_secret_in_clear",
    ],
    "racy_rate_limit": [
        "test_concurrent_hits_allow_exactly_limit",
    ],
    "swallowed_outage": [
        "test_operation_fails_closed_when_the_store_is_down[all]",
    ],
}

BUILTINS = ["memory", "sqlite", "fakeredis", "redis", "postgres"]
SERVICES = {"redis": "redis", "postgres": "postgres"}


def run_contract(pytester: pytest.Pytester, backend: str) -> SuiteRun:
    return run_suite(pytester, "contract", f"--backend={backend}")


def test_every_mutant_has_named_checks() -> None:
    assert sorted(CAUGHT_BY) == sorted(MUTANTS), "every mutant needs an entry in CAUGHT_BY"
    empty = sorted(m for m, checks in CAUGHT_BY.items() if not checks)
    assert not empty, f"mutants no contract check is aimed at: {empty}"


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_fails_the_checks_aimed_at_its_bug(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    clean_env(monkeypatch)
    run = run_contract(pytester, f"fixtures.mutants.storage:{mutant}")
    outcomes = run.by_check()
    assert outcomes, f"the contract run reported no checks:\n{run.summary()}"
    expected = [c.removesuffix("[all]") for c in CAUGHT_BY[mutant]]
    unknown = [c for c in expected if c not in outcomes]
    assert not unknown, f"checks not in the contract suite (renamed?): {unknown}"
    survived = [c for c in expected if outcomes[c] != "failed"]
    for check in CAUGHT_BY[mutant]:
        if check.endswith("[all]"):
            cases = run.cases(check.removesuffix("[all]"))
            survived += [case for case, outcome in cases.items() if outcome != "failed"]
    assert not survived, (
        f"mutant {mutant} ({MUTANTS[mutant]}) survived {survived}; "
        f"outcomes: {[outcomes.get(c, run.outcomes.get(c)) for c in survived]}"
    )
    assert run.ret == pytest.ExitCode.TESTS_FAILED, run.summary()
    # one bug, not a broken backend: most of the suite still passes
    assert len(run.passed()) >= len(outcomes) // 2, run.summary()


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_backend_passes_the_whole_contract_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name in SERVICES:
        reason = service_unavailable(SERVICES[name])
        if reason is not None:
            pytest.skip(reason)
    clean_env(monkeypatch)
    run = run_contract(pytester, name)
    assert run.ret == pytest.ExitCode.OK and not run.failed(), run.summary()
    assert len(run.passed()) >= 50, run.summary()
