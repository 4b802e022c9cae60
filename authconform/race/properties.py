"""The race properties: N callers released in lockstep, and what their answers must be.

Each property is a function ``(ctx, draw) -> None`` that sets up records through
``ctx.backend`` (the asyncio instance), runs one batch through ``ctx.runner`` on the
executor ``draw`` chose, and raises ``RaceFailure`` with the redacted history when the
answers break the contract. ``run_property`` drives one property with Hypothesis:
it chooses N (2 to 64), the executor, the jitter and the payloads; the first examples
cover every executor (and every kind of a kind-parametrized property) with N = 16, so
a bug that shows on one executor only is met within the first few examples whatever
the seed. A failing example is not shrunk or replayed by Hypothesis (a race need not
repeat): the first failure is kept, and the seed replays the same examples.

The suite ``authconform.suites.race.test_concurrency`` runs every property per backend;
the self-test and ``python -m fixtures.detection`` call ``run_property`` directly.
"""

from __future__ import annotations

import math
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

from authconform.contract import (
    AccessTokenRecord,
    AttemptResult,
    AttemptStatus,
    ChallengeRecord,
    ClientRecord,
    CodeRecord,
    RateLimitResult,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
)
from authconform.contract._protocol import CAPABILITY_OF_OPERATION
from authconform.contract.model import ContractModel
from authconform.errors import Conflict
from authconform.race.history import Operation, describe
from authconform.race.linearizability import check
from authconform.race.runners import Call, Runner

__all__ = [
    "BUDGETS",
    "PROPERTIES",
    "RaceContext",
    "RaceFailure",
    "run_property",
]

#: per profile: seconds of generated examples per property (after the forced ones) and
#: the most examples; the forced examples (one per executor, or per executor and kind)
#: always run
BUDGETS: dict[str, dict[str, float]] = {
    "dev": {"seconds": 0.3, "examples": 8},
    "ci": {"seconds": 0.5, "examples": 30},
    "nightly": {"seconds": 30.0, "examples": 2000},
}
#: how far the store's timestamps may be off the callers' clock (seconds)
SKEW = 0.01
#: how far around a code's expiry the widely spread consumes are released (seconds)
WIDE = 0.03
#: N of the forced first examples (the first round of executors, then the second)
FORCED_N = (16, 48)
#: linearizability search bound of the mixed workloads
MAX_STATES = 100_000


class _Enough(Exception):
    """The profile's time budget is spent: no more examples."""


class RaceFailure(AssertionError):
    """A batch whose answers the contract does not allow."""

    def __init__(
        self,
        message: str,
        *,
        history: Sequence[Operation] = (),
        saved: str | None = None,
    ) -> None:
        """``message`` says observed vs expected; ``history`` is printed redacted."""
        super().__init__(message)
        self.message = message
        self.history = list(history)
        self.saved = saved
        self.seed: int | None = None
        self.example = ""
        self.detected_after: float | None = None

    def __str__(self) -> str:
        parts = [self.message]
        if self.example:
            parts.append(self.example)
        if self.seed is not None:
            found = (
                f", found after {self.detected_after:.2f} s"
                if self.detected_after is not None
                else ""
            )
            parts.append(f"seed {self.seed}{found}")
        if self.saved:
            parts.append(f"history saved to {self.saved}")
        if self.history:
            parts.append("history (secrets redacted):\n" + describe(self.history))
        return "\n".join(parts)


@dataclass
class RaceContext:
    """What a property needs: the runner, a way to run setup coroutines, where to save."""

    runner: Runner
    backend: Any  # the asyncio instance (the runner's)
    run: Callable[[Any], Any]  # runs a coroutine on the backend's loop
    save_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    executors: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)  # measured once per context

    def __post_init__(self) -> None:
        if not self.executors:
            self.executors = self.runner.executors()

    def setup(self, op: str, *args: Any, **kwargs: Any) -> Operation:
        """Run one setup call on the asyncio instance, recorded like a batch's calls."""
        t0 = time.time()
        result = self.run(getattr(self.backend, op)(*args, **kwargs))
        return Operation(-1, op, args, kwargs, t0, time.time(), result)


