"""Self-test: the live race checks catch the racy servers, and pass the reference.

One pytest run (a subprocess) of ``authconform/suites/live/test_races.py`` over sqlite
with two reference-server processes per target (a real cross-process race, on a store
whose calls wait): every mutant of ``fixtures/mutants/racy_servers.py`` is a target of
its own and must fail its named checks for the right reason; the plain reference and
the allowed variants pass every race check (under ``--authconform-strict``); a server
that does not rotate refresh tokens makes the refresh races ``not-applicable``.
"""

from __future__ import annotations

import re

import pytest

from fixtures.live_harness import Outcome, live_subprocess, summary
from fixtures.mutants.racy_servers import MUTANTS, NOT_APPLICABLE, VARIANTS

#: one xdist worker runs this module: its module fixture (a whole run) is built once
pytestmark = pytest.mark.xdist_group("test_racy_servers")

RACES = "authconform/suites/live/test_races.py"
FLAGS = ("--backend=sqlite", "--authconform-instances=2", "--authconform-strict",
         "--authconform-race-rounds=4", "--authconform-race-size=8")


def _short(variant: str) -> str:
    return variant.rsplit(":", 1)[-1]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Outcome]]:
    """One run: every racy mutant, the variants and the plain reference."""
    variants = [f"fixtures.mutants.racy_servers:{m}" for m in MUTANTS]
    variants += [*VARIANTS, *NOT_APPLICABLE]
    done = live_subprocess(tmp_path_factory.mktemp("racy"), *FLAGS,
                           *(f"--authconform-variant={v}" for v in variants), path=RACES)
    return done.stdout + done.stderr, done.outcomes


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_racy_mutant_fails_its_check_for_the_right_reason(
    batch: tuple[str, dict[str, Outcome]], mutant: str
) -> None:
    out, outcomes = batch
    assert "INTERNALERROR" not in out, out[-3000:]
    for check, pattern in MUTANTS[mutant]:
        got = outcomes.get(f"{check}[ref-sqlite-{mutant}]")
        assert got is not None, f"{check} did not run against {mutant}:\n{summary(outcomes)}"
        assert got.outcome == "failed", f"{mutant}: {check} {got.outcome}\n{got.message[:1500]}"
        assert "observed:" in got.message and "spec: " in got.message, got.message[:800]
        assert re.search(pattern, got.message, re.S), (
            f"{mutant}: {check} failed for another reason than /{pattern}/:\n"
            f"{got.message[:1500]}")


def test_reference_and_variants_pass_every_race_check(
    batch: tuple[str, dict[str, Outcome]]
) -> None:
    _, outcomes = batch
    targets = ["ref-sqlite", *(f"ref-sqlite-{_short(v)}" for v in VARIANTS)]
    mine = {k: v for k, v in outcomes.items() if any(k.endswith(f"[{t}]") for t in targets)}
    assert len(mine) == 5 * len(targets), summary(outcomes)
    bad = {k: v for k, v in mine.items() if v.outcome != "passed"}
    assert not bad, summary(bad)


@pytest.mark.parametrize("variant", sorted(NOT_APPLICABLE))
def test_refresh_races_are_not_applicable_without_rotation(
    batch: tuple[str, dict[str, Outcome]], variant: str
) -> None:
    _, outcomes = batch
    for check in NOT_APPLICABLE[variant]:
        got = outcomes.get(f"{check}[ref-sqlite-{_short(variant)}]")
        assert got is not None and got.outcome == "skipped", got
        assert got.message.strip().startswith("not-applicable:"), got.message
