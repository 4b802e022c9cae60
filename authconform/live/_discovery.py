"""Discovery the way MCP clients do it: 401 -> RFC 9728 -> RFC 8414 (or OIDC) metadata.

An MCP endpoint is a URL whose unauthenticated ``initialize`` answered 401 (normally with
a Bearer challenge): a protected-resource metadata document alone names a resource (used as the
RFC 8707 ``resource``), not an MCP server, so MCP rules apply only where the probe says
the target speaks MCP. The default scope follows MCP's scope selection: the challenge's
``scope``, else every scope of the resource metadata's ``scopes_supported``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authconform.live._record import Exchange, LiveFailure
from authconform.live._target import Target, origin

__all__ = ["Discovery", "as_metadata_urls", "discover", "initialize_request", "prm_url_for"]

MCP_PROTOCOL_VERSION = "2025-06-18"
_RM = re.compile(r'resource_metadata\s*=\s*"([^"]*)"|resource_metadata\s*=\s*([^\s,]+)', re.I)
_SCOPE = re.compile(r'(?<![a-z_])scope\s*=\s*"([^"]*)"|(?<![a-z_])scope\s*=\s*([^\s,]+)', re.I)


@dataclass
class Discovery:
    """What discovery found; ``mcp_url`` is None for an authorization server alone."""

    issuer: str
    metadata: dict[str, Any]
    metadata_url: str
    mcp_url: str | None = None
    resource: str | None = None
    prm: dict[str, Any] | None = None
    prm_url: str | None = None
    challenge: Exchange | None = None
    #: where ``issuer`` came from: ``prm`` (authorization_servers) or ``url`` (the user's)
    issuer_source: str = "url"
    #: why there is no MCP endpoint although resource metadata exists (for skip reasons)
    no_mcp_reason: str | None = None

    def endpoint(self, name: str) -> str | None:
        """An endpoint URL from the AS metadata (``token``, ``registration``...)."""
        value = self.metadata.get(f"{name}_endpoint")
        return value if isinstance(value, str) and value else None

    def listed(self, name: str) -> list[str] | None:
        """A ``*_supported`` list of the AS metadata (None when absent or malformed)."""
        value = self.metadata.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        return None

    @property
    def default_scope(self) -> str | None:
        """MCP scope selection: the 401 challenge's ``scope``, else the PRM's scopes."""
        if self.challenge is not None:
            match = _SCOPE.search(self.challenge.header("www-authenticate") or "")
            if match and (match.group(1) or match.group(2)):
                return match.group(1) or match.group(2)
        scopes = (self.prm or {}).get("scopes_supported")
        if isinstance(scopes, list) and scopes and all(isinstance(x, str) for x in scopes):
            return " ".join(scopes)
        return None

    @property
    def scopes(self) -> list[str]:
        """Scopes the deployment declares (resource metadata first, then AS metadata)."""
        for doc in (self.prm or {}, self.metadata):
            value = doc.get("scopes_supported")
            if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
                return list(value)
        return []


def initialize_request(request_id: int = 1) -> dict[str, Any]:
    """A JSON-RPC ``initialize`` request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "authconform-live", "version": "0.1"},
        },
    }


def prm_url_for(resource: str) -> str:
    """RFC 9728 section 3.1: insert the well-known segment between host and path."""
    parts = urlsplit(resource)
    path = parts.path if parts.path != "/" else ""
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


def as_metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 section 3.1 path insertion, then the OpenID Connect spellings."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    base = f"{parts.scheme}://{parts.netloc}"
    urls = [
        f"{base}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/openid-configuration{path}",
    ]
    if path:
        urls.append(f"{base}{path}/.well-known/openid-configuration")
    return urls


async def _json_doc(target: Target, url: str, purpose: str) -> tuple[Exchange, Any]:
    ex = await target.request(
        "GET", url, purpose=purpose, headers={"accept": "application/json"}
    )
    return ex, ex.json_body() if ex.status == 200 else None


async def _mcp_probe(target: Target, url: str) -> Exchange:
    return await target.request(
        "POST",
        url,
        purpose="mcp",
        json_body=initialize_request(),
        headers={"accept": "application/json, text/event-stream",
                 "mcp-protocol-version": MCP_PROTOCOL_VERSION},
    )


