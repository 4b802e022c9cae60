"""Every setting, declared once: CLI option, env variable and ini key derive from one row.

``OPTIONS`` is the only table. A row ``Option("max_wait", ...)`` is reachable as
``--authconform-max-wait``, ``AUTHCONFORM_MAX_WAIT`` and the ini key
``authconform_max_wait``, resolved in that order (CLI > env > ini > default) by
``setting``. ``--backend`` and ``--server-url`` keep their short CLI spelling (users know
them); their env and ini names follow the same rule (``AUTHCONFORM_BACKEND``,
``authconform_backend``).

Settings cannot silently lie: ``validate`` turns an unknown ``authconform_*`` ini key or
``AUTHCONFORM_*`` environment variable, and a malformed value, into one usage error naming
the right spelling. This module imports nothing heavy: it is read by the pytest plugin,
which loads in every project where authconform is installed.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "EXTRA_ENV",
    "OPTIONS",
    "Option",
    "SettingError",
    "Source",
    "option",
    "register",
    "resolve",
    "setting",
    "validate",
]

Kind = Literal["str", "float", "int", "bool", "choice", "url", "path"]
Source = Literal["cli", "env", "ini", "default"]


class SettingError(ValueError):
    """A setting is unknown or malformed (the plugin turns it into a usage error)."""


@dataclass(frozen=True)
class Option:
    """One setting: ``--authconform-<name>``, ``AUTHCONFORM_<NAME>``, ini ``authconform_<name>``.

    ``kind`` validates the value (``float``/``int`` with ``minimum``, ``choice`` with
    ``choices``, ``url`` with ``schemes``); ``multiple`` options are lists (repeat the CLI
    option, or a comma list in env and ini); ``flag`` options are booleans.
    ``auto`` is a literal that is always accepted besides the kind (e.g. ``instances=auto``).
    ``secret`` values are never printed (the run header shows ``***``).
    """

    name: str
    help: str
    default: str | None = None
    cli: str | None = None
    multiple: bool = False
    flag: bool = False
    kind: Kind = "str"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    schemes: tuple[str, ...] = ()
    auto: str | None = None
    secret: bool = False
    group: str = "general"

    @property
    def flag_name(self) -> str:
        """The CLI spelling."""
        return self.cli or "--authconform-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable."""
        return "AUTHCONFORM_" + self.name.upper()

    @property
    def ini(self) -> str:
        """The ini key (also the argparse ``dest``)."""
        return "authconform_" + self.name

    def spellings(self) -> str:
        """``--x, env X or ini x``: where a user sets it."""
        return f"{self.flag_name}, env {self.env} or ini {self.ini}"


