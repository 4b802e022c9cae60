"""``authconform`` command line: a dispatcher to subcommands (heavy imports are lazy).

- ``authconform bench storage --backend ...``: storage latency benchmark (authconform.perf)
- ``authconform serve --backend ... --port ...``: the reference server (authconform.server)
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("authconform.perf.cli", "benchmarks: `authconform bench storage --backend redis`"),
    "serve": ("authconform.server.cli", "run the reference OAuth 2.1 + MCP server"),
    "report": ("authconform.report.cli", "merge results.json files into one summary.html"),
}


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: authconform <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:8} {text}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"authconform: unknown command {name!r}; commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main())
