"""The race suite proves itself: every racy mutant fails it, for the right reason.

Each mutant of ``fixtures/mutants/racy.py`` answers every single call correctly and
loses one race (a read and a write that another caller can run between). The same
properties every backend runs (``authconform.race.properties``, through the suite
``authconform/suites/race/test_concurrency.py``) must catch each one within the ``ci``
profile, with the message of the property the bug breaks; the built-in backends pass
them (the suite, run per backend). Properties are called in this process (one pool of
worker processes for the whole self-test) rather than through a pytest subprocess per
mutant; ``test_a_failure_through_pytest_prints_the_replay`` covers the suite's wiring.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from authconform.contract import BackendSettings, SystemClock
from authconform.race.properties import PROPERTIES, RaceContext, RaceFailure, run_property
from authconform.race.runners import Runner, close_pool, process_pool
from fixtures.mutants import racy
from fixtures.mutants.harness import REPO, clean_env, service_unavailable
from fixtures.mutants.racy import CAUGHT_BY


@pytest.fixture(scope="module")
def _pool() -> Iterator[None]:
    yield
    close_pool()


def context_for(
    value: str, factory: object, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> tuple[RaceContext, object]:
    """A race context over ``factory`` in a fresh namespace on the real clock."""
    settings = BackendSettings(
        namespace="ac_racy_" + secrets.token_hex(4),
        clock=SystemClock(),
        sqlite_path=str(tmp_path / "racy.sqlite3"),
    )
    backend = factory(settings)  # type: ignore[operator]
    runner = Runner(
        value=value,
        factory=factory,  # type: ignore[arg-type]
        settings=settings,
        backend=backend,
        run_async=loop.run_until_complete,
        pool=process_pool(),
    )
    return RaceContext(
        runner=runner, backend=backend, run=loop.run_until_complete, save_dir=tmp_path
    ), backend


@pytest.mark.parametrize("mutant", sorted(racy.MUTANTS))
def test_the_race_suite_catches_the_mutant(mutant: str, tmp_path: Path, _pool: None) -> None:
    factory = getattr(racy, mutant)
    service = getattr(factory, "service", None)
    reason = service_unavailable(service) if service else None
    if reason:
        pytest.skip(reason)
    prop, pattern = CAUGHT_BY[mutant]
    loop = asyncio.new_event_loop()
    ctx, backend = context_for(f"fixtures.mutants.racy:{mutant}", factory, tmp_path, loop)
    try:
        with pytest.raises(RaceFailure) as caught:
            run_property(prop, ctx, profile="ci")
    finally:
        ctx.runner.close()
        loop.run_until_complete(backend.drop_namespace())  # type: ignore[attr-defined]
        loop.run_until_complete(backend.close())  # type: ignore[attr-defined]
        loop.close()
    message = str(caught.value)
    assert re.search(pattern, message), message[:3000]
    assert re.search(r"executor (asyncio|thread|process), N=\d+ callers", message), message[:500]
    assert re.search(r"seed \d+, found after", message), message[:500]
    assert "history (secrets redacted):" in message
    print(f"{mutant}: {message.splitlines()[1]}; found after {caught.value.detected_after:.2f} s")


def test_every_mutant_says_what_it_breaks_and_what_catches_it() -> None:
    assert set(CAUGHT_BY) == set(racy.MUTANTS)
    for name, bug in racy.MUTANTS.items():
        assert callable(getattr(racy, name)), name
        assert len(bug) > 20, name
        assert CAUGHT_BY[name][0] in PROPERTIES
    stores = {name.split("_", 1)[0] for name in racy.MUTANTS}
    assert stores == {"memory", "sqlite", "redis", "postgres"}


def test_a_failure_through_pytest_prints_the_replay(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through pytest: the failure names the seed, the example and the redacted history,
    and the printed replay command runs the same check with the same seed."""
    clean_env(monkeypatch)
    suite = REPO / "authconform" / "suites" / "race" / "test_concurrency.py"
    result = pytester.runpytest_subprocess(
        str(suite),
        "-c",
        str(REPO / "pyproject.toml"),
        "--rootdir",
        str(REPO),
        "-p",
        "no:cacheprovider",
        "-q",
        "-k",
        "test_a_window_admits_exactly_its_limit",
        "--backend=fixtures.mutants.racy:memory_hit_lost_update",
        timeout=300,
    )
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    assert re.search(r"a window of limit \d+ admitted", out), out[-3000:]
    replay = re.search(r"replay with:\n\s+(pytest .*)", out)
    assert replay, out[-3000:]
    seed = re.search(r"seed (\d+), found after", out)
    assert seed and f"--hypothesis-seed={seed.group(1)}" in replay.group(1)
    assert "--backend=fixtures.mutants.racy:memory_hit_lost_update" in replay.group(1)
