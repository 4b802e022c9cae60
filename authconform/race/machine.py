"""A backend and the contract model side by side, driven by a Hypothesis state machine.

``run_machine(target, profile=...)`` runs ``RuleBasedStateMachine`` programs against one
backend: every rule calls one ``StorageBackend`` operation on one of several instances
of the backend in one of two namespaces (``<ns>`` and ``<ns>_2``: one a prefix of the
other), and the answer must be one the model (``authconform.contract.model``) gives.
Ids are drawn from small pools that collide on purpose (case variants, prefixes, glob,
regex and LIKE characters, ``:`` ``{`` ``}``, Unicode normalisation variants), so the
same key is reused across kinds, namespaces and instances. Time moves to exact expiry
boundaries on an injected clock (``expires_at`` exactly, one ulp before and after); on
stores that keep time themselves the machine sleeps to just before and just after
boundaries with short real TTLs and an ``expired_retention`` of 0 or 0.25 s, so a
wrong physical TTL shows.

A failure names the step where backend and model disagree (observed vs the model's
answer); Hypothesis shrinks the program and prints it, and ``MachineFailure`` carries
the seed that replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase, note, seed, settings
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.errors import Flaky
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from authconform.contract import (
    AccessTokenRecord,
    BackendSettings,
    ChallengeRecord,
    CodeRecord,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
)
from authconform.contract._protocol import ALL_CAPABILITIES, CAPABILITY_OF_OPERATION, Capability
from authconform.contract.model import MODEL_ERRORS, ContractModel
from authconform.race.history import Operation, describe

__all__ = [
    "PROFILES",
    "MachineFailure",
    "Target",
    "machine_settings",
    "run_machine",
]

# pools of ids that collide on purpose ----------------------------------------------------
NFC_CAFE, NFD_CAFE = "caf\u00e9", "cafe\u0301"
KEYS = (
    "k",
    "K",
    "k1",
    "k10",
    "k*",
    "k?",
    "[k]",
    "k%",
    "k_",
    "k.",
    "{k}",
    "k:1",
    "k:",
    "\u00c5",  # A with ring (NFC)
    "A\u030a",  # A + combining ring (NFD)
    "\u212b",  # ANGSTROM SIGN (NFC-normalises to U+00C5)
    "\ufb01",  # fi ligature (NFKC: "fi")
    "fi",
    "stra\u00dfe",
    "strasse",
    NFC_CAFE,
    NFD_CAFE,
)
SUBJECTS = ("bob", "bobby", "Bob", "bo", "b*", "b%", "b_b", "bob:1", "[b]ob", NFC_CAFE, NFD_CAFE)
CLIENTS = ("app", "App", "app2", "ap*", "app:", "\u00e4pp", "a\u0308pp", "ap%")
GRANTS = ("g", "G", "g1", "g*", "g%", "g:")
RATE_KEYS = ("ip:1", "ip:10", "IP:1", "ip:*", "ip:1?")
EXTRAS: tuple[dict[str, Any], ...] = (
    {},
    {"n": 1},
    {"k": "v", "l": [1, 2.5, None, True], "o": {"x": "\u00e9"}},
)
METADATA: tuple[dict[str, Any], ...] = (
    {},
    {"name": "A"},
    {"redirect_uris": ["https://a.example/cb"], "name": "B"},
    {"name": None, "n": 2},
)

#: the single-use kinds: record class, put and consume operations
ONCE: dict[str, tuple[type[Any], str, str]] = {
    "codes": (CodeRecord, "put_code", "consume_code"),
    "states": (StateRecord, "put_state", "consume_state"),
    "reset_tokens": (ResetTokenRecord, "put_reset_token", "consume_reset_token"),
}

#: Budget per profile. ``seconds``: the wall time aimed at per backend; the number of
#: programs is what fits in it (measured on the backend before the run: a call's latency
#: and the time to empty both namespaces), between ``examples`` (min, max). ``steps``:
#: rules per program on the injected clock / on a real-time store; ``sleep``: real
#: sleep allowed per program (real-time stores); ``shrink``: seconds spent shrinking.
PROFILES: dict[str, dict[str, Any]] = {
    "dev": {"seconds": 6, "examples": (3, 15), "steps": (40, 30), "sleep": 0.6, "shrink": 10},
    "ci": {"seconds": 20, "examples": (8, 50), "steps": (120, 50), "sleep": 1.0, "shrink": 20},
    "nightly": {
        "seconds": 600,
        "examples": (100, 1000),
        "steps": (150, 80),
        "sleep": 2.0,
        "shrink": 120,
    },
}
CALLS_PER_STEP = 7  # a rule's calls and the reads after it, on average
CALL_OVERHEAD = 0.0004  # seconds per call spent in the model and Hypothesis


def machine_settings(profile: str, *, uses_clock: bool, examples: int | None = None) -> settings:
    """Our Hypothesis settings for ``profile`` (never a global profile: ours only)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    budget = PROFILES[profile]
    steps = budget["steps"][0 if uses_clock else 1]
    return settings(
        parent=settings.get_profile("default"),  # not whatever profile the host loaded
        max_examples=examples or budget["examples"][1],
        stateful_step_count=steps,
        deadline=None,
        database=None,  # the seed replays a failure; no state shared between runs
        print_blob=True,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
    )


