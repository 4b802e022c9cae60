"""Real concurrency: N callers in lockstep on asyncio tasks, OS threads and processes.

Hypothesis chooses N (2 to 64), the executor (``asyncio`` tasks sharing one instance,
``thread``\\ s each with its own instance and client, ``process``\\ es each with its own
connection), per-caller jitter and the payloads; a barrier before every operation
releases the callers together (``authconform.race.runners``). The properties
(``authconform.race.properties``) judge the answers: one winner per code, state, reset
token, rotation and client id; exactly ``limit`` hits per window; a challenge's attempts
bounded; the longest touch wins; no winner after expiry or after revoke_grant answered;
mixed workloads linearizable against the contract model. The budget follows
``--authconform-hypothesis-profile``; a failure prints the seed, the example and the
redacted history, and the command that replays the same examples.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from authconform._options import setting
from authconform._session import run
from authconform.backends._registry import BackendSpec
from authconform.contract import (
    BackendSettings,
    Capability,
    CodeRecord,
    ConsumeStatus,
    StorageBackend,
    SystemClock,
)
from authconform.markers import race, requires, spec
from authconform.race.properties import PROPERTIES, RaceContext, RaceFailure, run_property
from authconform.race.runners import Call, Runner, close_pool, process_pool

pytestmark = [race]

THREADS_AND_PROCESSES = "CONTRACT-threads-and-processes-are-callers-like-any-other"
ATOMIC = "CONTRACT-atomic-operations"


@pytest.fixture(scope="session")
def _race_pool() -> Iterator[None]:
    """The session's worker processes, stopped at the end (and on any stop)."""
    yield
    close_pool()


def backend_value(spec_: BackendSpec) -> str:
    """What a worker process resolves: ``module:factory`` or the backend's name."""
    return spec_.source if ":" in spec_.source else spec_.name


@pytest.fixture(scope="module")
def race_context(
    request: pytest.FixtureRequest,
    backend_spec: BackendSpec,
    backend_settings: BackendSettings,
    _race_pool: None,
) -> Iterator[RaceContext]:
    """A fresh namespace on the real clock (callers in other processes share no fake
    clock), a runner over it, and where failing histories are saved."""
    settings = replace(
        backend_settings, clock=SystemClock(), namespace=backend_settings.namespace + "_race"
    )
    backend = backend_spec.factory(settings)
    runner = Runner(
        value=backend_value(backend_spec),
        factory=backend_spec.factory,
        settings=settings,
        backend=backend,
        run_async=run,
        pool=process_pool(),
    )
    save = (
        request.config.invocation_params.dir
        / str(setting(request.config, "report_dir"))
        / "race-histories"
    )
    try:
        yield RaceContext(runner=runner, backend=backend, run=run, save_dir=Path(save))
    finally:
        try:
            runner.close()
        finally:
            try:
                run(backend.drop_namespace())
            finally:
                run(backend.close())


def _replay(request: pytest.FixtureRequest, spec_: BackendSpec, profile: str, seed: int) -> str:
    return shlex.join(
        [
            "pytest",
            "--pyargs",
            "authconform.suites.race.test_concurrency",
            "-k",
            request.node.name,
            f"--backend={backend_value(spec_)}",
            f"--authconform-hypothesis-profile={profile}",
            f"--hypothesis-seed={seed}",
        ]
    )


def _check(
    name: str,
    request: pytest.FixtureRequest,
    backend_spec: BackendSpec,
    race_context: RaceContext,
    anchor: str,
) -> None:
    profile = str(setting(request.config, "hypothesis_profile"))
    forced = request.config.getoption("hypothesis_seed", None)

    def record_seed(seed: int) -> None:
        request.node.user_properties.append(("authconform_seed", seed))

    try:
        run_property(
            name,
            race_context,
            profile=profile,
            seed_value=None if forced is None else int(forced),
            on_seed=record_seed,
        )
    except RaceFailure as exc:
        assert exc.seed is not None
        pytest.fail(
            f"{exc}\nreplay with:\n  {_replay(request, backend_spec, profile, exc.seed)}\n"
            f"spec: CONTRACT-{anchor} (MUST) docs/contract.md#{anchor}",
            pytrace=False,
        )


