"""Lockstep HTTP: N prepared requests released at once over N connections already open.

A race over HTTP proves something only when the requests really overlap at the server:
each request gets its own ``httpx.AsyncClient`` (its own connection pool), every
connection is opened beforehand (a GET of the target's liveness URL on the request's
instance), the requests are built beforehand, and one ``asyncio.Barrier`` releases them
together; what is left between two requests leaving is one socket write each. A race
spreads its requests over the target's instances (``instance`` of each ``Call``), so on a
deployment of several instances they also run in different processes.

Every request is recorded and redacted like the ``Target``'s own (the origin guard
applies); a request that got no response carries its error in the exchange, and the
check reports it. A race cannot be retried in lockstep, so a 429 in it makes the check
``unavailable`` (rate-limited), and ``--authconform-rate`` pacing is honoured by waiting
for the race's N slots before the release (the average rate holds, the burst stays).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from authconform.live._outcome import unavailable
from authconform.live._record import Exchange
from authconform.live._target import _Guard

if TYPE_CHECKING:
    from authconform.live._flows import Live
    from authconform.live._model import AuthResult, Client

__all__ = [
    "Call",
    "Lanes",
    "authorize_call",
    "exchange_call",
    "lanes",
    "lockstep",
    "refresh_call",
    "revoke_call",
    "token_call",
]


@dataclass
class Call:
    """One request of a race, built before the release."""

    method: str
    url: str
    purpose: str
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    instance: int = 0
    #: the client whose tokens a 200 carries (they are revoked at the end of the run)
    client: Client | None = None
    #: seconds to wait after the release (an offset in a sweep of the race window), 0 for
    #: none; kept to tens of microseconds (see ``_pause``)
    delay: float = 0.0


class _Shared(httpx.AsyncBaseTransport):
    """An in-process ASGI transport shared by the lanes: closing a lane leaves it open."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)


class Lanes:
    """Open connections, one per request of a race (see ``lanes``)."""

    def __init__(self, live: Live, instances: list[int]) -> None:
        self.live = live
        self.instances = instances
        target = live.target
        self.clients = [
            httpx.AsyncClient(
                transport=_Guard(
                    _Shared(target.transport)
                    if target.transport is not None
                    else httpx.AsyncHTTPTransport(),
                    target,
                ),
                timeout=httpx.Timeout(target.timeout),
                follow_redirects=False,
                headers={"user-agent": "authconform-live"},
            )
            for _ in instances
        ]

    async def open(self) -> None:
        """Open each lane's connection (a GET of the liveness URL on its instance)."""
        target = self.live.target

        async def warm(client: httpx.AsyncClient, instance: int) -> None:
            try:
                async with asyncio.timeout(target.timeout * 2):
                    response = await client.get(target.on(instance, target.liveness_url))
                    await response.aread()
                    await response.aclose()
            except (httpx.HTTPError, TimeoutError, OSError):
                pass  # the raced request itself reports what went wrong

        await asyncio.gather(
            *(warm(c, i) for c, i in zip(self.clients, self.instances, strict=True))
        )

    async def fire(self, calls: list[Call]) -> list[Exchange]:
        """Release ``calls`` (one per lane) together; their recorded exchanges, in order."""
        if len(calls) != len(self.clients):
            raise ValueError(f"{len(calls)} calls for {len(self.clients)} lanes")
        target = self.live.target
        if target.down is not None:
            unavailable(f"the target stopped answering earlier in this run ({target.down})")
        prepared: list[tuple[httpx.AsyncClient, httpx.Request, Exchange, float]] = []
        for call, client in zip(calls, self.clients, strict=True):
            headers = {k.lower(): v for k, v in call.headers.items()}
            target._learn_request(headers, call.data, None)  # noqa: SLF001
            request = client.build_request(call.method, call.url, data=call.data, headers=headers)
            body = request.content.decode("utf-8", "replace") if call.data is not None else ""
            ex = Exchange(
                method=call.method,
                url=str(request.url),
                purpose=call.purpose,
                request_headers=dict(headers),
                request_body=body,
                instance=call.instance,
            )
            target.recorder.add(ex)
            target.history.append(ex)
            prepared.append((client, request, ex, call.delay))
        for _ in calls:
            await target._paced()  # noqa: SLF001
        barrier = asyncio.Barrier(len(calls))
        await asyncio.gather(*(self._send(barrier, *p) for p in prepared))
        exchanges = [ex for _, _, ex, _ in prepared]
        for ex in exchanges:
            if ex.status is not None:
                target._learn_response(ex)  # noqa: SLF001
        for call, ex in zip(calls, exchanges, strict=True):
            if call.client is not None:
                self.live._remember(call.client, ex)  # noqa: SLF001
        limited = [ex for ex in exchanges if ex.status == 429]
        if limited:
            target.rate_limited.append(f"429 from {limited[0].method} {limited[0].url} (in a race)")
            unavailable(
                f"rate-limited: {len(limited)} of {len(calls)} requests sent at once were "
                "answered 429; a race cannot be retried in lockstep (raise the target's "
                "limit for the test client, or lower --authconform-race-size: "
                "--authconform-rate paces the run, but a race's requests still leave at once)"
            )
        if any(ex.error is not None for ex in exchanges) and not await target.alive():
            target.down = f"{exchanges[0].method} {exchanges[0].url}: no response in a race"
            unavailable(
                f"the target stopped answering ({target.down}; a liveness probe of "
                f"{target.liveness_url} got no response either)"
            )
        return exchanges

    async def _send(
        self,
        barrier: asyncio.Barrier,
        client: httpx.AsyncClient,
        request: httpx.Request,
        ex: Exchange,
        delay: float,
    ) -> None:
        await barrier.wait()
        if delay > 0:
            await _pause(delay)
        timeout = self.live.target.timeout
        try:
            async with asyncio.timeout(timeout * 2):
                response = await client.send(request)
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            kind = "timeout" if isinstance(exc, (httpx.TimeoutException, TimeoutError)) else ""
            ex.error = f"{type(exc).__name__}{' ' + kind if kind else ''}: {exc}".rstrip(": ")
            return
        ex.status = response.status_code
        ex.headers = {k.lower(): v for k, v in response.headers.items()}
        ex.text = raw.decode(response.encoding or "utf-8", "replace")

    async def aclose(self) -> None:
        """Close every lane."""
        for client in self.clients:
            await client.aclose()


