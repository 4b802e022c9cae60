"""``ServerConfig``: every knob of the reference server, and its env/JSON form for workers.

uvicorn worker processes build the app from an import string, so the configuration
travels through one environment variable (``AUTHCONFORM_SERVE_CONFIG``, JSON). Wrappers
travel as ``module:callable`` strings and are imported in each worker.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlparse

from authconform._imports import ImportFailure, import_object
from authconform.errors import ConfigurationError

__all__ = [
    "ENDPOINTS",
    "ENV_VAR",
    "MCP_IMPLS",
    "ROLES",
    "Delay",
    "Fault",
    "McpImpl",
    "Role",
    "ServerConfig",
    "load_callable",
    "parse_delay",
    "parse_fault",
]

ENV_VAR = "AUTHCONFORM_SERVE_CONFIG"

#: Endpoint names accepted by faults and delays, and the path (below the issuer's path)
#: each one covers. ``*`` covers every request.
ENDPOINTS: dict[str, str] = {
    "metadata": "/.well-known/oauth-authorization-server",
    "resource_metadata": "/.well-known/oauth-protected-resource",
    "register": "/register",
    "authorize": "/authorize",
    "consent": "/consent",
    "token": "/token",
    "revoke": "/revoke",
    "mcp": "/mcp",
}

ConsentMode = Literal["auto", "form"]
Role = Literal["both", "as", "rs"]
ROLES: tuple[str, ...] = ("both", "as", "rs")
McpImpl = Literal["lean", "sdk"]
MCP_IMPLS: tuple[str, ...] = ("lean", "sdk")


def _rate(text: str, what: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigurationError(
            f"{what}: rate {text!r} is not a number (use 0.25 or 25%)"
        ) from None
    if not 0.0 <= value <= 1.0 or not math.isfinite(value):
        raise ConfigurationError(f"{what}: rate {text!r} must be between 0 and 1 (or 0% and 100%)")
    return value


def _endpoint(text: str, what: str) -> str:
    text = text.strip()
    if text == "*" or text in ENDPOINTS or text.startswith("/"):
        return text
    names = ", ".join(["*", *ENDPOINTS])
    raise ConfigurationError(f"{what}: unknown endpoint {text!r}; use one of {names} or a /path")


@dataclass(frozen=True)
class Fault:
    """Answer ``rate`` of the requests to ``endpoint`` with ``status`` (an injected error)."""

    endpoint: str
    status: int
    rate: float = 1.0


@dataclass(frozen=True)
class Delay:
    """Delay ``rate`` of the requests to ``endpoint`` by ``seconds`` before handling them."""

    endpoint: str
    seconds: float
    rate: float = 1.0


def parse_fault(text: str) -> Fault:
    """Parse ``ENDPOINT:STATUS[:RATE]`` (e.g. ``token:503:0.2``, ``mcp:500:10%``)."""
    what = f"--fault {text!r}"
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigurationError(f"{what}: expected ENDPOINT:STATUS[:RATE], e.g. token:503:0.2")
    try:
        status = int(parts[1])
    except ValueError:
        raise ConfigurationError(f"{what}: status {parts[1]!r} is not an integer") from None
    if not 400 <= status <= 599:
        raise ConfigurationError(f"{what}: status {status} must be an HTTP error (400-599)")
    rate = _rate(parts[2], what) if len(parts) == 3 else 1.0
    return Fault(_endpoint(parts[0], what), status, rate)


def parse_delay(text: str) -> Delay:
    """Parse ``ENDPOINT:SECONDS[:RATE]`` (e.g. ``token:2.5:0.1``)."""
    what = f"--delay {text!r}"
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigurationError(f"{what}: expected ENDPOINT:SECONDS[:RATE], e.g. token:2:0.5")
    try:
        seconds = float(parts[1])
    except ValueError:
        raise ConfigurationError(f"{what}: seconds {parts[1]!r} is not a number") from None
    if not 0 <= seconds <= 3600 or not math.isfinite(seconds):
        raise ConfigurationError(f"{what}: seconds must be between 0 and 3600")
    rate = _rate(parts[2], what) if len(parts) == 3 else 1.0
    return Delay(_endpoint(parts[0], what), seconds, rate)


def load_callable(path: str, what: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` and return it; ``ConfigurationError`` otherwise."""
    try:
        return import_object(path, what="callable")  # type: ignore[no-any-return]
    except ImportFailure as exc:
        raise ConfigurationError(f"{what} {path!r}: {exc}") from None


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_app`` needs besides the backend.

    - ``issuer``: the authorization server's issuer URL (RFC 8414); endpoints live below
      its path. ``resource``: the MCP endpoint URL tokens are bound to (RFC 8707); default
      ``issuer + "/mcp"``. Instances of one deployment must share both.
    - ``access_ttl`` / ``refresh_ttl`` / ``code_ttl``: lifetimes in seconds.
    - ``consent``: ``auto`` (``/authorize`` redirects at once with the code) or ``form``
      (``/authorize`` renders an HTML consent form that POSTs to ``/consent``).
    - ``faults`` / ``delays``: injected errors and latency per endpoint (see ``ENDPOINTS``).
    - ``provider_wrapper``: ``provider -> provider``, applied to the storage-backed
      provider (used by the mutant servers in ``fixtures/mutants/servers.py``).
      ``app_wrapper``: ``asgi_app -> asgi_app``, applied to the finished app.
      ``wrapper_paths``: the ``module:callable`` strings they came from (so that worker
      processes can import them again); set by the CLI.
    - ``scopes``: scopes offered (``scopes_supported``) and given to clients that
      register without a ``scope``.
    - ``subject``: the resource owner every grant is issued for (there is no login).
    - ``fault_seed``: seed of the fault/delay dice (None: random).
    - ``access_log``: uvicorn access log (query strings are always redacted).
    - ``role``: ``both`` (authorization server + MCP resource server, the default),
      ``as`` (authorization server only: no MCP endpoint and no protected-resource
      metadata, a legitimate deployment), or ``rs`` (MCP endpoint + protected-resource
      metadata only; ``issuer`` is then the issuer of the authorization server that lives
      elsewhere and ``resource`` is required). A split deployment runs one ``as`` and one
      ``rs`` over the same backend and namespace: the resource server validates the
      tokens the authorization server stored.
    - ``mcp_impl``: the MCP endpoint behind the (shared) bearer authentication: ``lean``
      (``authconform.server._mcp``, stateless streamable HTTP answered in the request's
      task; the default) or ``sdk`` (the SDK's stateless ``StreamableHTTPSessionManager``).
    """

    issuer: str = "http://127.0.0.1:8000"
    resource: str | None = None
    access_ttl: float = 3600.0
    refresh_ttl: float = 86400.0
    code_ttl: float = 300.0
    consent: ConsentMode = "auto"
    faults: tuple[Fault, ...] = ()
    delays: tuple[Delay, ...] = ()
    provider_wrapper: Callable[[Any], Any] | None = field(default=None, compare=False)
    app_wrapper: Callable[[Any], Any] | None = field(default=None, compare=False)
    wrapper_paths: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("mcp",)
    subject: str = "authconform-user"
    fault_seed: int | None = None
    access_log: bool = True
    role: Role = "both"
    mcp_impl: McpImpl = "lean"

    def __post_init__(self) -> None:
        """Validate eagerly so that a bad value is a usage error, not a 500 later."""
        parsed = urlparse(self.issuer)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(f"issuer {self.issuer!r} must be an absolute http(s) URL")
        if parsed.query or parsed.fragment:
            raise ConfigurationError(f"issuer {self.issuer!r} must have no query or fragment")
        for name in ("access_ttl", "refresh_ttl", "code_ttl"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.consent not in ("auto", "form"):
            raise ConfigurationError(f"consent {self.consent!r}: use auto or form")
        if self.role not in ROLES:
            raise ConfigurationError(f"role {self.role!r}: use one of {', '.join(ROLES)}")
        if self.mcp_impl not in MCP_IMPLS:
            raise ConfigurationError(
                f"mcp_impl {self.mcp_impl!r}: use one of {', '.join(MCP_IMPLS)}"
            )
        if self.role == "rs" and self.resource is None:
            raise ConfigurationError("role rs needs the resource URL (the MCP endpoint it serves)")
        if self.resource is not None:
            res = urlparse(self.resource)
            if res.scheme not in ("http", "https") or not res.netloc or res.fragment:
                raise ConfigurationError(f"resource {self.resource!r} must be an absolute URL")

    @property
    def serves_as(self) -> bool:
        """True when this process serves the authorization-server endpoints."""
        return self.role != "rs"

    @property
    def serves_mcp(self) -> bool:
        """True when this process serves the MCP endpoint and its resource metadata."""
        return self.role != "as"

    @property
    def issuer_url(self) -> str:
        """The issuer without a trailing slash."""
        return self.issuer.rstrip("/")

    @property
    def resource_url(self) -> str:
        """The MCP endpoint URL that access tokens are bound to."""
        return (self.resource or self.issuer_url + "/mcp").rstrip("/")

    @property
    def base_path(self) -> str:
        """The issuer's path ('' for a bare origin): every endpoint lives below it."""
        return urlparse(self.issuer_url).path.rstrip("/")

    # env / JSON round trip (for uvicorn workers) -------------------------------------
    def to_json(self) -> str:
        """JSON form for ``AUTHCONFORM_SERVE_CONFIG``. Callables travel as their paths."""
        if (self.provider_wrapper or self.app_wrapper) and not self.wrapper_paths:
            raise ConfigurationError(
                "a wrapper given as an object cannot reach worker processes; "
                "give it as module:callable (wrapper_paths)"
            )
        return json.dumps(
            {
                "issuer": self.issuer,
                "resource": self.resource,
                "access_ttl": self.access_ttl,
                "refresh_ttl": self.refresh_ttl,
                "code_ttl": self.code_ttl,
                "consent": self.consent,
                "faults": [[f.endpoint, f.status, f.rate] for f in self.faults],
                "delays": [[d.endpoint, d.seconds, d.rate] for d in self.delays],
                "wrapper_paths": list(self.wrapper_paths),
                "scopes": list(self.scopes),
                "subject": self.subject,
                "fault_seed": self.fault_seed,
                "access_log": self.access_log,
                "role": self.role,
                "mcp_impl": self.mcp_impl,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """Inverse of ``to_json``; imports the wrappers named in ``wrapper_paths``."""
        data: Mapping[str, Any] = json.loads(text)
        config = cls(
            issuer=data["issuer"],
            resource=data.get("resource"),
            access_ttl=float(data["access_ttl"]),
            refresh_ttl=float(data["refresh_ttl"]),
            code_ttl=float(data["code_ttl"]),
            consent=data["consent"],
            faults=tuple(Fault(e, int(s), float(r)) for e, s, r in data.get("faults", [])),
            delays=tuple(Delay(e, float(s), float(r)) for e, s, r in data.get("delays", [])),
            scopes=tuple(data.get("scopes", ("mcp",))),
            subject=data.get("subject", "authconform-user"),
            fault_seed=data.get("fault_seed"),
            access_log=bool(data.get("access_log", True)),
            role=data.get("role", "both"),
            mcp_impl=data.get("mcp_impl", "lean"),
        )
        return config.with_wrappers(tuple(data.get("wrapper_paths", ())))

    @classmethod
    def from_env(cls) -> ServerConfig:
        """Read ``AUTHCONFORM_SERVE_CONFIG``."""
        text = os.environ.get(ENV_VAR)
        if not text:
            raise ConfigurationError(f"{ENV_VAR} is not set (it is set by `authconform serve`)")
        return cls.from_json(text)

    def with_wrappers(self, paths: tuple[str, ...]) -> ServerConfig:
        """Import ``module:callable`` wrappers and compose them (in the order given).

        A callable with ``authconform_wraps = "app"`` wraps the ASGI app; any other wraps
        the provider.
        """
        provider_fns: list[Callable[[Any], Any]] = []
        app_fns: list[Callable[[Any], Any]] = []
        for path in paths:
            fn = load_callable(path, "--provider-wrapper")
            (
                app_fns if getattr(fn, "authconform_wraps", "provider") == "app" else provider_fns
            ).append(fn)
        return replace(
            self,
            provider_wrapper=_compose(provider_fns),
            app_wrapper=_compose(app_fns),
            wrapper_paths=paths,
        )


def _compose(fns: list[Callable[[Any], Any]]) -> Callable[[Any], Any] | None:
    if not fns:
        return None

    def composed(target: Any) -> Any:
        for fn in fns:
            target = fn(target)
        return target

    return composed
