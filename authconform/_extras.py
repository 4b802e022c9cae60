"""Optional dependencies: which extra brings which module, and the one line that says so.

``pip install authconform`` alone gives the plugin, the contract suite and the built-in
embedded backends. Everything else comes with an extra; a feature used without its extra
says, in one line, what to install (``pip install 'authconform[server]'``), never with
a traceback and never at import time. This module imports nothing optional itself: it
asks ``importlib.util.find_spec``, which finds a top-level module without importing it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "extra_for", "missing_modules", "require", "sentence"]

#: extra -> the top-level modules it must bring (only what a feature imports first)
EXTRAS: dict[str, tuple[str, ...]] = {
    "bench": ("locust",),
    "containers": ("testcontainers",),
    "fakeredis": ("redis", "fakeredis"),
    "live": ("httpx",),
    "postgres": ("psycopg", "psycopg_pool"),
    "redis": ("redis",),
    "server": ("mcp", "uvicorn", "starlette", "httpx"),
}

#: a top-level module -> the smallest extra that installs it
_EXTRA_OF: dict[str, str] = {
    "fakeredis": "fakeredis",
    "httptools": "server",
    "httpx": "live",
    "locust": "bench",
    "mcp": "server",
    "mcp_types": "server",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "redis": "redis",
    "starlette": "server",
    "testcontainers": "containers",
    "uvicorn": "server",
    "uvloop": "server",
}


class MissingExtra(RuntimeError):
    """A feature was used without its extra; the message is the one line to show."""


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is read by its top level)."""
    if not module:
        return None
    return _EXTRA_OF.get(module.split(".", 1)[0])


def missing_modules(*extras: str) -> list[str]:
    """The modules of ``extras`` that are not installed, in order, without duplicates."""
    out: list[str] = []
    for extra in extras:
        for module in EXTRAS[extra]:
            if module not in out and importlib.util.find_spec(module) is None:
                out.append(module)
    return out


def sentence(feature: str, modules: list[str], extras: tuple[str, ...] | list[str]) -> str:
    """``<feature> needs <modules>, not installed: pip install 'authconform[<extras>]'``."""
    names = ", ".join(modules)
    verb = "is" if len(modules) == 1 else "are"
    return (
        f"{feature} needs {names}, which {verb} not installed: "
        f"pip install 'authconform[{','.join(extras)}]'"
    )


def require(feature: str, *extras: str) -> None:
    """Raise ``MissingExtra`` with one line if a module of ``extras`` is missing."""
    modules = missing_modules(*extras)
    if modules:
        wanted = [e for e in extras if any(m in EXTRAS[e] for m in modules)]
        raise MissingExtra(sentence(feature, modules, wanted))