def plan_examples(profile: str, *, uses_clock: bool, latency: float, reset: float) -> int:
    """How many programs fit the profile's wall time.

    ``latency`` is a call's, ``reset`` the time to empty both namespaces (seconds).
    """
    budget = PROFILES[profile]
    low, high = (int(n) for n in budget["examples"])
    steps = budget["steps"][0 if uses_clock else 1]
    per_program = steps * CALLS_PER_STEP * (latency + CALL_OVERHEAD) + reset
    if not uses_clock:
        per_program += budget["sleep"] * 0.7  # programs sleep for most of their allowance
    return max(low, min(high, int(budget["seconds"] / max(per_program, 1e-6))))


@dataclass
class Target:
    """The backend under test: its factory, base settings and clock."""

    name: str
    factory: Callable[[BackendSettings], Any]
    settings: BackendSettings
    uses_clock: bool
    instances: int = 2
    tolerance: float = 0.0  # timestamps may be later than the model's by this much
    skew: float = 0.0  # how far the store's clock may be off time.time()


class MachineFailure(AssertionError):
    """The backend answered something the contract does not allow; carries the seed."""

    def __init__(self, message: str, seed: int, detected_after: float | None = None) -> None:
        """``message`` names the step; ``seed`` replays the run."""
        super().__init__(message)
        self.seed = seed
        self.detected_after = detected_after  # seconds from the start to the first failure


EPOCH = 1_700_000_000.0


class _ExampleClock:
    """The injected clock of the backends under test: every example starts at ``EPOCH``.

    Rate-limit windows are aligned to absolute time, so a replayed example must see the
    same instants as the first run; this clock (unlike ``FakeClock``) may be set back,
    which happens only between examples, after both namespaces were emptied.
    """

    def __init__(self) -> None:
        self._now = EPOCH

    def now(self) -> float:
        return self._now

    def set(self, instant: float) -> None:
        self._now = instant


