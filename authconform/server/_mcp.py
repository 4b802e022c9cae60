"""``LeanMCPEndpoint``: a small stateless Streamable HTTP MCP endpoint (JSON responses).

The SDK's stateless transport builds, for every POST, a transport object, a task group
with a server task, four memory streams, a JSON-RPC dispatcher and a session, and
validates the message through pydantic unions; on the authenticated ``tools/call`` hot
path that machinery costs more than the bearer-token lookup in the store. This endpoint
answers the same protocol directly in the request's task: one ``json.loads``, a
dispatch on the method, one ``json.dumps``. ``ServerConfig.mcp_impl`` picks it (``lean``,
the default) or the SDK's ``StreamableHTTPSessionManager`` (``sdk``); authentication
(``BearerGuard``) is the same code in front of either.

What it serves (MCP streamable HTTP, stateless, no SSE):

- Handshake revisions (``mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS``, chosen by the
  ``MCP-Protocol-Version`` header; absent means 2025-03-26 as the spec says):
  ``initialize`` (the requested version if the SDK supports it, else the latest handshake
  version, as the SDK negotiates), ``ping``, ``tools/list``, ``tools/call`` for ``echo``
  and ``whoami``; notifications and posted responses are acknowledged with 202; JSON-RPC
  batches only at 2025-03-26 (the one revision that has them; ``initialize`` never in a
  batch); anything else is ``-32601``.
- The per-request revision (2026-07-28): ``tools/call`` of our tools is answered here
  after the SDK's own envelope/header classifier (``classify_inbound_request``); every
  other request, notification or malformed body at that revision (and any unknown
  ``MCP-Protocol-Version``) goes to the SDK's single-exchange handler, so those answers
  are exactly the SDK's.
- ``GET`` answers 405 (this endpoint offers no SSE stream; the SDK opens one that never
  carries anything in stateless mode), as do ``DELETE`` (no sessions) and other methods.
- DNS-rebinding protection like the SDK's ``TransportSecurityMiddleware`` (Host 421,
  Origin 403, with the same allow lists); ``Accept`` must admit ``application/json``
  (406); ``Content-Type`` must be ``application/json`` (415; the SDK says 400 in plain
  text); bodies over the SDK's 4 MiB limit get 413.

Deliberate differences from the SDK (both are spec-conformant or more so): an envelope
that is not a JSON-RPC message is ``-32600 Invalid Request`` (the SDK says ``-32602``
with pydantic's error text); a request with ``"id": null`` is ``-32600`` (MCP forbids a
null id; the SDK acknowledges it as a notification); batches are served at 2025-03-26.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import mcp_types as mt
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

__all__ = ["BATCH_VERSIONS", "LeanMCPEndpoint", "ToolCall"]

logger = logging.getLogger("authconform.server.mcp")

#: Revisions whose JSON-RPC layer admits batches (2025-03-26 added them, 2025-06-18
#: removed them again).
BATCH_VERSIONS: Final = frozenset({"2025-03-26"})
MODERN_VERSION: Final = "2026-07-28"
SERVER_INFO_META_KEY: Final = "io.modelcontextprotocol/serverInfo"

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602

#: ``(arguments, access token or None) -> CallToolResult as a wire dict`` for one tool.
ToolCall = Callable[[Mapping[str, Any], Any], dict[str, Any]]
#: The SDK's single-exchange handler, given the body again: ``(scope, receive, send)``.
Fallback = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_WANTED = frozenset(
    {
        b"host",
        b"origin",
        b"accept",
        b"content-type",
        b"content-length",
        b"mcp-protocol-version",
        b"mcp-method",
        b"mcp-name",
    }
)


class _Reject(Exception):
    """A JSON-RPC error for one message (caught per message, never escapes)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def _accepts_json(accept: str) -> bool:
    """``Accept`` admits application/json (RFC 9110 12.5.1 wildcards included)."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("application/json", "application/*", "*/*"):
            return True
    return False


def _host_allowed(host: str | None, allowed: list[str]) -> bool:
    """The SDK's Host rule: exact, or ``name:*`` for any port."""
    if not host:
        return False
    if host in allowed:
        return True
    return any(a.endswith(":*") and host.startswith(a[:-1]) for a in allowed)


def _valid_id(rid: Any) -> bool:
    # MCP: a request id is a string or an integer, never null (JSON-RPC allows
    # numbers; fractions are discouraged there and MCP's schema has integers)
    return (isinstance(rid, int) and not isinstance(rid, bool)) or isinstance(rid, str)


