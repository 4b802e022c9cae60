"""Discovery: protected-resource metadata (RFC 9728) and AS metadata (RFC 8414)."""

from urllib.parse import urlsplit

from authconform import markers
from authconform.live import Live, fail, prm_url_for
from authconform.live._discovery import issuer_matches
from authconform.live._pytest import note
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


_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_URL_MEMBERS = ("issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint",
                "revocation_endpoint", "introspection_endpoint", "jwks_uri",
                "pushed_authorization_request_endpoint", "device_authorization_endpoint",
                "userinfo_endpoint", "end_session_endpoint")
_DOC_URL_MEMBERS = ("service_documentation", "op_policy_uri", "op_tos_uri")
_LIST_MEMBERS = ("scopes_supported", "response_types_supported", "response_modes_supported",
                 "grant_types_supported", "token_endpoint_auth_methods_supported",
                 "token_endpoint_auth_signing_alg_values_supported", "ui_locales_supported",
                 "revocation_endpoint_auth_methods_supported",
                 "revocation_endpoint_auth_signing_alg_values_supported",
                 "introspection_endpoint_auth_methods_supported",
                 "introspection_endpoint_auth_signing_alg_values_supported",
                 "code_challenge_methods_supported")
_BOOL_MEMBERS = ("authorization_response_iss_parameter_supported",
                 "client_id_metadata_document_supported",
                 "require_pushed_authorization_requests",
                 "tls_client_certificate_bound_access_tokens")


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK or host.startswith("127.")


@spec("OAUTH21-1.5", "RFC8414-2", "RFC9728-2")
async def test_metadata_urls_use_https_off_loopback(live: Live, request) -> None:
    """Every URL the metadata publishes uses https, unless it is on a loopback host.

    OAuth 2.1 1.5: "All the OAuth protocol URLs (URLs exposed by the AS, RS and Client)
    MUST use the https scheme except for loopback interface redirect URIs"; RFC 8414 2:
    the issuer "uses the https scheme". A target on loopback (a local test deployment)
    is not judged, which is noted.
    """
    disc = await live.discovery()
    urls = {k: v for k, v in disc.metadata.items() if k in _URL_MEMBERS and isinstance(v, str)}
    prm = disc.prm or {}
    if isinstance(prm.get("resource"), str):
        urls["resource (RFC 9728)"] = prm["resource"]
    for i, server in enumerate(prm.get("authorization_servers") or []):
        if isinstance(server, str):
            urls[f"authorization_servers[{i}] (RFC 9728)"] = server
    plain = {k: v for k, v in urls.items() if urlsplit(v).scheme != "https" and not _loopback(v)}
    if plain:
        fail("plain-http URLs in the metadata: "
             + ", ".join(f"{k} {v}" for k, v in sorted(plain.items())),
             "https for every published URL off loopback")
    local = [k for k, v in urls.items() if urlsplit(v).scheme != "https"]
    if local:
        note(request, f"{len(local)} metadata URLs use http on a loopback host (not judged)")


@spec("RFC8414-2", "RFC9207-3")
async def test_metadata_members_have_their_types(live: Live) -> None:
    """The AS metadata's members have the types RFC 8414 (and RFC 9207) give them.

    URLs are absolute strings (the issuer without query or fragment), ``*_supported``
    lists are JSON arrays of strings, flags are booleans.
    """
    meta = (await live.discovery()).metadata
    wrong = []
    for key in _URL_MEMBERS + _DOC_URL_MEMBERS:
        if key in meta:
            value = meta[key]
            parts = urlsplit(value) if isinstance(value, str) else None
            if parts is None or not parts.scheme or not parts.netloc:
                wrong.append(f"{key}={value!r} (an absolute URL)")
    issuer = meta.get("issuer")
    if isinstance(issuer, str) and (urlsplit(issuer).query or urlsplit(issuer).fragment
                                    or "#" in issuer):
        wrong.append(f"issuer={issuer!r} (no query or fragment)")
    for key in _LIST_MEMBERS:
        if key in meta:
            value = meta[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                wrong.append(f"{key}={value!r} (a JSON array of strings)")
    for key in _BOOL_MEMBERS:
        if key in meta and not isinstance(meta[key], bool):
            wrong.append(f"{key}={meta[key]!r} (a JSON boolean)")
    if wrong:
        fail("metadata members of the wrong type: " + "; ".join(wrong),
             "the member types of RFC 8414 section 2")
