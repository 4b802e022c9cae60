"""Discovery: protected-resource metadata (RFC 9728) and AS metadata (RFC 8414)."""


from authconform import markers
from authconform.live import Live, fail, prm_url_for
from authconform.live._discovery import issuer_matches
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC8414-2")
async def test_metadata_has_required_fields(live: Live) -> None:
    """The AS metadata names issuer, authorization and token endpoints and response type code."""
    disc = await live.discovery()
    meta = disc.metadata
    missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint")
               if not isinstance(meta.get(k), str) or not meta.get(k)]
    types = meta.get("response_types_supported")
    if not isinstance(types, list) or "code" not in types:
        missing.append("response_types_supported containing 'code'")
    if missing:
        fail(f"metadata at {disc.metadata_url} lacks {', '.join(missing)}",
             "every REQUIRED member of RFC 8414 section 2")


@spec("RFC8414-3.3")
async def test_metadata_issuer_matches_discovery_url(live: Live) -> None:
    """The metadata's issuer is identical to the issuer its URL was built from."""
    disc = await live.discovery()
    if not issuer_matches(disc):
        fail(f"issuer {disc.metadata.get('issuer')!r} in metadata fetched for {disc.issuer!r}",
             "the identical issuer (RFC 8414 section 3.3)")


@spec("OAUTH21-4.1.1", "MCP-authorization-code-protection")
async def test_metadata_advertises_pkce_s256(live: Live) -> None:
    """code_challenge_methods_supported lists S256."""
    disc = await live.discovery()
    methods = disc.metadata.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        fail(f"code_challenge_methods_supported = {methods!r}", "a list containing 'S256'")


@spec("RFC9728-3.3", "RFC9728-2")
async def test_protected_resource_metadata_names_resource_and_servers(live: Live) -> None:
    """The resource metadata's resource is the MCP endpoint and it names an AS."""
    mcp = await live.mcp_url()
    disc = await live.discovery()
    prm = disc.prm or {}
    if prm.get("resource") != mcp and prm.get("resource") != mcp.rstrip("/"):
        fail(f"resource {prm.get('resource')!r} in {disc.prm_url}",
             f"{mcp!r}, the resource the metadata was fetched for")
    if not prm.get("authorization_servers"):
        fail("no authorization_servers in the protected-resource metadata",
             "at least one authorization server (MCP authorization)")


@spec("RFC9728-5.1", "MCP-authorization-server-location")
async def test_unauthenticated_mcp_request_gets_401_with_resource_metadata(live: Live) -> None:
    """An MCP request without a token gets 401 whose challenge names resource_metadata."""
    mcp = await live.mcp_url()
    ex, _ = await live.mcp(None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    challenge = ex.header("www-authenticate") or ""
    if ex.status != 401 or "resource_metadata" not in challenge:
        fail(f"{ex.describe()} with WWW-Authenticate {challenge or 'missing'!r}",
             f"401 with a Bearer challenge naming resource_metadata (e.g. {prm_url_for(mcp)})",
             [ex])