class LeanMCPEndpoint:
    """The MCP endpoint as one ASGI app (put ``BearerGuard`` in front of it).

    ``tools`` maps a tool name to its implementation; ``tool_list(version)`` is the
    ``tools/list`` result and ``initialize_result(version)`` the ``initialize`` result at
    a handshake revision, both as wire dicts (computed once). ``fallback`` is the SDK's
    handler for what this endpoint leaves to the SDK at the per-request revision (see the
    module docstring).
    """

    def __init__(
        self,
        *,
        tools: Mapping[str, ToolCall],
        unknown_tool: Callable[[str], dict[str, Any]],
        tool_list: Callable[[str], dict[str, Any]],
        initialize_result: Callable[[str], dict[str, Any]],
        server_info: dict[str, Any],
        security: TransportSecuritySettings,
        fallback: Fallback,
        max_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    ) -> None:
        """Build the endpoint; every result that does not depend on the request is fixed here."""
        self.tools = dict(tools)
        self.unknown_tool = unknown_tool
        self.tool_lists = {v: tool_list(v) for v in HANDSHAKE_PROTOCOL_VERSIONS}
        self.initialize_results = {v: initialize_result(v) for v in HANDSHAKE_PROTOCOL_VERSIONS}
        self.server_info = server_info
        self.check_hosts = security.enable_dns_rebinding_protection
        self.allowed_hosts = list(security.allowed_hosts)
        self.allowed_origins = list(security.allowed_origins)
        self.fallback = fallback
        self.max_body_size = max_body_size

    # ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request to the MCP endpoint."""
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key in _WANTED:
                headers.setdefault(key, value)
        if self.check_hosts:
            denied = self._deny_host(headers)
            if denied is not None:
                await _plain(send, *denied)
                return
        raw_version = headers.get(b"mcp-protocol-version")
        version = raw_version.decode("latin-1") if raw_version is not None else None
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self._modern(scope, receive, send, headers, version)
            return
        method = scope["method"]
        if method != "POST":
            message = (
                "Method Not Allowed: this endpoint is stateless and offers no SSE stream"
                if method in ("GET", "DELETE")
                else "Method Not Allowed"
            )
            await _reply(send, 405, _error(None, INVALID_REQUEST, message), [(b"allow", b"POST")])
            return
        if not _accepts_json(headers.get(b"accept", b"").decode("latin-1")):
            await _reply(
                send,
                406,
                _error(
                    None, INVALID_REQUEST, "Not Acceptable: Client must accept application/json"
                ),
            )
            return
        ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != b"application/json":
            await _reply(
                send,
                415,
                _error(
                    None,
                    INVALID_REQUEST,
                    "Unsupported Media Type: Content-Type must be application/json",
                ),
            )
            return
        body = await self._body(receive, send, headers)
        if body is None:
            return
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError) as exc:
            await _reply(send, 400, _error(None, PARSE_ERROR, f"Parse error: {exc}"))
            return
        negotiated = version or mt.DEFAULT_NEGOTIATED_VERSION
        user = scope.get("user")
        if isinstance(decoded, list):
            await self._batch(send, decoded, negotiated, version, user)
            return
        status, reply = self._one(decoded, negotiated, user, in_batch=False)
        if reply is None:
            await _empty(send, 202)
        else:
            await _reply(send, status, reply)

    # handshake revisions --------------------------------------------------------------
    def _one(
        self, message: Any, version: str, user: Any, *, in_batch: bool
    ) -> tuple[int, dict[str, Any] | None]:
        """``(HTTP status, reply or None)`` for one decoded message."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return 400, _error(None, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
        method = message.get("method")
        if method is None:
            # a response or error posted by the client: nothing of ours awaits one here
            if "id" in message and ("result" in message or "error" in message):
                return 202, None
            return 400, _error(None, INVALID_REQUEST, "Invalid Request: no method")
        if not isinstance(method, str):
            return 400, _error(None, INVALID_REQUEST, "Invalid Request: method must be a string")
        params = message.get("params")
        if "id" not in message:
            # a notification: acknowledged; stateless, so notifications/initialized and
            # notifications/cancelled have nothing to act on
            return 202, None
        rid = message["id"]
        if not _valid_id(rid):
            return 400, _error(
                None, INVALID_REQUEST, "Invalid Request: id must be a string or an integer"
            )
        if params is not None and not isinstance(params, dict):
            return 200, _error(rid, INVALID_PARAMS, "Invalid params: params must be an object")
        try:
            result = self._dispatch(method, params or {}, version, user, in_batch=in_batch)
        except _Reject as exc:
            return 200, _error(rid, exc.code, exc.message, exc.data)
        return 200, {"jsonrpc": "2.0", "id": rid, "result": result}

    def _dispatch(
        self, method: str, params: dict[str, Any], version: str, user: Any, *, in_batch: bool
    ) -> dict[str, Any]:
        if method == "tools/call":
            return self._call(params, user)
        if method == "tools/list":
            return self.tool_lists[version]
        if method == "ping":
            return {}
        if method == "initialize":
            if in_batch:
                raise _Reject(INVALID_REQUEST, "Invalid Request: initialize must not be batched")
            try:
                init = mt.InitializeRequestParams.model_validate(params, by_name=False)
            except ValidationError:
                raise _Reject(INVALID_PARAMS, "Invalid request parameters", "") from None
            requested = init.protocol_version
            negotiated = (
                requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
            )
            return self.initialize_results[negotiated]
        raise _Reject(METHOD_NOT_FOUND, "Method not found", method)

    def _call(self, params: dict[str, Any], user: Any) -> dict[str, Any]:
        name = params.get("name")
        arguments = params.get("arguments")
        meta = params.get("_meta")
        if (
            not isinstance(name, str)
            or (arguments is not None and not isinstance(arguments, dict))
            or (meta is not None and not isinstance(meta, dict))
        ):
            raise _Reject(INVALID_PARAMS, "Invalid request parameters", "")
        tool = self.tools.get(name)
        if tool is None:
            return self.unknown_tool(name)
        return tool(arguments or {}, getattr(user, "access_token", None))

    async def _batch(
        self, send: Send, messages: list[Any], version: str, header: str | None, user: Any
    ) -> None:
        if version not in BATCH_VERSIONS:
            await _reply(
                send,
                400,
                _error(
                    None,
                    INVALID_REQUEST,
                    f"Invalid Request: JSON-RPC batches are not part of MCP {version}",
                ),
            )
            return
        if not messages:
            await _reply(send, 400, _error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
            return
        outcomes = [self._one(m, version, user, in_batch=True) for m in messages]
        replies = [reply for _, reply in outcomes if reply is not None]
        if not replies:
            await _empty(send, 202)
            return
        await _reply(send, 200, replies)

    # the per-request revision ---------------------------------------------------------
    async def _modern(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        version: str,
    ) -> None:
        """2026-07-28 ``tools/call`` here; everything else (exactly) by the SDK."""
        decoded: Any = None
        body: bytes | None = None
        ctype = headers.get(b"content-type", b"").lower()
        if (
            version == MODERN_VERSION
            and scope["method"] == "POST"
            and ctype.startswith(b"application/json")
            and _accepts_json(headers.get(b"accept", b"").decode("latin-1"))
        ):
            body = await self._body(receive, send, headers)
            if body is None:
                return
            try:
                decoded = json.loads(body)
            except (ValueError, RecursionError):
                decoded = None
            if (
                isinstance(decoded, dict)
                and decoded.get("jsonrpc") == "2.0"
                and decoded.get("method") == "tools/call"
                and _valid_id(decoded.get("id"))
                and isinstance(decoded.get("params"), dict)
            ):
                reply = self._modern_call(scope, decoded)
                if reply is not None:
                    await _reply(send, 200, reply)
                    return
        await self.fallback(scope, _replay(receive, body) if body is not None else receive, send)

    def _modern_call(self, scope: Scope, decoded: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to a well-formed 2026-07-28 ``tools/call``, or None to let the SDK answer."""
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if find_duplicated_routing_header(pairs) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=dict(pairs))
        if isinstance(verdict, InboundLadderRejection):
            return None
        # no Mcp-Param-* validation: neither tool's schema declares x-mcp-header, so the
        # SDK's validate_mcp_param_headers has nothing to compare
        try:
            result = self._call(decoded["params"], scope.get("user"))
        except _Reject:
            return None
        meta = result.get("_meta")
        stamped = {**result, "resultType": "complete"}
        stamped["_meta"] = {**(meta or {}), SERVER_INFO_META_KEY: dict(self.server_info)}
        return {"jsonrpc": "2.0", "id": decoded["id"], "result": stamped}

    # plumbing -------------------------------------------------------------------------
    def _deny_host(self, headers: dict[bytes, bytes]) -> tuple[int, bytes] | None:
        raw_host = headers.get(b"host")
        host = raw_host.decode("latin-1") if raw_host is not None else None
        if not _host_allowed(host, self.allowed_hosts):
            logger.warning("MCP request refused: Host header %r is not allowed", host)
            return 421, b"Invalid Host header"
        raw_origin = headers.get(b"origin")
        if raw_origin:
            origin = raw_origin.decode("latin-1")
            if not _host_allowed(origin, self.allowed_origins):
                logger.warning("MCP request refused: Origin %r is not allowed", origin)
                return 403, b"Invalid Origin header"
        return None

    async def _body(
        self, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> bytes | None:
        """The request body, or None after answering 413."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            await _plain(send, 413, b"Request body too large")
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                await _plain(send, 413, b"Request body too large")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(receive: Receive, body: bytes) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(
    send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [_JSON, (b"content-length", str(len(data)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _empty(send: Send, status: int) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(text)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": text})
