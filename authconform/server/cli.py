"""``authconform serve``: run the reference server with uvicorn.

::

    authconform serve --backend redis://127.0.0.1:6379/0 --port 8000 --workers 4
    authconform serve --backend memory --port 0 --consent form --fault token:503:0.1
    authconform serve --backend memory --port 0 --no-mcp      # authorization server only
    # a split deployment: the MCP server's authorization server on another origin
    authconform serve --backend sqlite:///tmp/a.db --port 9000 --role as
    authconform serve --backend sqlite:///tmp/a.db --port 9001 --role rs \
        --authorization-server http://127.0.0.1:9000

Prints exactly one line to stdout once the socket is bound (so a harness can read the
port with ``--port 0``)::

    authconform serve: listening on http://127.0.0.1:PORT

SIGTERM (or Ctrl-C) stops it cleanly. Logs go to stderr; the access log shows paths with
their query strings redacted (codes and states travel in them) and no request bodies.
``--log-level`` stops at ``debug``: uvicorn's ``trace`` would log headers (tokens).

Wrappers (``--provider-wrapper module:callable``, repeatable, applied in order) get the
storage-backed provider and return a provider; a callable with the attribute
``authconform_wraps = "app"`` gets the finished ASGI app and returns an ASGI app
instead. The mutant servers in ``fixtures/mutants/servers.py`` are such callables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, cast

from authconform.contract import BackendSettings, StorageBackend
from authconform.errors import ConfigurationError

if TYPE_CHECKING:
    from authconform.server._config import Role

__all__ = ["BACKEND_ENV", "RedactQueryFilter", "backend_from_env", "backend_from_spec", "main"]

BACKEND_ENV = "AUTHCONFORM_SERVE_BACKEND"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def backend_from_spec(spec: str, namespace: str) -> StorageBackend:
    """A backend from a name (``memory``, ``redis``, ``module:factory``, ...) or a URL.

    URLs: ``redis://`` / ``rediss://`` / ``unix://`` -> redis at that URL;
    ``postgresql://`` / ``postgres://`` -> postgres at that URL; ``sqlite:///path`` ->
    sqlite in that file.
    """
    from authconform.backends._registry import resolve

    name, settings = _parse_spec(spec, namespace)
    return resolve(name).factory(settings)


def _parse_spec(spec: str, namespace: str) -> tuple[str, BackendSettings]:
    spec = spec.strip()
    lowered = spec.lower()
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        return "redis", BackendSettings(namespace=namespace, redis_url=spec)
    if lowered.startswith(("postgresql://", "postgres://")):
        url = "postgresql://" + spec.split("://", 1)[1]
        return "postgres", BackendSettings(namespace=namespace, postgres_url=url)
    if lowered.startswith("sqlite://"):
        # like file:// URLs: sqlite:///tmp/a.db -> /tmp/a.db (sqlite:////tmp/a.db too);
        # sqlite://a.db -> a.db (relative)
        # sqlite:///tmp/a.db?synchronous=FULL sets PRAGMA synchronous (default NORMAL)
        path, _, query = spec[len("sqlite://") :].partition("?")
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if not path.strip("/"):
            raise ConfigurationError(f"--backend {spec!r}: expected sqlite:///path/to/file")
        options: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(query):
            if key != "synchronous":
                raise ConfigurationError(
                    f"--backend {spec!r}: unknown sqlite parameter {key!r} (known: synchronous)"
                )
            options["sqlite_synchronous"] = value
        return "sqlite", BackendSettings(namespace=namespace, sqlite_path=path, options=options)
    if "://" in spec:
        raise ConfigurationError(
            f"--backend {spec!r}: unknown URL scheme; use redis://, postgresql:// or sqlite:///"
        )
    return spec, BackendSettings(namespace=namespace)


def backend_from_env() -> StorageBackend:
    """The backend described by ``AUTHCONFORM_SERVE_BACKEND`` (set by ``main``)."""
    text = os.environ.get(BACKEND_ENV)
    if not text:
        raise ConfigurationError(f"{BACKEND_ENV} is not set (it is set by `authconform serve`)")
    data = json.loads(text)
    return backend_from_spec(data["spec"], data["namespace"])


class RedactQueryFilter(logging.Filter):
    """Drop the query string from uvicorn access-log lines (codes and states live there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record.args`` in place; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0] + "?<redacted>", *args[3:])
        return True


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = json.loads(json.dumps(LOGGING_CONFIG))
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout: one line only
    config["filters"] = {"redact": {"()": "authconform.server.cli.RedactQueryFilter"}}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact"]
    config["loggers"]["authconform"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    config["loggers"]["mcp"] = {
        "handlers": ["default"],
        "level": "DEBUG" if level == "debug" else "WARNING",
        "propagate": False,
    }
    return config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authconform serve",
        description="Run the reference OAuth 2.1 authorization server + MCP resource server.",
    )
    p.add_argument(
        "--backend",
        default="memory",
        help="memory|sqlite|redis|fakeredis|postgres|module:factory, or a URL: "
        "redis://..., postgresql://..., sqlite:///path (default: memory)",
    )
    p.add_argument("--namespace", default="authconform_server", help="backend namespace")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--issuer", help="issuer URL (default http://HOST:PORT)")
    p.add_argument(
        "--resource",
        help="MCP resource URL tokens are bound to (default ISSUER/mcp; --role rs: "
        "http://HOST:PORT/mcp)",
    )
    p.add_argument(
        "--role",
        choices=("both", "as", "rs"),
        default="both",
        help="both: authorization server + MCP server (default); as: authorization server "
        "only; rs: MCP server + protected-resource metadata only, naming "
        "--authorization-server (run one of each over the same backend and namespace for "
        "a split deployment)",
    )
    p.add_argument(
        "--no-mcp",
        action="store_true",
        help="same as --role as: no /mcp route and no protected-resource metadata",
    )
    p.add_argument(
        "--authorization-server",
        metavar="ISSUER",
        help="--role rs: issuer URL of the authorization server tokens come from",
    )
    p.add_argument(
        "--mcp-impl",
        choices=("lean", "sdk"),
        default="lean",
        help="MCP endpoint implementation: lean (ours: stateless streamable HTTP answered "
        "in the request's task, the default) or sdk (the SDK's stateless session "
        "transport); authentication is the same for both",
    )
    p.add_argument("--access-ttl", type=float, default=3600.0, help="seconds")
    p.add_argument("--refresh-ttl", type=float, default=86400.0, help="seconds")
    p.add_argument("--code-ttl", type=float, default=300.0, help="seconds")
    p.add_argument("--consent", choices=("auto", "form"), default="auto")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ENDPOINT:STATUS[:RATE]",
        help="inject an error status, e.g. token:503:0.2 (repeatable)",
    )
    p.add_argument(
        "--delay",
        action="append",
        default=[],
        metavar="ENDPOINT:SECONDS[:RATE]",
        help="inject latency, e.g. mcp:0.5:0.1 (repeatable)",
    )
    p.add_argument("--fault-seed", type=int, default=None, help="seed for fault/delay dice")
    p.add_argument(
        "--provider-wrapper",
        action="append",
        default=[],
        metavar="MODULE:CALLABLE",
        help="wrap the provider (or the app, see docs); repeatable",
    )
    p.add_argument(
        "--scope",
        action="append",
        default=None,
        metavar="SCOPE",
        help="scopes offered (repeatable; default: mcp)",
    )
    p.add_argument("--subject", default="authconform-user", help="resource owner of every grant")
    p.add_argument(
        "--profile",
        choices=("default", "production"),
        default="default",
        help="production: refuse to start on a store whose own settings can lose "
        "acknowledged writes or evict live records (checked with the backend's health())",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--no-access-log", action="store_true", help="turn the access log off")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default=None)
    p.add_argument("--http", choices=("auto", "h11", "httptools"), default=None)
    return p


def _role(args: argparse.Namespace) -> Role:
    """The role from ``--role``/``--no-mcp``/``--authorization-server`` (checked)."""
    role: str = args.role
    if args.no_mcp:
        if role == "rs":
            raise ConfigurationError("--no-mcp contradicts --role rs")
        role = "as"
    if role == "rs":
        if not args.authorization_server:
            raise ConfigurationError(
                "--role rs needs --authorization-server ISSUER (the authorization server's "
                "issuer URL, named in the protected-resource metadata)"
            )
        if args.issuer:
            raise ConfigurationError(
                "--role rs serves no issuer; name the authorization server with "
                "--authorization-server"
            )
    elif args.authorization_server:
        raise ConfigurationError("--authorization-server is only for --role rs")
    return cast("Role", role)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _check_production(spec: str, namespace: str) -> None:
    """Raise ConfigurationError unless the store keeps every acknowledged write.

    Reads the store's own settings through the backend's ``health()`` and judges them
    with ``authconform.backends._durability.assess``: a store that is down, that can lose
    an acknowledged write on a crash, that may evict live records, or whose settings
    cannot be judged, is refused.
    """
    import asyncio

    from authconform.backends._durability import assess

    async def probe() -> Any:
        backend = backend_from_spec(spec, namespace)
        try:
            return await backend.health()
        finally:
            await backend.close()

    health = asyncio.run(probe())
    if not health.ok:
        raise ConfigurationError(f"--profile=production: the store is down ({health.detail})")
    verdict = assess(health.durability)
    if verdict.loses is None:
        raise ConfigurationError(
            "--profile=production: refusing to start: cannot tell whether the store keeps "
            f"acknowledged writes ({verdict.summary()})"
        )
    if verdict.loses or verdict.evicts:
        raise ConfigurationError(
            "--profile=production: refusing to start on a store that loses acknowledged "
            f"writes or evicts live records: {verdict.summary()}"
        )


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from authconform.server._config import ENV_VAR, ServerConfig, parse_delay, parse_fault

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.workers < 1:
            raise ConfigurationError("--workers must be at least 1")
        if not 0 <= args.port <= 65535:
            raise ConfigurationError("--port must be 0-65535")
        name, _ = _parse_spec(args.backend, args.namespace)
        from authconform.backends._registry import resolve

        resolve(name)  # unknown names fail here, with the list of available ones
        if args.profile == "production":
            _check_production(args.backend, args.namespace)
        faults = tuple(parse_fault(f) for f in args.fault)
        delays = tuple(parse_delay(d) for d in args.delay)
        role = _role(args)
        sock = _bind(args.host, args.port)
        port = sock.getsockname()[1]
        url_host = f"[{args.host}]" if ":" in args.host else args.host
        listen_url = f"http://{url_host}:{port}"
        if role == "rs":
            issuer = args.authorization_server
            resource = args.resource or listen_url + "/mcp"
        else:
            issuer = args.issuer or listen_url
            resource = args.resource
        config = ServerConfig(
            role=role,
            issuer=issuer,
            resource=resource,
            access_ttl=args.access_ttl,
            refresh_ttl=args.refresh_ttl,
            code_ttl=args.code_ttl,
            consent=args.consent,
            faults=faults,
            delays=delays,
            scopes=tuple(args.scope) if args.scope is not None else ("mcp",),
            subject=args.subject,
            fault_seed=args.fault_seed,
            access_log=not args.no_access_log,
            mcp_impl=args.mcp_impl,
        ).with_wrappers(tuple(args.provider_wrapper))
    except ConfigurationError as exc:
        print(f"authconform serve: {exc}", file=sys.stderr)
        return 2
    os.environ[ENV_VAR] = config.to_json()
    os.environ[BACKEND_ENV] = json.dumps({"spec": args.backend, "namespace": args.namespace})
    fast = importlib.util.find_spec("uvloop") is not None and importlib.util.find_spec("httptools")
    loop = args.loop or ("uvloop" if fast else "auto")
    http = args.http or ("httptools" if fast else "auto")
    if args.workers > 1 and name in ("memory", "fakeredis"):
        print(
            f"authconform serve: warning: --backend {name} keeps state per process; "
            f"the {args.workers} workers do not share it",
            file=sys.stderr,
        )
    if args.workers > 1 and loop != "uvloop":
        print(
            "authconform serve: warning: several workers on the asyncio loop answer in ~44 ms "
            "(uvicorn Nagle issue); install uvloop and httptools",
            file=sys.stderr,
        )
    uv_config = uvicorn.Config(
        "authconform.server._asgi:app_from_env",
        factory=True,
        workers=args.workers,
        loop=loop,
        http=http,
        log_config=_log_config(args.log_level),
        log_level=args.log_level,
        access_log=config.access_log,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    # uvicorn re-raises the SIGTERM it handled once it has shut down; make that (and an
    # early SIGTERM) a clean exit 0 instead of death by signal.
    signal.signal(signal.SIGTERM, _terminate)
    print(f"authconform serve: listening on {listen_url}", flush=True)
    try:
        if args.workers > 1:
            Multiprocess(uv_config, sockets=[sock]).run()
        else:
            server = uvicorn.Server(uv_config)
            server.run(sockets=[sock])
            if not server.started:
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
