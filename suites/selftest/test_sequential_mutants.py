"""The model-based check proves itself: the state machine catches every sequential mutant.

Each mutant of ``fixtures/mutants/sequential.py`` carries one bug that no single call
shows (a rotation chain whose replay spares its tail, a subject index matched as a
prefix, Redis TTLs in the wrong unit, an instance that caches, ...). No check is aimed at
any of them: the same generated programs that every backend runs must find each one,
within the ``ci`` profile, and say at which step backend and model disagree. The
built-in backends pass the same programs (``authconform/suites/race``, run per backend;
memory exactly, in ``test_model.py``).

Cost: about 5 s per mutant on the injected clock, 10 s on Redis, up to 30 s on
PostgreSQL (a schema per namespace); shrinking is cut to 2 s here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from authconform.contract import BackendSettings
from authconform.race.machine import MachineFailure, Target, run_machine
from fixtures.mutants import sequential
from fixtures.mutants.harness import REPO, clean_env, run_suite, service_unavailable

DISAGREES = re.compile(
    r"backend \S+ disagrees with the contract model at step \d+, namespace '\S+', "
    r"instance \d:\n.*\nobserved: the backend (answered|raised) .*\nexpected \(model\): ",
)


def _target(name: str, tmp_path: object) -> Target:
    factory = getattr(sequential, name)
    uses_clock = bool(getattr(factory, "uses_clock", True))
    tolerance = 0.001 if uses_clock else 0.005
    return Target(
        name=name,
        factory=factory,
        settings=BackendSettings(
            namespace="ac_seq_" + format(abs(hash(name)) % 10**6, "06d"),
            sqlite_path=f"{tmp_path}/mutant.sqlite3",
        ),
        uses_clock=uses_clock,
        tolerance=tolerance,
        skew=0.0 if uses_clock else tolerance,
    )


@pytest.mark.parametrize("mutant", sorted(sequential.MUTANTS))
def test_state_machine_catches_the_mutant(mutant: str, tmp_path: object) -> None:
    service = getattr(getattr(sequential, mutant), "service", None)
    reason = service_unavailable(service) if service else None
    if reason:
        pytest.skip(reason)
    with pytest.raises(MachineFailure) as caught:
        run_machine(_target(mutant, tmp_path), profile="ci", shrink_seconds=2)
    message = str(caught.value)
    assert DISAGREES.search(message), message[:3000]
    assert caught.value.detected_after is not None
    print(f"{mutant}: first disagreement after {caught.value.detected_after:.2f} s")


def test_every_mutant_says_what_it_breaks() -> None:
    assert sequential.MUTANTS
    for name, bug in sequential.MUTANTS.items():
        assert callable(getattr(sequential, name)), name
        assert len(bug) > 20, name


def test_a_failure_prints_the_seed_and_one_command_replays_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through pytest: the seed is in the report's properties; the printed command fails
    again with the same first disagreement (shrinking is time-bounded, so the shrunk
    program may differ; the first failing program is the seed's)."""
    clean_env(monkeypatch)
    suite = REPO / "authconform" / "suites" / "race" / "test_state_machine.py"

    def run(*extra: str) -> tuple[str, str]:
        junit = pytester.path / f"junit{len(extra)}.xml"
        pytester.runpytest_subprocess(
            str(suite),
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(REPO),
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={junit}",
            "--backend=fixtures.mutants.sequential:stats_skip_consumed",
            *extra,
            timeout=300,
        )
        case = ET.parse(junit).getroot().find(".//testcase")
        assert case is not None
        failure = case.find("failure")
        assert failure is not None, "the mutant passed the state machine"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        return (failure.get("message") or "") + (failure.text or ""), props["authconform_seed"]

    message, seed = run()
    assert f"seed {seed}" in message
    replay = re.search(r"replay with:\n  (pytest .*)", message)
    assert replay and f"--hypothesis-seed={seed}" in replay.group(1), message[-2000:]
    assert "state.start(" in message, "the shrunk program is printed"
    first = re.search(r"first disagreement found .*\n(.*\n.*\n.*)", message)
    assert first, message[-3000:]
    again, seed_again = run(f"--hypothesis-seed={seed}")
    assert seed_again == seed
    assert first.group(1) in again, again[-3000:]


def test_contract_check_of_client_deletion_catches_its_mutant(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-step contract check of the pinned client deletion fails on the mutant that
    keeps a deleted client's codes and tokens, for that reason, and passes on memory."""
    clean_env(monkeypatch)
    name = "test_deleting_a_client_revokes_what_was_issued_to_it"
    run = run_suite(
        pytester,
        "contract/test_clients.py",
        "--backend=fixtures.mutants.sequential:delete_client_keeps_tokens,memory",
        "-k",
        name,
    )
    failures = run.failures(name)
    assert list(failures) == [
        f"test_clients::{name}[delete_client_keeps_tokens]"
    ], run.summary()
    assert "a deleted client's records survived its deletion" in next(iter(failures.values()))
    assert run.cases(name)[f"test_clients::{name}[memory]"] == "passed"
