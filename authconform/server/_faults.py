"""Middleware for failure: store outages become 503, and injected faults and delays.

- ``OutageMiddleware`` (SDK workaround 8, see ``_app``): ``StorageUnavailable`` escaping
  any handler (or inside an exception group) becomes ``503 temporarily_unavailable``
  with ``Retry-After``, never a 500 or a JSON-RPC -32000, if no response has started.
- ``FaultMiddleware``: ``authconform serve --fault ENDPOINT:STATUS:RATE`` and ``--delay
  ENDPOINT:SECONDS:RATE`` (``ServerConfig.faults``/``delays``) for testing clients:
  per endpoint name (``ENDPOINTS``), path or ``*``, drawn from a seeded random source.
"""

from __future__ import annotations

import asyncio
import logging
import random

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authconform.errors import StorageUnavailable
from authconform.server._config import ENDPOINTS, Delay, Fault
from authconform.server._responses import oauth_error

__all__ = ["FaultMiddleware", "OutageMiddleware"]

logger = logging.getLogger("authconform.server")


def _outage_in(exc: BaseException) -> bool:
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_outage_in(e) for e in exc.exceptions)
    return exc.__cause__ is not None and isinstance(exc.__cause__, StorageUnavailable)


class OutageMiddleware:
    """``StorageUnavailable`` anywhere below -> 503 ``temporarily_unavailable`` (workaround 8)."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through; turn a store outage into 503 if no response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not _outage_in(exc) or started:
                raise
            logger.warning(
                "store unavailable while serving %s %s", scope.get("method"), scope.get("path")
            )
            response = oauth_error(
                "temporarily_unavailable",
                "the token store is unavailable; retry later",
                503,
                {"Retry-After": "1"},
            )
            await response(scope, receive, send)


def _endpoint_of(path: str, base: str, resource_path: str) -> str | None:
    if resource_path and (path == resource_path or path.startswith(resource_path + "/")):
        return "mcp"
    for name, suffix in ENDPOINTS.items():
        if name == "mcp":
            continue
        if name.endswith("metadata"):
            if path.startswith(suffix):
                return name
        elif path == base + suffix:
            return name
    return None


def _matches(rule_endpoint: str, name: str | None, path: str) -> bool:
    if rule_endpoint == "*":
        return True
    if rule_endpoint.startswith("/"):
        return path == rule_endpoint
    return rule_endpoint == name


class FaultMiddleware:
    """Injected delays and error statuses per endpoint, for client testing."""

    def __init__(
        self,
        app: ASGIApp,
        faults: tuple[Fault, ...],
        delays: tuple[Delay, ...],
        base: str,
        resource_path: str,
        resource_metadata_url: str,
        seed: int | None,
    ) -> None:
        """Wrap ``app``."""
        self.app = app
        self.faults = faults
        self.delays = delays
        self.base = base
        self.resource_path = resource_path
        self.resource_metadata_url = resource_metadata_url
        self.random = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Maybe sleep, maybe answer with the injected status, else pass through."""
        if scope["type"] != "http" or not (self.faults or self.delays):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        name = _endpoint_of(path, self.base, self.resource_path)
        for delay in self.delays:
            if _matches(delay.endpoint, name, path) and self.random.random() < delay.rate:
                await asyncio.sleep(delay.seconds)
        for fault in self.faults:
            if _matches(fault.endpoint, name, path) and self.random.random() < fault.rate:
                await self._fail(fault.status, name, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _fail(
        self, status: int, name: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        error = {
            503: "temporarily_unavailable",
            401: "invalid_token" if name == "mcp" else "invalid_client",
        }
        code = error.get(status, "server_error" if status >= 500 else "invalid_request")
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        if status == 401 and name == "mcp":
            headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", resource_metadata="{self.resource_metadata_url}"'
            )
        response = oauth_error(
            code, f"injected fault: HTTP {status} (authconform serve --fault)", status, headers
        )
        await response(scope, receive, send)
