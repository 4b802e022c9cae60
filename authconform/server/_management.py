"""Optional authorization-server endpoints: registration management and introspection.

- RFC 7592 (client configuration endpoint): every registration answer carries
  ``registration_client_uri`` (``ISSUER/register/<client_id>``) and a
  ``registration_access_token``; with that token a client reads (GET), replaces (PUT) and
  deletes (DELETE) its registration. Only the token's SHA-256 is stored (in the client's
  metadata, under ``_rat_sha256``); a wrong or missing token gets 401 ``invalid_token``.
- RFC 7662 (``POST ISSUER/introspect``): a caller that authenticates with a client
  secret (a protected resource, RFC 7662 2.1) learns whether a token is active; without
  a secret there is no introspection, so the endpoint is no oracle for guessers.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from mcp.shared.auth import OAuthClientMetadata
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authconform.server._clientauth import (
    AuthenticationError,
    StoreClientAuthenticator,
    auth_failed,
    basic_credentials,
)
from authconform.server._config import ServerConfig
from authconform.server._provider import RAT_KEY, redirect_uri_problem
from authconform.server._responses import NO_STORE, oauth_error

__all__ = ["ClientManagement", "Introspection", "rat_hash"]

#: values the server manages; a PUT must not send them (RFC 7592 2.2)
_SERVER_FIELDS = ("registration_access_token", "registration_client_uri",
                  "client_secret_expires_at", "client_id_issued_at")


def rat_hash(token: str) -> str:
    """What is stored of a registration access token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return header[7:].strip()
    return None


def _invalid_token(description: str) -> JSONResponse:
    return oauth_error(
        "invalid_token", description, 401,
        {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )


class ClientManagement:
    """RFC 7592: read, replace and delete a registration with its registration token."""

    def __init__(self, provider: Any, config: ServerConfig) -> None:
        """Manage the registrations ``provider`` stores."""
        self.provider = provider
        self.config = config

    def uri(self, client_id: str) -> str:
        """The client configuration endpoint of ``client_id``."""
        return f"{self.config.issuer_url}/register/{client_id}"

    async def issue(self, body: dict[str, Any]) -> dict[str, Any]:
        """Give a fresh registration answer its RFC 7592 members (token stored hashed)."""
        token = secrets.token_urlsafe(32)
        await self.provider.backend.update_client(body["client_id"], {RAT_KEY: rat_hash(token)})
        return {**body, "registration_client_uri": self.uri(body["client_id"]),
                "registration_access_token": token}

    async def handle(self, request: Request) -> Response:
        """``GET|PUT|DELETE ISSUER/register/{client_id}``."""
        client_id = str(request.path_params["client_id"])
        token = _bearer(request)
        if token is None or not await self.provider.verify_registration_token(client_id, token):
            return _invalid_token("the registration access token is invalid for this client")
        record = await self.provider.backend.get_client(client_id)
        if record is None:
            return _invalid_token("the client does not exist")
        if request.method == "DELETE":
            await self.provider.delete_registration(client_id)
            return Response(status_code=204, headers=NO_STORE)
        if request.method == "PUT":
            return await self._replace(request, client_id, dict(record.metadata), token)
        return self._answer(client_id, dict(record.metadata), token)

    def _answer(self, client_id: str, metadata: dict[str, Any], token: str) -> JSONResponse:
        shown = {k: v for k, v in metadata.items() if not k.startswith("_") and v is not None}
        shown.update(client_id=client_id, registration_client_uri=self.uri(client_id),
                     registration_access_token=token)
        return JSONResponse(shown, headers=NO_STORE)

    async def _replace(
        self, request: Request, client_id: str, old: dict[str, Any], token: str
    ) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return oauth_error("invalid_client_metadata", "the body must be a JSON object")
        if not isinstance(body, dict) or body.get("client_id") != client_id:
            return oauth_error("invalid_client_metadata",
                               "the body must be a JSON object with this client's client_id")
        sent = [k for k in _SERVER_FIELDS if k in body]
        if sent:
            return oauth_error("invalid_request", f"server-managed fields sent: {', '.join(sent)}")
        if "client_secret" in body:
            return oauth_error("invalid_client_metadata", "client_secret cannot be changed here")
        try:
            meta = OAuthClientMetadata.model_validate(
                {k: v for k, v in body.items() if k != "client_id"}
            )
        except ValidationError as exc:
            return oauth_error("invalid_client_metadata", str(exc).splitlines()[0])
        uris = [str(u) for u in meta.redirect_uris or []]
        problems = [p for p in (redirect_uri_problem(u) for u in uris) if p] or (
            [] if uris else ["at least one redirect_uri is required"]
        )
        if problems:
            return oauth_error("invalid_redirect_uri", problems[0])
        if meta.token_endpoint_auth_method != old.get("token_endpoint_auth_method"):
            return oauth_error("invalid_client_metadata",
                               "token_endpoint_auth_method cannot change")
        new = meta.model_dump(mode="json", exclude_none=True)
        new["grant_types"] = [g for g in old.get("grant_types") or [] if g in new["grant_types"]]
        new["response_types"] = ["code"]
        kept = {k: old[k] for k in ("client_id_issued_at", "client_secret_expires_at", RAT_KEY)
                if k in old}
        merged: dict[str, Any] = {k: None for k in old if k not in kept}
        merged.update(new)
        merged.update(kept)
        await self.provider.backend.update_client(client_id, merged)
        return self._answer(client_id, merged, token)


class Introspection:
    """RFC 7662: an authenticated confidential caller learns whether a token is active."""

    METHODS = ("client_secret_post", "client_secret_basic")

    def __init__(self, provider: Any, authenticator: StoreClientAuthenticator,
                 config: ServerConfig) -> None:
        """Introspect the tokens ``provider`` stores."""
        self.provider = provider
        self.authenticator = authenticator
        self.config = config

    async def handle(self, request: Request) -> Response:
        """``POST ISSUER/introspect``."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return oauth_error("invalid_request",
                               "the body must be application/x-www-form-urlencoded")
        form = await request.form()
        try:
            basic_credentials(request)
            client = await self.authenticator.authenticate_request(request)
        except AuthenticationError as exc:
            return auth_failed(request, exc)
        if not client.has_secret:
            return auth_failed(request, AuthenticationError(
                "introspection needs client authentication with a secret (RFC 7662 2.1)"))
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return oauth_error("invalid_request", "token is missing")
        return JSONResponse(await self._describe(client, token), headers=NO_STORE)

    async def _describe(self, client: Any, token: str) -> dict[str, Any]:
        access = await self.provider.load_access_token(token)
        if access is not None:
            return {
                "active": True,
                "client_id": access.client_id,
                "scope": " ".join(access.scopes),
                "token_type": "Bearer",
                "exp": access.expires_at,
                "sub": getattr(access, "subject", None),
                "aud": access.resource,
                "iss": self.config.issuer_url,
            }
        refresh = await self.provider.load_refresh_token(client, token)
        if (refresh is not None and not refresh.rotated and not refresh.revoked
                and (refresh.expires_at is None or refresh.expires_at > time.time())):
            return {
                "active": True,
                "client_id": refresh.client_id,
                "scope": " ".join(refresh.scopes),
                "exp": refresh.expires_at,
                "iss": self.config.issuer_url,
            }
        return {"active": False}
