"""Tool scopes: a tool call needs the scope its tool declares (``--tool-scope TOOL=SCOPE``).

``ScopeGuard`` stands between the bearer guard and the MCP endpoint. A ``tools/call`` of a
tool whose scope the access token lacks gets HTTP 403 with
``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` (RFC 6750 3.1; MCP
2025-11-25 "Runtime Insufficient Scope Errors"): ``scope`` names the token's scopes plus
the missing one, so a step-up authorization keeps what was granted. With no tool scopes
configured the guard is not installed (the hot path reads no body twice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ScopeGuard"]


def _calls(decoded: Any) -> list[str]:
    messages = decoded if isinstance(decoded, list) else [decoded]
    names = []
    for message in messages:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            if isinstance(params, dict) and isinstance(params.get("name"), str):
                names.append(params["name"])
    return names


class ScopeGuard:
    """403 ``insufficient_scope`` for a tool call whose tool needs a scope the token lacks."""

    def __init__(self, app: ASGIApp, tool_scopes: Mapping[str, str],
                 resource_metadata_url: str) -> None:
        """Guard ``app``; ``tool_scopes`` maps tool name -> the scope it needs."""
        self.app = app
        self.tool_scopes = dict(tool_scopes)
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, decide, then hand the same body to the endpoint."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
            if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
                break  # the endpoint answers 413
        body = b"".join(chunks)
        missing = self._missing(scope, body) if not more else None
        if missing is not None:
            await self._deny(send, *missing)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        await self.app(scope, replay, send)

    def _missing(self, scope: Scope, body: bytes) -> tuple[str, list[str]] | None:
        try:
            decoded = json.loads(body)
        except ValueError:
            return None
        auth = scope.get("auth")
        granted = list(getattr(auth, "scopes", []) or [])
        for name in _calls(decoded):
            needed = self.tool_scopes.get(name)
            if needed is not None and needed not in granted:
                return name, [*granted, needed]
        return None

    async def _deny(self, send: Send, tool: str, scopes: list[str]) -> None:
        description = f"the tool {tool} needs the scope {scopes[-1]}"
        challenge = (
            f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}", '
            f'resource_metadata="{self.resource_metadata_url}", '
            f'error_description="{description}"'
        )
        payload = json.dumps({"error": "insufficient_scope",
                              "error_description": description}).encode()
        await send({
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", challenge.encode()),
                (b"cache-control", b"no-store"),
            ],
        })
        await send({"type": "http.response.body", "body": payload})
