"""PKCE (RFC 7636) as OAuth 2.1 requires it."""

import secrets

from authconform import markers
from authconform.live import (
    Live,
    fail,
    not_applicable,
    refused,
    refused_at_authorize,
)
from authconform.live._flows import pkce_pair
from authconform.live._pytest import note
from authconform.markers import spec

pytestmark = markers.live

#: verifiers that break the ABNF 43*128unreserved (RFC 7636 4.1, OAuth 2.1 A.17)
BAD_VERIFIERS = {
    "42 characters": "v" * 42,
    "129 characters": "v" * 129,
    "characters outside the unreserved set": "v" * 40 + "+/=",
}


async def _exchange_without_pkce(live: Live, client) -> tuple[str, list]:
    """Authorize without a challenge: 'refused' at authorize or token, or 'granted'."""
    auth = await live.authorize(client, method=None)
    if auth.code is None:
        return "refused", auth.exchanges
    ex = await live.exchange(client, auth, verifier=None)
    if ex.status == 200:
        return "granted", [*auth.exchanges, ex]
    refused(live, ex, "exchange of a code issued without code_challenge",
            codes=("invalid_request", "invalid_grant"))
    return "refused", [*auth.exchanges, ex]


@spec("OAUTH21-4.1.2.1", "OAUTH21-7.5.2", "MCP-authorization-code-protection")
async def test_authorization_requires_pkce(live: Live, request) -> None:
    """No tokens come out of a flow without PKCE (refused at /authorize or at /token).

    OAuth 2.1 4.1.2.1: "An AS MUST reject requests without a code_challenge from public
    clients"; 7.5.2: AS "MUST enforce their use" (a confidential client may be excepted
    only with OpenID Connect's nonce, which this flow does not use). Judged end to end:
    a code issued without a challenge that can never be redeemed is refused too.
    """
    client = await live.client()
    async with live.control("the same flow with PKCE"):
        await live.tokens(client)
    verdict, seen = await _exchange_without_pkce(live, client)
    if verdict == "granted":
        fail(f"a {'public' if client.public else 'confidential'} client obtained tokens "
             "without PKCE", "the request refused at /authorize or the code refused at "
             "/token", seen)
    confidential = await live.maybe_client(confidential=True) if client.public else None
    if confidential is not None:
        verdict, seen = await _exchange_without_pkce(live, confidential)
        if verdict == "granted":
            fail("a confidential client obtained tokens without PKCE (and without a nonce)",
                 "the request refused at /authorize or the code refused at /token", seen)
    note(request, "flows without PKCE are refused")


@spec("OAUTH21-4.1.1", level="SHOULD")
async def test_pkce_plain_is_accepted_only_when_advertised(live: Live, request) -> None:
    """code_challenge_method=plain works only where the metadata lists it.

    OAuth 2.1 4.1.1 lets clients use ``plain`` only when they know the server supports it
    ("via Authorization Server Metadata"): a server that takes ``plain`` without listing
    it misdescribes itself. Accepting an advertised ``plain`` is allowed (a note).
    """
    client = await live.client()
    async with live.control("the same flow with S256"):
        await live.tokens(client)
    auth = await live.authorize(client, method="plain")
    if auth.code is None:
        return
    ex = await live.exchange(client, auth)
    if ex.status != 200:
        return
    methods = (await live.discovery()).listed("code_challenge_methods_supported") or []
    if "plain" in methods:
        note(request, "code_challenge_method=plain is advertised and accepted")
        return
    fail("code_challenge_method=plain: the code was exchanged for tokens, though "
         f"code_challenge_methods_supported is {methods!r}",
         "plain refused (or listed in code_challenge_methods_supported)",
         [*auth.exchanges, ex])


@spec("RFC7636-4.6")
async def test_wrong_code_verifier_is_refused(live: Live) -> None:
    """A code exchanged with a verifier that does not match the challenge is refused."""
    client = await live.client()
    async with live.control("the same flow with the right verifier"):
        await live.tokens(client)
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    refused(live, ex, "exchange with a wrong code_verifier", codes=("invalid_grant",),
            granted="a wrong code_verifier was accepted")


@spec("OAUTH21-4.1.3", "RFC7636-4.6")
async def test_missing_code_verifier_is_refused(live: Live) -> None:
    """A code issued for a challenge, exchanged without code_verifier, is refused.

    OAuth 2.1 4.1.3: the AS MUST "verify that the code_verifier parameter is present if
    and only if a code_challenge parameter was present". ``invalid_grant`` (RFC 7636
    4.6) and ``invalid_request`` (a missing parameter, RFC 6749 5.2) are both right.
    """
    client = await live.client()
    async with live.control("the same flow with the verifier"):
        await live.tokens(client)
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth, verifier=None)
    refused(live, ex, "exchange without code_verifier",
            codes=("invalid_grant", "invalid_request"),
            granted="a code issued for a code_challenge was exchanged without a verifier")


@spec("OAUTH21-4.1.1", "RFC7636-4.1", level="SHOULD")
async def test_code_verifier_syntax_is_enforced(live: Live) -> None:
    """A verifier outside 43*128 unreserved characters is refused, even when S256 matches.

    The ABNF (RFC 7636 4.1, OAuth 2.1 A.17) binds the client; no text requires the server
    to refuse a malformed verifier (``invalid_request`` is the error for "an invalid
    parameter value"), so a server that accepts one is warned.
    """
    client = await live.client()
    async with live.control("the same flow with a well-formed verifier"):
        await live.tokens(client)
    accepted = []
    for how, verifier in BAD_VERIFIERS.items():
        auth = await live.code_for(client, verifier=verifier)
        ex = await live.exchange(client, auth)
        if ex.status == 200:
            accepted.append((how, ex))
            continue
        refused(live, ex, f"exchange with a code_verifier of {how}",
                codes=("invalid_request", "invalid_grant"))
    if accepted:
        fail("code_verifier of " + ", ".join(h for h, _ in accepted) + " accepted",
             "only 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 4.1)",
             [ex for _, ex in accepted])


@spec("OAUTH21-4.1.1", "RFC7636-4.2", level="SHOULD")
async def test_code_challenge_syntax_is_enforced(live: Live) -> None:
    """A code_challenge outside 43*128 unreserved characters gets no code.

    OAuth 2.1 4.1.1: "The authorization server validates the request to ensure that all
    required parameters are present and valid" (no MUST): a server that issues a code
    for a malformed challenge is warned.
    """
    client = await live.client()
    async with live.control("the same flow with a well-formed challenge"):
        await live.tokens(client)
    _, good = pkce_pair()
    for how, challenge in (("42 characters", good[:42]), ("a character outside the set",
                                                           good[:42] + "+")):
        auth = await live.authorize(client, challenge=challenge)
        refused_at_authorize(live, auth, f"code_challenge of {how}", codes=("invalid_request",))


@spec("RFC9700-4.8.2", "OAUTH21-4.1.3")
async def test_pkce_downgrade_is_refused(live: Live) -> None:
    """A code_verifier sent for a code whose request had no challenge is refused."""
    client = await live.client()
    async with live.control("the same flow with PKCE"):
        await live.tokens(client)
    auth = await live.authorize(client, method=None)
    if auth.code is None:
        not_applicable("no code without a code_challenge: there is nothing to downgrade")
    ex = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    refused(live, ex, "a code_verifier for a code issued without code_challenge",
            codes=("invalid_grant", "invalid_request"),
            granted="a code issued without code_challenge was exchanged with a verifier")
