"""Authorization codes: exchange, single use, replay revocation, client binding."""

import secrets

import pytest

from authconform import markers
from authconform.live import Live, expect_error, fail
from authconform.markers import spec

pytestmark = markers.live


async def _still_valid(live: Live, client, tokens) -> tuple[bool, list]:  # noqa: ANN001
    """Whether the grant's tokens still work: refresh (when issued) or an MCP call."""
    disc = await live.discovery()
    if tokens.refresh_token is not None:
        ex = await live.refresh(client, tokens.refresh_token)
        return ex.status == 200, [ex]
    if disc.mcp_url is not None:
        ex, _ = await live.mcp(tokens.access_token, {"jsonrpc": "2.0", "id": 1,
                                                     "method": "tools/list"})
        return ex.status != 401, [ex]
    pytest.skip("not-advertised: no refresh token and no MCP endpoint to observe revocation")


@spec("RFC6749-5.1")
async def test_code_exchange_issues_bearer_token(live: Live) -> None:
    """The code and verifier are exchanged for a Bearer access token."""
    client = await live.client()
    _, tokens = await live.tokens(client)
    kind = tokens.body.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        fail(f"token_type {kind!r}", "'Bearer' (case-insensitive)", [tokens.exchange])


@spec("RFC6749-4.1.2", "OAUTH21-4.1.3")
async def test_code_is_single_use(live: Live) -> None:
    """A second exchange of the same code is refused with invalid_grant."""
    client = await live.client()
    auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth)
    expect_error(replay, ("invalid_grant",), "second exchange of one code",
                 context=[tokens.exchange])


@spec("OAUTH21-4.1.3", "RFC6749-4.1.2", level="SHOULD")
async def test_replayed_code_revokes_issued_tokens(live: Live) -> None:
    """Replaying a redeemed code revokes the tokens issued for it."""
    client = await live.client()
    auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth)
    if replay.status == 200:
        fail("a replayed code was exchanged again", "the replay refused", [replay])
    valid, seen = await _still_valid(live, client, tokens)
    if valid:
        fail("tokens issued for a code still work after the code was replayed",
             "every token of the grant revoked", [tokens.exchange, replay, *seen])


@spec("RFC6749-4.1.3")
async def test_code_is_bound_to_its_client(live: Live) -> None:
    """A code issued to one client cannot be exchanged by another."""
    await live.endpoint("registration")
    client = await live.client()
    other = await live.new_client()
    auth = await live.code_for(client)
    ex = await live.exchange(other, auth)
    expect_error(ex, ("invalid_grant",), "exchange of another client's code")


@spec("RFC7636-4.6", level="SHOULD")
async def test_replay_with_invalid_parameters_does_not_revoke(live: Live) -> None:
    """A replay with a wrong verifier is refused without revoking the grant (no DoS by code)."""
    client = await live.client()
    auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    expect_error(replay, ("invalid_grant",), "replay with a wrong code_verifier")
    valid, seen = await _still_valid(live, client, tokens)
    if not valid:
        fail("a replay with a wrong code_verifier revoked the grant",
             "the grant intact: only a replay that passes PKCE proves the code leaked",
             [tokens.exchange, replay, *seen])
