"""Performance gates as data: the ``metric:limit`` grammar of gates files (gates.toml).

A gate is ``<metric>:[<op>]<value>[<unit>]``: ``p95:25ms``, ``fail_ratio:0%``, ``rps:>=500``.
Metrics: latency percentiles ``p50 p66 p75 p80 p90 p95 p98 p99 p99.9``, ``avg``, ``max``
(units ``ms`` or ``s``, kept in ms), ``fail_ratio`` (``%`` or a fraction) and ``rps`` (no
unit). The comparator defaults to ``<=``. The shipped file is authconform/loadtests/gates.toml.
No Locust import here: the locustfile feeds the observed figures in, and the harness's
self-tests evaluate gates without Locust.
"""

from __future__ import annotations

import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PERCENTILES",
    "Gate",
    "GateResult",
    "describe",
    "evaluate",
    "load_gate_set",
    "parse_gate",
]

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
_NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}


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


def _figure(metric: str, value: float) -> str:
    if metric == "fail_ratio":
        value, unit = value * 100, "%"
    elif metric == "rps":
        unit = " req/s"
    else:
        unit = " ms"
    text = f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return text + unit


def describe(result: GateResult, gate_set: str = "") -> str:
    """One line: which gate, observed vs limit and, for a breach, by how much.

    ``gate hot_path p95: 31 ms > 25 ms (+24%)``, ``gate hot_path rps: 412 req/s < 500
    req/s (-18%)``; a met gate reads ``gate hot_path p95: 12 ms <= 25 ms``. The margin is
    relative to the limit, in points for fail_ratio (a relative margin over 0% means
    nothing).
    """
    gate, observed = result.gate, result.observed
    name = f"{gate_set} {gate.metric}" if gate_set else gate.metric
    relation = gate.op if result.passed else _NEGATED[gate.op]
    line = f"gate {name}: {_figure(gate.metric, observed)} {relation} "
    line += _figure(gate.metric, gate.limit)
    if result.passed:
        return line
    if gate.metric == "fail_ratio":
        margin = f"{(observed - gate.limit) * 100:+.2f}".rstrip("0").rstrip(".") + " points"
    elif gate.limit:
        pct = (observed - gate.limit) / gate.limit * 100
        digits = ".0f" if abs(pct) >= 10 else ".1f" if abs(pct) >= 1 else ".2g"
        margin = f"{pct:+{digits}}%"
    else:
        margin = f"{observed - gate.limit:+g}"
    return f"{line} ({margin})"
