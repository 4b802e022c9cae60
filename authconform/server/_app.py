"""``create_app``: the reference OAuth 2.1 authorization server + MCP resource server.

Built on the MCP Python SDK (2.x): its metadata, registration, authorize, token and
revocation handlers, its protected-resource metadata (RFC 9728), its bearer-token
backend, and an MCP endpoint that is stateless with JSON responses (so that any worker
or instance can answer any request): ``LeanMCPEndpoint`` (``authconform.server._mcp``,
the default) or the SDK's streamable HTTP transport (``ServerConfig.mcp_impl="sdk"``),
behind the same ``BearerGuard``. The SDK transport spends about two thirds of the authenticated
``tools/call`` in its per-request session machinery (task group, memory streams,
dispatcher); the lean endpoint answers in the request's task. The provider is
``StoreProvider`` over a storage-contract backend.

Workarounds for SDK behaviour (each one fixed here, in our code, not by patching the SDK):

1. Client authentication: the SDK's ``ClientAuthenticator`` compares the presented
   secret with ``client.client_secret`` in plain text; we store only its SHA-256 hash,
   so ``StoreClientAuthenticator`` verifies through ``backend.verify_client_secret``. It
   also accepts HTTP Basic with ``client_id`` absent from the body (RFC 6749 2.3.1; the
   SDK's request models require ``client_id`` in the form, so we add it) and either
   secret method for a confidential client.
2. Revocation by public clients: the SDK's ``RevocationRequest`` requires a
   ``client_secret`` field; we add an empty one when it is absent. Its failed client
   authentication answers ``unauthorized_client``; we answer ``invalid_client`` (401)
   as RFC 7009 2.2.1 / RFC 6749 5.2 say. Unknown ``token_type_hint`` values are ignored
   (RFC 7009 2.1) instead of being a 400.
3. ``redirect_uri`` mismatch at /token: the SDK answers ``invalid_request``; RFC 6749
   5.2 says ``invalid_grant``. We compare first, exactly, and answer ``invalid_grant``;
   a ``redirect_uri`` sent at /token when none was sent to /authorize is accepted if it
   is the registered one (RFC 6749 4.1.3 requires it only when it was sent before).
4. Exact redirect URI matching: the SDK compares parsed ``AnyUrl`` objects (normalised);
   we compare the raw string against the registered strings (RFC 9700 2.1,
   OAuth 2.1 2.3.1) before the SDK sees the request. An unknown client, an unregistered,
   missing-when-ambiguous or repeated ``redirect_uri`` is answered with a 400 error page
   (JSON), never a redirect (RFC 6749 4.1.2.1, no open redirector).
5. Unsupported grants: ``grant_type=password`` (or anything else) fails the SDK's
   request model as ``invalid_request``; we answer ``unsupported_grant_type``
   (RFC 6749 5.2). A grant the client did not register is ``unauthorized_client``
   (the SDK says ``unsupported_grant_type``).
6. Registration: the SDK accepts any redirect URI (``http://evil.example``,
   ``javascript:``) and any grant/response type; the provider refuses unsafe redirect
   URIs (``invalid_redirect_uri``) and narrows the types to what we serve. The response
   carries ``Cache-Control: no-store`` (it holds a client secret).
7. Metadata: the SDK does not list ``none`` in ``token_endpoint_auth_methods_supported``
   although it registers public clients; we add it (and to the revocation methods), and
   advertise ``authorization_response_iss_parameter_supported`` since redirects carry
   ``iss`` (RFC 9207).
8. Store outage: the SDK's authorize handler turns every exception into a
   ``server_error`` redirect; the provider records the outage and /authorize answers 503.
   Everywhere else ``StorageUnavailable`` escapes the handlers and ``OutageMiddleware``
   answers 503 ``temporarily_unavailable`` (never 500, never a JSON-RPC -32000).
9. 401 from the MCP endpoint: the SDK's ``RequireAuthMiddleware`` says
   ``error="invalid_token"`` even when no token was sent; RFC 6750 3.1 says an error code
   SHOULD NOT be included then. ``BearerGuard`` sends ``Bearer resource_metadata=...``
   for a missing token and ``error="invalid_token"`` for a bad one.
10. PKCE downgrade: the SDK requires ``code_challenge`` at /authorize, so every code has
    one; /token also refuses a code stored without a challenge (``invalid_grant``).
11. Non-form bodies at /token and /revoke: the SDK reads an empty form and answers
    ``invalid_client`` (401); we answer ``invalid_request`` (400). Repeated parameters are
    ``invalid_request`` (RFC 6749 3.1, 3.2).
12. The consent form (``consent="form"``): the SDK's authorize handler can only redirect,
    so the provider redirects to an internal consent URL and /authorize renders the form
    page itself, with anti-framing headers (RFC 6749 10.13, RFC 9700 4.16).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlparse

import mcp_types as mt
from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.revoke import RevocationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import ProviderTokenVerifier
from mcp.server.auth.routes import build_metadata, build_resource_metadata_url
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp_types import methods as mt_methods
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authconform.contract import StorageBackend
from authconform.errors import StorageUnavailable
from authconform.server._config import ENDPOINTS, Delay, Fault, ServerConfig
from authconform.server._mcp import LeanMCPEndpoint
from authconform.server._provider import (
    CONSENT_PATH,
    OUTAGE,
    StoredClient,
    StoreProvider,
)

__all__ = ["BearerGuard", "OutageMiddleware", "StoreClientAuthenticator", "create_app"]

logger = logging.getLogger("authconform.server")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FRAME_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
GRANT_TYPES = ("authorization_code", "refresh_token")
CLIENT_KEY = "authconform.client"


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def oauth_error(
    error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 5.2 style JSON error, never cached."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


def _is_form(request: Request) -> bool:
    ctype = request.headers.get("content-type", "")
    return ctype.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _repeated(items: list[tuple[str, Any]]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for key, _ in items:
        if key in seen and key not in dup:
            dup.append(key)
        seen.add(key)
    return dup


def _with_form(request: Request, items: list[tuple[str, str]]) -> Request:
    """A copy of ``request`` whose body is ``items`` form-encoded (the SDK re-reads it)."""
    body = urlencode(items).encode()
    headers = [
        (k, v) for k, v in request.scope["headers"] if k not in (b"content-length", b"content-type")
    ]
    headers += [
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {**request.scope, "headers": headers}
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Authorization: Basic``; raises on a malformed header."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationError("malformed Basic authorization header") from None
    if ":" not in decoded:
        raise AuthenticationError("malformed Basic authorization header")
    client_id, secret = decoded.split(":", 1)
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64
    return unquote_plus(client_id), unquote_plus(secret)


# --------------------------------------------------------------------------------------
# client authentication (workaround 1)
# --------------------------------------------------------------------------------------
class StoreClientAuthenticator(ClientAuthenticator):
    """Authenticate token/revocation requests against the stored secret hashes."""

    provider: Any

    async def authenticate_request(self, request: Request) -> StoredClient:
        """The authenticated client, or ``AuthenticationError`` (-> ``invalid_client``)."""
        cached = request.scope.get(CLIENT_KEY)
        if isinstance(cached, StoredClient):
            return cached
        form = await request.form()
        basic = _basic_credentials(request)
        form_id = form.get("client_id")
        form_id = form_id if isinstance(form_id, str) and form_id else None
        if basic is not None and form_id is not None and basic[0] != form_id:
            raise AuthenticationError("client_id in the body differs from the Basic credentials")
        client_id = form_id or (basic[0] if basic else None)
        if not client_id:
            raise AuthenticationError("missing client_id")
        client = await self.provider.get_client(client_id)
        if client is None:
            raise AuthenticationError("unknown client")
        if client.has_secret:
            if basic is not None:
                secret: str | None = basic[1]
            else:
                raw = form.get("client_secret")
                secret = raw if isinstance(raw, str) else None
            if not secret:
                raise AuthenticationError("client authentication is required")
            if not await self.provider.verify_client_secret(client_id, secret):
                raise AuthenticationError("client authentication failed")
            expires = client.client_secret_expires_at
            if expires and expires < time.time():
                raise AuthenticationError("client secret has expired")
        request.scope[CLIENT_KEY] = client
        return client  # type: ignore[no-any-return]


def _auth_failed(request: Request, exc: AuthenticationError) -> JSONResponse:
    headers = {}
    if request.headers.get("authorization", "").lower().startswith("basic "):
        headers["WWW-Authenticate"] = 'Basic realm="authconform"'  # RFC 6749 5.2
    return oauth_error("invalid_client", exc.message, 401, headers)


# --------------------------------------------------------------------------------------
# MCP endpoint guard (workaround 9)
# --------------------------------------------------------------------------------------
class CachedBearerBackend(BearerAuthBackend):
    """The SDK's bearer backend with its audience comparison memoised per resource string.

    The comparison parses both URLs on every request; on the hot path that is pure cost.
    """

    def __init__(self, token_verifier: Any, *, resource_server_url: AnyHttpUrl) -> None:
        """As ``BearerAuthBackend``."""
        super().__init__(token_verifier, resource_server_url=resource_server_url)
        self._verdicts: dict[str | None, bool] = {}

    def _issued_for_this_resource(self, resource: str | None) -> bool:
        verdict = self._verdicts.get(resource)
        if verdict is None:
            verdict = super()._issued_for_this_resource(resource)
            if len(self._verdicts) < 1024:
                self._verdicts[resource] = verdict
        return verdict


class BearerGuard:
    """Authenticate ``Authorization: Bearer`` with the SDK's ``BearerAuthBackend``.

    A missing token gets ``401 Bearer resource_metadata=...`` (RFC 6750 3.1, RFC 9728 5.1);
    a bad, expired, revoked or wrong-audience one ``error="invalid_token"`` as well.
    """

    def __init__(
        self, app: ASGIApp, backend: BearerAuthBackend, resource_metadata_url: str
    ) -> None:
        """Guard ``app``."""
        self.app = app
        self.backend = backend
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then call the app with ``scope["user"]``/``scope["auth"]`` set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        header = conn.headers.get("authorization")
        if header is None or not header.strip():
            await self._deny(send, None)
            return
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            await self._deny(send, "invalid_request", "use Authorization: Bearer <token>", 400)
            return
        result = await self.backend.authenticate(conn)
        if result is None:
            await self._deny(
                send,
                "invalid_token",
                "the access token is invalid, expired, revoked or issued for another resource",
            )
            return
        scope["auth"], scope["user"] = result
        await self.app(scope, receive, send)

    async def _deny(
        self, send: Send, error: str | None, description: str = "", status: int = 401
    ) -> None:
        if error is None:
            challenge = f'Bearer resource_metadata="{self.resource_metadata_url}"'
            body: dict[str, str] = {
                "error": "invalid_token",
                "error_description": "authorization required",
            }
        else:
            challenge = (
                f'Bearer error="{error}", error_description="{description}", '
                f'resource_metadata="{self.resource_metadata_url}"'
            )
            body = {"error": error, "error_description": description}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"www-authenticate", challenge.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


# --------------------------------------------------------------------------------------
# outage, faults, delays
# --------------------------------------------------------------------------------------
def _outage_in(exc: BaseException) -> bool:
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_outage_in(e) for e in exc.exceptions)
    return exc.__cause__ is not None and isinstance(exc.__cause__, StorageUnavailable)


class OutageMiddleware:
    """``StorageUnavailable`` anywhere below -> 503 ``temporarily_unavailable`` (workaround 8)."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through; turn a store outage into 503 if no response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not _outage_in(exc) or started:
                raise
            logger.warning(
                "store unavailable while serving %s %s", scope.get("method"), scope.get("path")
            )
            response = oauth_error(
                "temporarily_unavailable",
                "the token store is unavailable; retry later",
                503,
                {"Retry-After": "1"},
            )
            await response(scope, receive, send)


