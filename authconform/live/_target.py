"""The Target: one deployment (one or more instances) reached with httpx.

Every request goes through ``Target.request``: it never follows redirects, refuses any
origin the user did not name (the only other origin allowed is an authorization server
named by the target's own protected-resource metadata), registers every secret it sees
in the redactor, and records the exchange. Transport failures become ``LiveFailure``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from authconform.live._record import Exchange, LiveFailure, Recorder
from authconform.live._redact import Redactor

__all__ = ["ForbiddenOrigin", "Target", "origin"]

_SECRET_FIELDS = {
    "access_token": "access_token",
    "refresh_token": "refresh_token",
    "id_token": "id_token",
    "code": "code",
    "code_verifier": "code_verifier",
    "client_secret": "client_secret",
    "registration_access_token": "registration_access_token",
    "token": "token",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (ports made explicit, host lowercased)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


class ForbiddenOrigin(httpx.TransportError):
    """Raised by the guard transport for a request to an origin nobody named."""


class _Guard(httpx.AsyncBaseTransport):
    """The one seam every request crosses: origins not allowed never reach the network."""

    def __init__(self, inner: httpx.AsyncBaseTransport, target: Target) -> None:
        self._inner = inner
        self._target = target

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self._target.attempted.append(url)
        if origin(url) not in self._target.origins:
            raise ForbiddenOrigin(f"refused to send a request to {origin(url)}: not a named host")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Target:
    """One deployment: ``urls`` are instances of it (base or MCP endpoint URLs)."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        *,
        timeout: float = 10.0,
        redactor: Redactor | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a target needs at least one URL")
        self.name = name
        self.urls = [u.rstrip("/") if urlsplit(u).path not in ("", "/") else u for u in urls]
        self.origins: set[str] = {origin(u) for u in urls}
        self.timeout = timeout
        self.redactor = redactor or Redactor()
        self.recorder = Recorder()
        self.attempted: list[str] = []
        self.redirect_uris: set[str] = set()
        self.issued: dict[str, str] = {}
        inner = transport or httpx.AsyncHTTPTransport()
        self.client = httpx.AsyncClient(
            transport=_Guard(inner, self),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"user-agent": "authconform-live"},
        )

    @property
    def instances(self) -> int:
        """How many instances the target has."""
        return len(self.urls)

    def allow_origin(self, url: str) -> None:
        """Allow an origin named by the target's own protected-resource metadata."""
        self.origins.add(origin(url))

    def on(self, instance: int, url: str) -> str:
        """``url`` moved to instance ``instance`` (same path), if it is on instance 0."""
        first, other = origin(self.urls[0]), self.urls[instance % len(self.urls)]
        if instance % len(self.urls) == 0 or origin(url) != first:
            return url
        parts = urlsplit(url)
        dest = urlsplit(other)
        return parts._replace(scheme=dest.scheme, netloc=dest.netloc).geturl()

    def location_allowed(self, location: str, base: str) -> bool:
        """True when a redirect target is a named origin or a registered redirect URI."""
        absolute = urljoin(base, location)
        if origin(absolute) in self.origins:
            return True
        bare = absolute.split("#", 1)[0].split("?", 1)[0]
        return bare in self.redirect_uris

    def _learn(self, pairs: Any, *, sent: bool) -> None:
        if not isinstance(pairs, dict):
            return
        for key, value in pairs.items():
            kind = _SECRET_FIELDS.get(key)
            if kind is not None and isinstance(value, str):
                self.redactor.add(value, kind)
                if not sent and kind != "code_verifier":
                    self.issued[value] = kind

    def _learn_request(self, headers: dict[str, str], data: Any, json_body: Any) -> None:
        self._learn(data, sent=True)
        self._learn(json_body, sent=True)
        auth = headers.get("authorization", "")
        if auth.lower().startswith(("bearer ", "basic ")):
            self.redactor.add(auth.split(" ", 1)[1].strip(), "credential")

    def _learn_response(self, ex: Exchange) -> None:
        body = ex.json_body()
        if isinstance(body, dict):
            self._learn(body, sent=False)
        location = ex.header("location")
        if location:
            parts = urlsplit(location)
            for part in (parts.query, parts.fragment):
                self._learn(dict(parse_qsl(part)), sent=False)

    async def request(
        self,
        method: str,
        url: str,
        *,
        purpose: str,
        data: dict[str, str] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        instance: int = 0,
    ) -> Exchange:
        """Send one request and record it; a ``LiveFailure`` when no response came."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if params:
            self._learn(params, sent=True)
        self._learn_request(headers, data, json_body)
        request = self.client.build_request(
            method, url, data=data, json=json_body, headers=headers, params=params
        )
        body = ""
        if data is not None or json_body is not None:
            body = request.content.decode("utf-8", "replace")
        if json_body is not None and "content-type" not in headers:
            headers["content-type"] = "application/json"
        ex = Exchange(
            method=method,
            url=str(request.url),
            purpose=purpose,
            request_headers=dict(headers),
            request_body=body,
            instance=instance,
        )
        self.recorder.add(ex)
        try:
            async with asyncio.timeout(self.timeout * 2):
                response = await self.client.send(request)
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except ForbiddenOrigin as exc:
            ex.error = str(exc)
            raise LiveFailure(
                f"{method} {origin(url)}: {exc}",
                "requests only to the hosts given with --server-url (or named by the "
                "target's protected-resource metadata)",
                [ex],
            ) from None
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            kind = "timeout" if isinstance(exc, (httpx.TimeoutException, TimeoutError)) else ""
            ex.error = f"{type(exc).__name__}{' ' + kind if kind else ''}: {exc}".rstrip(": ")
            raise LiveFailure(
                f"{method} {url}: no response ({ex.error})",
                f"an HTTP response within the {self.timeout:g} s timeout",
                [ex],
            ) from None
        ex.status = response.status_code
        ex.headers = {k.lower(): v for k, v in response.headers.items()}
        ex.text = raw.decode(response.encoding or "utf-8", "replace")
        self._learn_response(ex)
        return ex

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def parse_json_text(text: str) -> Any:
    """JSON or None (helper shared by the SSE parser)."""
    try:
        return json.loads(text)
    except ValueError:
        return None
