"""The MCP server's tools, ``echo`` and ``whoami``, and the SDK ``Server`` that serves them.

The tools are written once, as functions returning wire dicts (``CallToolResult``): the
lean endpoint (``_mcp.LeanMCPEndpoint``) sends them as they are, the SDK's server
(``mcp_server()``, used by ``mcp_impl="sdk"`` and by the lean endpoint's fallback for the
SDK's single-exchange path) validates them into its models. ``whoami`` tells who the
access token speaks for, never the token itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mcp_types as mt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.lowlevel.server import Server
from mcp_types import methods as mt_methods

__all__ = [
    "ECHO_SCHEMA",
    "TOOLS",
    "TOOL_LIST",
    "WHOAMI_SCHEMA",
    "mcp_server",
    "tool_echo",
    "tool_unknown",
    "tool_whoami",
    "wire",
]

ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "returned unchanged"}},
    "required": ["text"],
}
WHOAMI_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _tool_schema(name: str) -> Mapping[str, Any] | None:
    return {"echo": ECHO_SCHEMA, "whoami": WHOAMI_SCHEMA}.get(name)


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


def wire(method: str, version: str, model: Any) -> dict[str, Any]:
    """A result model as the SDK sends it at ``version`` (its own per-version sieve)."""
    return mt_methods.serialize_server_result(
        method, version, model.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


def mcp_server() -> Server[Any]:
    """The SDK's low-level MCP server with our tools (name ``authconform-reference``)."""
    from authconform import __version__ as version

    return Server(
        "authconform-reference",
        version=str(version),
        get_tool_input_schema=_tool_schema,
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
    )
