"""The bearer guard in front of the MCP endpoint (SDK workaround 9, see ``_app``).

``BearerGuard`` authenticates ``Authorization: Bearer`` with the SDK's
``BearerAuthBackend`` (token lookup through the provider, expiry, audience) and answers
the 401s itself: the SDK's ``RequireAuthMiddleware`` says ``error="invalid_token"`` even
when no token was sent, and RFC 6750 3.1 says an error code SHOULD NOT be included then.
The same guard stands in front of either MCP implementation (lean or the SDK's).
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from pydantic import AnyHttpUrl
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BearerGuard", "CachedBearerBackend"]


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
