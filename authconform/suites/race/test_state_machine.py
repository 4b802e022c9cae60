"""Generated programs of every storage operation: each answer must be the model's.

The contract's executable definition (``authconform.contract.model``) and the backend
run side by side (``authconform.race.machine``): ids that collide on purpose, several
instances of the backend, two namespaces of which one is a prefix of the other,
rotation chains, purge, exact expiry boundaries on an injected clock and short real TTLs
with ``expired_retention`` 0 on stores that keep time themselves. The budget follows
``--authconform-hypothesis-profile`` (dev, ci, nightly); a failure prints the shrunk
program, the step where backend and model disagree and the command that replays it.
"""

from __future__ import annotations

import shlex
import time

import pytest

from authconform._options import setting
from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings
from authconform.markers import race, spec
from authconform.race.machine import PROFILES, MachineFailure, Target, run_machine

pytestmark = [race]

#: timestamps may be later than the model's by up to 1 ms (rounding up to the
#: millisecond is allowed, see docs/contract.md "TTL precision"); stores with their own
#: clock are also compared across the call window and a few ms of clock skew
CLOCK_TOLERANCE = 0.001
REAL_TOLERANCE = 0.005


def _replay(
    request: pytest.FixtureRequest, backend_spec: BackendSpec, profile: str, seed: int
) -> str:
    backend = backend_spec.source if ":" in backend_spec.source else backend_spec.name
    return shlex.join(
        [
            "pytest",
            "--pyargs",
            "authconform.suites.race.test_state_machine",
            "-k",
            request.node.name,
            f"--backend={backend}",
            f"--authconform-hypothesis-profile={profile}",
            f"--hypothesis-seed={seed}",
        ]
    )


@spec("CONTRACT-executable-model", level="MUST")
def test_every_answer_is_the_contract_models(
    request: pytest.FixtureRequest, backend_spec: BackendSpec, backend_settings: BackendSettings
) -> None:
    """Over generated programs of every operation, the backend answers as the model does.

    The model is docs/contract.md in code; one disagreement is a breach of the contract.
    """
    profile = str(setting(request.config, "hypothesis_profile"))
    if profile not in PROFILES:
        pytest.fail(
            f"--authconform-hypothesis-profile must be one of {', '.join(PROFILES)}, "
            f"got {profile!r}",
            pytrace=False,
        )
    uses_clock = backend_spec.uses_clock
    tolerance = CLOCK_TOLERANCE if uses_clock else REAL_TOLERANCE
    target = Target(
        name=backend_spec.name,
        factory=backend_spec.factory,
        settings=backend_settings,
        uses_clock=uses_clock,
        tolerance=tolerance,
        skew=0.0 if uses_clock else tolerance,
    )
    forced = request.config.getoption("hypothesis_seed", None)

    def record_seed(seed: int) -> None:
        request.node.user_properties.append(("authconform_seed", seed))

    started = time.monotonic()
    try:
        run_machine(
            target,
            profile=profile,
            seed_value=None if forced is None else int(forced),
            on_seed=record_seed,
        )
    except MachineFailure as exc:
        found = (
            f" (first disagreement after {exc.detected_after:.1f} s)"
            if exc.detected_after is not None
            else ""
        )
        pytest.fail(
            f"{exc}\n\nseed {exc.seed}{found}, {time.monotonic() - started:.1f} s in all; "
            f"replay with:\n  {_replay(request, backend_spec, profile, exc.seed)}\n"
            "spec: CONTRACT-executable-model (MUST) docs/contract.md#executable-model",
            pytrace=False,
        )
