"""``authconform`` command line: a dispatcher to subcommands (heavy imports are lazy).

- ``authconform test contract|live|race|restart [pytest args]``: run a shipped suite
  (the same as ``pytest --pyargs authconform.suites.<kind> [pytest args]``)
- ``authconform serve --backend ... --port ...``: the reference server (authconform.server)
- ``authconform bench storage|server ...``: benchmarks with gates (authconform.perf)
- ``authconform report a.json b.json ...``: merge runs into one summary (authconform.report)
- ``authconform clean``: drop the namespaces of runs whose lease expired (authconform.cleanup)
- ``authconform --version``
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "test": ("authconform.cli", "run a shipped suite: `authconform test contract --backend redis`"),
    "serve": ("authconform.server.cli", "run the reference OAuth 2.1 + MCP server"),
    "bench": ("authconform.perf.cli", "benchmarks: `authconform bench storage --backend redis`"),
    "report": ("authconform.report.cli", "merge results.json files into one summary.html"),
    "clean": ("authconform.cleanup.cli", "drop what killed runs left in redis/postgres"),
}


def _version() -> str:
    try:
        return version("authconform")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def suites() -> list[str]:
    """The shipped suites (packages under ``authconform/suites``)."""
    from authconform._session import SUITES_DIR

    return sorted(p.name for p in SUITES_DIR.iterdir() if (p / "__init__.py").is_file())


def test(args: list[str]) -> int:
    """``authconform test <suite> [pytest args]``: pytest on the installed suite."""
    kinds = suites()
    if not args or args[0] in ("-h", "--help") or args[0] not in kinds:
        stream = sys.stdout if args and args[0] in ("-h", "--help") else sys.stderr
        got = f"unknown suite {args[0]!r}; " if args and args[0] not in ("-h", "--help") else ""
        print(
            f"authconform test: {got}usage: authconform test {{{','.join(kinds)}}} "
            "[pytest options, e.g. --backend=redis or --server-url=URL]",
            file=stream,
        )
        return 0 if stream is sys.stdout else 4
    import pytest

    return int(pytest.main(["--pyargs", f"authconform.suites.{args[0]}", *args[1:]]))


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-V", "--version"):
        print(f"authconform {_version()}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: authconform <command> [options]   (version {_version()})\n\ncommands:")
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
    if name == "test":
        return test(rest)
    from authconform._extras import MissingExtra, extra_for, require, sentence

    feature = f"authconform {name}" + (f" {rest[0]}" if name == "bench" and rest else "")
    try:
        for extras in _NEEDS.get(feature, ()):
            require(feature, *extras)
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest))
    except MissingExtra as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = extra_for(exc.name)
        if extra is None:
            raise
        print(sentence(feature, [str(exc.name)], [extra]), file=sys.stderr)
        return 2


#: what a command needs before it starts (a later missing import is reported the same way)
_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "authconform serve": (("server",),),
    "authconform bench server": (("server", "bench"),),
}


if __name__ == "__main__":
    raise SystemExit(main())