@spec("CONTRACT-single-use", "CONTRACT-atomic-operations", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.CODES, Capability.STATES, Capability.RESET_TOKENS, any_of=True)
def test_one_of_n_consumes_wins(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent consumes of one code, state or reset token: exactly one CONSUMED."""
    _check("single_use", request, backend_spec, race_context, "single-use")


@spec("CONTRACT-refresh-rotation", ATOMIC, THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.REFRESH)
def test_one_of_n_rotations_wins(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent rotations of one refresh token: one ROTATED, one REUSED, the rest
    REVOKED; the family (the winner's successor too) ends revoked."""
    _check("rotation_once", request, backend_spec, race_context, "refresh-rotation")


@spec("CONTRACT-rate-limit-fixed-window", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.RATE_LIMITS)
def test_a_window_admits_exactly_its_limit(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent hits in one window of limit L < N: exactly L allowed, counts 1..N."""
    _check("rate_limit_exact", request, backend_spec, race_context, "rate-limit-fixed-window")


@spec("CONTRACT-existing-keys-conflict", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.CLIENTS)
def test_one_of_n_client_creations_wins(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent creations of one client id: one success, N - 1 Conflict."""
    _check("client_created_once", request, backend_spec, race_context, "existing-keys-conflict")


@spec("CONTRACT-challenge-attempts", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.CHALLENGES)
def test_a_challenge_never_allows_more_than_its_attempts(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent answers: at most max_attempts counted, at most one SUCCESS or LOCKED."""
    _check("challenge_attempts_bounded", request, backend_spec, race_context, "challenge-attempts")


@spec("CONTRACT-session-lifetime", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.SESSIONS)
def test_concurrent_touches_leave_the_longest_expiry(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """N concurrent touches of one session: it expires no earlier than the longest asked."""
    _check("touch_longest", request, backend_spec, race_context, "session-lifetime")


@spec("CONTRACT-half-open-lifetime", "CONTRACT-single-use", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.CODES)
def test_no_consume_wins_after_expiry(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """Consumes released at a code's expiry instant: no CONSUMED after it expired or after
    another caller was told EXPIRED."""
    _check("consume_racing_expiry", request, backend_spec, race_context, "half-open-lifetime")


@spec("CONTRACT-revoke-grant", "CONTRACT-refresh-rotation", THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.REFRESH, Capability.TOKENS)
def test_no_rotation_escapes_a_racing_revoke_grant(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """Rotations racing revoke_grant: no token of the grant is usable afterwards."""
    _check("rotate_racing_revoke_grant", request, backend_spec, race_context, "revoke-grant")


@spec("CONTRACT-executable-model", ATOMIC, THREADS_AND_PROCESSES, level="MUST")
@requires(Capability.CODES, Capability.REFRESH, Capability.TOKENS, Capability.SESSIONS)
def test_mixed_concurrent_histories_are_linearizable(
    request: pytest.FixtureRequest,
    backend: StorageBackend,
    backend_spec: BackendSpec,
    race_context: RaceContext,
) -> None:
    """Consume, get, rotate, revoke_grant and touch interleaved across callers, several
    operations each: some order of the operations, each inside its call window, gives
    every answer the model gives (bounded search; past the bound it fails as unknown)."""
    _check("mixed_linearizable", request, backend_spec, race_context, "executable-model")


@spec(THREADS_AND_PROCESSES, "CONTRACT-shared-between-instances", level="MUST")
@requires(Capability.CODES)
def test_callers_in_other_processes_share_the_store(
    backend: StorageBackend, race_context: RaceContext
) -> None:
    """A code put here is seen by instances in other processes, and consumed once there."""
    reason = race_context.runner.not_applicable("process")
    if reason:
        pytest.skip(reason)
    code = "proc-" + "x" * 24
    race_context.setup("put_code", code, CodeRecord("app", "alice", "g-proc"), 600.0)
    history = race_context.runner.run("process", [[Call("get_code", (code,))]] * 4)
    unseen = [o for o in history if o.result is None or isinstance(o.result, BaseException)]
    assert not unseen, (
        f"{len(unseen)} of 4 processes did not see the code put here: the store is not shared "
        "between processes (a store in process memory loses grants between instances; a test "
        "double declares `factory.in_process = True`, see docs/contract.md)"
    )
    history = race_context.runner.run("process", [[Call("consume_code", (code,))]] * 4)
    wins = [o for o in history if getattr(o.result, "status", None) == ConsumeStatus.CONSUMED]
    assert len(wins) == 1, f"{len(wins)} of 4 processes consumed one code"
    after = race_context.setup("consume_code", code)
    assert after.result.status == ConsumeStatus.ALREADY_USED, (
        "a code consumed in another process is not used here"
    )


assert set(PROPERTIES) == {
    "single_use",
    "rotation_once",
    "rate_limit_exact",
    "client_created_once",
    "challenge_attempts_bounded",
    "touch_longest",
    "consume_racing_expiry",
    "rotate_racing_revoke_grant",
    "mixed_linearizable",
}
