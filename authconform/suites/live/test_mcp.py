"""The MCP resource server: tokens accepted, bad ones refused, audience, scope, resource."""

import secrets

from authconform import markers
from authconform.live import (
    Live,
    expect_401,
    fail,
    not_applicable,
    refused,
    refused_at_authorize,
)
from authconform.live._discovery import initialize_request
from authconform.live._pytest import aging, note, run_last
from authconform.markers import spec

pytestmark = markers.live


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
    ex, _ = await live.mcp(secrets.token_urlsafe(32), initialize_request(1))
    expect_401(ex, "MCP request with an unknown token")
    if "invalid_token" not in (ex.header("www-authenticate") or ""):
        fail(f"WWW-Authenticate {ex.header('www-authenticate')!r}",
             'error="invalid_token" in the challenge', [ex], spec="RFC6750-3.1")


@aging
@run_last(2)
@spec("RFC6750-3.1", "MCP-token-handling")
async def test_expired_token_is_refused_with_401(live: Live) -> None:
    """An access token past its lifetime gets 401 (the token was issued when the run began)."""
    await live.mcp_url()
    probe = await live.aged("tokens", 0, "an access token")
    if probe.expires_in is None:
        not_applicable("the token response has no expires_in")
    tokens = await live.aged("tokens", probe.expires_in, "an access token")
    ex, _ = await live.mcp(tokens.access_token, initialize_request(1))
    expect_401(ex, f"MCP request with a token older than its expires_in "
                   f"({tokens.expires_in:g} s)", [tokens.exchange])


@spec("RFC8707-2", "MCP-token-audience-binding-and-validation")
async def test_wrong_audience_token_is_refused(live: Live) -> None:
    """A token issued for another resource is refused by the MCP server (no passthrough)."""
    mcp = await live.mcp_url()
    client = await live.client()
    other = mcp.rstrip("/") + "-other-resource"
    async with live.control("a token for this MCP server"):
        _, own = await live.tokens(client)
        await live.expect_token_works(own.access_token, "a token for this resource", client)
    auth = await live.authorize(client, resource=other)
    if auth.code is None:
        not_applicable(f"the authorization server issues no code for {other} "
                       f"({auth.describe()}): the resource server's side is not exercised")
    ex = await live.exchange(client, auth, resource=other)
    if ex.status != 200:
        not_applicable(f"the authorization server issues no token for {other} "
                       f"({ex.describe()}): the resource server's side is not exercised")
    tokens = live.tokens_of(ex, "exchange for another resource", client)
    works, probe = await live.token_works(tokens.access_token, client)
    if works:
        fail(f"a token issued for {other} was accepted ({probe.describe()})",
             "401: the token's audience is another resource", [ex, probe])
    expect_401(probe, f"MCP request with a token issued for {other}", [ex])


@spec("RFC6750-2.1", "RFC9110-11.1")
async def test_bearer_scheme_is_case_insensitive(live: Live) -> None:
    """``bearer`` and ``BEARER`` work like ``Bearer`` (auth schemes are case-insensitive)."""
    await live.mcp_url()
    client = await live.client()
    _, tokens = await live.tokens(client)
    async with live.control("the same request with 'Bearer'"):
        await live.expect_token_works(tokens.access_token, "a fresh access token", client)
    for scheme in ("bearer", "BEARER"):
        ex, reply = await live.mcp(tokens.access_token, initialize_request(1), scheme=scheme)
        if ex.status != 200 or not isinstance(reply, dict) or "result" not in reply:
            fail(f"Authorization: {scheme} <token> answered {ex.describe()}",
                 "the same answer as with 'Bearer'", [ex])


@spec("RFC6750-3.1", "MCP20251125-runtime-insufficient-scope-errors", level="SHOULD")
async def test_insufficient_scope_gets_403_with_scope(live: Live, request) -> None:
    """A tool call the token's scope does not cover gets 403 insufficient_scope naming scope.

    RFC 6750 3.1: ``insufficient_scope`` "The resource server SHOULD respond with the HTTP
    403 (Forbidden) status code and MAY include the scope attribute"; MCP 2025-11-25
    "Runtime Insufficient Scope Errors": SHOULD respond 403 with ``error=
    "insufficient_scope"`` and ``scope`` naming the scopes needed. Applies when the target
    declares two or more scopes; the token asks for the first one only.
    """
    await live.mcp_url()
    scopes = (await live.discovery()).scopes
    if len(scopes) < 2:
        not_applicable(f"the target declares fewer than two scopes ({scopes!r})")
    client = await live.client()
    _, tokens = await live.tokens(client, scope=scopes[0])
    async with live.control(f"initialize and tools/list with a token for {scopes[0]!r}"):
        session, tools, _ = await live.mcp_open(tokens.access_token)
    for tool in tools[:8]:
        ex, _ = await live.mcp_call(tokens.access_token, session, tool)
        if ex.status == 403:
            challenge = ex.header("www-authenticate") or ""
            named = challenge.replace("error=", "").replace("error_description=", "")
            if "insufficient_scope" not in challenge or "scope=" not in named:
                fail(f"403 for tool {tool['name']} with WWW-Authenticate {challenge!r}",
                     'Bearer error="insufficient_scope", scope="<scopes needed>"', [ex])
            return
        if ex.status == 401:
            fail(f"the tool {tool['name']} answered 401 to a valid token lacking its scope",
                 '403 with error="insufficient_scope" and scope', [ex])
    note(request, f"no tool refused a token for {scopes[0]!r}")
    not_applicable(f"no tool needs more than the scope {scopes[0]!r}")


@spec("RFC8707-2", level="SHOULD")
async def test_malformed_resource_is_invalid_target(live: Live) -> None:
    """A resource that is no absolute URI, or has a fragment, gets invalid_target.

    RFC 8707 2: the value "MUST be an absolute URI ... MUST NOT include a fragment" (the
    client's duty), and a server that "fails to parse the provided value(s) or does not
    consider the resource(s) acceptable ... should reject the request with ...
    invalid_target" (a lowercase should: a warning, never a failure). Refused at the
    authorization endpoint or at the token endpoint: both pass.
    """
    resource = await live.resource()
    if resource is None:
        not_applicable("the target has no protected resource to name (no MCP endpoint)")
    client = await live.client()
    async with live.control("the same flow naming the real resource"):
        await live.tokens(client)
    for how, bad in (("a relative URI", "mcp-relative/resource"),
                     ("a fragment", resource + "#fragment")):
        auth = await live.authorize(client, resource=bad)
        if auth.code is None:
            refused_at_authorize(live, auth, f"resource with {how}",
                                 codes=("invalid_target", "invalid_request"))
            continue
        ex = await live.exchange(client, auth, resource=bad)
        refused(live, ex, f"resource with {how}", codes=("invalid_target",),
                granted=f"a token for a resource with {how}")
