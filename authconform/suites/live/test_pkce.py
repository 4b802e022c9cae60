"""PKCE (RFC 7636) as OAuth 2.1 requires it."""

import secrets

from authconform import markers
from authconform.live import Live, expect_error, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("OAUTH21-4.1.1", "MCP-authorization-code-protection")
async def test_authorization_requires_pkce(live: Live) -> None:
    """An authorization request without code_challenge gets no code."""
    client = await live.client()
    auth = await live.authorize(client, method=None)
    if auth.code is not None:
        fail("an authorization request without code_challenge was answered with a code",
             "an error (invalid_request): PKCE is required", auth.exchanges)


@spec("OAUTH21-4.1.1", "MCP-authorization-code-protection")
async def test_pkce_plain_is_refused(live: Live) -> None:
    """code_challenge_method=plain yields no tokens."""
    client = await live.client()
    auth = await live.authorize(client, method="plain")
    if auth.code is None:
        return
    ex = await live.exchange(client, auth)
    if ex.status == 200:
        fail("code_challenge_method=plain: the code was exchanged for tokens",
             "plain refused at /authorize (or the exchange refused): S256 only",
             [*auth.exchanges, ex])


@spec("RFC7636-4.6")
async def test_wrong_code_verifier_is_refused(live: Live) -> None:
    """A code exchanged with a verifier that does not match the challenge is refused."""
    client = await live.client()
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    expect_error(ex, ("invalid_grant",), "exchange with a wrong code_verifier")


@spec("RFC9700-4.8.2")
async def test_pkce_downgrade_is_refused(live: Live) -> None:
    """A code_verifier sent for a code whose request had no challenge is refused."""
    client = await live.client()
    auth = await live.authorize(client, method=None)
    if auth.code is None:
        return  # no code without a challenge: nothing to downgrade
    ex = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    if ex.status == 200:
        fail("a code issued without code_challenge was exchanged with a code_verifier",
             "the exchange refused (invalid_grant)", [*auth.exchanges, ex])