async def _pause(delay: float) -> None:
    """Wait ``delay`` seconds to within tens of microseconds, other lanes running meanwhile.

    ``asyncio.sleep`` wakes on the selector's millisecond tick, so offsets below a
    millisecond (the width of a race window: one store round trip) would all collapse
    to 0 or 1 ms: the rest of the wait yields in a loop instead (a few ms at most).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    if delay > 0.002:
        await asyncio.sleep(delay - 0.002)
    while loop.time() < end:
        await asyncio.sleep(0)


@asynccontextmanager
async def lanes(live: Live, instances: list[int]) -> AsyncIterator[Lanes]:
    """Lanes to ``instances`` (one per request), connections open, closed at the end."""
    opened = Lanes(live, instances)
    try:
        await opened.open()
        yield opened
    finally:
        await opened.aclose()


async def lockstep(live: Live, calls: list[Call]) -> list[Exchange]:
    """Open one lane per call, then release every call at once."""
    async with lanes(live, [c.instance for c in calls]) as opened:
        return await opened.fire(calls)


# -- calls of the flows ----------------------------------------------------------------------
async def token_call(
    live: Live, client: Client, data: dict[str, str], *, instance: int = 0
) -> Call:
    """A token request authenticated as ``client`` registered (see ``Live.token_request``)."""
    url = live.target.on(instance, await live.endpoint("token"))
    headers = {"accept": "application/json"}
    data = dict(data)
    live.client_auth(client, data, headers)
    return Call("POST", url, "token", data, headers, instance, client)


async def exchange_call(live: Live, client: Client, auth: AuthResult, *, instance: int = 0) -> Call:
    """The code exchange of ``auth`` (what ``Live.exchange`` sends)."""
    data = {
        "grant_type": "authorization_code",
        "code": auth.code or "",
        "redirect_uri": auth.redirect_uri,
    }
    if auth.verifier:
        data["code_verifier"] = auth.verifier
    resource = await live.resource()
    if resource:
        data["resource"] = resource
    return await token_call(live, client, data, instance=instance)


async def refresh_call(live: Live, client: Client, token: str, *, instance: int = 0) -> Call:
    """A refresh-token grant (what ``Live.refresh`` sends)."""
    data = {"grant_type": "refresh_token", "refresh_token": token}
    resource = await live.resource()
    if resource:
        data["resource"] = resource
    return await token_call(live, client, data, instance=instance)


async def revoke_call(
    live: Live, client: Client, token: str, hint: str | None = None, *, instance: int = 0
) -> Call:
    """An RFC 7009 revocation (what ``Live.revoke`` sends)."""
    url, data, headers = await live.revocation_request(client, token, hint, instance=instance)
    return Call("POST", url, "revocation", data, headers, instance)


async def authorize_call(live: Live, client: Client, *, instance: int = 0, **params: Any) -> Call:
    """The first GET of an authorization request (PKCE S256, a state, the run's scope)."""
    import secrets
    from urllib.parse import urlencode

    from authconform.live._model import pkce_pair

    endpoint = live.target.on(instance, await live.endpoint("authorization"))
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uri,
        "state": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    resource = await live.resource()
    if resource:
        query["resource"] = resource
    scope = await live.scope()
    if scope:
        query["scope"] = scope
    query.update(params)
    url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)
    return Call("GET", url, "authorize", None, {}, instance)
