"""Token revocation (RFC 7009)."""

import secrets

import pytest

from authconform import markers
from authconform.live import Live, expect_401, expect_error, fail
from authconform.markers import spec

pytestmark = markers.live

_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


@spec("RFC7009-2.1")
async def test_revoked_refresh_token_is_refused(live: Live) -> None:
    """After revocation a refresh token no longer refreshes."""
    await live.endpoint("revocation")
    client = await live.client()
    _, tokens = await live.tokens(client)
    if tokens.refresh_token is None:
        pytest.skip("not-advertised: the token response carries no refresh_token")
    rev = await live.revoke(client, tokens.refresh_token, "refresh_token")
    if rev.status != 200:
        fail(f"revocation answered {rev.describe()}", "200", [rev])
    ex = await live.refresh(client, tokens.refresh_token)
    expect_error(ex, ("invalid_grant",), "refresh with a revoked refresh token", context=[rev])


@spec("RFC7009-2.1", level="SHOULD")
async def test_revoking_refresh_token_revokes_its_access_tokens(live: Live) -> None:
    """Revoking a refresh token also invalidates access tokens of the same grant."""
    await live.endpoint("revocation")
    await live.mcp_url()
    client = await live.client()
    _, tokens = await live.tokens(client)
    if tokens.refresh_token is None:
        pytest.skip("not-advertised: the token response carries no refresh_token")
    rev = await live.revoke(client, tokens.refresh_token, "refresh_token")
    ex, _ = await live.mcp(tokens.access_token, _LIST)
    expect_401(ex, "access token of a revoked refresh token's grant", [rev])


@spec("RFC7009-2.1", "RFC6750-3.1")
async def test_revoked_access_token_is_refused_with_401(live: Live) -> None:
    """A revoked access token gets 401 at the resource server."""
    await live.endpoint("revocation")
    await live.mcp_url()
    client = await live.client()
    _, tokens = await live.tokens(client)
    before, _ = await live.mcp(tokens.access_token, _LIST)
    if before.status == 401:
        fail("a fresh access token was refused", "200 before revocation", [before])
    rev = await live.revoke(client, tokens.access_token, "access_token")
    if rev.status != 200:
        fail(f"revocation answered {rev.describe()}", "200", [rev])
    ex, _ = await live.mcp(tokens.access_token, _LIST)
    expect_401(ex, "MCP request with a revoked access token", [rev])


@spec("RFC7009-2.2")
async def test_revoking_unknown_token_answers_200(live: Live) -> None:
    """Revoking an invalid token is answered with 200."""
    await live.endpoint("revocation")
    client = await live.client()
    ex = await live.revoke(client, secrets.token_urlsafe(32))
    if ex.status != 200:
        fail(f"revocation of an unknown token answered {ex.describe()}", "200", [ex])
