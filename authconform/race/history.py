"""The record of one concurrent operation, as the race runners write it.

Every caller (asyncio task, thread or process) notes the invocation time, calls one
``StorageBackend`` operation and notes the response time and the answer (or the
exception raised). All callers read the same clock (``time.time()``), so "``a.ret`` <
``b.call``" means ``a`` finished before ``b`` started.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

__all__ = ["Operation", "describe", "redact"]


def _empty() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Operation:
    """One call: who made it, what it was, when it ran and what it answered."""

    process: int  # caller id (task/thread/process)
    op: str  # StorageBackend method name
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=_empty)
    call: float = 0.0  # invocation time (time.time(), same clock for all callers)
    ret: float = 0.0  # response time
    result: Any = None  # the return value, or the exception instance raised


def redact(value: Any) -> Any:
    """A printable form of ``value``: strings of 16+ characters become a short digest.

    Tokens, codes and secrets are 16+ characters; short test ids stay readable.
    """
    if isinstance(value, str):
        if len(value) < 16:
            return value
        return "<" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8] + ">"
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, Mapping):
        return {redact(k): redact(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}"
    if is_dataclass(value) and not isinstance(value, type):
        parts = []
        for f in fields(value):
            v = getattr(value, f.name)
            if f.name in ("extra", "metadata") and not v:
                continue
            parts.append(f"{f.name}={_show(v)}")
        return f"{type(value).__name__}({', '.join(parts)})"
    if (
        hasattr(value, "name")
        and hasattr(value, "value")
        and type(value).__module__.startswith("authconform")
    ):
        return str(value.name)
    return repr(redact(value))


def describe(history: Sequence[Operation], indices: Sequence[int] | None = None) -> str:
    """One line per operation (``indices`` selects and orders them), secrets redacted."""
    chosen = range(len(history)) if indices is None else indices
    if not history:
        return "(empty history)"
    t0 = min(o.call for o in history)
    lines = []
    for i in chosen:
        o = history[i]
        shown = [_show(a) for a in o.args] + [f"{k}={_show(v)}" for k, v in o.kwargs.items()]
        args = ", ".join(shown)
        lines.append(
            f"  #{i} p{o.process} [{(o.call - t0) * 1000:.3f} ms, {(o.ret - t0) * 1000:.3f} ms] "
            f"{o.op}({args}) -> {_show(o.result)}"
        )
    return "\n".join(lines)
