"""Authorization drivers by name: the built-ins and ``package.module:callable``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authconform._imports import ImportFailure, import_object

__all__ = ["BUILTIN_DRIVERS", "load_driver"]

BUILTIN_DRIVERS = ("auto", "redirect", "form")


def load_driver(spec: str) -> Callable[..., Any]:
    """Import a ``package.module:callable`` driver; ``ValueError`` saying why not."""
    if ":" not in spec:
        raise ValueError(
            f"expected {', '.join(BUILTIN_DRIVERS)} or package.module:callable, got {spec!r}"
        )
    try:
        return import_object(spec, what="callable")  # type: ignore[no-any-return]
    except ImportFailure as exc:
        raise ValueError(str(exc)) from None
