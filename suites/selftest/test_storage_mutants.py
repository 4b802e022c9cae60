"""The contract suite proves itself: every mutant fails the checks aimed at its bug, and
every built-in backend passes the whole suite.

Each case runs ``suites/contract`` in a pytest subprocess (the repo's ini, a fresh random
namespace) and reads the outcome of every check from a JUnit file. The mutants live in
``fixtures/mutants/storage.py``; all but ``swallowed_outage`` copy the memory backend and
run on the fake clock, so a run takes a second or two.

Caught for the right reason: every check aimed at a mutant names the failure message it
expects (``CAUGHT_BY``), read from the JUnit file; a check that fails on the mutant for
another reason (a crash, a TypeError, an unexpected Conflict) does not count as catching it.

Concurrency: the racy mutants (``racy_consume``, ``racy_rate_limit``) await between their
read and their write, so the contract suite's ``asyncio.gather`` of callers on one event
loop is enough to catch them. A read-then-write with no await in between (a thread race on
an unlocked dict, or two processes) cannot be produced by ``asyncio.gather``; that is the
race suite's job (threads and processes), not the contract suite's.
"""

from __future__ import annotations

import re

import pytest

from fixtures.mutants.harness import SuiteRun, clean_env, run_suite
from fixtures.mutants.storage import MUTANTS

#: mutant -> {contract check that MUST fail on it: regex its failure message must match}.
#: ``name`` means at least one case of the check fails with a matching message;
#: ``name[all]``: every case does. The message is the failing assertion's (the ``message``
#: of the JUnit failure), so a mutant that only crashes a check (TypeError, KeyError, an
#: unexpected Conflict) is not counted as caught: it must fail for the reason aimed at.
_OUTLIVED = "the {} outlived its expiry"
_COPIES = "a stored record changed through a caller's or a returned dict"
_AGAIN = "a {} used with under 1 s left was consumed again"
CAUGHT_BY: dict[str, dict[str, str]] = {
    "racy_consume": {
        "test_concurrent_consumes_of_one_code_have_one_winner": (
            r"\b([2-9]|\d\d) of 40 concurrent consumes of one code got CONSUMED"
        ),
        "test_concurrent_consumes_of_one_reset_token_have_one_winner": (
            r"\b([2-9]|\d\d) of 40 concurrent consumes of one reset token got CONSUMED"
        ),
        "test_concurrent_consumes_of_one_state_have_one_winner": (
            r"\b([2-9]|\d\d) of 40 concurrent consumes of one state got CONSUMED"
        ),
    },
    "dropped_ttl_on_update": {
        "test_consumed_code_stays_consumed_until_it_expires": _OUTLIVED.format("consumed code"),
        "test_update_keeps_the_ttl_of_a_consumed_code": _OUTLIVED.format("consumed code"),
        "test_consume_with_less_than_a_second_left_is_recorded": _OUTLIVED.format("consumed code"),
        "test_wrong_answer_keeps_the_ttl_of_a_challenge": (
            "the challenge outlived its expiry after a wrong answer"
        ),
        "test_rotation_keeps_the_ttl_of_the_old_token": _OUTLIVED.format("rotated token"),
        "test_refresh_token_ttl_is_its_own": _OUTLIVED.format("rotated token"),
        "test_revocation_keeps_the_ttl_of_a_refresh_token": _OUTLIVED.format("revoked token"),
        "test_consumed_reset_token_keeps_its_ttl": _OUTLIVED.format("consumed reset token"),
        "test_consumed_state_keeps_its_ttl": _OUTLIVED.format("consumed state"),
    },
    "reset_ttl_on_update": {
        "test_update_keeps_the_ttl_of_a_consumed_code": _OUTLIVED.format("consumed code"),
        "test_consume_with_less_than_a_second_left_is_recorded": _OUTLIVED.format("consumed code"),
        "test_wrong_answer_keeps_the_ttl_of_a_challenge": (
            "the challenge outlived its expiry after a wrong answer"
        ),
        "test_rotation_keeps_the_ttl_of_the_old_token": _OUTLIVED.format("rotated token"),
        "test_revocation_keeps_the_ttl_of_a_refresh_token": _OUTLIVED.format("revoked token"),
        "test_consumed_reset_token_keeps_its_ttl": _OUTLIVED.format("consumed reset token"),
        "test_consumed_state_keeps_its_ttl": _OUTLIVED.format("consumed state"),
    },
    "records_by_reference": {
        "test_returned_access_token_records_are_copies": _COPIES,
        "test_returned_code_records_are_copies": _COPIES,
        "test_returned_reset_token_records_are_copies": _COPIES,
        "test_returned_session_records_are_copies": _COPIES,
        "test_returned_state_records_are_copies": _COPIES,
        "test_returned_client_records_are_copies": _COPIES,
        "test_returned_refresh_token_records_are_copies": _COPIES,
    },
    "ignored_namespace": {
        "test_namespaces_do_not_see_each_others_records": "namespace B sees namespace A's",
        "test_using_a_record_in_one_namespace_leaves_the_other_untouched": (
            "namespace B sees namespace A's"
        ),
        "test_drop_namespace_empties_only_its_namespace": (
            "drop_namespace of A removed namespace B's"
        ),
        "test_stats_count_live_records_per_kind": (
            r"stats\(\) of a fresh namespace counts records it never stored"
        ),
    },
    "rotation_keeps_old_token": {
        "test_refresh_rotation_revokes_previous_token": (
            r"the rotated-out token was accepted again \(ROTATED\): no reuse detection"
        ),
        "test_refresh_token_reuse_revokes_the_whole_grant": (
            r"the rotated-out token was accepted again \(ROTATED\): no reuse detection"
        ),
        "test_concurrent_rotations_of_one_token_have_one_winner": (
            r"\b([2-9]|\d\d) concurrent rotations of one token got ROTATED"
        ),
    },
    "revoke_grant_misses_refresh": {
        "test_revoke_grant_removes_its_access_and_refresh_tokens": (
            "a refresh token of the revoked grant (is not revoked|still rotates)"
        ),
    },
    "mark_used_skipped_under_one_second": {
        "test_consume_with_less_than_a_second_left_is_recorded": _AGAIN.format("code"),
        "test_consumed_reset_token_keeps_its_ttl": _AGAIN.format("reset token"),
        "test_consumed_state_keeps_its_ttl": _AGAIN.format("state"),
    },
    "plaintext_secrets": {
        "test_dump_of_the_store_contains_no_secret_in_clear": (
            r"the store keeps these secrets recoverable: .*\(clear text\)"
        ),
        "test_equal_challenge_answers_are_not_recoverable_from_a_dump": (
            "challenge answer stored recoverably: .*the answer in clear"
        ),
    },
    "racy_rate_limit": {
        "test_concurrent_hits_allow_exactly_limit": (
            r"\b(1[1-9]|[2-9]\d) of 30 concurrent hits allowed with limit 10"
        ),
    },
    "rate_limit_ignores_window": {
        "test_windows_of_different_lengths_on_one_key_are_counted_separately": (
            "window on a key shares its counter with the .* window of the same key"
        ),
    },
    "swallowed_outage": {
        "test_operation_fails_closed_when_the_store_is_down[all]": (
            r"^Failed: returned .* with the store down; expected StorageUnavailable"
        ),
    },
    "unsalted_challenge_answer": {
        "test_equal_challenge_answers_are_not_recoverable_from_a_dump": (
            r"challenge answer stored recoverably: the dump holds SHA-256\(answer\) hex"
        ),
    },
}

