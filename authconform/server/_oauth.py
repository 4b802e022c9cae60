"""The authorization server's endpoints: the SDK's handlers behind our own request checks.

``AuthorizationServer`` holds the SDK's authorize, token, registration, revocation and
metadata handlers over the provider, and puts in front of each the checks the SDK does
not make or makes differently (SDK workarounds 2-7, 10 and 11, listed in ``_app``):
exact redirect URI matching and error pages instead of redirects at /authorize, the
``invalid_grant``/``unsupported_grant_type``/``unauthorized_client`` answers at /token,
public clients and ignored hints at /revoke, form bodies and repeated parameters,
no-store registration answers. Client authentication is ``_clientauth``'s; the consent
page ``_consent``'s.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.revoke import RevocationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.routes import build_metadata
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from authconform.errors import StorageUnavailable
from authconform.server._clientauth import (
    AuthenticationError,
    StoreClientAuthenticator,
    auth_failed,
    basic_credentials,
)
from authconform.server._config import ServerConfig
from authconform.server._consent import consent_page
from authconform.server._provider import CONSENT_PATH, OUTAGE
from authconform.server._responses import FRAME_HEADERS, NO_STORE, oauth_error

__all__ = ["GRANT_TYPES", "AuthorizationServer", "authorization_server_metadata"]

GRANT_TYPES = ("authorization_code", "refresh_token")


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


def authorization_server_metadata(
    config: ServerConfig, options: ClientRegistrationOptions
) -> OAuthMetadata:
    """RFC 8414 metadata: the SDK's, with our endpoints, methods and types (workaround 7)."""
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


class AuthorizationServer:
    """The /authorize, /token, /revoke, /register and metadata endpoints over ``provider``."""

    def __init__(
        self, provider: Any, config: ServerConfig, options: ClientRegistrationOptions
    ) -> None:
        """The SDK's handlers over ``provider``, with our client authenticator."""
        self.provider = provider
        self.config = config
        self.authenticator = StoreClientAuthenticator(provider)
        self.metadata = authorization_server_metadata(config, options)
        self.sdk_authorize = AuthorizationHandler(provider)
        self.sdk_token = TokenHandler(provider, self.authenticator)
        self.sdk_register = RegistrationHandler(provider, options=options)
        self.sdk_revoke = RevocationHandler(provider, self.authenticator)
        self.sdk_metadata = MetadataHandler(self.metadata)

    async def authorize(self, request: Request) -> Response:
        """``GET|POST /authorize``: our exact checks first, then the SDK's handler."""
        params = request.query_params if request.method == "GET" else await request.form()
        items = list(params.multi_items())
        client_id = params.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            return oauth_error("invalid_request", "client_id is missing")
        if "client_id" in _repeated(items) or "redirect_uri" in _repeated(items):
            return oauth_error("invalid_request", "client_id or redirect_uri is repeated")
        client = await self.provider.get_client(client_id)
        if client is None:
            return oauth_error("invalid_request", "unknown client_id")
        raw = params.get("redirect_uri")
        if isinstance(raw, str):
            if self.provider.match_redirect_uri(client, raw) is None:
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
            response = await self.sdk_authorize.handle(request)
        finally:
            OUTAGE.reset(token)
        if found:
            raise found[0]
        location = response.headers.get("location", "")
        consent_prefix = self.config.issuer_url + CONSENT_PATH + "?"
        if location.startswith(consent_prefix):
            request_id = parse_qs(location[len(consent_prefix) :]).get("request", [""])[0]
            scope = params.get("scope")
            if isinstance(scope, str):
                scopes = scope
            else:
                scopes = " ".join(self.provider._default_scopes(client))
            return consent_page(self.config, client, request_id, scopes)
        for key, value in FRAME_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def token(self, request: Request) -> Response:
        """``POST /token``: form, grant and client checks, then the SDK's handler."""
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
            basic = basic_credentials(request)
        except AuthenticationError as exc:
            return auth_failed(request, exc)
        changed = False
        if basic is not None and "client_id" not in form:
            items.append(("client_id", basic[0]))
            changed = True
        target = _with_form(request, items) if changed else request
        try:
            client = await self.authenticator.authenticate_request(target)
        except AuthenticationError as exc:
            return auth_failed(request, exc)
        if grant_type not in client.grant_types:
            return oauth_error(
                "unauthorized_client", f"the client is not registered for {grant_type}"
            )
        if grant_type == "authorization_code":
            code = form.get("code")
            if isinstance(code, str) and code:
                stored = await self.provider.load_authorization_code(client, code)
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
        response: Response = await self.sdk_token.handle(target)
        return response

    async def revoke(self, request: Request) -> Response:
        """``POST /revoke`` (RFC 7009): public clients and Basic, then the SDK's handler."""
        if not _is_form(request):
            return oauth_error(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        try:
            basic = basic_credentials(request)
        except AuthenticationError as exc:
            return auth_failed(request, exc)
        if basic is not None and "client_id" not in form:
            items.append(("client_id", basic[0]))
        if not any(k == "token" and v for k, v in items):
            try:
                await self.authenticator.authenticate_request(_with_form(request, items))
            except AuthenticationError as exc:
                return auth_failed(request, exc)
            return oauth_error("invalid_request", "token is missing")
        if "client_secret" not in form:
            items.append(("client_secret", ""))
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token", "refresh_token"):
            items = [(k, v) for k, v in items if k != "token_type_hint"]
        target = _with_form(request, items)
        try:
            await self.authenticator.authenticate_request(target)
        except AuthenticationError as exc:
            return auth_failed(request, exc)
        return await self.sdk_revoke.handle(target)

    async def register(self, request: Request) -> Response:
        """``POST /register`` (RFC 7591): the SDK's handler, answered no-store."""
        response = await self.sdk_register.handle(request)
        response.headers.update(NO_STORE)
        return response