class _Driver:
    """Backend instances and the event loop they run on, shared by every example."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.clock = _ExampleClock() if target.uses_clock else None
        self.loop = asyncio.new_event_loop()
        base = target.settings.namespace[:30]
        self.namespaces = (base + "_sm", base + "_sm_2")
        self._made: dict[tuple[int, int, float], Any] = {}
        self.started = time.monotonic()
        self.plan: tuple[int, int, float, float] | None = None
        self.first_failure: float | None = None
        self.first_message = ""
        self.capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def backend(self, ns: int, instance: int, retention: float) -> Any:
        key = (ns, instance, retention)
        made = self._made.get(key)
        if made is None:
            settings = replace(
                self.target.settings,
                namespace=self.namespaces[ns],
                expired_retention=retention,
            )
            if self.clock is not None:
                settings = replace(settings, clock=self.clock)
            made = self._made[key] = self.target.factory(settings)
            self.capabilities = frozenset(getattr(made, "capabilities", ALL_CAPABILITIES))
        return made

    def reset(self, retention: float) -> None:
        """Empty both namespaces through every instance (each forgets its schema)."""
        for ns in range(2):
            for instance in range(self.target.instances):
                self.run(self.backend(ns, instance, retention).drop_namespace())

    def close(self) -> None:
        try:
            for backend in self._made.values():
                try:
                    self.run(backend.drop_namespace())
                finally:
                    self.run(backend.close())
        finally:
            self.loop.close()

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else time.time()


def build_machine(driver: _Driver, sleep_budget: float) -> type[RuleBasedStateMachine]:
    """The state machine class for one backend (a closure over its driver)."""
    target = driver.target
    fake = driver.clock
    instances = target.instances
    if fake is not None:
        ttls = st.sampled_from((0.001, 0.35, 1.0, 2.5, 10.0, 60.0, 3600.0, 3600.0))
        windows = st.sampled_from((0.5, 1.0, 10.0, 60.0))
        retentions: tuple[float, ...] = (math.inf,)
    else:
        ttls = st.sampled_from((0.15, 0.3, 0.5, 60.0, 60.0))
        windows = st.sampled_from((0.25, 0.5, 60.0))
        retentions = (0.0, 0.25)
    ns_ = st.sampled_from((0, 0, 0, 1))
    inst_ = st.integers(0, instances - 1)
    # An id is drawn as a number: mostly one the namespace already holds (so consume,
    # rotate and revoke meet what was put), otherwise one of the colliding pool.
    keys = picks = st.integers(0, 99)
    clients = st.sampled_from(CLIENTS)
    # a record is drawn as one number and decoded by ``record`` (few choices: fast to
    # generate and to shrink); its client, subject and grant are mostly ones in use
    code_records = access_records = refresh_records = st.integers(0, 10**7)
    challenge_records = session_records = code_records

    class ContractMachine(RuleBasedStateMachine):
        """Every operation on a backend and on the model; answers must agree."""

        def __init__(self) -> None:
            super().__init__()
            self.models: list[list[ContractModel]] = []
            self.retention = 0.0
            self.steps = 0
            self.probes = 0
            self.last_ns = 0
            self.dropped = False
            self.slept = 0.0
            self.history: list[Operation] = []

        # setup ---------------------------------------------------------------------------
        @initialize(retention=st.sampled_from(retentions))
        def start(self, retention: float) -> None:
            self.retention = 0.0 if math.isinf(retention) else retention
            driver.reset(self.retention)
            if fake is not None:
                fake.set(EPOCH)
            now = driver.now()
            self.models = [[ContractModel(now=now, expired_retention=retention)] for _ in range(2)]

        # the one place a backend is called -------------------------------------------------
        def call(
            self,
            ns: int,
            instance: int,
            op: str,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            backend = driver.backend(ns, instance, self.retention)
            if CAPABILITY_OF_OPERATION[op] not in driver.capabilities:
                return None  # not declared: neither the backend nor the model takes it
            self.steps += 1
            self.last_ns = ns
            lo = driver.now()
            try:
                observed = driver.run(getattr(backend, op)(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - compared with the model's answer
                observed = exc
            hi = driver.now()
            record = Operation(ns * 100 + instance, op, tuple(args), kwargs, lo, hi, observed)
            self.history.append(record)
            before = self.models[ns]
            after: dict[Any, ContractModel] = {}
            for model in before:
                for nxt in model.step(
                    op,
                    tuple(args),
                    kwargs,
                    observed,
                    lo=lo,
                    hi=hi,
                    tolerance=target.tolerance,
                    skew=target.skew,
                ):
                    fp = (nxt.fingerprint(), nxt.now)
                    after.setdefault(fp, nxt)
            if not after:
                try:
                    self.fail(ns, instance, record, before)
                except AssertionError as exc:
                    if driver.first_failure is None:
                        driver.first_failure = time.monotonic() - driver.started
                        driver.first_message = str(exc)
                    raise
            self.models[ns] = sorted(after.values(), key=lambda m: m.now)[:8]
            if current_build_context().is_final:
                note(f"step {self.steps}: {describe([record]).strip()}")
            return observed

        def fail(
            self, ns: int, instance: int, record: Operation, models: list[ContractModel]
        ) -> None:
            expected = []
            for model in models:
                answer = model.copy().run(
                    record.op, record.args, record.kwargs, now=max(record.call, model.now)
                )
                expected.append(describe([replace(record, result=answer)]).split("-> ", 1)[1])
            kind = (
                "raised"
                if isinstance(record.result, BaseException)
                and not isinstance(record.result, MODEL_ERRORS)
                else "answered"
            )
            detail = (
                f": {record.result}"
                if kind == "raised" and not isinstance(record.result, AssertionError)
                else ""
            )
            raise AssertionError(
                f"backend {target.name} disagrees with the contract model at step "
                f"{self.steps}, namespace {driver.namespaces[ns]!r}, instance {instance}:\n"
                f"{describe([record]).strip()}\n"
                f"observed: the backend {kind} "
                f"{describe([record]).split('-> ', 1)[1]}{detail}\n"
                f"expected (model): {' or '.join(sorted(set(expected)))}"
            )

        def record(self, ns: int, cls: type[Any], r: int) -> Any:
            """Decode a drawn number into a record of ``cls``."""
            client = self.client(ns, r % 100)
            subject = self.subject(ns, (r // 100) % 100)
            grant = self.grant(ns, (r // 10_000) % 100)
            extra = EXTRAS[(r // 1_000_000) % len(EXTRAS)]
            scopes = ((), ("read",), ("read", "write"))[(r // 3_000_000) % 3]
            if cls is CodeRecord:
                return CodeRecord(
                    client,
                    subject,
                    grant,
                    redirect_uri="https://a.example/cb",
                    scopes=scopes,
                    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                    resource=(None, "https://rs.example/mcp")[r % 2],
                    extra=extra,
                )
            if cls in (AccessTokenRecord, RefreshTokenRecord):
                return cls(client, subject, grant, scopes=scopes, extra=extra)
            if cls is StateRecord:
                return StateRecord(client, extra=extra)
            if cls is ChallengeRecord:
                return ChallengeRecord(subject, max_attempts=1 + (r // 100) % 3, extra=extra)
            return cls(subject, extra=extra)  # reset tokens, sessions

        def known(self, ns: int, kind: str) -> list[Any]:
            return sorted(self.models[ns][0]._t[kind], key=repr)

        def key(self, ns: int, kind: str, pick: int, *, put: bool = False) -> str:
            """Mostly a live key this namespace holds, else any it holds, else the pool.

            For a put, mostly one of the pool (a held one would be a Conflict).
            """
            model = self.models[ns][0]
            known = self.known(ns, kind) or self.known(1 - ns, kind)
            if put:
                if pick < 20 and known:
                    return str(known[pick % len(known)])
                return str(KEYS[pick % len(KEYS)])
            live = [k for k in known if model.now < getattr(model._t[kind].get(k), "expires_at", 0)]
            if pick < 50 and live:
                return str(live[pick % len(live)])
            if pick < 75 and known:
                return str(known[pick % len(known)])
            return str(KEYS[pick % len(KEYS)])

        def subject(self, ns: int, pick: int) -> str:
            held = sorted({e.subject for e in self.models[ns][0]._t["sessions"].values()})
            if pick < 60 and held:
                return str(held[pick % len(held)])
            return SUBJECTS[pick % len(SUBJECTS)]

        def grant(self, ns: int, pick: int) -> str:
            table = self.models[ns][0]._t
            held = sorted(
                {
                    e.grant_id
                    for kind in ("access_tokens", "refresh_tokens")
                    for e in table[kind].values()
                }
            )
            if pick < 60 and held:
                return str(held[pick % len(held)])
            return GRANTS[pick % len(GRANTS)]

        def client(self, ns: int, pick: int) -> str:
            table = self.models[ns][0]._t
            held = sorted(
                set(table["clients"])
                | {
                    e.client_id
                    for kind in ("codes", "access_tokens", "refresh_tokens")
                    for e in table[kind].values()
                }
            )
            if pick < 60 and held:
                return str(held[pick % len(held)])
            return CLIENTS[pick % len(CLIENTS)]

        # clients -----------------------------------------------------------------------
        @rule(
            ns=ns_,
            i=inst_,
            cid=clients,
            md=st.sampled_from(METADATA),
            sec=st.sampled_from((None, "s3cret", "S3cret")),
        )
        def create_client(self, ns: int, i: int, cid: str, md: dict[str, Any], sec: Any) -> None:
            self.call(ns, i, "create_client", cid, md, secret=sec)

        @rule(
            ns=ns_,
            i=inst_,
            cid=picks,
            md=st.sampled_from(METADATA),
            sec=st.sampled_from((None, "n3w")),
        )
        def update_client(self, ns: int, i: int, cid: int, md: dict[str, Any], sec: Any) -> None:
            self.call(ns, i, "update_client", self.client(ns, cid), md, secret=sec)

        @rule(ns=ns_, i=inst_, cid=picks)
        def delete_client(self, ns: int, i: int, cid: int) -> None:
            self.call(ns, i, "delete_client", self.client(ns, cid))

        @rule(ns=ns_, i=inst_, cid=picks, sec=st.sampled_from(("s3cret", "S3cret", "n3w")))
        def verify_client_secret(self, ns: int, i: int, cid: int, sec: str) -> None:
            self.call(ns, i, "verify_client_secret", self.client(ns, cid), sec)

        # codes, states, reset tokens ---------------------------------------------------
        @rule(ns=ns_, i=inst_, k=keys, rec=access_records, ttl=ttls)
        def put_access_token(self, ns: int, i: int, k: int, rec: int, ttl: float) -> None:
            self.call(
                ns,
                i,
                "put_access_token",
                self.key(ns, "access_tokens", k, put=True),
                self.record(ns, AccessTokenRecord, rec),
                ttl,
            )

        @rule(ns=ns_, i=inst_, k=keys)
        def revoke_access_token(self, ns: int, i: int, k: int) -> None:
            self.call(ns, i, "revoke_access_token", self.key(ns, "access_tokens", k))

        @rule(ns=ns_, i=inst_, g=picks)
        def revoke_grant(self, ns: int, i: int, g: int) -> None:
            self.call(ns, i, "revoke_grant", self.grant(ns, g))

        @rule(ns=ns_, i=inst_, k=keys, rec=refresh_records, ttl=ttls)
        def put_refresh_token(self, ns: int, i: int, k: int, rec: int, ttl: float) -> None:
            self.call(
                ns,
                i,
                "put_refresh_token",
                self.key(ns, "refresh_tokens", k, put=True),
                self.record(ns, RefreshTokenRecord, rec),
                ttl,
            )

        @rule(
            ns=ns_,
            i=inst_,
            pick=st.integers(0, 99),
            new=st.one_of(st.none(), st.sampled_from(KEYS)),
            ttl=ttls,
        )
        def rotate_refresh_token(
            self, ns: int, i: int, pick: int, new: str | None, ttl: float
        ) -> None:
            """Mostly the head of a chain (live, not rotated, not revoked): chains grow."""
            model = self.models[ns][0]
            table = model._t["refresh_tokens"]
            known = self.known(ns, "refresh_tokens") or list(KEYS)
            heads = [
                k
                for k in self.known(ns, "refresh_tokens")
                if model.now < table[k].expires_at and not table[k].rotated and not table[k].revoked
            ]
            pool = heads if pick < 70 and heads else known
            old = pool[pick % len(pool)]
            self.call(ns, i, "rotate_refresh_token", old, new or f"rt{self.steps}", ttl)

        @rule(
            ns=ns_,
            i=inst_,
            pick=st.integers(0, 99),
            length=st.integers(1, 3),
            ttl=ttls,
            replay=st.sampled_from((0, 1)),
        )
        def extend_chain(
            self, ns: int, i: int, pick: int, length: int, ttl: float, replay: int
        ) -> None:
            """Rotate the head of a chain ``length`` times: A -> B -> C -> ...

            Then maybe replay its first token (reuse: the whole grant is revoked).
            """
            model = self.models[ns][0]
            table = model._t["refresh_tokens"]
            heads = [
                k
                for k in self.known(ns, "refresh_tokens")
                if model.now < table[k].expires_at and not table[k].rotated and not table[k].revoked
            ]
            if heads:
                head = heads[pick % len(heads)]
            else:  # start a chain
                head = f"rt{self.steps}c"
                record = self.record(ns, RefreshTokenRecord, pick * 101)
                self.call(ns, i, "put_refresh_token", head, record, ttl)
            first = head
            for n in range(length):
                new = f"rt{self.steps}c{n}"
                self.call(ns, i, "rotate_refresh_token", head, new, ttl)
                head = new
            if replay:
                self.call(ns, (i + 1) % instances, "rotate_refresh_token", first, head + "r", ttl)

        @rule(
            ns=ns_,
            i=inst_,
            kind=st.sampled_from(tuple(ONCE)),
            k=keys,
            rec=code_records,
            ttl=ttls,
        )
        def put_single_use(self, ns: int, i: int, kind: str, k: int, rec: int, ttl: float) -> None:
            """put_code, put_state or put_reset_token."""
            cls, put, _ = ONCE[kind]
            key = self.key(ns, kind, k, put=True)
            self.call(ns, i, put, key, self.record(ns, cls, rec), ttl)

        @rule(
            ns=ns_,
            i=inst_,
            kind=st.sampled_from(tuple(ONCE)),
            k=keys,
            rec=code_records,
            used=st.sampled_from((0, 1)),
        )
        def expiry_flow(self, ns: int, i: int, kind: str, k: int, rec: int, used: int) -> None:
            """Put a short-lived single-use record, maybe redeem it, wait, redeem it again.

            The wait ends past its expiry and retention (exactly at its expiry on the
            injected clock): EXPIRED or NOT_FOUND tells the physical TTL.
            """
            cls, put, consume = ONCE[kind]
            ttl = 0.35 if fake is not None else 0.15
            wait = ttl + self.retention + 0.04
            if fake is None and self.slept + wait > sleep_budget:
                return
            key = self.key(ns, kind, k, put=True)
            stored = self.call(ns, i, put, key, self.record(ns, cls, rec), ttl)
            if used:
                self.call(ns, (i + 1) % instances, consume, key)
            if fake is not None:
                expires = getattr(stored, "expires_at", None)
                if isinstance(expires, float) and expires > fake.now():
                    fake.set(expires)
            else:
                self.slept += wait
                time.sleep(wait)
            self.call(ns, i, consume, key)

        @precondition(lambda self: fake is None)
        @rule(
            ns=ns_,
            i=inst_,
            kind=st.sampled_from(tuple(ONCE)),
            k=keys,
            rec=code_records,
            used=st.sampled_from((0, 1)),
        )
        def expiry_flow_again(
            self, ns: int, i: int, kind: str, k: int, rec: int, used: int
        ) -> None:
            """The same flow, twice as often on stores that keep time themselves."""
            self.expiry_flow(ns, i, kind, k, rec, used)

        @rule(ns=ns_, i=inst_, kind=st.sampled_from(tuple(ONCE)), k=keys)
        def consume_single_use(self, ns: int, i: int, kind: str, k: int) -> None:
            """consume_code, consume_state or consume_reset_token."""
            self.call(ns, i, ONCE[kind][2], self.key(ns, kind, k))

        @rule(
            ns=ns_,
            i=inst_,
            kind=st.sampled_from(tuple(ONCE)),
            k=keys,
            rec=code_records,
            ttl=ttls,
            redeem=st.integers(1, 2),
        )
        def single_use_flow(
            self, ns: int, i: int, kind: str, k: int, rec: int, ttl: float, redeem: int
        ) -> None:
            """Put a code, state or reset token and redeem it at once (once or twice)."""
            cls, put, consume = ONCE[kind]
            key = self.key(ns, kind, k, put=True)
            self.call(ns, i, put, key, self.record(ns, cls, rec), ttl)
            for n in range(redeem):
                self.call(ns, (i + n) % instances, consume, key)

        @rule(ns=ns_, i=inst_, pick=st.integers(0, 63))
        def reuse_refresh_token(self, ns: int, i: int, pick: int) -> None:
            """Rotate a token that was already rotated (a chain A->B->C, then A again)."""
            model = self.models[ns][0]
            table = model._t["refresh_tokens"]
            rotated = [
                k
                for k in self.known(ns, "refresh_tokens")
                if table[k].rotated and not table[k].revoked and model.now < table[k].expires_at
            ]
            if rotated:
                old = rotated[pick % len(rotated)]
                self.call(ns, i, "rotate_refresh_token", old, f"rt{self.steps}", 60.0)

        @rule(ns=ns_, i=inst_, k=keys)
        def revoke_refresh_token(self, ns: int, i: int, k: int) -> None:
            self.call(ns, i, "revoke_refresh_token", self.key(ns, "refresh_tokens", k))

        # challenges --------------------------------------------------------------------
        @rule(ns=ns_, i=inst_, k=keys, rec=challenge_records, ttl=ttls)
        def put_challenge(self, ns: int, i: int, k: int, rec: int, ttl: float) -> None:
            self.call(
                ns,
                i,
                "put_challenge",
                self.key(ns, "challenges", k, put=True),
                "123456",
                self.record(ns, ChallengeRecord, rec),
                ttl,
            )

        @rule(ns=ns_, i=inst_, k=keys, answer=st.sampled_from(("123456", "654321", "12345")))
        def attempt_challenge(self, ns: int, i: int, k: int, answer: str) -> None:
            self.call(ns, i, "attempt_challenge", self.key(ns, "challenges", k), answer)

        # sessions ----------------------------------------------------------------------
        @rule(
            ns=ns_,
            i=inst_,
            k=keys,
            rec=session_records,
            ttl=ttls,
            factor=st.sampled_from((1.0, 1.5, 3.0)),
        )
        def create_session(
            self, ns: int, i: int, k: int, rec: int, ttl: float, factor: float
        ) -> None:
            self.call(
                ns,
                i,
                "create_session",
                self.key(ns, "sessions", k, put=True),
                self.record(ns, SessionRecord, rec),
                ttl,
                ttl * factor,
            )

        @rule(
            ns=ns_,
            i=inst_,
            k=keys,
            rec=session_records,
            ttl=ttls,
            factor=st.sampled_from((1.0, 3.0)),
            touches=st.lists(ttls, min_size=1, max_size=2),
        )
        def session_flow(
            self,
            ns: int,
            i: int,
            k: int,
            rec: int,
            ttl: float,
            factor: float,
            touches: list[float],
        ) -> None:
            """Create a session and touch it at once (shorter and longer TTLs)."""
            key = self.key(ns, "sessions", k, put=True)
            record = self.record(ns, SessionRecord, rec)
            self.call(ns, i, "create_session", key, record, ttl, ttl * factor)
            for n, touch in enumerate(touches):
                self.call(ns, (i + n + 1) % instances, "touch_session", key, touch)

        @rule(ns=ns_, i=inst_, k=keys, ttl=ttls)
        def touch_session(self, ns: int, i: int, k: int, ttl: float) -> None:
            self.call(ns, i, "touch_session", self.key(ns, "sessions", k), ttl)

        @rule(ns=ns_, i=inst_, k=keys)
        def revoke_session(self, ns: int, i: int, k: int) -> None:
            self.call(ns, i, "revoke_session", self.key(ns, "sessions", k))

        @rule(ns=ns_, i=inst_, s=picks)
        def revoke_all_sessions(self, ns: int, i: int, s: int) -> None:
            self.call(ns, i, "revoke_all_sessions", self.subject(ns, s))

        # rate limits -------------------------------------------------------------------
        @rule(ns=ns_, i=inst_, k=st.sampled_from(RATE_KEYS), limit=st.integers(1, 3), w=windows)
        def hit(self, ns: int, i: int, k: str, limit: int, w: float) -> None:
            self.call(ns, i, "hit", k, limit, w)

        # admin -------------------------------------------------------------------------
        @rule(ns=ns_, i=inst_)
        def purge_expired(self, ns: int, i: int) -> None:
            self.call(ns, i, "purge_expired")

        @precondition(lambda self: self.steps > 20 and not self.dropped)
        @rule(ns=ns_)
        def drop_namespace(self, ns: int) -> None:
            """Once per program: empty a namespace (the other must keep its records)."""
            self.dropped = True
            for instance in range(instances):  # every instance forgets its schema
                self.call(ns, instance, "drop_namespace")

        @rule(
            ns=ns_,
            i=inst_,
            call=st.sampled_from(
                (
                    ("put_code", ("", CodeRecord("app", "bob", "g"), 1.0)),
                    ("put_code", ("k", CodeRecord("app", "bob", "g"), 0.0)),
                    ("put_state", ("k", StateRecord("app"), -1.0)),
                    ("put_access_token", ("k", AccessTokenRecord("app", "bob", "g"), math.nan)),
                    ("hit", ("ip:1", 0, 1.0)),
                    ("rotate_refresh_token", ("k", "k", 1.0)),
                    ("create_session", ("k", SessionRecord("bob"), 2.0, 1.0)),
                    ("get_code", ("k\x00",)),
                )
            ),
        )
        def invalid_argument(self, ns: int, i: int, call: tuple[str, tuple[Any, ...]]) -> None:
            self.call(ns, i, call[0], *call[1])

        # time --------------------------------------------------------------------------
        def boundaries(self) -> list[float]:
            out: set[float] = set()
            for models in self.models:
                model = models[0]
                for kind, table in model._t.items():
                    if kind == "clients":
                        continue
                    for key, entry in table.items():
                        e = key[1] + key[2] if kind == "rate_limits" else entry.expires_at
                        out.add(e)
                        if math.isfinite(model.expired_retention):
                            out.add(e + model.expired_retention)
            return sorted(out)

        @rule(pick=st.integers(0, 63), where=st.sampled_from((-1, 0, 1)))
        def advance_clock(self, pick: int, where: int) -> None:
            """Move to an expiry boundary: one ulp before, exactly, one ulp after.

            Real-time stores: sleep to just before (``where`` -1) or just after it.
            Draws are indices, so what is drawn never depends on the clock.
            """
            now = driver.now()
            bounds = self.boundaries()
            if fake is not None:
                later = [b for b in bounds if b > now] or [now + 1.0]
                b = later[pick % len(later)]
                to = b if where == 0 else math.nextafter(b, math.inf * where)
                if to <= now:
                    to = b
                fake.set(to)
                note(f"clock set to {to!r} (+{to - now:.6f} s)")
                return
            margin = 0.04 if where else 0.0
            left = sleep_budget - self.slept
            later = [b for b in bounds if now + margin < b <= now + left - margin]
            if not later:
                return
            to = later[pick % len(later)] + (margin if where >= 0 else -margin)
            pause = max(0.0, to - time.time())
            self.slept += pause
            time.sleep(pause)
            note(f"slept {pause:.3f} s")

        @rule(pick=st.integers(0, 63), where=st.sampled_from((-1, 0, 1)))
        def advance_clock_again(self, pick: int, where: int) -> None:
            """The same move, so time moves about as often as a record is written."""
            self.advance_clock(pick, where)

        @invariant()
        def observe(self) -> None:
            """After every step: ``stats()``, then one more kind of read in turn.

            ``stats()`` is of the namespace just used; the other read is on either
            namespace and each instance in turn.

            Reads are what show a wrong write. In turn: the client list; the sessions of
            every subject of the pool (colliding prefixes, globs, cases, normal forms);
            every client of the pool; records past their expiry (EXPIRED or NOT_FOUND);
            every held refresh and access token; every held code and session.
            """
            if not self.models:
                return
            last = self.last_ns
            try:
                self._observe(self.probes)
            finally:
                self.last_ns = last

        def _observe(self, p: int) -> None:
            self.probes += 1
            ns, i, which = self.last_ns, (p // 7) % instances, p % 7
            self.call(ns, i, "stats")  # every step: counts show most wrong writes at once
            ns = (p // 7) % 2 if p % 2 else ns
            if which == 0:
                self.call(ns, i, "list_clients")
            elif which == 1:
                for subject in SUBJECTS:
                    self.call(ns, i, "list_sessions", subject)
            elif which == 2:
                for client in CLIENTS:
                    self.call(ns, i, "get_client", client)
            elif which == 3:
                self.expired_probe(1 - ns, i)
            elif which == 6:
                self.expired_probe(ns, i)
            else:
                kinds = (
                    (("refresh_tokens", "get_refresh_token"), ("access_tokens", "get_access_token"))
                    if which == 4
                    else (("codes", "get_code"), ("sessions", "get_session"))
                )
                model = self.models[ns][0]
                for kind, op in kinds:
                    table = model._t[kind]
                    held = self.known(ns, kind)
                    live = [k for k in held if model.now < table[k].expires_at]
                    for key in (live + [k for k in held if k not in live])[:40]:
                        self.call(ns, i, op, key)

        def expired_probe(self, ns: int, i: int) -> None:
            """Redeem records past their expiry; these calls change nothing.

            The answer is EXPIRED while the store remembers the record and NOT_FOUND once
            it is forgotten (``expired_retention``), which shows a wrong physical TTL.
            """
            model = self.models[ns][0]
            past = driver.now() - (0.0 if fake is not None else 0.02)
            ops = (
                ("codes", "consume_code"),
                ("states", "consume_state"),
                ("reset_tokens", "consume_reset_token"),
                ("challenges", "attempt_challenge"),
                ("refresh_tokens", "rotate_refresh_token"),
            )
            for kind, op in ops:
                for key in self.known(ns, kind):
                    entry = model._t[kind].get(key)
                    if entry is None or entry.expires_at > past:
                        continue
                    if kind == "challenges":
                        self.call(ns, i, op, key, "123456")
                    elif kind == "refresh_tokens":
                        self.call(ns, i, op, key, f"rt{self.steps}x", 60.0)
                    else:
                        self.call(ns, i, op, key)

        def teardown(self) -> None:
            self.models = []

    return ContractMachine


@contextlib.contextmanager
def _shrink_budget(seconds: float) -> Iterator[None]:
    """Bound the time Hypothesis spends shrinking a failure (its default is 300 s).

    Hypothesis has no public setting for it; without the private constant (a future
    version) shrinking keeps Hypothesis's own bound.
    """
    from hypothesis.internal.conjecture import engine

    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if old is None:
        yield
        return
    from hypothesis.reporting import current_reporter, with_reporter

    outer = current_reporter()

    def reporter(value: object) -> None:
        # Hypothesis's warning names its own five-minute bound; say what happened instead
        if str(value).startswith("WARNING: Hypothesis has spent more than five minutes"):
            outer(f"(shrinking stopped after its {seconds:g} s budget)")
        else:
            outer(value)

    engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        with with_reporter(reporter):
            yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old


def run_machine(
    target: Target,
    *,
    profile: str = "ci",
    seed_value: int | None = None,
    on_seed: Callable[[int], None] | None = None,
    shrink_seconds: float | None = None,
) -> int:
    """Run the state machine against ``target``; return the seed used.

    Raises ``MachineFailure`` (an ``AssertionError``) with Hypothesis's shrunk program
    and the step where backend and model disagree; ``.seed`` replays it.
    """
    chosen = random.SystemRandom().randrange(2**32) if seed_value is None else seed_value
    if on_seed is not None:
        on_seed(chosen)
    driver = _Driver(target)
    try:
        machine = build_machine(driver, PROFILES[profile]["sleep"])
        seed(chosen)(machine)
        try:
            budget = PROFILES[profile]["shrink"] if shrink_seconds is None else shrink_seconds
            retention = 0.0 if target.uses_clock else 0.25
            probe = driver.backend(0, 0, retention)
            driver.run(probe.stats())  # the namespace exists now
            started = time.monotonic()
            for _ in range(10):
                driver.run(probe.stats())
            latency = (time.monotonic() - started) / 10
            started = time.monotonic()
            driver.reset(retention)
            reset = time.monotonic() - started
            examples = plan_examples(
                profile, uses_clock=target.uses_clock, latency=latency, reset=reset
            )
            config = machine_settings(profile, uses_clock=target.uses_clock, examples=examples)
            driver.plan = (examples, config.stateful_step_count, latency, reset)
            with _shrink_budget(budget):
                run_state_machine_as_test(machine, settings=config)
        except (AssertionError, Flaky) as exc:
            notes = "\n".join(getattr(exc, "__notes__", ()))
            if isinstance(exc, AssertionError):
                message = f"{exc}\n{notes}" if notes else str(exc)
                first = driver.first_message.split("\n", 1)[-1]
                if first:
                    message += (
                        f"\nfirst disagreement found (before shrinking; the seed replays "
                        f"it):\n{first}"
                    )
            elif driver.first_failure is not None:
                # a real-time store: the shrunk program did not fail the same way again
                message = (
                    f"{driver.first_message}\n(the failure depends on timing: Hypothesis "
                    f"could not replay it exactly: {type(exc).__name__})"
                )
            else:
                raise
            raise MachineFailure(message, chosen, driver.first_failure) from exc
    finally:
        driver.close()
    return chosen