#: the whole contract suite on these built-ins, here in a subprocess as a user runs it; the
#: store-backed built-ins (fakeredis, redis, postgres) pass the same suite in the main CI
#: command (README), so repeating them here would only double CI time
BUILTINS = ["memory", "sqlite"]


def run_contract(pytester: pytest.Pytester, backend: str) -> SuiteRun:
    return run_suite(pytester, "contract", f"--backend={backend}")


def test_every_mutant_has_named_checks() -> None:
    assert sorted(CAUGHT_BY) == sorted(MUTANTS), "every mutant needs an entry in CAUGHT_BY"
    empty = sorted(m for m, checks in CAUGHT_BY.items() if not checks)
    assert not empty, f"mutants no contract check is aimed at: {empty}"
    for mutant, checks in CAUGHT_BY.items():
        for check, pattern in checks.items():
            assert pattern.strip(), f"{mutant}: {check} needs the failure message it expects"
            re.compile(pattern)


def _first_line(message: str) -> str:
    return (message.splitlines() or ["(no message)"])[0][:200]


def _not_caught(run: SuiteRun, check: str, pattern: str) -> list[str]:
    """Why ``check`` did not catch the mutant for the expected reason ([] if it did)."""
    name = check.removesuffix("[all]")
    cases = run.cases(name)
    if not cases:
        return [f"{name}: not in the contract run (renamed?)"]
    failures = run.failures(name)
    matched = {case for case, message in failures.items() if re.search(pattern, message)}
    wrong = [
        f"{case}: {outcome}"
        + (f" ({_first_line(run.messages.get(case, ''))})" if outcome != "passed" else "")
        for case, outcome in sorted(cases.items())
        if case not in matched
    ]
    if check.endswith("[all]"):
        return wrong
    return [] if matched else wrong


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_fails_the_checks_aimed_at_its_bug(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    """The checks aimed at the mutant fail, each with the failure message of its bug."""
    clean_env(monkeypatch)
    run = run_contract(pytester, f"fixtures.mutants.storage:{mutant}")
    outcomes = run.by_check()
    assert outcomes, f"the contract run reported no checks:\n{run.summary()}"
    survived = {
        check: reasons
        for check, pattern in CAUGHT_BY[mutant].items()
        if (reasons := _not_caught(run, check, pattern))
    }
    assert not survived, f"mutant {mutant} ({MUTANTS[mutant]}) was not caught, or not for " + (
        "its bug:\n"
        + "\n".join(
            f"- {check} (expects /{CAUGHT_BY[mutant][check]}/):\n    " + "\n    ".join(reasons[:5])
            for check, reasons in survived.items()
        )
    )
    assert run.ret == pytest.ExitCode.TESTS_FAILED, run.summary()
    # one bug, not a broken backend: most of the suite still passes
    assert len(run.passed()) >= len(outcomes) // 2, run.summary()


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_backend_passes_the_whole_contract_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    clean_env(monkeypatch)
    run = run_contract(pytester, name)
    assert run.ret == pytest.ExitCode.OK and not run.failed(), run.summary()
    assert len(run.passed()) >= 50, run.summary()
