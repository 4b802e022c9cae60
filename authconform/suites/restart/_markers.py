"""The suite's markers (prefixed aliases from ``authconform.markers`` once it exists)."""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["requires", "restart", "spec"]

try:
    from authconform.markers import requires, restart, spec  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # before the layout change of issue 6
    spec: Any = pytest.mark.spec  # type: ignore[no-redef,unused-ignore]
    requires: Any = pytest.mark.requires  # type: ignore[no-redef,unused-ignore]
    restart: Any = pytest.mark.restart  # type: ignore[no-redef,unused-ignore]
