"""Performance gates as data: the ``metric:limit`` grammar of loadtests/gates.toml.

A gate is ``<metric>:[<op>]<value>[<unit>]``: ``p95:25ms``, ``fail_ratio:0%``, ``rps:>=500``.
Metrics: latency percentiles ``p50 p66 p75 p80 p90 p95 p98 p99 p99.9``, ``avg``, ``max``
(units ``ms`` or ``s``, kept in ms), ``fail_ratio`` (``%`` or a fraction) and ``rps`` (no
unit). The comparator defaults to ``<=``. No Locust import here: the locustfile feeds the
observed figures in, and the harness's self-tests evaluate gates without Locust.
"""

from __future__ import annotations

import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PERCENTILES", "Gate", "GateResult", "evaluate", "load_gate_set", "parse_gate"]

PERCENTILES: dict[str, float] = {
    "p50": 0.50, "p66": 0.66, "p75": 0.75, "p80": 0.80, "p90": 0.90,
    "p95": 0.95, "p98": 0.98, "p99": 0.99, "p99.9": 0.999,
}  # fmt: skip
_GATE_RE = re.compile(
    r"^(?P<metric>[a-z0-9_.]+):(?P<op><=|>=|<|>)?(?P<value>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|%)?$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}  # fmt: skip


@dataclass(frozen=True)
class Gate:
    """One parsed gate; latencies are in milliseconds, fail_ratio a fraction."""

    text: str
    metric: str
    op: str
    limit: float


@dataclass(frozen=True)
class GateResult:
    """A gate and what was observed."""

    gate: Gate
    observed: float

    @property
    def passed(self) -> bool:
        """True when the observed figure is within the limit."""
        return _OPS[self.gate.op](self.observed, self.gate.limit)


def parse_gate(text: str) -> Gate:
    """Parse ``metric:[op]value[unit]``; raise ValueError naming what is wrong."""
    match = _GATE_RE.match(text.strip().replace(" ", ""))
    if not match:
        raise ValueError(f"gate {text!r}: expected metric:[op]value[unit], e.g. p95:25ms")
    metric, op, unit = match["metric"], match["op"] or "<=", match["unit"] or ""
    value = float(match["value"])
    if metric in PERCENTILES or metric in ("avg", "max"):
        if unit not in ("ms", "s"):
            raise ValueError(f"gate {text!r}: a latency needs ms or s")
        value = value * 1000 if unit == "s" else value
    elif metric == "fail_ratio":
        if unit not in ("%", ""):
            raise ValueError(f"gate {text!r}: fail_ratio takes % or a fraction")
        value = value / 100 if unit == "%" else value
    elif metric == "rps":
        if unit:
            raise ValueError(f"gate {text!r}: rps takes no unit")
    else:
        known = ", ".join([*PERCENTILES, "avg", "max", "fail_ratio", "rps"])
        raise ValueError(f"gate {text!r}: unknown metric {metric!r}; known: {known}")
    return Gate(text, metric, op, value)


def load_gate_set(path: str | Path, name: str) -> tuple[str, list[Gate]]:
    """The description and parsed gates of ``[gates.<name>]`` in a gates.toml file."""
    data = tomllib.loads(Path(path).read_text())
    try:
        spec = data["gates"][name]
    except KeyError:
        sets = ", ".join(sorted(data.get("gates", {})))
        raise ValueError(f"{path}: no gate set {name!r}; sets: {sets}") from None
    return str(spec.get("description", "")), [parse_gate(g) for g in spec["checks"]]


def evaluate(gates: list[Gate], observed: Mapping[str, float]) -> list[GateResult]:
    """Compare each gate with ``observed[metric]``; a missing figure is a ValueError."""
    missing = sorted({g.metric for g in gates} - set(observed))
    if missing:
        raise ValueError(f"no observed figure for {', '.join(missing)}")
    return [GateResult(g, float(observed[g.metric])) for g in gates]
