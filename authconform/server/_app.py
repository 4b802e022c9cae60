"""``create_app``: the reference OAuth 2.1 authorization server + MCP resource server.

Built on the MCP Python SDK (2.x): its metadata, registration, authorize, token and
revocation handlers, its protected-resource metadata (RFC 9728), its bearer-token
backend, and an MCP endpoint that is stateless with JSON responses (so that any worker
or instance can answer any request): ``LeanMCPEndpoint`` (``authconform.server._mcp``,
the default) or the SDK's streamable HTTP transport (``ServerConfig.mcp_impl="sdk"``),
behind the same ``BearerGuard``. The SDK transport spends about two thirds of the
authenticated ``tools/call`` in its per-request session machinery (task group, memory
streams, dispatcher); the lean endpoint answers in the request's task. The provider is
``StoreProvider`` over a storage-contract backend.

This module assembles the app; each part has its own module in this package:

==================  =====================================================================
``_provider``       the SDK's provider interface on the storage contract
``_oauth``          /authorize, /token, /revoke, /register and metadata: SDK handlers
                    behind our request checks
``_clientauth``     client authentication against stored secret hashes
``_consent``        the consent pages (``consent="form"``)
``_bearer``         the bearer guard in front of the MCP endpoint
``_tools``          the MCP tools and the SDK ``Server`` serving them
``_mcp``            the lean MCP endpoint
``_faults``         store outage -> 503; injected faults and delays
``_responses``      OAuth JSON errors and the headers every part shares
``_config``         ``ServerConfig``; ``_asgi`` the uvicorn factory; ``cli`` ``serve``
==================  =====================================================================

Workarounds for SDK behaviour (each one fixed in our code, not by patching the SDK;
the module that does it in brackets):

1. Client authentication [``_clientauth``]: the SDK's ``ClientAuthenticator`` compares
   the presented secret with ``client.client_secret`` in plain text; we store only its
   SHA-256 hash, so ``StoreClientAuthenticator`` verifies through
   ``backend.verify_client_secret``. It also accepts HTTP Basic with ``client_id``
   absent from the body (RFC 6749 2.3.1; the SDK's request models require ``client_id``
   in the form, so we add it) and either secret method for a confidential client.
2. Revocation by public clients [``_oauth``]: the SDK's ``RevocationRequest`` requires a
   ``client_secret`` field; we add an empty one when it is absent. Its failed client
   authentication answers ``unauthorized_client``; we answer ``invalid_client`` (401)
   as RFC 7009 2.2.1 / RFC 6749 5.2 say. Unknown ``token_type_hint`` values are ignored
   (RFC 7009 2.1) instead of being a 400.
3. ``redirect_uri`` mismatch at /token [``_oauth``]: the SDK answers
   ``invalid_request``; RFC 6749 5.2 says ``invalid_grant``. We compare first, exactly,
   and answer ``invalid_grant``; a ``redirect_uri`` sent at /token when none was sent to
   /authorize is accepted if it is the registered one (RFC 6749 4.1.3 requires it only
   when it was sent before).
4. Exact redirect URI matching [``_oauth``]: the SDK compares parsed ``AnyUrl`` objects
   (normalised); we compare the raw string against the registered strings (RFC 9700
   2.1, OAuth 2.1 2.3.1) before the SDK sees the request. An unknown client, an
   unregistered, missing-when-ambiguous or repeated ``redirect_uri`` is answered with a
   400 error page (JSON), never a redirect (RFC 6749 4.1.2.1, no open redirector).
5. Unsupported grants [``_oauth``]: ``grant_type=password`` (or anything else) fails the
   SDK's request model as ``invalid_request``; we answer ``unsupported_grant_type``
   (RFC 6749 5.2). A grant the client did not register is ``unauthorized_client``
   (the SDK says ``unsupported_grant_type``).
6. Registration [``_provider``, ``_oauth``]: the SDK accepts any redirect URI
   (``http://evil.example``, ``javascript:``) and any grant/response type; the provider
   refuses unsafe redirect URIs (``invalid_redirect_uri``) and narrows the types to what
   we serve. The response carries ``Cache-Control: no-store`` (it holds a client secret).
7. Metadata [``_oauth``]: the SDK does not list ``none`` in
   ``token_endpoint_auth_methods_supported`` although it registers public clients; we
   add it (and to the revocation methods), and advertise
   ``authorization_response_iss_parameter_supported`` since redirects carry ``iss``
   (RFC 9207).
8. Store outage [``_provider``, ``_oauth``, ``_faults``]: the SDK's authorize handler
   turns every exception into a ``server_error`` redirect; the provider records the
   outage and /authorize answers 503. Everywhere else ``StorageUnavailable`` escapes the
   handlers and ``OutageMiddleware`` answers 503 ``temporarily_unavailable`` (never 500,
   never a JSON-RPC -32000).
9. 401 from the MCP endpoint [``_bearer``]: the SDK's ``RequireAuthMiddleware`` says
   ``error="invalid_token"`` even when no token was sent; RFC 6750 3.1 says an error code
   SHOULD NOT be included then. ``BearerGuard`` sends ``Bearer resource_metadata=...``
   for a missing token and ``error="invalid_token"`` for a bad one.
10. PKCE downgrade [``_oauth``]: the SDK requires ``code_challenge`` at /authorize, so
    every code has one; /token also refuses a code stored without a challenge
    (``invalid_grant``).
11. Non-form bodies at /token and /revoke [``_oauth``]: the SDK reads an empty form and
    answers ``invalid_client`` (401); we answer ``invalid_request`` (400). Repeated
    parameters are ``invalid_request`` (RFC 6749 3.1, 3.2).
12. The consent form (``consent="form"``) [``_provider``, ``_oauth``, ``_consent``]: the
    SDK's authorize handler can only redirect, so the provider redirects to an internal
    consent URL and /authorize renders the form page itself, with anti-framing headers
    (RFC 6749 10.13, RFC 9700 4.16).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlparse

import mcp_types as mt
from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.provider import ProviderTokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import ClientRegistrationOptions
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from authconform.contract import StorageBackend
from authconform.server._bearer import BearerGuard, CachedBearerBackend
from authconform.server._config import ServerConfig
from authconform.server._consent import consent_endpoint
from authconform.server._faults import FaultMiddleware, OutageMiddleware
from authconform.server._health import HEALTH_PATH, health_endpoint
from authconform.server._mcp import LeanMCPEndpoint
from authconform.server._oauth import AuthorizationServer
from authconform.server._provider import CONSENT_PATH, StoreProvider
from authconform.server._tools import TOOL_LIST, TOOLS, mcp_server, tool_unknown, wire

__all__ = ["create_app"]


def create_app(backend: StorageBackend, config: ServerConfig) -> ASGIApp:
    """The reference server over ``backend``: OAuth 2.1 AS + MCP RS as one ASGI app.

    Endpoints (below the issuer's path ``P``; the MCP endpoint at the resource URL's path):
    ``GET /.well-known/oauth-authorization-server[P]`` (RFC 8414),
    ``GET /.well-known/oauth-protected-resource[/mcp]`` (RFC 9728),
    ``POST P/register`` (RFC 7591), ``GET|POST P/authorize``, ``POST P/consent``,
    ``POST P/token``, ``POST P/revoke`` (RFC 7009), ``/mcp`` (streamable HTTP, bearer),
    ``GET /health`` (the store's health and durability, see ``_health``).
    The backend is closed when the app shuts down. ``config.role`` ``as`` leaves out the
    MCP endpoint and the protected-resource metadata; ``rs`` leaves out every
    authorization-server endpoint (its resource metadata names ``config.issuer``).
    """
    provider: Any = StoreProvider(backend, config)
    if config.provider_wrapper is not None:
        provider = config.provider_wrapper(provider)
    options = ClientRegistrationOptions(
        enabled=True,
        valid_scopes=list(config.scopes) or None,
        default_scopes=list(config.scopes) or None,
    )
    oauth = AuthorizationServer(provider, config, options)
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

    sdk_prm = ProtectedResourceMetadataHandler(prm)
    consent = consent_endpoint(provider)

    # MCP -------------------------------------------------------------------------------
    # One authentication (BearerGuard over the SDK's bearer backend) in front of either
    # implementation: ours (lean, the default) or the SDK's stateless transport.
    server = mcp_server()
    security = _transport_security(config)
    mcp_state: dict[str, Any] = {}
    session_manager: StreamableHTTPSessionManager | None = None
    if config.mcp_impl == "sdk":
        session_manager = StreamableHTTPSessionManager(
            app=server,
            json_response=True,
            stateless=True,
            security_settings=security,
            max_request_body_size=DEFAULT_MAX_REQUEST_BODY_SIZE,
        )
        mcp_endpoint: ASGIApp = AuthContextMiddleware(StreamableHTTPASGIApp(session_manager))
    else:
        mcp_endpoint = _lean_endpoint(server, security, mcp_state)
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
                    path,
                    cors(oauth.sdk_metadata.handle, ["GET", "OPTIONS"]),
                    methods=["GET", "OPTIONS"],
                )
            )
        routes += [
            Route(base + "/authorize", limited(oauth.authorize), methods=["GET", "POST"]),
            Route(base + CONSENT_PATH, limited(consent), methods=["POST"]),
            Route(
                base + "/token", cors(oauth.token, ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]
            ),
            Route(
                base + "/register",
                cors(oauth.register, ["POST", "OPTIONS"]),
                methods=["POST", "OPTIONS"],
            ),
            Route(
                base + "/revoke",
                cors(oauth.revoke, ["POST", "OPTIONS"]),
                methods=["POST", "OPTIONS"],
            ),
        ]
    routes.append(Route(HEALTH_PATH, health_endpoint(backend), methods=["GET"]))  # type: ignore[arg-type]
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
                async with server.lifespan(server) as state:
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
        return wire("initialize", version, result)

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
        tool_list=lambda version: wire("tools/list", version, TOOL_LIST),
        initialize_result=initialize_result,
        server_info=dict(server.server_info_stamp),
        security=security,
        fallback=RequestBodyLimitMiddleware(sdk_modern, DEFAULT_MAX_REQUEST_BODY_SIZE),
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
