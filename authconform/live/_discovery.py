"""Discovery the way MCP clients do it: 401 -> RFC 9728 -> RFC 8414 (or OIDC) metadata."""

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

    def endpoint(self, name: str) -> str | None:
        """An endpoint URL from the AS metadata (``token``, ``registration``...)."""
        value = self.metadata.get(f"{name}_endpoint")
        return value if isinstance(value, str) and value else None


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


def _same_issuer(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        return u[:-1] if urlsplit(u).path == "/" else u

    return norm(a) == norm(b)


async def _json_doc(target: Target, url: str, purpose: str) -> tuple[Exchange, Any]:
    ex = await target.request(
        "GET", url, purpose=purpose, headers={"accept": "application/json"}
    )
    return ex, ex.json_body() if ex.status == 200 else None


async def discover(target: Target) -> Discovery:
    """Discover the deployment from its first URL; a ``LiveFailure`` says why not."""
    url = target.urls[0]
    tried: list[Exchange] = []
    probe = await target.request(
        "POST",
        url,
        purpose="mcp",
        json_body=initialize_request(),
        headers={"accept": "application/json, text/event-stream"},
    )
    tried.append(probe)
    mcp_url: str | None = None
    prm_url: str | None = None
    prm: dict[str, Any] | None = None
    if probe.status == 401:
        mcp_url = url
        match = _RM.search(probe.header("www-authenticate") or "")
        prm_url = (match.group(1) or match.group(2)) if match else prm_url_for(url)
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
    if prm is not None:
        if mcp_url is None and isinstance(prm.get("resource"), str):
            if origin(prm["resource"]) in target.origins:
                mcp_url = prm["resource"]
        servers = prm.get("authorization_servers")
        if not (isinstance(servers, list) and servers and isinstance(servers[0], str)):
            raise LiveFailure(
                f"protected-resource metadata without authorization_servers: {sorted(prm)}",
                "authorization_servers naming at least one issuer (MCP requires it)",
                tried,
                spec="RFC9728-2",
            )
        issuer = servers[0]
        target.allow_origin(issuer)
    for meta_url in as_metadata_urls(issuer):
        ex, body = await _json_doc(target, meta_url, "metadata")
        tried.append(ex)
        if isinstance(body, dict):
            return Discovery(
                issuer=issuer,
                metadata=body,
                metadata_url=meta_url,
                mcp_url=mcp_url,
                resource=(prm or {}).get("resource") or mcp_url,
                prm=prm,
                prm_url=prm_url,
                challenge=probe if probe.status == 401 else None,
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
    """RFC 8414 section 3.3: the metadata's issuer is the one the URL was built from."""
    return _same_issuer(str(discovery.metadata.get("issuer", "")), discovery.issuer)
