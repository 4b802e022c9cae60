"""Token revocation (RFC 7009), observed at the resource server or through introspection."""

import secrets

from authconform import markers
from authconform.live import Live, expect_401, fail, not_advertised, refused
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC7009-2.1")
async def test_revoked_refresh_token_is_refused(live: Live) -> None:
    """After revocation a refresh token no longer refreshes."""
    client = await live.client_for("revocation")
    tokens = await live.refreshable(client)
    rev = await live.revoke(client, tokens.rt, "refresh_token")
    if rev.status != 200:
        fail(f"revocation of a refresh token answered {rev.describe()}", "200", [rev])
    ex = await live.refresh(client, tokens.rt)
    refused(live, ex, "refresh with a revoked refresh token", codes=("invalid_grant",),
            granted="a revoked refresh token still refreshes", context=[rev])


@spec("RFC7009-2.1", level="SHOULD")
async def test_revoking_refresh_token_revokes_its_access_tokens(live: Live) -> None:
    """Revoking a refresh token also invalidates access tokens of the same grant.

    RFC 7009 2.1: "If the token passed to the request is a refresh token and the
    authorization server supports the revocation of access tokens, then the
    authorization server SHOULD also invalidate all access tokens based on the same
    authorization grant".
    """
    client = await live.client_for("revocation")
    tokens = await live.refreshable(client)
    await live.expect_token_works(tokens.access_token, "a fresh access token", client)
    rev = await live.revoked(client, tokens.rt, "refresh_token")
    works, probe = await live.token_works(tokens.access_token, client)
    if works:
        fail("the access token of a revoked refresh token's grant still works "
             f"({probe.describe()})", "the grant's access tokens invalidated too",
             [rev, probe])


@spec("RFC7009-2.1", "RFC6750-3.1")
async def test_revoked_access_token_is_refused(live: Live) -> None:
    """A revoked access token is refused: 401 at the MCP endpoint, inactive when introspected."""
    client = await live.client_for("revocation")
    _, tokens = await live.tokens(client)
    await live.expect_token_works(tokens.access_token, "a fresh access token", client)
    rev = await live.revoke(client, tokens.access_token, "access_token")
    if rev.status != 200:
        fail(f"revocation of an access token answered {rev.describe()}", "200", [rev])
    works, probe = await live.token_works(tokens.access_token, client)
    if works:
        fail(f"a revoked access token still works ({probe.describe()})",
             "the token refused", [rev, probe])
    if probe.purpose == "mcp":
        expect_401(probe, "MCP request with a revoked access token", [rev])


@spec("RFC7009-2.2")
async def test_revoking_unknown_token_answers_200(live: Live) -> None:
    """Revoking an invalid token is answered with 200."""
    client = await live.client_for("revocation")
    ex = await live.revoke(client, secrets.token_urlsafe(32))
    if ex.status != 200:
        fail(f"revocation of an unknown token answered {ex.describe()}", "200", [ex])


@spec("RFC7009-2.1")
async def test_another_clients_token_is_not_revoked(live: Live) -> None:
    """A client cannot revoke another client's token (it keeps working).

    RFC 7009 2.1: the server "validates whether the token was issued to the client making
    the revocation request. If this validation fails, the request is refused". The
    answer may be 200 (as for an invalid token, 2.2) or an error: both pass; the token
    must keep working.
    """
    client = await live.client_for("revocation")
    other = await live.other_client()
    if other.auth_method not in await live.endpoint_methods("revocation"):
        not_advertised(f"the revocation endpoint does not accept the second client's "
                       f"{other.auth_method} authentication")
    tokens = await live.refreshable(client)
    async with live.control("a refresh with the token"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh", client)
    token = rotated.refresh_token or tokens.rt
    rev = await live.revoke(other, token, "refresh_token")
    ex = await live.refresh(client, token)
    if ex.status != 200:
        fail(f"after another client revoked it, the refresh token answered {ex.describe()}",
             "the token unaffected: only the client it was issued to may revoke it",
             [rev, ex])