def _bearer_challenge(ex: Exchange) -> bool:
    """A 401 to an MCP initialize: an MCP endpoint behind authorization.

    (A 401 without a Bearer challenge is still one: a broken one, which the MCP checks
    then report.)
    """
    return ex.status == 401


async def discover(target: Target) -> Discovery:
    """Discover the deployment from its first URL; a ``LiveFailure`` says why not."""
    url = target.urls[0]
    tried: list[Exchange] = []
    probe = await _mcp_probe(target, url)
    tried.append(probe)
    challenge: Exchange | None = probe if _bearer_challenge(probe) else None
    mcp_url: str | None = url if challenge is not None else None
    prm: dict[str, Any] | None = None
    no_mcp: str | None = None
    if challenge is not None:
        match = _RM.search(challenge.header("www-authenticate") or "")
        prm_url: str | None = (match.group(1) or match.group(2)) if match else prm_url_for(url)
    else:
        prm_url = prm_url_for(url)
    if prm_url is not None:
        ex, body = await _json_doc(target, prm_url, "metadata")
        tried.append(ex)
        if isinstance(body, dict):
            prm = body
        elif mcp_url is not None:
            raise LiveFailure(
                f"protected-resource metadata at {prm_url}: {ex.describe()}"
                f" ({ex.body_kind()})",
                "a JSON object (RFC 9728 section 3)",
                tried,
                spec="RFC9728-3.2",
            )
        else:
            prm_url = None
    issuer = url
    source = "url"
    if prm is not None:
        resource = prm.get("resource")
        if mcp_url is None and isinstance(resource, str) and origin(resource) in target.origins:
            if resource.rstrip("/") == url.rstrip("/"):
                no_mcp = f"{url} answered an MCP initialize with {probe.describe()}"
            else:
                again = await _mcp_probe(target, resource)
                tried.append(again)
                if _bearer_challenge(again):
                    mcp_url, challenge = resource, again
                else:
                    no_mcp = (f"the protected resource {resource} answered an MCP "
                              f"initialize with {again.describe()}, not 401")
        servers = prm.get("authorization_servers")
        if not (isinstance(servers, list) and servers and isinstance(servers[0], str)):
            if mcp_url is not None:
                raise LiveFailure(
                    f"protected-resource metadata without authorization_servers: {sorted(prm)}",
                    "authorization_servers naming at least one issuer (MCP requires it)",
                    tried,
                    spec="RFC9728-2",
                )
        else:
            issuer = servers[0]
            source = "prm"
            target.allow_origin(issuer)
    for meta_url in as_metadata_urls(issuer):
        ex, body = await _json_doc(target, meta_url, "metadata")
        tried.append(ex)
        if isinstance(body, dict):
            target.liveness_url = meta_url
            resource = (prm or {}).get("resource")
            return Discovery(
                issuer=issuer,
                metadata=body,
                metadata_url=meta_url,
                mcp_url=mcp_url,
                resource=(resource if isinstance(resource, str) else mcp_url)
                if mcp_url is not None else None,
                prm=prm,
                prm_url=prm_url,
                challenge=challenge,
                issuer_source=source,
                no_mcp_reason=no_mcp,
            )
    last = tried[-1]
    raise LiveFailure(
        f"no authorization-server metadata for issuer {issuer}: {last.describe()}"
        f" ({last.body_kind() if last.error is None else last.error})",
        "RFC 8414 metadata (JSON object) at " + as_metadata_urls(issuer)[0]
        + " or a 401 with resource_metadata from an MCP endpoint",
        tried,
        spec="RFC8414-3",
    )


def issuer_matches(discovery: Discovery) -> bool:
    """RFC 8414 section 3.3: the metadata's issuer is identical to the one the URL came from.

    Identical strings. The one allowance: an issuer typed by the user (``--server-url``)
    with an empty or ``/`` path names the same metadata URL whether or not it ends in
    ``/`` (RFC 8414 3.1 removes a terminating ``/``), so either spelling the server
    publishes is the one the user meant.
    """
    published = discovery.metadata.get("issuer")
    if not isinstance(published, str):
        return False
    if published == discovery.issuer:
        return True
    if discovery.issuer_source == "url" and urlsplit(discovery.issuer).path in ("", "/"):
        return published.rstrip("/") == discovery.issuer.rstrip("/")
    return False