OPTIONS: tuple[Option, ...] = (
    # storage backends ---------------------------------------------------------------
    Option(
        "backend",
        "storage backend(s): a name (memory, sqlite, fakeredis, redis, postgres, or an "
        "entry point of group authconform.backends) or package.module:factory; repeat the "
        "option or give a comma list",
        default="memory",
        cli="--backend",
        multiple=True,
        group="storage",
    ),
    Option(
        "redis_url",
        "Redis URL for the redis backend",
        "redis://127.0.0.1:6379/0",
        kind="url",
        schemes=("redis", "rediss", "unix"),
        group="storage",
    ),
    Option(
        "postgres_url",
        "PostgreSQL URL for the postgres backend",
        "postgresql://postgres@127.0.0.1:5432/test",
        kind="url",
        schemes=("postgresql", "postgres"),
        group="storage",
    ),
    Option(
        "namespace",
        "namespace (key prefix / schema) of this run, [a-z0-9_]{1,30}; default: a fresh "
        "random one",
        group="storage",
    ),
    Option("strict", "fail on SHOULD violations too (they are warnings otherwise)", flag=True),
    Option(
        "hypothesis_profile",
        "budget of the model-based checks (state machines of the race suite): dev, ci or "
        "nightly",
        "ci",
        kind="choice",
        choices=("dev", "ci", "nightly"),
    ),
    # live targets ---------------------------------------------------------------------
    Option(
        "server_url",
        "URL of the deployment under test (an MCP endpoint or an authorization server's "
        "issuer); repeat for several instances of one deployment; default: the reference "
        "server over --backend",
        cli="--server-url",
        multiple=True,
        kind="url",
        schemes=("http", "https"),
        group="live",
    ),
    Option(
        "driver",
        "authorization driver: auto, redirect, form or package.module:callable (called with "
        "an authconform.live.AuthorizationRequest, returns the final redirect URL)",
        "auto",
        group="live",
    ),
    Option(
        "client_id",
        "a pre-registered client id, used for the flows (checks of dynamic registration "
        "still run when the server advertises it); needs --authconform-redirect-uri",
        group="live",
    ),
    Option(
        "client_secret",
        "the pre-registered client's secret (a confidential client; prefer the env variable)",
        secret=True,
        group="live",
    ),
    Option(
        "client_auth",
        "how the pre-registered confidential client authenticates",
        "client_secret_post",
        kind="choice",
        choices=("client_secret_post", "client_secret_basic"),
        group="live",
    ),
    Option(
        "redirect_uri",
        "redirect URI of the pre-registered client",
        kind="url",
        group="live",
    ),
    Option("scope", "scope to request (default: none)", group="live"),
    Option(
        "max_wait",
        "longest token lifetime (s) the expiry check waits out",
        "5",
        kind="float",
        minimum=0,
        group="live",
    ),
    Option(
        "server_log",
        "the target's log file, checked for leaked tokens and secrets (repeat for the log "
        "of each process)",
        multiple=True,
        kind="path",
        group="live",
    ),
    Option(
        "flows",
        "how many flows the repeated-flow check runs",
        "20",
        kind="int",
        minimum=1,
        group="live",
    ),
    Option("timeout", "HTTP timeout per request (s)", "10", kind="float", minimum=0.1,
           group="live"),
    Option(
        "race_size",
        "requests the live race checks send at once (one lane each, spread over the "
        "target's instances)",
        "8",
        kind="int",
        minimum=2,
        group="live",
    ),
    Option(
        "race_rounds",
        "rounds of each live race check (the code-replay race runs twice as many; a race "
        "window is hit by chance: more rounds, more power)",
        "3",
        kind="int",
        minimum=1,
        group="live",
    ),
    Option(
        "instances",
        "reference-server processes over one backend (auto: 1 for memory/fakeredis, else 2)",
        "auto",
        kind="int",
        minimum=1,
        auto="auto",
        group="live",
    ),
    Option(
        "server_arg",
        "extra argument for the reference server, e.g. "
        "--authconform-server-arg=--provider-wrapper=pkg.mod:fn (repeatable)",
        multiple=True,
        group="live",
    ),
    Option(
        "access_ttl",
        "access-token lifetime of the reference server (s)",
        "4",
        kind="float",
        minimum=1,
        group="live",
    ),
    Option(
        "code_ttl",
        "authorization-code lifetime (s) the deployment runs with; the code-expiry check "
        "waits it out (at most --authconform-max-wait); default: unknown (the reference "
        "server runs with 3)",
        kind="float",
        minimum=0.1,
        group="live",
    ),
    Option(
        "refresh_ttl",
        "refresh-token lifetime (s) the deployment runs with; the refresh-expiry check "
        "waits it out (at most --authconform-max-wait); default: unknown (the reference "
        "server runs with 8)",
        kind="float",
        minimum=0.1,
        group="live",
    ),
    Option(
        "rate",
        "most requests per second the live suite sends to the target (0: no pacing); a 429 "
        "is retried after its Retry-After when that fits in --authconform-max-wait",
        "0",
        kind="float",
        minimum=0,
        group="live",
    ),
    Option(
        "variant",
        "reference-server variants (module:callable wrappers, e.g. the mutants of "
        "fixtures/mutants/servers.py): each one more reference target beside the plain one",
        multiple=True,
        group="live",
    ),
    Option(
        "in_process",
        "run reference-server targets in this process (httpx ASGI transport, no socket): "
        "much faster to start, one instance each; for self-tests of many variants",
        flag=True,
        group="live",
    ),
    Option(
        "auth_limit",
        "failed client authentications after which the deployment answers 429 (its "
        "declared limit); unset: the brute-force check only reports what it saw",
        kind="int",
        minimum=1,
        group="live",
    ),
    # restarts and faults (authconform.suites.restart) -------------------------------------
    Option(
        "restart_cmd",
        "shell command that restarts the store named by an explicit --authconform-redis-url "
        "or --authconform-postgres-url, or the live target of --server-url; without it the "
        "restart checks skip such a target (the suite restarts only what it started)",
        group="restart",
    ),
    Option(
        "profile",
        "production: the restart suite fails a store whose own settings can lose "
        "acknowledged writes or evict live records (reported only, otherwise)",
        "default",
        kind="choice",
        choices=("default", "production"),
        group="restart",
    ),
    Option(
        "outages",
        "store outage lengths (s) after which service must resume by itself, run "
        "concurrently in one check; add 120 for the 2-minute outage",
        "1,30",
        multiple=True,
        kind="float",
        minimum=0.1,
        group="restart",
    ),
    # reports --------------------------------------------------------------------------
    Option(
        "report_dir",
        "where runs of our suites write junit.xml, results.json and summary.html "
        "(relative to the current directory)",
        "reports",
        kind="path",
        group="reports",
    ),
)

