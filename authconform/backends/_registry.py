"""Resolve ``--backend`` values to factories: built-in names, entry points, module paths.

A factory is any callable ``(BackendSettings) -> StorageBackend``. It may carry optional
attributes the harness reads:

- ``uses_clock`` (bool, default True): expiry follows ``settings.clock`` (a fake clock
  lets TTL checks run without sleeping); False means the store keeps time (Redis).
- ``outage_settings(settings) -> BackendSettings``: settings under which the store is
  down, for the fail-closed checks. Absent: those checks are not applicable.
- ``in_process`` (bool, default False): the store lives in this process (memory,
  fakeredis), so instances in other processes cannot share it; the race suite's
  ``process`` executor does not apply.
- ``service``: a short name of the server it needs (``"redis"``, ``"postgres"``), used
  in error messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from authconform._imports import ImportFailure, import_object
from authconform.contract import BackendSettings, StorageBackend
from authconform.errors import ConfigurationError

__all__ = ["BUILTINS", "BackendSpec", "available", "resolve"]

GROUP = "authconform.backends"

BUILTINS: dict[str, str] = {
    "fakeredis": "authconform.backends.redis:fakeredis_factory",
    "memory": "authconform.backends.memory:factory",
    "postgres": "authconform.backends.postgres:factory",
    "redis": "authconform.backends.redis:factory",
    "sqlite": "authconform.backends.sqlite:factory",
}

Factory = Callable[[BackendSettings], StorageBackend]


@dataclass(frozen=True)
class BackendSpec:
    """A selected backend: its test id, its factory and where it came from."""

    name: str
    factory: Factory
    source: str

    @property
    def uses_clock(self) -> bool:
        """True when expiry follows the injected clock."""
        return bool(getattr(self.factory, "uses_clock", True))

    @property
    def service(self) -> str | None:
        """The server this backend needs, if any."""
        return getattr(self.factory, "service", None)

    def outage_settings(self, settings: BackendSettings) -> BackendSettings | None:
        """Settings under which the store is down, or None if the backend has no store."""
        fn = getattr(self.factory, "outage_settings", None)
        return None if fn is None else fn(settings)


def available() -> dict[str, str]:
    """Every backend name and what provides it (built-ins, then plugin entry points)."""
    names = {name: "authconform (built-in)" for name in BUILTINS}
    if os.environ.get("AUTHCONFORM_NO_PLUGINS") == "1":
        return names
    for ep in entry_points(group=GROUP):
        if ep.name not in names:
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            names[ep.name] = dist
    return names


def _load(path: str, what: str, extra: str | None = None) -> Factory:
    try:
        return import_object(path, what="factory")  # type: ignore[no-any-return]
    except ImportFailure as exc:
        hint = f"; install the extra: pip install 'authconform[{extra}]'" if extra else ""
        raise ConfigurationError(f"backend {what}: {exc}{hint}") from None


def resolve(value: str) -> BackendSpec:
    """Turn one ``--backend`` value into a spec, or raise ``ConfigurationError``."""
    value = value.strip()
    if ":" in value:
        module_name, _, attr = value.partition(":")
        if not module_name or not attr:
            raise ConfigurationError(f"backend {value!r}: expected package.module:factory")
        return BackendSpec(
            name=attr if attr != "factory" else module_name.rsplit(".", 1)[-1],
            factory=_load(value, repr(value)),
            source=value,
        )
    if value in BUILTINS:
        extra = value if value in ("redis", "fakeredis", "postgres") else None
        return BackendSpec(
            value, _load(BUILTINS[value], repr(value), extra), "authconform (built-in)"
        )
    if os.environ.get("AUTHCONFORM_NO_PLUGINS") != "1":
        for ep in entry_points(group=GROUP):
            if ep.name == value:
                dist = ep.dist.name if ep.dist is not None else "unknown distribution"
                return BackendSpec(value, _load(ep.value, repr(value)), dist)
    listing = ", ".join(f"{n} ({src})" for n, src in sorted(available().items()))
    raise ConfigurationError(
        f"unknown backend {value!r}. Available: {listing}; "
        "or give a factory as package.module:factory"
    )