@dataclass
class Draw:
    """One example's choices."""

    executor: str
    n: int
    jitter: list[float]
    data: Any  # hypothesis DataObject, for the property's own payloads
    forced: int | None  # index of a forced example, else None
    executors: tuple[str, ...] = ("asyncio", "thread", "process")

    def choose(self, strategy: st.SearchStrategy[Any], forced: Any = None) -> Any:
        """A payload: ``forced`` in a forced example (when given), else drawn."""
        if self.forced is not None and forced is not None:
            return forced
        return self.data.draw(strategy)

    def describe(self) -> str:
        """executor, N and jitter, for the failure message."""
        spins = [round(j * 1e6) for j in self.jitter]
        jitter = f"jitter up to {max(spins)} us per caller" if any(spins) else "no jitter"
        return f"executor {self.executor}, N={self.n} callers, {jitter}"


def _token(prefix: str) -> str:
    return prefix + "-" + secrets.token_urlsafe(18)


def _status(result: Any) -> str:
    if isinstance(result, BaseException):
        return f"raised {type(result).__name__}"
    status = getattr(result, "status", None)
    return getattr(status, "name", repr(result))


def _count(history: Sequence[Operation]) -> Counter[str]:
    return Counter(_status(o.result) for o in history)


def _raised(history: Sequence[Operation], allowed: tuple[type[BaseException], ...] = ()) -> None:
    for o in history:
        if isinstance(o.result, BaseException) and not isinstance(o.result, allowed):
            raise RaceFailure(
                f"{o.op} raised {type(o.result).__name__}: {o.result} (a racing caller must "
                "get a contract answer, not an error)",
                history=history,
            )