def _endpoint_of(path: str, base: str, resource_path: str) -> str | None:
    if resource_path and (path == resource_path or path.startswith(resource_path + "/")):
        return "mcp"
    for name, suffix in ENDPOINTS.items():
        if name == "mcp":
            continue
        if name.endswith("metadata"):
            if path.startswith(suffix):
                return name
        elif path == base + suffix:
            return name
    return None


def _matches(rule_endpoint: str, name: str | None, path: str) -> bool:
    if rule_endpoint == "*":
        return True
    if rule_endpoint.startswith("/"):
        return path == rule_endpoint
    return rule_endpoint == name


class FaultMiddleware:
    """Injected delays and error statuses per endpoint, for client testing."""

    def __init__(
        self,
        app: ASGIApp,
        faults: tuple[Fault, ...],
        delays: tuple[Delay, ...],
        base: str,
        resource_path: str,
        resource_metadata_url: str,
        seed: int | None,
    ) -> None:
        """Wrap ``app``."""
        self.app = app
        self.faults = faults
        self.delays = delays
        self.base = base
        self.resource_path = resource_path
        self.resource_metadata_url = resource_metadata_url
        self.random = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Maybe sleep, maybe answer with the injected status, else pass through."""
        if scope["type"] != "http" or not (self.faults or self.delays):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        name = _endpoint_of(path, self.base, self.resource_path)
        for delay in self.delays:
            if _matches(delay.endpoint, name, path) and self.random.random() < delay.rate:
                await asyncio.sleep(delay.seconds)
        for fault in self.faults:
            if _matches(fault.endpoint, name, path) and self.random.random() < fault.rate:
                await self._fail(fault.status, name, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _fail(
        self, status: int, name: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        error = {
            503: "temporarily_unavailable",
            401: "invalid_token" if name == "mcp" else "invalid_client",
        }
        code = error.get(status, "server_error" if status >= 500 else "invalid_request")
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        if status == 401 and name == "mcp":
            headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", resource_metadata="{self.resource_metadata_url}"'
            )
        response = oauth_error(
            code, f"injected fault: HTTP {status} (authconform serve --fault)", status, headers
        )
        await response(scope, receive, send)


# --------------------------------------------------------------------------------------
# the MCP server (tools)
# --------------------------------------------------------------------------------------
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "returned unchanged"}},
    "required": ["text"],
}
WHOAMI_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _tool_schema(name: str) -> Mapping[str, Any] | None:
    return {"echo": ECHO_SCHEMA, "whoami": WHOAMI_SCHEMA}.get(name)


# The tools, once, as wire dicts (``CallToolResult``): the lean endpoint sends them as
# they are, the SDK's server validates them into its models.
def _text_result(text: str, *, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def tool_echo(arguments: Mapping[str, Any], token: Any) -> dict[str, Any]:
    """``echo``: ``text`` unchanged."""
    text = arguments.get("text")
    if not isinstance(text, str):
        return _text_result("echo: `text` must be a string", is_error=True)
    return _text_result(text)


def tool_whoami(arguments: Mapping[str, Any], token: Any) -> dict[str, Any]:
    """``whoami``: who the access token speaks for (never the token itself)."""
    info = {
        "client_id": token.client_id if token else None,
        "subject": getattr(token, "subject", None) if token else None,
        "scopes": list(token.scopes) if token else [],
        "resource": token.resource if token else None,
    }
    return {**_text_result(json.dumps(info)), "structuredContent": info}


def tool_unknown(name: str) -> dict[str, Any]:
    """The result for a tool we do not have (the SDK's lowlevel server leaves it to us)."""
    return _text_result(f"unknown tool {name!r}", is_error=True)


TOOLS = {"echo": tool_echo, "whoami": tool_whoami}
TOOL_LIST = mt.ListToolsResult(
    tools=[
        mt.Tool(name="echo", description="Return `text` unchanged.", input_schema=ECHO_SCHEMA),
        mt.Tool(
            name="whoami",
            description="The client, subject, scopes and resource of the access token.",
            input_schema=WHOAMI_SCHEMA,
        ),
    ]
)


async def _list_tools(ctx: Any, params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
    return TOOL_LIST


async def _call_tool(ctx: Any, params: mt.CallToolRequestParams) -> mt.CallToolResult:
    tool = TOOLS.get(params.name)
    args = params.arguments or {}
    result = tool(args, get_access_token()) if tool else tool_unknown(params.name)
    return mt.CallToolResult.model_validate(result)


def _wire(method: str, version: str, model: Any) -> dict[str, Any]:
    """A result model as the SDK sends it at ``version`` (its own per-version sieve)."""
    return mt_methods.serialize_server_result(
        method, version, model.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


def _lean_endpoint(
    server: Server[Any], security: TransportSecuritySettings, state: dict[str, Any]
) -> LeanMCPEndpoint:
    """The lean MCP endpoint; ``state["lifespan"]`` is the SDK server's lifespan state."""
    options = server.create_initialization_options()

    def initialize_result(version: str) -> dict[str, Any]:
        result = mt.InitializeResult(
            protocol_version=version,
            capabilities=options.capabilities,
            server_info=mt.Implementation(name=options.server_name, version=options.server_version),
            instructions=options.instructions,
        )
        return _wire("initialize", version, result)

    async def sdk_modern(scope: Scope, receive: Receive, send: Send) -> None:
        await handle_modern_request(
            server,
            security,
            True,  # noqa: FBT003 (json_response)
            state.get("lifespan"),
            scope,
            receive,
            send,
        )

    return LeanMCPEndpoint(
        tools=TOOLS,
        unknown_tool=tool_unknown,
        tool_list=lambda version: _wire("tools/list", version, TOOL_LIST),
        initialize_result=initialize_result,
        server_info=dict(server.server_info_stamp),
        security=security,
        fallback=RequestBodyLimitMiddleware(sdk_modern, DEFAULT_MAX_REQUEST_BODY_SIZE),
    )


def _mcp_server() -> Server[Any]:
    from authconform import __version__ as version

    return Server(
        "authconform-reference",
        version=str(version),
        get_tool_input_schema=_tool_schema,
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
    )


def _transport_security(config: ServerConfig) -> TransportSecuritySettings:
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    for url in (config.issuer_url, config.resource_url):
        parsed = urlparse(url)
        if parsed.netloc and parsed.netloc not in hosts:
            hosts.append(parsed.netloc)
            origins.append(f"{parsed.scheme}://{parsed.netloc}")
    loopback = all(
        (urlparse(u).hostname or "") in ("127.0.0.1", "localhost", "::1")
        for u in (config.issuer_url, config.resource_url)
    )
    # DNS-rebinding protection makes sense for loopback deployments only; behind a proxy
    # the Host header is the proxy's business.
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=loopback, allowed_hosts=hosts, allowed_origins=origins
    )


# --------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------
def _metadata(config: ServerConfig, options: ClientRegistrationOptions) -> OAuthMetadata:
    built = build_metadata(
        AnyHttpUrl(config.issuer_url), None, options, RevocationOptions(enabled=True)
    )
    data = built.model_dump(mode="json", exclude_none=True)
    base = config.issuer_url
    data.update(
        issuer=base,
        authorization_endpoint=base + "/authorize",
        token_endpoint=base + "/token",
        registration_endpoint=base + "/register",
        revocation_endpoint=base + "/revoke",
        token_endpoint_auth_methods_supported=["none", "client_secret_post", "client_secret_basic"],
        revocation_endpoint_auth_methods_supported=[
            "none",
            "client_secret_post",
            "client_secret_basic",
        ],
        authorization_response_iss_parameter_supported=True,
        response_types_supported=["code"],
        grant_types_supported=list(GRANT_TYPES),
        code_challenge_methods_supported=["S256"],
    )
    return OAuthMetadata.model_validate(data)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers={**NO_STORE, **FRAME_HEADERS})


def _consent_page(
    config: ServerConfig, client: StoredClient, request_id: str, scopes: str
) -> HTMLResponse:
    name = html.escape(client.client_name or client.client_id)
    action = html.escape(config.base_path + CONSENT_PATH)
    rid = html.escape(request_id)
    body = (
        f"<h1>Authorize {name}</h1>"
        f"<p>{name} asks for access with scopes: <code>{html.escape(scopes) or '(none)'}</code></p>"
        f'<form id="consent" method="post" action="{action}">'
        f'<input type="hidden" name="request" value="{rid}">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        "</form>"
        f'<form id="deny" method="post" action="{action}">'
        f'<input type="hidden" name="request" value="{rid}">'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form>"
    )
    return _page("Authorize", body)


def create_app(backend: StorageBackend, config: ServerConfig) -> ASGIApp:
    """The reference server over ``backend``: OAuth 2.1 AS + MCP RS as one ASGI app.

    Endpoints (below the issuer's path ``P``; the MCP endpoint at the resource URL's path):
    ``GET /.well-known/oauth-authorization-server[P]`` (RFC 8414),
    ``GET /.well-known/oauth-protected-resource[/mcp]`` (RFC 9728),
    ``POST P/register`` (RFC 7591), ``GET|POST P/authorize``, ``POST P/consent``,
    ``POST P/token``, ``POST P/revoke`` (RFC 7009), ``/mcp`` (streamable HTTP, bearer).
    The backend is closed when the app shuts down. ``config.role`` ``as`` leaves out the
    MCP endpoint and the protected-resource metadata; ``rs`` leaves out every
    authorization-server endpoint (its resource metadata names ``config.issuer``).
    """
    provider: Any = StoreProvider(backend, config)
    if config.provider_wrapper is not None:
        provider = config.provider_wrapper(provider)
    authenticator = StoreClientAuthenticator(provider)
    options = ClientRegistrationOptions(
        enabled=True,
        valid_scopes=list(config.scopes) or None,
        default_scopes=list(config.scopes) or None,
    )
    metadata = _metadata(config, options)
    resource_url = config.resource_url
    resource_path = urlparse(resource_url).path.rstrip("/")
    resource_metadata_url = str(build_resource_metadata_url(AnyHttpUrl(resource_url)))
    prm = ProtectedResourceMetadata.model_validate(
        {
            "resource": resource_url,
            "authorization_servers": [config.issuer_url],
            "scopes_supported": list(config.scopes) or None,
            "bearer_methods_supported": ["header"],
            "resource_name": "authconform reference MCP server",
        }
    )
    base = config.base_path

    sdk_authorize = AuthorizationHandler(provider)
    sdk_token = TokenHandler(provider, authenticator)
    sdk_register = RegistrationHandler(provider, options=options)
    sdk_revoke = RevocationHandler(provider, authenticator)
    sdk_metadata = MetadataHandler(metadata)
    sdk_prm = ProtectedResourceMetadataHandler(prm)

    # /authorize ------------------------------------------------------------------------
    async def authorize(request: Request) -> Response:
        params = request.query_params if request.method == "GET" else await request.form()
        items = list(params.multi_items())
        client_id = params.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            return oauth_error("invalid_request", "client_id is missing")
        if "client_id" in _repeated(items) or "redirect_uri" in _repeated(items):
            return oauth_error("invalid_request", "client_id or redirect_uri is repeated")
        client = await provider.get_client(client_id)
        if client is None:
            return oauth_error("invalid_request", "unknown client_id")
        raw = params.get("redirect_uri")
        if isinstance(raw, str):
            if provider.match_redirect_uri(client, raw) is None:
                return oauth_error(
                    "invalid_request",
                    "redirect_uri is not registered for this client (exact match)",
                )
        elif len(client.redirect_uris or []) != 1:
            return oauth_error("invalid_request", "redirect_uri is required for this client")
        dup = _repeated(items)
        if dup:
            return oauth_error("invalid_request", f"repeated parameters: {', '.join(dup)}")
        found: list[StorageUnavailable] = []
        token = OUTAGE.set(found)
        try:
            response = await sdk_authorize.handle(request)
        finally:
            OUTAGE.reset(token)
        if found:
            raise found[0]
        location = response.headers.get("location", "")
        consent_prefix = config.issuer_url + CONSENT_PATH + "?"
        if location.startswith(consent_prefix):
            request_id = parse_qs(location[len(consent_prefix) :]).get("request", [""])[0]
            scope = params.get("scope")
            scopes = scope if isinstance(scope, str) else " ".join(provider._default_scopes(client))
            return _consent_page(config, client, request_id, scopes)
        for key, value in FRAME_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # /consent --------------------------------------------------------------------------
    async def consent(request: Request) -> Response:
        form = await request.form()
        request_id = form.get("request")
        if not isinstance(request_id, str) or not request_id:
            return oauth_error("invalid_request", "missing consent request id")
        if form.get("decision") == "deny":
            location = await provider.deny(request_id)
        else:
            location = await provider.approve(request_id)
        if location is None:
            return oauth_error(
                "invalid_request", "the consent request is unknown, expired or already answered"
            )
        return RedirectResponse(location, status_code=303, headers=NO_STORE)

    # /token ----------------------------------------------------------------------------
    async def token(request: Request) -> Response:
        if not _is_form(request):
            return oauth_error(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        dup = _repeated(items)
        if dup:
            return oauth_error("invalid_request", f"repeated parameters: {', '.join(dup)}")
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str) or not grant_type:
            return oauth_error("invalid_request", "grant_type is missing")
        if grant_type not in GRANT_TYPES:
            return oauth_error(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        try:
            basic = _basic_credentials(request)
        except AuthenticationError as exc:
            return _auth_failed(request, exc)
        changed = False
        if basic is not None and "client_id" not in form:
            items.append(("client_id", basic[0]))
            changed = True
        target = _with_form(request, items) if changed else request
        try:
            client = await authenticator.authenticate_request(target)
        except AuthenticationError as exc:
            return _auth_failed(request, exc)
        if grant_type not in client.grant_types:
            return oauth_error(
                "unauthorized_client", f"the client is not registered for {grant_type}"
            )
        if grant_type == "authorization_code":
            code = form.get("code")
            if isinstance(code, str) and code:
                stored = await provider.load_authorization_code(client, code)
                if stored is not None and stored.client_id == client.client_id:
                    sent = form.get("redirect_uri")
                    expected = str(stored.redirect_uri)
                    if stored.redirect_uri_provided_explicitly or sent is not None:
                        if sent != expected:
                            return oauth_error(
                                "invalid_grant",
                                "redirect_uri does not match the authorization request",
                            )
                    if sent is not None and not stored.redirect_uri_provided_explicitly:
                        items = [(k, v) for k, v in items if k != "redirect_uri"]
                        target = _with_form(request, items)
                    if not stored.code_challenge:
                        return oauth_error("invalid_grant", "the code was issued without PKCE")
                    resource = form.get("resource")
                    if isinstance(resource, str) and resource and resource != stored.resource:
                        return oauth_error(
                            "invalid_target", "resource differs from the authorization request"
                        )
        response: Response = await sdk_token.handle(target)
        return response

    # /revoke ---------------------------------------------------------------------------
    async def revoke(request: Request) -> Response:
        if not _is_form(request):
            return oauth_error(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        try:
            basic = _basic_credentials(request)
        except AuthenticationError as exc:
            return _auth_failed(request, exc)
        if basic is not None and "client_id" not in form:
            items.append(("client_id", basic[0]))
        if not any(k == "token" and v for k, v in items):
            try:
                await authenticator.authenticate_request(_with_form(request, items))
            except AuthenticationError as exc:
                return _auth_failed(request, exc)
            return oauth_error("invalid_request", "token is missing")
        if "client_secret" not in form:
            items.append(("client_secret", ""))
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token", "refresh_token"):
            items = [(k, v) for k, v in items if k != "token_type_hint"]
        target = _with_form(request, items)
        try:
            await authenticator.authenticate_request(target)
        except AuthenticationError as exc:
            return _auth_failed(request, exc)
        return await sdk_revoke.handle(target)

    # /register -------------------------------------------------------------------------
    async def register(request: Request) -> Response:
        response = await sdk_register.handle(request)
        response.headers.update(NO_STORE)
        return response

    # MCP -------------------------------------------------------------------------------
    # One authentication (BearerGuard over the SDK's bearer backend) in front of either
    # implementation: ours (lean, the default) or the SDK's stateless transport.
    mcp_server = _mcp_server()
    security = _transport_security(config)
    mcp_state: dict[str, Any] = {}
    session_manager: StreamableHTTPSessionManager | None = None
    if config.mcp_impl == "sdk":
        session_manager = StreamableHTTPSessionManager(
            app=mcp_server,
            json_response=True,
            stateless=True,
            security_settings=security,
            max_request_body_size=DEFAULT_MAX_REQUEST_BODY_SIZE,
        )
        mcp_endpoint: ASGIApp = AuthContextMiddleware(StreamableHTTPASGIApp(session_manager))
    else:
        mcp_endpoint = _lean_endpoint(mcp_server, security, mcp_state)
    mcp_app = BearerGuard(
        mcp_endpoint,
        CachedBearerBackend(
            ProviderTokenVerifier(provider), resource_server_url=AnyHttpUrl(resource_url)
        ),
        resource_metadata_url,
    )

    def cors(endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> ASGIApp:
        from starlette.routing import request_response

        return CORSMiddleware(
            RequestBodyLimitMiddleware(request_response(endpoint), DEFAULT_MAX_REQUEST_BODY_SIZE),
            allow_origins="*",
            allow_methods=methods,
            allow_headers=["mcp-protocol-version", "authorization", "content-type"],
        )

    def limited(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
        from starlette.routing import request_response

        return RequestBodyLimitMiddleware(request_response(endpoint), DEFAULT_MAX_REQUEST_BODY_SIZE)

    as_path = urlparse(config.issuer_url).path.rstrip("/")
    metadata_paths = {"/.well-known/oauth-authorization-server" + as_path}
    if as_path:
        metadata_paths.add(as_path + "/.well-known/oauth-authorization-server")
    prm_paths = {
        urlparse(resource_metadata_url).path,
        "/.well-known/oauth-protected-resource",
    }
    routes: list[Route] = []
    if config.serves_mcp:
        # first: the hot path should not walk the other routes' patterns
        routes.append(Route(resource_path or "/", mcp_app))
    if config.serves_as:
        for path in sorted(metadata_paths):
            routes.append(
                Route(
                    path, cors(sdk_metadata.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"]
                )
            )
        routes += [
            Route(base + "/authorize", limited(authorize), methods=["GET", "POST"]),
            Route(base + CONSENT_PATH, limited(consent), methods=["POST"]),
            Route(base + "/token", cors(token, ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
            Route(
                base + "/register", cors(register, ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]
            ),
            Route(base + "/revoke", cors(revoke, ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
        ]
    if config.serves_mcp:
        for path in sorted(prm_paths):
            routes.append(
                Route(path, cors(sdk_prm.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"])
            )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if config.serves_mcp and session_manager is not None:
                async with session_manager.run():
                    yield
            elif config.serves_mcp:
                async with mcp_server.lifespan(mcp_server) as state:
                    mcp_state["lifespan"] = state
                    yield
            else:
                yield
        finally:
            await backend.close()

    app: ASGIApp = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                FaultMiddleware,
                faults=config.faults,
                delays=config.delays,
                base=base,
                resource_path=resource_path,
                resource_metadata_url=resource_metadata_url,
                seed=config.fault_seed,
            ),
            Middleware(OutageMiddleware),
        ],
        lifespan=lifespan,
    )
    if config.app_wrapper is not None:
        app = config.app_wrapper(app)
    return app
