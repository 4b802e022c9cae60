"""Checks whether a history of concurrent operations is linearizable against the model.

Wing & Gong's search with Lowe's memoisation, as Porcupine (anishathalye/porcupine)
does it: repeatedly pick an operation that may come next (one whose call precedes every
pending operation's return), let the model take it at an instant of its call window,
and keep going while the model's answer equals the observed one; backtrack otherwise.
A (set of linearized operations, model state) pair already explored is never explored
again. Before searching, the history is split into independent parts (operations whose
keys, grants, clients and subjects never meet, Porcupine's partitioning), each checked
on its own.

Verdicts: ``linearizable`` (with one linearization), ``not-linearizable`` (with the
longest prefix that could be ordered and the operations none of whose answers the model
can explain after it), or ``unknown`` when ``max_states`` was reached first: never a pass.

An operation that raised something other than a contract answer (``Conflict``,
``InvalidArgument``), e.g. ``StorageUnavailable`` or a timeout, has an unknown outcome:
it may have taken effect at any instant after its call, or never.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from authconform.contract.model import MODEL_ERRORS, ContractModel, _signature
from authconform.race.history import Operation, describe

__all__ = ["Outcome", "Verdict", "check"]

Outcome = Literal["linearizable", "not-linearizable", "unknown"]

_GLOBAL_OPS = frozenset({"stats", "purge_expired", "drop_namespace", "list_clients"})
_IGNORED_OPS = frozenset({"health", "dump_raw", "close"})
_KIND_OF_OP = {
    "put_code": "codes",
    "get_code": "codes",
    "consume_code": "codes",
    "put_state": "states",
    "consume_state": "states",
    "put_reset_token": "reset_tokens",
    "consume_reset_token": "reset_tokens",
    "put_access_token": "access_tokens",
    "get_access_token": "access_tokens",
    "revoke_access_token": "access_tokens",
    "put_refresh_token": "refresh_tokens",
    "get_refresh_token": "refresh_tokens",
    "revoke_refresh_token": "refresh_tokens",
    "put_challenge": "challenges",
    "attempt_challenge": "challenges",
    "create_session": "sessions",
    "get_session": "sessions",
    "touch_session": "sessions",
    "revoke_session": "sessions",
}


@dataclass(frozen=True)
class Verdict:
    """The checker's answer. Only ``linearizable`` is a pass (``ok``)."""

    outcome: Outcome
    order: tuple[int, ...] = ()  # a linearization, or the longest prefix that was found
    stuck: tuple[int, ...] = ()  # not-linearizable: the operations that cannot come next
    states: int = 0  # search states explored
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True only for ``linearizable``."""
        return self.outcome == "linearizable"

    def __str__(self) -> str:
        return f"{self.outcome} ({self.states} states explored)" + (
            "\n" + self.detail if self.detail else ""
        )


class _Bound(Exception):
    """The search reached ``max_states``."""


def _uncertain(o: Operation) -> bool:
    return isinstance(o.result, BaseException) and not isinstance(o.result, MODEL_ERRORS)


def _footprint(o: Operation, initial: ContractModel) -> set[tuple[Any, ...]] | None:
    """What ``o`` may read or change (None: everything)."""
    if o.op in _GLOBAL_OPS:
        return None
    if o.op in _IGNORED_OPS:
        return set()
    try:
        params = _signature(o.op).bind(None, *o.args, **dict(o.kwargs)).arguments
    except (TypeError, ValueError):
        return None
    out: set[tuple[Any, ...]] = set()
    tables = initial._t  # the initial state links keys to their grants, clients, subjects

    links = (("client_id", "client"), ("grant_id", "grant"), ("subject", "subject"))

    def link_record(record: Any) -> None:
        for name, tag in links:
            value = getattr(record, name, None)
            if isinstance(value, str) and not (tag == "subject" and o.op != "create_session"):
                out.add((tag, value))

    def link_key(kind: str, key: Any) -> None:
        out.add((kind, _hashable(key)))
        entry = tables.get(kind, {}).get(key) if isinstance(key, str) else None
        if entry is not None:
            for name, tag in links:
                value = getattr(entry, name, None)
                if isinstance(value, str):
                    out.add((tag, value))

    if o.op in ("create_client", "get_client", "update_client", "verify_client_secret"):
        out.add(("client", _hashable(params.get("client_id"))))
    elif o.op == "delete_client":
        out.add(("client", _hashable(params.get("client_id"))))
    elif o.op == "revoke_grant":
        out.add(("grant", _hashable(params.get("grant_id"))))
    elif o.op in ("list_sessions", "revoke_all_sessions"):
        out.add(("subject", _hashable(params.get("subject"))))
    elif o.op == "hit":
        out.add(("rate", _hashable(params.get("key")), _hashable(params.get("window"))))
    elif o.op == "rotate_refresh_token":
        link_key("refresh_tokens", params.get("old"))
        link_key("refresh_tokens", params.get("new"))
    elif o.op in _KIND_OF_OP:
        names = [n for n in params if n != "self"]
        link_key(_KIND_OF_OP[o.op], params[names[0]] if names else None)
        if "record" in params:
            link_record(params["record"])
    else:
        return None
    return out


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _partitions(history: Sequence[Operation], initial: ContractModel) -> list[list[int]]:
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    feet = [_footprint(o, initial) for o in history]
    if any(f is None for f in feet):
        return [[i for i, o in enumerate(history) if o.op not in _IGNORED_OPS]]
    groups: dict[Any, list[int]] = {}
    for i, foot in enumerate(feet):
        assert foot is not None
        if not foot:
            continue
        items = [("op", i), *foot]
        for item in items[1:]:
            parent[find(item)] = find(items[0])
    for i, foot in enumerate(feet):
        if foot:
            groups.setdefault(find(("op", i)), []).append(i)
    return list(groups.values())


@dataclass
class _Search:
    history: Sequence[Operation]
    ops: list[int]
    tolerance: float
    max_states: int
    states: int = 0

    def __post_init__(self) -> None:
        self.ops.sort(key=lambda i: (self.history[i].call, i))
        self.bit = {i: 1 << n for n, i in enumerate(self.ops)}
        self.latest = max((self.history[i].ret for i in self.ops), default=0.0)
        self.best: tuple[list[int], ContractModel, int] | None = None
        self.seen: set[tuple[int, Any, float]] = set()

    def _ret(self, i: int) -> float:
        return math.inf if _uncertain(self.history[i]) else self.history[i].ret

    def _pending(self, mask: int) -> list[int]:
        return [i for i in self.ops if not mask & self.bit[i]]

    def _candidates(self, mask: int) -> list[int]:
        pending = self._pending(mask)
        horizon = min((self._ret(i) for i in pending), default=math.inf)
        return [i for i in pending if self.history[i].call <= horizon]

    def _next(self, i: int, model: ContractModel) -> list[ContractModel]:
        o = self.history[i]
        if _uncertain(o):
            after = model.copy()
            try:
                after.run(o.op, o.args, o.kwargs, now=max(o.call, model.now))
            except Exception:  # noqa: BLE001 - a call the model rejects had no effect
                return []
            return [after]
        return model.step(
            o.op,
            o.args,
            o.kwargs,
            o.result,
            lo=o.call,
            hi=o.ret,
            tolerance=self.tolerance,
            skew=self.tolerance,
        )

    def _done(self, mask: int) -> bool:
        return all(_uncertain(self.history[i]) for i in self._pending(mask))

    def _visit(self, mask: int, model: ContractModel) -> bool:
        key = (mask, model.fingerprint(), model.now)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.states += 1
        if self.states > self.max_states:
            raise _Bound
        return True

    def _children(self, mask: int, model: ContractModel) -> Iterator[tuple[int, ContractModel]]:
        for i in self._candidates(mask):
            for after in self._next(i, model):
                yield i, after

    def run(self, initial: ContractModel) -> list[int] | None:
        """A linearization of ``ops``, or None; raises ``_Bound`` past ``max_states``."""
        model = initial.copy()
        if self._done(0):
            return []
        self._visit(0, model)
        path: list[int] = []
        masks = [0]
        models = [model]
        stack = [self._children(0, model)]
        while stack:
            if self.best is None or len(path) > len(self.best[0]):
                self.best = (list(path), models[-1], masks[-1])
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                masks.pop()
                models.pop()
                if path:
                    path.pop()
                continue
            i, after = child
            mask = masks[-1] | self.bit[i]
            if self._done(mask):
                return [*path, i]
            if not self._visit(mask, after):
                continue
            path.append(i)
            masks.append(mask)
            models.append(after)
            stack.append(self._children(mask, after))
        return None

    def explain(self) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """The longest prefix found, the operations that cannot follow it, and why."""
        assert self.best is not None
        prefix, model, mask = self.best
        stuck = [i for i in self._candidates(mask) if not _uncertain(self.history[i])]
        lines = [
            f"longest linearizable prefix ({len(prefix)} of {len(self.ops)} operations):",
            describe(self.history, prefix) if prefix else "  (none)",
            "after it, no instant of their call windows explains the answer of:",
        ]
        for i in stuck:
            o = self.history[i]
            expected = model.copy().run(o.op, o.args, o.kwargs, now=max(o.call, model.now))
            lines.append(describe(self.history, [i]))
            lines.append(f"      the model answers {describe_value(expected)} there")
        return tuple(prefix), tuple(stuck), "\n".join(lines)


def describe_value(value: Any) -> str:
    """A redacted one-line form of an answer."""
    return describe([Operation(0, "", (), {}, 0.0, 0.0, value)]).split("-> ", 1)[1]


def check(
    history: Sequence[Operation],
    *,
    initial: ContractModel,
    tolerance: float = 0.05,
    max_states: int = 200_000,
) -> Verdict:
    """Check ``history`` against the model starting from ``initial`` (not changed).

    ``initial`` holds what the store held when the history began, on the same clock as
    the history's ``call``/``ret`` times: build it with ``ContractModel(now=t)`` and
    apply the setup at the instants it happened (``apply(..., now=...)``), or feed the
    setup's own operations in as part of the history. For a store that expires keys by
    itself give ``expired_retention`` its setting (the default ``inf`` is for stores on
    the injected clock).

    ``tolerance`` (seconds) widens every call window and bounds how far a backend's
    timestamps may differ from the model's (the store's clock is not the callers').
    """
    total = 0
    orders: list[int] = []
    unknown: list[str] = []
    for ops in _partitions(history, initial):
        search = _Search(history, list(ops), tolerance, max(1, max_states - total))
        try:
            found = search.run(initial)
        except _Bound:
            total += search.states
            unknown.append(
                f"search bound of {max_states} states reached in a part of {len(ops)} operations"
            )
            continue
        total += search.states
        if found is None:
            prefix, stuck, detail = search.explain()
            return Verdict("not-linearizable", prefix, stuck, total, detail)
        orders.extend(found)
    if unknown:
        return Verdict("unknown", tuple(orders), (), total, "; ".join(unknown))
    return Verdict("linearizable", tuple(orders), (), total, "")
