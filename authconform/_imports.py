"""``package.module:attr`` loading, shared by backends, drivers and server wrappers.

The current directory is importable (as it is for ``python -m``), so a user's
``--backend=mystore.backend:make`` works from their project root without PYTHONPATH.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["ImportFailure", "import_object"]


class ImportFailure(ValueError):
    """The path cannot be imported; the message says why (module, attribute, callable)."""


def import_object(path: str, *, what: str = "object", need_callable: bool = True) -> Any:
    """Import ``package.module:attr`` (``attr`` may be dotted); ``ImportFailure`` if not."""
    module_name, sep, attr = path.strip().partition(":")
    if not sep or not module_name or not attr:
        raise ImportFailure(f"expected package.module:{what}, got {path!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportFailure(f"cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ImportFailure(f"{module_name} has no attribute {attr!r}")
    if need_callable and not callable(target):
        raise ImportFailure(f"{path} is not callable")
    return target
