"""``authconform bench <kind> ...``: dispatch to a benchmark module (imported lazily).

- ``storage``: latency per storage operation against the raw store round trip
  (``authconform.perf.storage_bench``).
- ``server``: the reference server's hot path (``authconform.perf.server_bench``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

__all__ = ["main"]

KINDS: dict[str, tuple[str, str]] = {
    "storage": (
        "authconform.perf.storage_bench",
        "storage latency per operation vs the raw store round trip",
    ),
    "server": (
        "authconform.perf.server_bench",
        "reference server hot path (authenticated MCP tools/call) vs a bare endpoint",
    ),
}


def _usage() -> str:
    lines = ["usage: authconform bench <kind> [options]", "", "kinds:"]
    lines += [f"  {name:8} {text}" for name, (_, text) in KINDS.items()]
    lines += ["", "`authconform bench <kind> --help` lists a kind's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``authconform bench <kind> ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    kind, rest = args[0], args[1:]
    if kind not in KINDS:
        print(
            f"authconform bench: unknown kind {kind!r}; kinds: {', '.join(KINDS)}",
            file=sys.stderr,
        )
        return 2
    module_name = KINDS[kind][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            print(
                f"authconform bench {kind}: a dependency is missing ({exc}); "
                "install the extras: pip install 'authconform[all]'",
                file=sys.stderr,
            )
            return 2
        print(
            f"authconform bench {kind}: {module_name} is not available in this installation "
            "(the module is missing); kinds that are: "
            + ", ".join(k for k, (m, _) in KINDS.items() if _importable(m)),
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest))


def _importable(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


if __name__ == "__main__":
    raise SystemExit(main())