def _shown(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


# the properties ---------------------------------------------------------------------------
ONCE_KINDS: dict[str, tuple[str, str, Callable[[], Any]]] = {
    "code": ("put_code", "consume_code", lambda: CodeRecord("app", "alice", _token("g"))),
    "state": ("put_state", "consume_state", lambda: StateRecord("app")),
    "reset token": (
        "put_reset_token",
        "consume_reset_token",
        lambda: ResetTokenRecord("alice"),
    ),
}


Check = Callable[[list[Operation]], None]


def _rounds(
    ctx: RaceContext,
    d: Draw,
    make: Callable[[int], tuple[list[Call], Check, str]],
    allowed: tuple[type[BaseException], ...] = (),
) -> None:
    """Several races per example: round ``r`` (records of its own) is ``make(r)``.

    ``make`` returns each caller's call of the round, the round's check and the first
    argument of its calls (its ops are those); the rounds run in lockstep, a barrier
    before each, so one example meets the race as many times as it has rounds.
    """
    rounds = d.choose(st.integers(1, 4), 3)
    made = [make(r) for r in range(rounds)]
    programs = [[calls[k] for calls, _, _ in made] for k in range(d.n)]
    history = ctx.runner.run(d.executor, programs, d.jitter)
    _raised(history, allowed)
    for _, judge, key in made:
        judge([o for o in history if o.args[0] == key])


def single_use(ctx: RaceContext, d: Draw) -> None:
    """N consumes of one code, state or reset token: exactly one CONSUMED (per round)."""
    declared = ctx.backend.capabilities
    kinds = [k for k, ops in ONCE_KINDS.items() if CAPABILITY_OF_OPERATION[ops[0]] in declared]
    forced = None if d.forced is None else kinds[(d.forced // len(d.executors)) % len(kinds)]
    kind = d.choose(st.sampled_from(kinds), forced)
    put, consume, record = ONCE_KINDS[kind]

    def make(_: int) -> tuple[list[Call], Check, str]:
        key = _token("once")
        ctx.setup(put, key, record(), 600.0)

        def check(history: list[Operation]) -> None:
            counts = _count(history)
            if counts["CONSUMED"] != 1 or counts["ALREADY_USED"] != d.n - 1:
                raise RaceFailure(
                    f"{d.n} concurrent consumes of one {kind} answered {_shown(counts)}; "
                    f"expected exactly 1 CONSUMED and {d.n - 1} ALREADY_USED",
                    history=history,
                )

        return [Call(consume, (key,))] * d.n, check, key

    _rounds(ctx, d, make)


single_use.forced = 9  # type: ignore[attr-defined]  # executors x kinds (x 2 sizes for 2)


def rotation_once(ctx: RaceContext, d: Draw) -> None:
    """N rotations of one refresh token: one ROTATED, one REUSED, the rest REVOKED.

    The winner's successor is revoked with the family; the losers' new tokens never exist.
    """

    def make(_: int) -> tuple[list[Call], Check, str]:
        old = _token("rt")
        grant = _token("g")
        ctx.setup("put_refresh_token", old, RefreshTokenRecord("app", "alice", grant), 600.0)
        calls = [Call("rotate_refresh_token", (old, _token("rt"), 600.0)) for _ in range(d.n)]

        def check(history: list[Operation]) -> None:
            counts = _count(history)
            if counts["ROTATED"] != 1 or counts["REUSED"] != 1 or counts["REVOKED"] != d.n - 2:
                raise RaceFailure(
                    f"{d.n} concurrent rotations of one refresh token answered "
                    f"{_shown(counts)}; expected exactly 1 ROTATED, 1 REUSED (it revokes "
                    f"the family) and {d.n - 2} REVOKED",
                    history=history,
                )
            winner = next(o for o in history if _status(o.result) == "ROTATED")
            after = ctx.setup("get_refresh_token", winner.args[1])
            if after.result is not None and not after.result.revoked:
                raise RaceFailure(
                    "the winning rotation's successor is still usable after a loser's reuse "
                    "revoked the family",
                    history=[*history, after],
                )
            for o in history:
                if o is not winner:
                    ghost = ctx.setup("get_refresh_token", o.args[1])
                    if ghost.result is not None:
                        raise RaceFailure(
                            "a losing rotation's new token exists", history=[*history, ghost]
                        )

        return calls, check, old

    _rounds(ctx, d, make)


def rate_limit_exact(ctx: RaceContext, d: Draw) -> None:
    """N hits of one key in one window with limit L < N: exactly L allowed, counts 1..N."""
    limit = d.choose(st.integers(1, d.n - 1), d.n // 2)
    key = _token("ip")
    window = 3600.0
    history = ctx.runner.run(d.executor, [[Call("hit", (key, limit, window))]] * d.n, d.jitter)
    _raised(history)
    results = [o.result for o in history]
    if len({r.reset_at for r in results if isinstance(r, RateLimitResult)}) > 1:
        return  # the batch straddled a window boundary (once an hour): nothing to judge
    allowed = sum(1 for r in results if r.allowed)
    counts = sorted(r.count for r in results)
    if allowed != limit or counts != list(range(1, d.n + 1)):
        raise RaceFailure(
            f"a window of limit {limit} admitted {allowed} of {d.n} concurrent hits (counts "
            f"{counts}); expected exactly {limit} allowed and counts 1..{d.n}",
            history=history,
        )


def client_created_once(ctx: RaceContext, d: Draw) -> None:
    """N creations of one client id: one succeeds, the others get Conflict; it stays."""

    def make(_: int) -> tuple[list[Call], Check, str]:
        client_id = "client-" + secrets.token_hex(6)
        calls = [Call("create_client", (client_id, {"n": k})) for k in range(d.n)]

        def check(history: list[Operation]) -> None:
            made = [o for o in history if isinstance(o.result, ClientRecord)]
            if len(made) != 1:
                raise RaceFailure(
                    f"{d.n} concurrent creations of one client id: {len(made)} succeeded, "
                    f"{d.n - len(made)} got Conflict; expected exactly 1 success",
                    history=history,
                )
            stored = ctx.setup("get_client", client_id)
            if stored.result is None or dict(stored.result.metadata) != dict(made[0].args[1]):
                raise RaceFailure(
                    "the stored client is not the one whose creation succeeded",
                    history=[*history, stored],
                )

        return calls, check, client_id

    _rounds(ctx, d, make, (Conflict,))


def challenge_attempts_bounded(ctx: RaceContext, d: Draw) -> None:
    """N answers to one challenge: never more counted attempts than its maximum.

    At most one SUCCESS or LOCKED, each counted attempt numbered once, nothing after the end.
    """
    maximum = d.choose(st.integers(1, 5), 3)
    rights = d.choose(st.integers(0, d.n), 1 if d.forced is not None and d.forced % 2 else 0)

    def make(r: int) -> tuple[list[Call], Check, str]:
        cid = _token("ch")
        record = ChallengeRecord("alice", max_attempts=maximum)
        ctx.setup("put_challenge", cid, "123456", record, 600.0)
        calls = [
            Call("attempt_challenge", (cid, "123456" if k < rights else f"{k:06d}x"))
            for k in range(d.n)
        ]
        random.Random(d.n * 7919 + rights + r).shuffle(calls)
        return calls, judge, cid

    def judge(history: list[Operation]) -> None:
        results: list[AttemptResult] = [o.result for o in history]
        counted = [r for r in results if r.status != AttemptStatus.NOT_FOUND]
        ends = [r for r in counted if r.status in (AttemptStatus.SUCCESS, AttemptStatus.LOCKED)]
        numbers = sorted(r.record.attempts for r in counted if r.record is not None)
        problems = []
        if len(counted) > maximum:
            problems.append(f"{len(counted)} attempts counted (maximum {maximum})")
        if len(ends) > 1:
            problems.append(f"{len(ends)} SUCCESS/LOCKED answers (at most 1)")
        if numbers != list(range(1, len(counted) + 1)):
            problems.append(f"attempt numbers {numbers} (each of 1..{len(counted)} once)")
        if not ends and len(counted) != d.n:
            problems.append("NOT_FOUND answered while the challenge was still alive")
        if problems:
            raise RaceFailure(
                f"{d.n} concurrent answers ({rights} right) to one challenge of {maximum} "
                f"attempts: {'; '.join(problems)}; answers: {_shown(_count(history))}",
                history=history,
            )

    _rounds(ctx, d, make)


def touch_longest(ctx: RaceContext, d: Draw) -> None:
    """N touches of one session with different TTLs leave the longest expiry."""
    sid = _token("sess")
    ctx.setup("create_session", sid, SessionRecord("alice"), 30.0, 100_000.0)
    order = d.choose(st.permutations(range(d.n)), list(reversed(range(d.n))))
    ttls = [100.0 + 10.0 * order[k] for k in range(d.n)]
    history = ctx.runner.run(
        d.executor, [[Call("touch_session", (sid, ttls[k]))] for k in range(d.n)], d.jitter
    )
    _raised(history)
    floor = max(o.call + o.args[1] for o in history) - SKEW
    after = ctx.setup("get_session", sid)
    final = after.result.expires_at if after.result is not None else -math.inf
    if final < floor:
        raise RaceFailure(
            f"after {d.n} concurrent touches (TTLs {min(ttls):.0f}..{max(ttls):.0f} s) the "
            f"session expires {floor + SKEW - final:.3f} s before the longest touch asked "
            "(a shorter TTL overwrote a longer one)",
            history=[*history, after],
        )
    for o in history:
        if o.result is None or o.result.expires_at < o.call + o.args[1] - SKEW:
            raise RaceFailure(
                "a touch answered an expiry earlier than its own TTL gives",
                history=[*history, after],
            )


def _spread(width: float, count: int, i: int, alone: float = 0.0) -> float:
    """The ``i``-th of ``count`` offsets evenly over ``[-width, width]`` (one: ``alone``)."""
    return alone if count == 1 else width * (2 * i / (count - 1) - 1)


def consume_racing_expiry(ctx: RaceContext, d: Draw) -> None:
    """Consumes released around codes' expiry instants: no answer that no order explains.

    Several codes per round, several rounds in lockstep; each code's callers are released
    at its expiry plus an offset, half of them within a few milliseconds of it, the others
    spread over tens of milliseconds on both sides. Per code: at most one CONSUMED; no
    CONSUMED or ALREADY_USED to a call made after it expired (half-open lifetime, a few ms
    of clock skew allowed); no CONSUMED to a call made after another caller was answered
    EXPIRED; no ALREADY_USED unless some caller got CONSUMED.
    """
    rounds = d.choose(st.integers(1, 4), 2)
    per_round = d.choose(st.integers(1, max(1, min(4, d.n // 2))), max(1, min(4, d.n // 2)))
    lead = d.choose(st.floats(0.03, 0.12), 0.03)
    gap = 2 * WIDE + 0.01
    spread = d.choose(st.floats(0.0, 0.004), 0.002)
    margin = 0.004 * rounds * per_round  # the puts themselves take time
    puts: list[list[Operation]] = []
    for r in range(rounds):
        puts.append(
            [
                ctx.setup(
                    "put_code",
                    _token("code"),
                    CodeRecord("app", "alice", _token("g")),
                    lead + margin + r * gap,
                )
                for _ in range(per_round)
            ]
        )
    programs: list[list[Call]] = [[] for _ in range(d.n)]
    for r in range(rounds):
        # the round's callers: half released densely around their code's expiry, half
        # spread evenly over +-WIDE (the round's codes share the spread, so even a few
        # callers per code cover it); each code gets both kinds
        shuffled = list(range(d.n))
        random.Random(d.n * 13 + r).shuffle(shuffled)
        dense, wide = shuffled[: (d.n + 1) // 2], shuffled[(d.n + 1) // 2 :]
        offsets = {k: _spread(spread, len(dense), i) for i, k in enumerate(dense)}
        offsets.update({k: _spread(WIDE, len(wide), i, alone=WIDE) for i, k in enumerate(wide)})
        for i, k in enumerate([*dense, *wide]):
            put = puts[r][i % per_round]
            at = put.result.expires_at + offsets[k]
            programs[k].append(Call("consume_code", (put.args[0],), at=at))
    history = ctx.runner.run(d.executor, programs, d.jitter)
    _raised(history)
    for put in (p for row in puts for p in row):
        ops = [o for o in history if o.args[0] == put.args[0]]
        expires = put.result.expires_at
        live = [o for o in ops if _status(o.result) in ("CONSUMED", "ALREADY_USED")]
        wins = [o for o in ops if _status(o.result) == "CONSUMED"]
        expired = [o for o in ops if _status(o.result) == "EXPIRED"]
        problems = []
        if len(wins) > 1:
            problems.append(f"{len(wins)} CONSUMED")
        late = [o for o in live if o.call > expires + SKEW]
        if late:
            worst = max(o.call for o in late) - expires
            problems.append(
                f"{len(late)} CONSUMED/ALREADY_USED answers to calls made after the code "
                f"expired (up to {worst * 1000:.1f} ms after)"
            )
        if expired and wins and min(o.ret for o in expired) < max(o.call for o in wins):
            problems.append("a CONSUMED to a call made after another caller was answered EXPIRED")
        if live and not wins:
            problems.append("ALREADY_USED answered though no caller got CONSUMED")
        others = [o for o in ops if o not in live and o not in expired]
        if others:
            problems.append(f"{len(others)} answers other than CONSUMED, ALREADY_USED, EXPIRED")
        if problems:
            raise RaceFailure(
                f"{len(ops)} consumes released around a code's expiry (TTL "
                f"{put.args[2] * 1000:.0f} ms): {'; '.join(problems)}",
                history=[put, *ops],
            )


def _rotation_time(ctx: RaceContext) -> float:
    """The median duration of three sequential rotations on this backend (seconds)."""
    if "rotation" in ctx.timings:
        return ctx.timings["rotation"]
    grant, token = _token("g"), _token("rt")
    ctx.setup("put_refresh_token", token, RefreshTokenRecord("app", "alice", grant), 600.0)
    times = []
    for _ in range(3):
        successor = _token("rt")
        done = ctx.setup("rotate_refresh_token", token, successor, 600.0)
        times.append(done.ret - done.call)
        token = successor
    ctx.timings["rotation"] = sorted(times)[1]
    return ctx.timings["rotation"]


def rotate_racing_revoke_grant(ctx: RaceContext, d: Draw) -> None:
    """Rotations racing revoke_grant: no token of the grant is usable afterwards.

    Several grants per round and several rounds in lockstep (a barrier before each): in
    every round each grant gets a rotation of its refresh token and revoke_grant calls
    released together, so a rotation's window meets a revocation many times per example.
    A successor made before revoke_grant is revoked with the grant; a rotation called
    after revoke_grant answered gets REVOKED; at most one ROTATED per token.
    """
    rounds = d.choose(st.integers(1, 6), 4)
    # a forced example gives every grant 8 callers or more, so its revocations are dense
    grants = d.choose(st.integers(1, max(1, min(6, d.n // 2))), max(1, min(6, d.n // 8)))
    # rotations per grant and round (a forced example alternates 1 and 2)
    rotators = d.choose(st.integers(1, 2), 0)
    # the revocations of a grant are spread over the first ``span`` seconds after the
    # barrier, so that some land inside the rotation whatever the position of its window:
    # the span is a multiple of this backend's own rotation time, measured here (a
    # rotation that takes a millisecond is met by revocations spread over milliseconds)
    spread = d.choose(st.floats(1.0, 4.0), 2.5)
    span = min(0.05, max(0.0005, spread * _rotation_time(ctx)))
    # per round and grant: the grant id, its refresh token and its access token
    table: list[list[tuple[str, str, str]]] = []
    setups: list[Operation] = []
    for r in range(rounds):
        row = []
        for j in range(grants):
            grant, old, access = _token("g"), _token("rt"), _token("at")
            # a client and subject per grant: the linearizability check then splits the
            # history into one small part per grant (records of one client or subject
            # are linked, since delete_client and list_sessions reach them all)
            client, subject = f"app-{r}-{j}", f"alice-{r}-{j}"
            record = RefreshTokenRecord(client, subject, grant)
            setups.append(ctx.setup("put_refresh_token", old, record, 600.0))
            token = AccessTokenRecord(client, subject, grant)
            setups.append(ctx.setup("put_access_token", access, token, 600.0))
            row.append((grant, old, access))
        table.append(row)
    programs: list[list[Call]] = [[] for _ in range(d.n)]
    for r in range(rounds):
        for j in range(grants):
            callers = [k for k in range(d.n) if k % grants == j]
            random.Random(d.n * 31 + r * 7 + j).shuffle(callers)
            grant, old, _ = table[r][j]
            rotating = min(rotators or 1 + r % 2, len(callers) - 1)
            revoking = len(callers) - rotating
            for i, k in enumerate(callers):
                if i < rotating:
                    programs[k].append(Call("rotate_refresh_token", (old, _token("rt"), 600.0)))
                else:
                    delay = span * (i - rotating) / max(1, revoking - 1)
                    programs[k].append(Call("revoke_grant", (grant,), delay=delay))
    history = ctx.runner.run(d.executor, programs, d.jitter)
    _raised(history)
    by_grant: dict[str, list[Operation]] = {}
    olds = {old: grant for row in table for grant, old, _ in row}
    for o in history:
        grant = o.args[0] if o.op == "revoke_grant" else olds[o.args[0]]
        by_grant.setdefault(grant, []).append(o)
    reads: list[Operation] = []
    for row in table:
        for grant, old, access in row:
            ops = by_grant.get(grant, [])
            revokes = [o for o in ops if o.op == "revoke_grant"]
            rotations = [o for o in ops if o.op == "rotate_refresh_token"]
            wins = [o for o in rotations if _status(o.result) == "ROTATED"]
            if len(wins) > 1:
                raise RaceFailure(
                    f"{len(wins)} rotations of one refresh token answered ROTATED",
                    history=ops,
                )
            first_answer = min((o.ret for o in revokes), default=math.inf)
            late = [o for o in wins if o.call > first_answer]
            if late:
                raise RaceFailure(
                    "a rotation called after revoke_grant answered got ROTATED (a rotation "
                    "racing it escaped the revocation)",
                    history=ops,
                )
            checks = [ctx.setup("get_access_token", access)]
            checks += [ctx.setup("get_refresh_token", o.args[1]) for o in wins]
            checks.append(ctx.setup("get_refresh_token", old))
            reads.extend(checks)
            for c in checks:
                got = c.result
                if got is not None and not getattr(got, "revoked", False):
                    what = "access token" if c.op == "get_access_token" else "refresh token"
                    raise RaceFailure(
                        f"a {what} of the grant is usable after revoke_grant answered (a "
                        "rotation racing it escaped the revocation)",
                        history=[*ops, *checks],
                    )
    # A later revocation can revoke a successor that escaped an earlier one, and the end
    # state then looks right; the answers (revoke counts, rotation results, reads) still
    # tell. Each grant's history must be linearizable against the model.
    _linearizable(ctx, [*setups, *history, *reads], "rotations racing revoke_grant")


def _linearizable(ctx: RaceContext, full: list[Operation], what: str) -> None:
    """Fail unless ``full`` (setup, batch, reads) is linearizable against the model."""
    verdict = check(
        full,
        initial=ContractModel(now=min(o.call for o in full) - 1.0),
        tolerance=SKEW,
        max_states=MAX_STATES,
    )
    if verdict.ok:
        return
    path = ctx.save_dir / f"race-history-{secrets.token_hex(4)}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(describe(full) + "\n\n" + str(verdict) + "\n", encoding="utf-8")
    if verdict.outcome == "unknown":
        message = (
            f"the linearizability check of {len(full)} operations ({what}) was cut at its "
            f"bound ({verdict.detail}): unknown is not a pass"
        )
    else:
        message = (
            f"the history of {what} is not linearizable against the contract model:\n"
            f"{verdict.detail}"
        )
    raise RaceFailure(message, history=full, saved=str(path))


def mixed_linearizable(ctx: RaceContext, d: Draw) -> None:
    """Mixed operations on shared records, several per caller: linearizable histories.

    consume, get, rotate, revoke_grant, touch interleaved in lockstep; the history is
    checked against the contract model.
    """
    n = min(d.n, d.choose(st.integers(2, 6), 4))
    grant = _token("g")
    codes = [_token("code"), _token("code")]
    rt0 = _token("rt")
    sid = _token("sess")
    access = _token("at")
    setup = [ctx.setup("put_code", c, CodeRecord("app", "alice", grant), 600.0) for c in codes]
    setup.append(
        ctx.setup("put_refresh_token", rt0, RefreshTokenRecord("app", "alice", grant), 600.0)
    )
    token = AccessTokenRecord("app", "alice", grant)
    setup.append(ctx.setup("put_access_token", access, token, 600.0))
    setup.append(ctx.setup("create_session", sid, SessionRecord("alice"), 60.0, 100_000.0))
    refresh = [rt0]
    ops = st.sampled_from(
        ["consume", "get_code", "rotate", "get_refresh", "revoke_grant", "touch", "get_session"]
    )
    programs: list[list[Call]] = []
    for k in range(n):
        program: list[Call] = []
        length = d.choose(st.integers(1, 3), 3)
        for i in range(length):
            kind = d.choose(ops, ["consume", "rotate", "touch"][(k + i) % 3])
            code = codes[d.choose(st.integers(0, 1), (k + i) % 2)]
            if kind == "consume":
                program.append(Call("consume_code", (code,)))
            elif kind == "get_code":
                program.append(Call("get_code", (code,)))
            elif kind == "rotate":
                old = refresh[d.choose(st.integers(0, len(refresh) - 1), 0)]
                new = _token("rt")
                refresh.append(new)
                program.append(Call("rotate_refresh_token", (old, new, 600.0)))
            elif kind == "get_refresh":
                program.append(Call("get_refresh_token", (refresh[-1],)))
            elif kind == "revoke_grant":
                program.append(Call("revoke_grant", (grant,)))
            elif kind == "touch":
                program.append(Call("touch_session", (sid, 100.0 + 10 * k + i)))
            else:
                program.append(Call("get_session", (sid,)))
        programs.append(program)
    history = ctx.runner.run(d.executor, programs, d.jitter[:n])
    _raised(history)
    _linearizable(ctx, [*setup, *history], "mixed operations")


#: name -> (property, the capabilities it needs)
PROPERTIES: dict[str, tuple[Callable[[RaceContext, Draw], None], tuple[str, ...]]] = {
    # the suite runs single_use on whichever of the three a backend declares
    "single_use": (single_use, ("codes", "states", "reset_tokens")),
    "rotation_once": (rotation_once, ("refresh",)),
    "rate_limit_exact": (rate_limit_exact, ("rate_limits",)),
    "client_created_once": (client_created_once, ("clients",)),
    "challenge_attempts_bounded": (challenge_attempts_bounded, ("challenges",)),
    "touch_longest": (touch_longest, ("sessions",)),
    "consume_racing_expiry": (consume_racing_expiry, ("codes",)),
    "rotate_racing_revoke_grant": (rotate_racing_revoke_grant, ("refresh", "tokens")),
    "mixed_linearizable": (mixed_linearizable, ("codes", "refresh", "tokens", "sessions")),
}


def run_property(
    name: str,
    ctx: RaceContext,
    *,
    profile: str = "ci",
    seed_value: int | None = None,
    on_seed: Callable[[int], None] | None = None,
) -> int:
    """Run property ``name`` with Hypothesis; return the seed, or raise ``RaceFailure``.

    The exception carries the seed, the example (executor, N, jitter), the redacted
    history and how long it took to find.
    """
    if profile not in BUDGETS:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(BUDGETS)}")
    prop = PROPERTIES[name][0]
    budget = BUDGETS[profile]
    chosen = random.SystemRandom().randrange(2**32) if seed_value is None else seed_value
    if on_seed is not None:
        on_seed(chosen)
    executors = ctx.executors
    forced_count = max(2 * len(executors), int(getattr(prop, "forced", 0)))
    state: dict[str, Any] = {"i": 0, "failure": None, "error": None, "deadline": None}
    started = time.monotonic()

    @settings(
        max_examples=int(budget["examples"]) + forced_count,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate,),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
    )
    @given(data=st.data())
    def test(data: Any) -> None:
        if state["failure"] is not None:
            raise state["failure"]  # Hypothesis replays the failing example: keep the first
        i = state["i"]
        state["i"] += 1
        forced = i if i < forced_count else None
        if forced is None:
            if state["deadline"] is None:
                state["deadline"] = time.monotonic() + budget["seconds"]
            if time.monotonic() > state["deadline"]:
                raise _Enough  # the profile's time is spent (before any draw: consistent)
        # drawn in every example (a forced one overrides them), so that Hypothesis never
        # runs out of distinct examples
        executor = data.draw(st.sampled_from(executors), label="executor")
        n = data.draw(st.integers(2, 64), label="N")
        spin = data.draw(st.sampled_from([0.0, 2e-5, 1e-4, 5e-4]), label="jitter")
        jitter = data.draw(
            st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).map(
                lambda xs: [x * spin for x in xs]
            ),
            label="jitters",
        )
        if forced is not None:
            executor = executors[forced % len(executors)]
            n = FORCED_N[(forced // len(executors)) % len(FORCED_N)]
            jitter = [0.0] * n
        draw = Draw(executor, n, jitter, data, forced, executors)
        try:
            prop(ctx, draw)
        except RaceFailure as exc:
            exc.example = draw.describe()
            if forced is not None:
                exc.example += f" (forced example {forced})"
            exc.detected_after = time.monotonic() - started
            exc.seed = chosen
            state["failure"] = exc
            raise
        except Exception as exc:  # a broken property or harness: not a finding, reported
            state["error"] = exc
            raise

    seed(chosen)(test)
    try:
        test()
    except (KeyboardInterrupt, SystemExit):
        raise  # Ctrl-C, or SIGTERM turned into an interrupt: the run stops, found or not
    except BaseException as exc:
        # Hypothesis re-runs a failing example to report it; a race need not repeat, so
        # whatever it raises then (the failure again, Flaky, ...), the first failure is it
        failure = state["failure"]
        if failure is not None:
            raise failure from None
        if state["error"] is not None:
            raise state["error"] from None
        spent = state["deadline"] is not None and time.monotonic() > state["deadline"]
        if not (isinstance(exc, _Enough) or spent):
            raise  # after the budget, Hypothesis's complaints about _Enough are the end
    return chosen
