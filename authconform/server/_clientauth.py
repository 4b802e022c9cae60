"""Client authentication at /token and /revoke (SDK workaround 1, see ``_app``).

The SDK's ``ClientAuthenticator`` compares the presented secret with
``client.client_secret`` in plain text; we store only its SHA-256 hash, so
``StoreClientAuthenticator`` verifies through the provider's ``verify_client_secret``.
It reads HTTP Basic (RFC 6749 2.3.1: both parts form-urlencoded before base64) as well as
``client_secret_post``, either one for a confidential client, and remembers the
authenticated client on the request's scope so a request is authenticated once.
A failure is ``invalid_client`` (401), with ``WWW-Authenticate: Basic`` when the client
tried Basic (RFC 6749 5.2).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any
from urllib.parse import unquote_plus

from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from starlette.requests import Request
from starlette.responses import JSONResponse

from authconform.server._provider import StoredClient
from authconform.server._responses import oauth_error

__all__ = [
    "CLIENT_KEY",
    "AuthenticationError",
    "StoreClientAuthenticator",
    "auth_failed",
    "basic_credentials",
]

#: Where an authenticated client is kept on the request's ASGI scope.
CLIENT_KEY = "authconform.client"


def basic_credentials(request: Request) -> tuple[str, str] | None:
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


class StoreClientAuthenticator(ClientAuthenticator):
    """Authenticate token/revocation requests against the stored secret hashes."""

    provider: Any

    async def authenticate_request(self, request: Request) -> StoredClient:
        """The authenticated client, or ``AuthenticationError`` (-> ``invalid_client``)."""
        cached = request.scope.get(CLIENT_KEY)
        if isinstance(cached, StoredClient):
            return cached
        form = await request.form()
        basic = basic_credentials(request)
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


def auth_failed(request: Request, exc: AuthenticationError) -> JSONResponse:
    """``invalid_client`` (401) for a failed client authentication."""
    headers = {}
    if request.headers.get("authorization", "").lower().startswith("basic "):
        headers["WWW-Authenticate"] = 'Basic realm="authconform"'  # RFC 6749 5.2
    return oauth_error("invalid_client", exc.message, 401, headers)