#: environment variables of ours that are not options (an unknown AUTHCONFORM_* is an error)
EXTRA_ENV: dict[str, str] = {
    "AUTHCONFORM_NO_PLUGINS": "1 limits backend discovery to the built-ins",
    "AUTHCONFORM_PROC_LEDGER": "file where authconform.procs lists every process it starts",
    "AUTHCONFORM_PROCS_PROVIDER": "local or container: the only provider of restart stores",
    "AUTHCONFORM_PG_BINDIR": "directory of initdb and postgres for the restart suite",
    "AUTHCONFORM_PG_USER": "unprivileged user PostgreSQL runs as when we are root",
}

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The row named ``name`` (KeyError for a typo in our own code)."""
    return _BY_NAME[name]


def _split(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


def _raw(config: Any, opt: Option) -> tuple[Any, Source]:
    cli = config.getoption(opt.ini, default=None)
    if cli is not None:
        if opt.multiple:
            return _split(cli), "cli"
        return cli, "cli"
    env = os.environ.get(opt.env)
    if env is not None and env.strip() != "":
        if opt.flag:
            return env.strip().lower() in ("1", "true", "yes", "on"), "env"
        if opt.multiple:
            return _split(env), "env"
        return env.strip(), "env"
    ini = config.getini(opt.ini)
    if opt.flag:
        if ini:
            return True, "ini"
        return False, "default"
    if opt.multiple:
        values = _split(ini)
        if values:
            return values, "ini"
        return _split(opt.default), "default"
    if ini:
        return str(ini).strip(), "ini"
    return opt.default, "default"


def resolve(config: Any, name: str) -> tuple[Any, Source]:
    """One setting and where it came from: CLI > env > ini > default. Lists if multiple."""
    return _raw(config, _BY_NAME[name])


def setting(config: Any, name: str) -> Any:
    """One setting's value (CLI > env > ini > default); lists for ``multiple`` options."""
    return _raw(config, _BY_NAME[name])[0]


def _check_value(opt: Option, value: str, source: Source) -> None:
    where = {"cli": opt.flag_name, "env": f"env {opt.env}", "ini": f"ini {opt.ini}",
             "default": f"the default of {opt.flag_name}"}[source]
    if opt.auto is not None and value == opt.auto:
        return
    if opt.kind in ("float", "int"):
        try:
            number = float(value) if opt.kind == "float" else int(value)
        except ValueError:
            kind = "a number" if opt.kind == "float" else "an integer"
            raise SettingError(f"{where}={value!r} is not {kind}") from None
        if not math.isfinite(number) or (opt.minimum is not None and number < opt.minimum):
            raise SettingError(f"{where}={value!r}: expected a value >= {opt.minimum:g}")
    elif opt.kind == "choice" and value not in opt.choices:
        raise SettingError(f"{where}={value!r}: use one of {', '.join(opt.choices)}")
    elif opt.kind == "url":
        parts = urlsplit(value)
        schemes = opt.schemes
        if schemes and parts.scheme not in schemes:
            raise SettingError(
                f"{where}={value!r} is not a {'/'.join(schemes)} URL"
            )
        if parts.scheme in ("http", "https") and not parts.hostname:
            raise SettingError(f"{where}={value!r} has no host")
        if not schemes and (not parts.scheme or not (parts.netloc or parts.path)):
            raise SettingError(f"{where}={value!r} is not an absolute URL")


def validate(config: Any, environ: Mapping[str, str] | None = None) -> None:
    """Raise ``SettingError`` for an unknown key or variable of ours, or a malformed value."""
    environ = os.environ if environ is None else environ
    known_env = {o.env for o in OPTIONS} | set(EXTRA_ENV)
    for name in sorted(environ):
        if name.startswith("AUTHCONFORM_") and name not in known_env:
            raise SettingError(f"unknown environment variable {name}{_hint(name, known_env)}")
    known_ini = {o.ini for o in OPTIONS}
    for key in sorted(_ini_keys(config)):
        if key.startswith("authconform_") and key not in known_ini:
            raise SettingError(f"unknown ini key {key}{_hint(key, known_ini)}")
    for opt in OPTIONS:
        if opt.flag or opt.kind == "str" or opt.kind == "path":
            continue
        value, source = _raw(config, opt)
        for item in value if opt.multiple else [value]:
            if item is not None and item != "":
                _check_value(opt, str(item), source)


def _ini_keys(config: Any) -> list[str]:
    inicfg = getattr(config, "_inicfg", None) or {}  # pytest 9 deprecates the public name
    try:
        return [str(k) for k in inicfg]
    except TypeError:  # pragma: no cover - defensive: pytest changed the type
        return []


def _hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    spelled = f"; did you mean {close[0]}?" if close else ""
    listing = ", ".join(sorted(known))
    return f"{spelled} (known: {listing})"


def register(parser: Any) -> None:
    """Declare every row on a pytest parser: one CLI option and one ini key each."""
    group = parser.getgroup("authconform", "authconform conformance suite")
    for opt in OPTIONS:
        note = f" [env {opt.env}, ini {opt.ini}]"
        if opt.flag:
            group.addoption(opt.flag_name, action="store_true", default=None, dest=opt.ini,
                            help=opt.help + note)
            parser.addini(opt.ini, opt.help, type="bool", default=False)
        elif opt.multiple:
            group.addoption(opt.flag_name, action="append", default=None, dest=opt.ini,
                            help=opt.help + note)
            parser.addini(opt.ini, opt.help, type="linelist", default=[])
        else:
            group.addoption(opt.flag_name, default=None, dest=opt.ini, help=opt.help + note)
            # no ini default: an unset key must read as unset, so that resolve() reports
            # the value's source as "default" (the default is applied by _raw)
            parser.addini(opt.ini, opt.help, default="")
