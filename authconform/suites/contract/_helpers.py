"""Helpers shared by the contract checks (not a test module: pytest collects nothing here).

Import as ``from authconform.suites.contract._helpers import uid, tolerance, fresh_namespace``: the
repository root is on ``sys.path`` (``pythonpath = ["."]`` in the pytest ini).
"""

from __future__ import annotations

import re
import secrets

from authconform.contract import BackendSettings
from authconform.fixtures import TestClock

__all__ = ["NAMESPACE_ROOM", "fresh_namespace", "tolerance", "uid"]

#: characters ``fresh_namespace`` leaves free so a caller may append a short suffix
#: (``ns + "_2"``) and still fit the 40-character namespace limit
NAMESPACE_ROOM = 2
_NAMESPACE = re.compile(r"[a-z0-9_]{1,40}")
_TAG = 8  # hex characters of the random part


def uid() -> str:
    """A fresh random id (192 bits, URL-safe): a key no other check uses."""
    return secrets.token_urlsafe(24)


def tolerance(clock: TestClock) -> float:
    """How far ``expires_at`` may be from now + ttl: 1 ms on a fake clock, 0.25 s on real time."""
    return 0.001 if clock.fake is not None else 0.25


def fresh_namespace(settings: BackendSettings) -> str:
    """A new namespace derived from the run's: ``<run namespace>_<8 hex>``.

    Derived names start with the run's namespace, so a run that leaves one behind is
    visible to ``suites/selftest/test_namespace_safety.py`` (``SCAN ac:{<ns>*``, schemas
    ``authconform_<ns>%``). The run namespace is trimmed only if it is too long to fit
    the 40-character limit with the tag and ``NAMESPACE_ROOM`` spare characters.
    """
    base = settings.namespace[: 40 - NAMESPACE_ROOM - _TAG - 1]
    namespace = f"{base}_{secrets.token_hex(_TAG // 2)}"
    assert _NAMESPACE.fullmatch(namespace + "_" * NAMESPACE_ROOM), namespace
    return namespace
