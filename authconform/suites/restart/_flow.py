"""An OAuth 2.1 + MCP client just big enough to walk a flow one step at a time.

Registration (RFC 7591, public client), authorization with PKCE S256 (a server that
approves at once: the reference server's auto consent, or any server that redirects
with a code), code exchange, an MCP ``initialize`` + ``tools/list`` with the bearer
token, refresh, revocation (RFC 7009). Endpoints come from the authorization server
metadata (RFC 8414). Responses are described by status and error fields only: a body
that holds tokens is never shown.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

__all__ = ["FlowClient", "describe"]

MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-06-18",
}


def describe(resp: httpx.Response) -> str:
    """Status and the error fields of a JSON body (never a token)."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code} ({resp.headers.get('content-type', 'no content-type')})"
    if isinstance(body, dict):
        shown = {k: body[k] for k in ("error", "error_description") if k in body}
        if "jsonrpc" in body and isinstance(body.get("error"), dict):
            shown = {"jsonrpc error": body["error"].get("code")}
        return f"HTTP {resp.status_code} {shown or sorted(body)}"
    return f"HTTP {resp.status_code} ({type(body).__name__})"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class FlowClient:
    """A public client of one server (``base``: its issuer URL)."""

    http: httpx.AsyncClient
    base: str
    redirect_uri: str = "http://127.0.0.1:9/callback"
    client_id: str = ""
    metadata: dict[str, Any] | None = None

    async def endpoint(self, name: str) -> str:
        """``<name>_endpoint`` from the metadata (fetched once)."""
        if self.metadata is None:
            resp = await self.http.get(self.base + "/.well-known/oauth-authorization-server")
            resp.raise_for_status()
            self.metadata = resp.json()
        url = self.metadata.get(f"{name}_endpoint")
        if not url:
            raise LookupError(f"the metadata has no {name}_endpoint")
        return str(url)

    async def register(self) -> httpx.Response:
        """Register a public client; sets ``client_id`` on 201."""
        resp = await self.http.post(await self.endpoint("registration"), json={
            "redirect_uris": [self.redirect_uri], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "client_name": "authconform restart suite"})
        if resp.status_code == 201:
            self.client_id = resp.json()["client_id"]
        return resp

    async def authorize(self) -> tuple[httpx.Response, str | None, str]:
        """GET the authorization endpoint: (response, code or None, verifier)."""
        verifier, challenge = _pkce()
        state = secrets.token_urlsafe(8)
        resp = await self.http.get(await self.endpoint("authorization"), params={
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": self.redirect_uri, "code_challenge": challenge,
            "code_challenge_method": "S256", "state": state, "scope": "mcp"})
        code = None
        if resp.status_code in (302, 303) and "location" in resp.headers:
            query = parse_qs(urlparse(resp.headers["location"]).query)
            if query.get("state") == [state] and query.get("code"):
                code = query["code"][0]
        return resp, code, verifier

    async def exchange(self, code: str, verifier: str) -> httpx.Response:
        """POST the token endpoint (authorization_code)."""
        return await self.http.post(await self.endpoint("token"), data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": self.redirect_uri, "client_id": self.client_id})

    async def refresh(self, refresh_token: str) -> httpx.Response:
        """POST the token endpoint (refresh_token)."""
        return await self.http.post(await self.endpoint("token"), data={
            "grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": self.client_id})

    async def revoke(self, token: str) -> httpx.Response:
        """POST the revocation endpoint as a public client."""
        return await self.http.post(await self.endpoint("revocation"),
                                    data={"token": token, "client_id": self.client_id})

    async def mcp(self, token: str, method: str = "tools/list",
                  params: dict[str, Any] | None = None) -> httpx.Response:
        """One JSON-RPC request to ``/mcp`` with the bearer token."""
        return await self.http.post(self.base + "/mcp", headers={
            **MCP_HEADERS, "authorization": f"Bearer {token}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})

    async def mcp_call(self, token: str) -> httpx.Response:
        """``initialize`` then ``tools/list``: the last response (200 with a result if OK)."""
        resp = await self.mcp(token, "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "authconform-restart", "version": "0"}})
        if resp.status_code != 200:
            return resp
        return await self.mcp(token, "tools/list")
