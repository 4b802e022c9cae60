"""The authorization endpoint: required and unknown parameters, scope, consent denial."""

import secrets

from authconform import markers
from authconform.live import Live, fail, not_applicable, refused_at_authorize
from authconform.markers import spec

pytestmark = markers.live


@spec("OAUTH21-4.1.2.1", "OAUTH21-4.1.1", "RFC6749-3.1.2.3")
async def test_missing_redirect_uri_with_several_registered_is_refused(live: Live) -> None:
    """A client with two redirect URIs that sends none gets an error page, never a code.

    OAuth 2.1 4.1.1: ``redirect_uri`` is "REQUIRED if multiple redirect URIs are
    registered"; 4.1.2.1: "If the request fails due to a missing, invalid, or mismatching
    redirect URI ... [the server] MUST NOT automatically redirect the user agent".
    """
    port = 40000 + secrets.randbelow(20000)
    uris = [f"http://127.0.0.1:{port}/first", f"http://127.0.0.1:{port}/second"]
    meta = await live.client_metadata(redirect_uris=uris)
    client = await live.registered_client(
        "two-redirects", "the check needs a client with two redirect URIs", metadata=meta
    )
    async with live.control("the same client naming one of its redirect URIs"):
        await live.code_for(client, redirect_uri=uris[1])
    auth = await live.authorize(client, send_redirect_uri=False)
    if auth.location is not None:
        fail(f"no redirect_uri (two registered) answered with {auth.describe()}",
             "an error page: the server cannot know where to redirect", auth.exchanges)
    refused_at_authorize(live, auth, "a request without redirect_uri (two registered)",
                         codes=("invalid_request",))


@spec("OAUTH21-4.1.1", "RFC6749-4.1.1")
async def test_missing_response_type_is_an_error(live: Live) -> None:
    """A request without response_type gets an error, never a code.

    OAuth 2.1 4.1.1: "If an authorization request is missing the response_type
    parameter ... the authorization server MUST return an error response".
    """
    client = await live.client()
    async with live.control("the same request with response_type=code"):
        await live.code_for(client)
    auth = await live.authorize(client, response_type=None)
    refused_at_authorize(live, auth, "a request without response_type",
                         codes=("invalid_request", "unsupported_response_type"))


@spec("OAUTH21-3.1")
async def test_unknown_parameters_are_ignored(live: Live) -> None:
    """A request with parameters the server does not know still gets a code.

    OAuth 2.1 3.1: "The authorization server MUST ignore unrecognized request parameters
    sent to the authorization endpoint."
    """
    client = await live.client()
    await live.code_for(client, extra={"authconform_unknown": "1", "x-hint": "ignored"})


async def _two_scopes(live: Live) -> list[str]:
    scopes = (await live.discovery()).scopes
    wanted = (await live.scope() or "").split()
    pool = [s for s in wanted if s in scopes]
    pool += [s for s in scopes if s not in pool]
    if len(pool) < 2:
        not_applicable(f"the target declares fewer than two scopes ({scopes!r})")
    return pool[:2]


@spec("OAUTH21-1.4.1", "RFC6749-3.3")
async def test_scope_order_does_not_matter(live: Live) -> None:
    """"a b" and "b a" are the same request: both get a code.

    OAuth 2.1 1.4.1 (RFC 6749 3.3): the scope is a list of space-delimited strings and
    "their order does not matter".
    """
    a, b = await _two_scopes(live)
    client = await live.client()
    for scope in (f"{a} {b}", f"{b} {a}"):
        await live.code_for(client, scope=scope)


@spec("RFC6749-4.1.2.1", "OAUTH21-1.4.1", level="SHOULD")
async def test_unknown_scope_is_refused_or_left_out(live: Live) -> None:
    """A made-up scope gets invalid_scope, or is left out of the token: never granted.

    RFC 6749 4.1.2.1 defines ``invalid_scope`` for "invalid, unknown, or malformed"
    scopes; OAuth 2.1 1.4.1 lets the server "fully or partially ignore the scope
    requested", and then it "MUST include the scope response parameter" naming what it
    granted. Both pass. No text makes refusing mandatory (RFC 8414 even lets a server
    support scopes it does not advertise), so a token granting a random scope name
    verbatim, a sign the server validates no scope at all, is a warning.
    """
    if not (await live.discovery()).scopes:
        not_applicable("the target declares no scopes (scopes_supported): none is unknown")
    client = await live.client()
    base = await live.scope()
    async with live.control("the same request without the unknown scope"):
        await live.code_for(client, scope=base)
    unknown = "authconform-unknown-" + secrets.token_hex(4)
    wanted = f"{base} {unknown}" if base else unknown
    auth = await live.authorize(client, scope=wanted)
    if auth.code is None:
        refused_at_authorize(live, auth, f"a request for the unknown scope {unknown}",
                             codes=("invalid_scope",))
        return
    ex = await live.exchange(client, auth)
    if ex.status != 200:
        return  # refused at the token endpoint: nothing granted
    tokens = live.tokens_of(ex, "exchange for an unknown scope", client)
    if tokens.scope is None or unknown in tokens.scope.split():
        fail(f"a token for {unknown!r} with scope {tokens.scope!r}",
             "invalid_scope, or a token whose scope member leaves the unknown scope out",
             [*auth.exchanges, ex])


@spec("RFC6749-4.1.2.1", "OAUTH21-4.1.2.1")
async def test_denied_consent_redirects_with_access_denied(live: Live) -> None:
    """Pressing deny on the consent page redirects to the client with access_denied."""
    client = await live.client()
    auth = await live.authorize(client, decision="deny")
    if not auth.consent_shown:
        not_applicable("the server shows no consent page (it approves at once)")
    if auth.code is not None:
        fail("denying consent ended in a code", "error=access_denied", auth.exchanges)
    if auth.location is None:
        fail(f"denying consent ended in {auth.describe()}",
             f"a redirect to {auth.redirect_uri} with error=access_denied", auth.exchanges)
    if not auth.redirected_to(auth.redirect_uri) or auth.error != "access_denied":
        fail(f"denying consent ended in {auth.describe()}",
             f"a redirect to {auth.redirect_uri} with error=access_denied", auth.exchanges)
    if auth.params().get("state") != auth.state:
        fail("the access_denied redirect lost the state", "the state, exactly as sent",
             auth.exchanges)
