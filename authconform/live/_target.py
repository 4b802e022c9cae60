"""The Target: one deployment (one or more instances) reached with httpx.

Every request goes through ``Target.request``: it never follows redirects, refuses any
origin the user did not name (the only other origin allowed is an authorization server
named by the target's own protected-resource metadata), registers every secret it sees
in the redactor, and records the exchange (for the check, and in the run's history).

A target is not a load test: requests are paced (``rate`` per second, 0: unpaced) and a
429 is answered by waiting its ``Retry-After`` (or ``RateLimit-Reset``) when that fits in
``max_wait``; a target still limiting makes the check ``unavailable: rate-limited`` with
the advice, never a spec breach.

A request that gets no response fails the check, unless the target has stopped answering
altogether (a liveness probe of ``liveness_url`` gets nothing either): then the target is
*down*, and this check and every later one are ``unavailable`` with that one cause.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from typing import Any
from urllib.parse import unquote_plus, urljoin, urlsplit

import httpx

from authconform.live._outcome import unavailable
from authconform.live._record import Exchange, LiveFailure, Recorder
from authconform.live._redact import Redactor

__all__ = ["ForbiddenOrigin", "Target", "origin", "retry_after"]

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
#: form fields a driver may type into a login page: their values are masked too
_TYPED_SECRETS = ("password", "passwd", "pin", "otp", "totp", "secret")
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: most 429 retries of one request (each one waits its Retry-After)
_RETRIES_429 = 3


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (ports made explicit, host lowercased)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds a 429 asks the client to wait (``Retry-After``, else ``RateLimit-Reset``)."""
    value = (headers.get("retry-after") or "").strip()
    current = time.time() if now is None else now
    if value:
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when - current)
    reset = (headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset") or "").strip()
    if reset.isdigit():
        seconds = float(reset)
        return max(0.0, seconds - current) if seconds > 10**9 else seconds
    return None


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
        rate: float = 0.0,
        max_wait: float = 5.0,
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
        #: every exchange of the run, in order (the run-wide response checks read it)
        self.history: list[Exchange] = []
        self.rate = rate
        self.max_wait = max_wait
        #: one line per 429 the target answered
        self.rate_limited: list[str] = []
        #: why the target is down (set once it stopped answering), else None
        self.down: str | None = None
        #: what the liveness probe GETs (discovery sets the metadata URL)
        self.liveness_url: str = self.urls[0]
        self._pace = asyncio.Lock()
        self._next_at = 0.0
        #: the transport given (an in-process ASGI app), None for sockets
        self.transport = transport
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
        return bare in self.redirect_uris or _loopback_variant(bare, self.redirect_uris)

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
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str) and any(w in key.lower() for w in _TYPED_SECRETS):
                    self.redactor.add(value, "typed-secret")
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
            # every key=value piece, however the URL is (mis)shaped ("#frag?code=...")
            pairs = {}
            for piece in re.split(r"[?#&;]", location):
                key, sep, value = piece.partition("=")
                if sep:
                    pairs[unquote_plus(key)] = unquote_plus(value)
            self._learn(pairs, sent=False)

    async def _paced(self) -> None:
        if self.rate <= 0:
            return
        async with self._pace:
            now = time.monotonic()
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            self._next_at = max(now, self._next_at) + 1.0 / self.rate

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
        content: bytes | None = None,
        retry_429: bool = True,
    ) -> Exchange:
        """Send one request and record it; a ``LiveFailure`` when no response came.

        A 429 is retried after its ``Retry-After`` while the waits fit in ``max_wait``
        (``retry_429=False`` returns it, for the check that wants to see limiting); a
        target still limiting makes the check ``unavailable``. When the target is down
        the check is ``unavailable`` before anything is sent.
        """
        if self.down is not None:
            unavailable(f"the target stopped answering earlier in this run ({self.down})")
        waited = 0.0
        for attempt in range(_RETRIES_429 + 1):
            ex = await self._send(
                method, url, purpose=purpose, data=data, json_body=json_body,
                headers=headers, params=params, instance=instance, content=content,
            )
            if ex.status != 429 or not retry_429:
                return ex
            wait = retry_after(ex.headers)
            line = f"429 from {ex.method} {urlsplit(ex.url).path or '/'}" + (
                f" (Retry-After {wait:g} s)" if wait is not None else ""
            )
            self.rate_limited.append(line)
            wait = 1.0 if wait is None else wait
            if attempt == _RETRIES_429 or waited + wait > self.max_wait:
                unavailable(
                    f"rate-limited ({line}): the target limits this client, which is no "
                    "spec breach. Pace the run with --authconform-rate (requests per "
                    "second), raise --authconform-max-wait to wait out Retry-After, raise "
                    "the target's limit for the test client, or select fewer checks (-k)"
                )
            waited += wait
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        url: str,
        *,
        purpose: str,
        data: dict[str, str] | None,
        json_body: Any,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        instance: int,
        content: bytes | None,
    ) -> Exchange:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if params:
            self._learn(params, sent=True)
        self._learn_request(headers, data, json_body)
        request = self.client.build_request(
            method, url, data=data, json=json_body, headers=headers, params=params,
            content=content,
        )
        body = ""
        if data is not None or json_body is not None or content is not None:
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
        self.history.append(ex)
        await self._paced()
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
            if not await self.alive():
                self.down = f"{method} {url}: {ex.error}"
                unavailable(
                    f"the target stopped answering ({self.down}; a liveness probe of "
                    f"{self.liveness_url} got no response either)"
                )
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

    async def alive(self) -> bool:
        """Whether the target answers anything at all (a GET of ``liveness_url``)."""
        budget = min(self.timeout, 5.0)
        try:
            async with asyncio.timeout(budget * 2):
                response = await self.client.get(self.liveness_url, timeout=budget)
                await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def _loopback_variant(uri: str, registered: set[str]) -> bool:
    """True for a loopback-IP URI equal to a registered one but for its port (RFC 8252 7.3)."""
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1"):
        return False
    for other in registered:
        o = urlsplit(other)
        if (o.scheme, o.hostname, o.path, o.query) == (
            parts.scheme, parts.hostname, parts.path, parts.query
        ):
            return True
    return False


def parse_json_text(text: str) -> Any:
    """JSON or None (helper shared by the SSE parser)."""
    try:
        return json.loads(text)
    except ValueError:
        return None
