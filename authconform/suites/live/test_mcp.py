"""The MCP resource server: bearer tokens accepted, bad ones refused with 401."""

import asyncio
import secrets

import pytest

from authconform import markers
from authconform.live import Live, expect_401, fail
from authconform.markers import spec

pytestmark = markers.live

_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


@spec("MCP-access-token-usage")
async def test_bearer_token_runs_mcp_initialize_and_tool_call(live: Live) -> None:
    """With a valid token, initialize, tools/list and a tool call succeed."""
    await live.mcp_url()
    client = await live.client()
    _, tokens = await live.tokens(client)
    await live.mcp_session(tokens.access_token)


@spec("RFC6750-3.1", "MCP-token-handling")
async def test_invalid_token_is_refused_with_401(live: Live) -> None:
    """An unknown bearer token gets 401 with error=invalid_token."""
    await live.mcp_url()
    ex, _ = await live.mcp(secrets.token_urlsafe(32), _LIST)
    expect_401(ex, "MCP request with an unknown token")
    if "invalid_token" not in (ex.header("www-authenticate") or ""):
        fail(f"WWW-Authenticate {ex.header('www-authenticate')!r}",
             'error="invalid_token" in the challenge', [ex], spec="RFC6750-3.1")


@spec("RFC6750-3.1", "MCP-token-handling")
async def test_expired_token_is_refused_with_401(live: Live) -> None:
    """An access token past its lifetime gets 401."""
    await live.mcp_url()
    client = await live.client()
    _, tokens = await live.tokens(client)
    if tokens.expires_in is None:
        pytest.skip("not-advertised: the token response has no expires_in")
    if tokens.expires_in > live.config.max_wait:
        pytest.skip(f"disabled: the access token lives {tokens.expires_in:g} s, more than "
                    f"--authconform-max-wait={live.config.max_wait:g}")
    await asyncio.sleep(tokens.expires_in + 1.0)
    ex, _ = await live.mcp(tokens.access_token, _LIST)
    expect_401(ex, f"MCP request with a token {tokens.expires_in + 1:g} s old "
                   f"(expires_in {tokens.expires_in:g})")


@spec("RFC8707-2", "MCP-token-audience-binding-and-validation")
async def test_wrong_audience_token_is_refused(live: Live) -> None:
    """A token issued for another resource is refused by the MCP server."""
    mcp = await live.mcp_url()
    client = await live.client()
    other = mcp.rstrip("/") + "-other-resource"
    auth = await live.authorize(client, resource=other)
    if auth.code is None:
        return  # the AS refuses to issue for another resource: nothing to misuse
    ex = await live.token_request(client, {
        "grant_type": "authorization_code", "code": auth.code,
        "redirect_uri": auth.redirect_uri, "code_verifier": auth.verifier or "",
        "resource": other,
    })
    if ex.status != 200:
        return
    tokens = live.tokens_of(ex, "exchange for another resource")
    call, _ = await live.mcp(tokens.access_token, _LIST)
    expect_401(call, f"MCP request with a token issued for {other}", [ex])
