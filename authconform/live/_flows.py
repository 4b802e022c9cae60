"""OAuth and MCP flows over a Target: registration, authorization drivers, PKCE, tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from authconform.live._discovery import Discovery, discover, initialize_request
from authconform.live._drivers import BUILTIN_DRIVERS, load_driver
from authconform.live._record import Exchange, LiveFailure
from authconform.live._target import Target, origin

__all__ = [
    "BUILTIN_DRIVERS",
    "AuthResult",
    "AuthorizationRequest",
    "Client",
    "Live",
    "LiveConfig",
    "McpOutcome",
    "Tokens",
    "load_driver",
    "pkce_pair",
]

_APPROVE = ("approve", "allow", "accept", "consent", "authorize", "authorise", "yes", "grant")


def pkce_pair(method: str = "S256") -> tuple[str, str]:
    """A fresh ``(verifier, challenge)``."""
    verifier = secrets.token_urlsafe(48)
    if method == "plain":
        return verifier, verifier
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class LiveConfig:
    """Settings of the live run (from the option table)."""

    driver: str = "auto"
    client_id: str | None = None
    client_secret: str | None = None
    redirect_uri: str | None = None
    scope: str | None = None
    max_wait: float = 5.0
    flows: int = 20
    server_log: tuple[str, ...] = ()
    client_auth_method: str = "client_secret_post"


@dataclass
class Client:
    """A registered (or pre-registered) client."""

    client_id: str
    redirect_uri: str
    secret: str | None = None
    auth_method: str = "none"
    registration: dict[str, Any] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        """True for a public client (no secret)."""
        return self.auth_method == "none"


@dataclass
class AuthResult:
    """What an authorization request ended in."""

    exchanges: list[Exchange]
    verifier: str | None
    state: str
    redirect_uri: str
    location: str | None = None

    @property
    def last(self) -> Exchange | None:
        """The last exchange (None for an external driver)."""
        return self.exchanges[-1] if self.exchanges else None

    def params(self) -> dict[str, str]:
        """Query and fragment parameters of the final redirect."""
        if self.location is None:
            return {}
        parts = urlsplit(self.location)
        return dict(parse_qsl(parts.fragment)) | dict(parse_qsl(parts.query))

    @property
    def code(self) -> str | None:
        """The authorization code, if one was issued."""
        return self.params().get("code")

    @property
    def error(self) -> str | None:
        """The ``error`` parameter of the redirect, if any."""
        return self.params().get("error")

    def redirected_to(self, uri: str) -> bool:
        """True when the final redirect goes to ``uri`` (ignoring query and fragment)."""
        if self.location is None:
            return False
        return self.location.split("#", 1)[0].split("?", 1)[0] == uri

    def describe(self) -> str:
        """A one-line summary with secrets left to the redactor."""
        if self.location is not None:
            p = self.params()
            what = "a code" if "code" in p else f"error={p.get('error')!r}" if p else "no code"
            return f"a redirect to {self.location.split('?', 1)[0]} with {what}"
        if self.last is not None:
            return f"{self.last.describe()} ({self.last.body_kind()})"
        return "no response"


@dataclass
class Tokens:
    """A successful token response."""

    access_token: str
    refresh_token: str | None
    expires_in: float | None
    body: dict[str, Any]
    exchange: Exchange


@dataclass
class McpOutcome:
    """An MCP session: the exchanges and the tool result."""

    exchanges: list[Exchange]
    tool: str | None
    result: Any


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"),
                               "fields": [], "buttons": []})
        elif self.forms and tag in ("input", "button"):
            kind = a.get("type", "submit" if tag == "button" else "text").lower()
            if not a.get("name"):
                return
            if kind == "submit":
                self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))
            elif kind not in ("checkbox", "radio") or "checked" in a:
                self.forms[-1]["fields"].append((a["name"], a.get("value", "")))


@dataclass
class AuthorizationRequest:
    """What a ``module:callable`` authorization driver gets (its one argument).

    ``url`` is the complete authorization request (PKCE S256, state, resource) on the
    instance under test; ``redirect_uri`` is where the flow must end. The driver does
    whatever the server needs (log in, submit a consent form, run a browser) and returns
    the final redirect URL to ``redirect_uri`` (carrying ``code`` or ``error``), or None
    when the server answered with an error page or never redirected. A coroutine
    function is awaited; a plain function runs in a worker thread (a blocking browser
    script does not stall the harness).

    ``fetch`` (async) and ``fetch_blocking`` (from a plain function's thread) send a
    request through the harness's own client: never following redirects, only to the
    named hosts, secrets redacted, and recorded as part of the check's transcript.
    """

    url: str
    redirect_uri: str
    state: str
    client_id: str
    instance: int
    target: Any = field(repr=False)
    exchanges: list[Exchange] = field(default_factory=list, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def fetch(
        self, method: str, url: str, *, data: dict[str, str] | None = None
    ) -> Exchange:
        """One request (relative URLs resolve against ``self.url``); the recorded exchange."""
        ex = await self.target.request(
            method.upper(), urljoin(self.url, url), purpose="authorize", data=data,
            instance=self.instance,
        )
        self.exchanges.append(ex)
        return ex  # type: ignore[no-any-return]

    def fetch_blocking(
        self, method: str, url: str, *, data: dict[str, str] | None = None
    ) -> Exchange:
        """``fetch`` for a plain (threaded) driver; bounded by twice the harness timeout."""
        if self.loop is None:
            raise RuntimeError("fetch_blocking is for plain-function drivers (run in a thread)")
        future = asyncio.run_coroutine_threadsafe(self.fetch(method, url, data=data), self.loop)
        return future.result(timeout=self.target.timeout * 2 + 1)


class Live:
    """One live target under test, with its discovery, clients and created tokens."""

    def __init__(self, target: Target, config: LiveConfig) -> None:
        self.target = target
        self.config = config
        self._discovery: Discovery | None = None
        self._discovery_failure: LiveFailure | None = None
        self._clients: dict[str, Client] = {}
        self._preregistered: Client | None = None
        self.created: list[tuple[Client, str, str]] = []
        self.issued_to: Counter[str] = Counter()  # client_id -> token responses (200)
        self.registered = 0  # clients registered dynamically by this run
        self.registrations: list[Client] = []
        self.log_source: Callable[[], str] | None = None
        port = 40000 + secrets.randbelow(20000)
        self.default_redirect = config.redirect_uri or f"http://127.0.0.1:{port}/callback"

    # -- discovery -------------------------------------------------------------------------
    async def discovery(self) -> Discovery:
        """Discovery, done once; every later call re-raises its failure."""
        if self._discovery is not None:
            return self._discovery
        if self._discovery_failure is None:
            try:
                self._discovery = await discover(self.target)
                return self._discovery
            except LiveFailure as exc:
                self._discovery_failure = exc
        failure = self._discovery_failure
        assert failure is not None
        raise LiveFailure(
            "discovery failed: " + failure.observed, failure.expected, failure.exchanges,
            spec=failure.spec,
        )

    async def endpoint(self, name: str) -> str:
        """An advertised endpoint, or a ``not-advertised`` skip."""
        import pytest

        url = (await self.discovery()).endpoint(name)
        if url is None:
            pytest.skip(
                f"not-advertised: the authorization server metadata has no {name}_endpoint"
            )
        return url

    async def mcp_url(self) -> str:
        """The MCP endpoint, or a ``not-advertised`` skip."""
        import pytest

        disc = await self.discovery()
        if disc.mcp_url is None:
            pytest.skip(
                "not-advertised: the target has no MCP endpoint (authorization server only)"
            )
        return disc.mcp_url

    async def resource(self) -> str | None:
        """The resource indicator to request (RFC 8707), when there is a resource server."""
        return (await self.discovery()).resource

    # -- clients ---------------------------------------------------------------------------
    async def register(
        self, metadata: dict[str, Any], *, instance: int = 0
    ) -> Exchange:
        """POST client metadata to the registration endpoint (no checks)."""
        url = self.target.on(instance, await self.endpoint("registration"))
        ex = await self.target.request(
            "POST", url, purpose="registration", json_body=metadata, instance=instance
        )
        return ex

    def client_metadata(
        self,
        *,
        confidential: bool = False,
        redirect_uri: str | None = None,
        auth_method: str = "client_secret_post",
    ) -> dict[str, Any]:
        """Metadata of a client this harness registers."""
        meta: dict[str, Any] = {
            "redirect_uris": [redirect_uri or self.default_redirect],
            "token_endpoint_auth_method": auth_method if confidential else "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "authconform live check",
        }
        if self.config.scope:
            meta["scope"] = self.config.scope
        return meta

    async def new_client(
        self,
        *,
        confidential: bool = False,
        instance: int = 0,
        auth_method: str = "client_secret_post",
    ) -> Client:
        """Register a fresh client (RFC 7591); a failure if the server refuses."""
        meta = self.client_metadata(confidential=confidential, auth_method=auth_method)
        self.target.redirect_uris.add(meta["redirect_uris"][0])
        ex = await self.register(meta, instance=instance)
        if ex.status not in (200, 201):
            raise LiveFailure(
                f"registration answered {ex.describe()} ({ex.body_kind()})",
                "201 with client information (RFC 7591 section 3.2.1)",
                [ex],
                spec="RFC7591-3.2.1",
            )
        body = ex.json_object("a JSON client information response (RFC 7591 section 3.2.1)")
        if not isinstance(body.get("client_id"), str):
            raise LiveFailure(
                "registration response without a string client_id",
                "client_id in the client information response",
                [ex],
                spec="RFC7591-3.2.1",
            )
        secret = body.get("client_secret")
        method = str(body.get("token_endpoint_auth_method") or meta["token_endpoint_auth_method"])
        if isinstance(secret, str):
            self.target.redactor.add_basic(body["client_id"], secret)
        client = Client(
            client_id=body["client_id"],
            redirect_uri=meta["redirect_uris"][0],
            secret=secret if isinstance(secret, str) else None,
            auth_method=method if (secret or method == "none") else "none",
            registration=body,
        )
        self.registrations.append(client)
        self.registered += 1
        return client

    def preregistered(self) -> Client | None:
        """The client given with ``--authconform-client-id`` (None without one)."""
        cfg = self.config
        if not cfg.client_id:
            return None
        if self._preregistered is None:
            client = Client(
                client_id=cfg.client_id,
                redirect_uri=cfg.redirect_uri or self.default_redirect,
                secret=cfg.client_secret or None,
                auth_method=cfg.client_auth_method if cfg.client_secret else "none",
            )
            self.target.redirect_uris.add(client.redirect_uri)
            if client.secret:
                self.target.redactor.add_basic(client.client_id, client.secret)
            self._preregistered = client
        return self._preregistered

    async def client(self, *, confidential: bool | None = None) -> Client:
        """The shared client of this run for flows.

        ``confidential=None``: the pre-registered client (``--authconform-client-id``) if
        given, else one public client registered once. ``True``/``False``: a confidential
        or public client: the pre-registered one when it is of that type, else one
        registered dynamically (a ``not-advertised`` skip without a registration endpoint).
        """
        key = {None: "main", True: "confidential", False: "public"}[confidential]
        if key in self._clients:
            return self._clients[key]
        pre = self.preregistered()
        if pre is not None and (confidential is None or pre.public != confidential):
            client = pre
        elif confidential:
            client = await self.new_client(
                confidential=True, auth_method=await self._secret_method()
            )
        else:
            client = await self.new_client()
        self._clients[key] = client
        return client

    async def _secret_method(self) -> str:
        """A secret-based token endpoint auth method the server advertises (post first)."""
        import pytest

        meta = (await self.discovery()).metadata
        methods = meta.get("token_endpoint_auth_methods_supported")
        if not isinstance(methods, list):
            return "client_secret_basic"  # RFC 8414 section 2: the default
        for method in ("client_secret_post", "client_secret_basic"):
            if method in methods:
                return method
        pytest.skip(
            "not-advertised: token_endpoint_auth_methods_supported lists neither "
            f"client_secret_post nor client_secret_basic ({methods!r})"
        )

    def _client_auth(
        self, client: Client, data: dict[str, str], headers: dict[str, str]
    ) -> None:
        if client.auth_method == "client_secret_basic" and client.secret:
            raw = f"{client.client_id}:{client.secret}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            data["client_id"] = client.client_id
            if client.secret:
                data["client_secret"] = client.secret

    # -- authorization ---------------------------------------------------------------------
    async def authorize(
        self,
        client: Client,
        *,
        method: str | None = "S256",
        redirect_uri: str | None = None,
        state: str | None = None,
        response_type: str = "code",
        client_id: str | None = None,
        resource: str | None | bool = True,
        instance: int = 0,
        extra: dict[str, str] | None = None,
    ) -> AuthResult:
        """Run an authorization request through the configured driver."""
        endpoint = self.target.on(instance, await self.endpoint("authorization"))
        redirect = redirect_uri or client.redirect_uri
        state = state if state is not None else secrets.token_urlsafe(16)
        verifier: str | None = None
        params = {
            "response_type": response_type,
            "client_id": client_id or client.client_id,
            "redirect_uri": redirect,
            "state": state,
        }
        if method is not None:
            verifier, challenge = pkce_pair(method)
            params["code_challenge"] = challenge
            params["code_challenge_method"] = method
        res = await self.resource() if resource is True else resource
        if isinstance(res, str):
            params["resource"] = res
        if self.config.scope:
            params["scope"] = self.config.scope
        params.update(extra or {})
        result = AuthResult([], verifier, state, redirect)
        url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
        driver = self.config.driver
        if driver not in BUILTIN_DRIVERS:
            return await self._external(driver, result, url, client_id or client.client_id,
                                        instance)
        ex = await self.target.request("GET", url, purpose="authorize", instance=instance)
        result.exchanges.append(ex)
        for _ in range(6):
            if ex.status is not None and 300 <= ex.status < 400 and ex.header("location"):
                location = urljoin(ex.url, ex.header("location") or "")
                bare = location.split("#", 1)[0].split("?", 1)[0]
                if (
                    origin(location) in self.target.origins
                    and bare != redirect
                    and bare not in self.target.redirect_uris
                ):
                    ex = await self.target.request(
                        "GET", location, purpose="authorize", instance=instance
                    )
                    result.exchanges.append(ex)
                    continue
                result.location = location
                return result
            if ex.status == 200 and "html" in ex.content_type and driver in ("auto", "form"):
                parser = _Forms()
                parser.feed(ex.text)
                if not parser.forms:
                    return result
                form = next((f for f in parser.forms if f["method"].lower() == "post"),
                            parser.forms[0])
                data = dict(form["fields"])
                buttons = form["buttons"]
                chosen = next((b for b in buttons if any(w in (b[0] + b[1]).lower()
                                                         for w in _APPROVE)), None)
                if chosen is None and buttons:
                    chosen = buttons[0]
                if chosen is not None:
                    data[chosen[0]] = chosen[1]
                action = urljoin(ex.url, form["action"] or ex.url)
                if form["method"].lower() == "post":
                    ex = await self.target.request("POST", action, purpose="authorize",
                                                   data=data, instance=instance)
                else:
                    ex = await self.target.request("GET", action, purpose="authorize",
                                                   params=data, instance=instance)
                result.exchanges.append(ex)
                driver = "redirect"
                continue
            return result
        return result

    async def _external(
        self, driver: str, result: AuthResult, url: str, client_id: str, instance: int
    ) -> AuthResult:
        """Run a ``module:callable`` driver (see ``AuthorizationRequest``)."""
        try:
            fn = load_driver(driver)
        except ValueError as exc:
            raise LiveFailure(
                f"authorization driver {driver}: {exc}",
                "an importable package.module:callable (--authconform-driver)",
                [],
            ) from None
        request = AuthorizationRequest(
            url=url, redirect_uri=result.redirect_uri, state=result.state,
            client_id=client_id, instance=instance, target=self.target,
            exchanges=result.exchanges,
        )
        try:
            if inspect.iscoroutinefunction(fn):
                final = await fn(request)
            else:
                request.loop = asyncio.get_running_loop()
                async with asyncio.timeout(self.target.timeout * 6):
                    final = await asyncio.to_thread(fn, request)
                if inspect.isawaitable(final):
                    final = await final
        except LiveFailure:
            raise
        except Exception as exc:  # a user's driver: report it, never crash the harness
            kind = "timed out" if isinstance(exc, TimeoutError) else "raised"
            raise LiveFailure(
                f"authorization driver {driver} {kind}: {type(exc).__name__}: {exc}",
                "the final redirect URL (or None for an error page) from the driver",
                result.exchanges,
            ) from None
        if final is not None and not isinstance(final, str):
            raise LiveFailure(
                f"authorization driver {driver} returned {type(final).__name__}",
                "the final redirect URL as a str, or None",
                result.exchanges,
            )
        result.location = urljoin(url, final) if final else None
        if result.location:
            self.target._learn_response(
                Exchange("GET", url, "authorize", headers={"location": result.location})
            )
        return result

    # -- tokens ----------------------------------------------------------------------------
    async def token_request(
        self, client: Client, data: dict[str, str], *, instance: int = 0, auth: bool = True
    ) -> Exchange:
        """POST to the token endpoint with client authentication."""
        url = self.target.on(instance, await self.endpoint("token"))
        headers: dict[str, str] = {"accept": "application/json"}
        data = dict(data)
        if auth:
            self._client_auth(client, data, headers)
        ex = await self.target.request(
            "POST", url, purpose="token", data=data, headers=headers, instance=instance
        )
        self._remember(client, ex)
        return ex

    def _remember(self, client: Client, ex: Exchange) -> None:
        if ex.status != 200:
            return
        body = ex.json_body()
        if isinstance(body, dict):
            if isinstance(body.get("access_token"), str):
                self.issued_to[client.client_id] += 1
            for kind in ("refresh_token", "access_token"):
                if isinstance(body.get(kind), str):
                    self.created.append((client, body[kind], kind))

    async def exchange(
        self,
        client: Client,
        auth: AuthResult,
        *,
        code: str | None = None,
        verifier: str | None | bool = True,
        redirect_uri: str | None = None,
        instance: int = 0,
    ) -> Exchange:
        """Exchange the code of ``auth`` (parameters overridable for negative checks)."""
        data = {
            "grant_type": "authorization_code",
            "code": code or auth.code or "",
            "redirect_uri": redirect_uri or auth.redirect_uri,
        }
        v = auth.verifier if verifier is True else verifier
        if isinstance(v, str):
            data["code_verifier"] = v
        res = await self.resource()
        if res:
            data["resource"] = res
        return await self.token_request(client, data, instance=instance)

    def tokens_of(self, ex: Exchange, what: str) -> Tokens:
        """The tokens of a successful response, or a failure saying what came instead."""
        if ex.status != 200:
            raise LiveFailure(
                f"{what}: {ex.describe()} {ex.text[:200]!r}",
                "200 with an access token (RFC 6749 section 5.1)",
                [ex],
                spec="RFC6749-5.1",
            )
        body = ex.json_object("a JSON token response (RFC 6749 section 5.1)")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise LiveFailure(
                f"{what}: token response without access_token (members {sorted(body)})",
                "access_token and token_type (RFC 6749 section 5.1)",
                [ex],
                spec="RFC6749-5.1",
            )
        refresh = body.get("refresh_token")
        expires = body.get("expires_in")
        return Tokens(
            access_token=token,
            refresh_token=refresh if isinstance(refresh, str) else None,
            expires_in=float(expires) if isinstance(expires, (int, float)) else None,
            body=body,
            exchange=ex,
        )

    async def code_for(self, client: Client, *, instance: int = 0, **kw: Any) -> AuthResult:
        """Authorize and insist on a code."""
        auth = await self.authorize(client, instance=instance, **kw)
        if auth.code is None:
            raise LiveFailure(
                f"authorization ended in {auth.describe()}",
                f"a redirect to {auth.redirect_uri} carrying a code (RFC 6749 section 4.1.2)",
                auth.exchanges,
                spec="RFC6749-4.1.2",
            )
        return auth

    async def tokens(
        self, client: Client, *, authorize_on: int = 0, token_on: int = 0
    ) -> tuple[AuthResult, Tokens]:
        """A full authorization-code flow with PKCE S256."""
        auth = await self.code_for(client, instance=authorize_on)
        ex = await self.exchange(client, auth, instance=token_on)
        return auth, self.tokens_of(ex, "code exchange")

    async def refresh(self, client: Client, refresh_token: str, *, instance: int = 0) -> Exchange:
        """A refresh-token grant."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        res = await self.resource()
        if res:
            data["resource"] = res
        return await self.token_request(client, data, instance=instance)

    async def revoke(
        self, client: Client, token: str, hint: str | None = None, *, instance: int = 0
    ) -> Exchange:
        """RFC 7009 revocation."""
        url = self.target.on(instance, await self.endpoint("revocation"))
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        headers: dict[str, str] = {}
        self._client_auth(client, data, headers)
        return await self.target.request(
            "POST", url, purpose="revocation", data=data, headers=headers, instance=instance
        )

    # -- MCP -------------------------------------------------------------------------------
    async def mcp(
        self,
        token: str | None,
        message: dict[str, Any],
        *,
        session: str | None = None,
        instance: int = 0,
    ) -> tuple[Exchange, Any]:
        """POST one JSON-RPC message; the parsed reply (JSON or SSE), or None."""
        url = self.target.on(instance, await self.mcp_url())
        headers = {"accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-06-18"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if session:
            headers["mcp-session-id"] = session
        ex = await self.target.request(
            "POST", url, purpose="mcp", json_body=message, headers=headers, instance=instance
        )
        return ex, _reply(ex, message.get("id"))

    async def mcp_session(self, token: str, *, instance: int = 0) -> McpOutcome:
        """initialize, notifications/initialized, tools/list and one tools/call."""
        exchanges: list[Exchange] = []

        def need(ex: Exchange, reply: Any, what: str) -> dict[str, Any]:
            exchanges.append(ex)
            if ex.status != 200 or not isinstance(reply, dict) or "result" not in reply:
                err = reply.get("error") if isinstance(reply, dict) else None
                raise LiveFailure(
                    f"MCP {what}: {ex.describe()}"
                    + (f" JSON-RPC error {err}" if err else f" ({ex.body_kind()})"),
                    f"a JSON-RPC result for {what} with a valid bearer token",
                    exchanges,
                    spec="MCP-access-token-usage",
                )
            result = reply["result"]
            return result if isinstance(result, dict) else {"value": result}

        ex, reply = await self.mcp(token, initialize_request(1), instance=instance)
        need(ex, reply, "initialize")
        session = ex.header("mcp-session-id")
        ex, _ = await self.mcp(
            token, {"jsonrpc": "2.0", "method": "notifications/initialized"},
            session=session, instance=instance,
        )
        exchanges.append(ex)
        ex, reply = await self.mcp(
            token, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            session=session, instance=instance,
        )
        listing = need(ex, reply, "tools/list")
        tools = [t for t in listing.get("tools") or [] if isinstance(t, dict) and "name" in t]
        if not tools:
            return McpOutcome(exchanges, None, listing)
        tool = min(tools, key=lambda t: len((t.get("inputSchema") or {}).get("required") or []))
        args = _arguments(tool.get("inputSchema") or {})
        ex, reply = await self.mcp(
            token,
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": tool["name"], "arguments": args}},
            session=session, instance=instance,
        )
        result = need(ex, reply, f"tools/call {tool['name']}")
        if result.get("isError"):
            raise LiveFailure(
                f"tools/call {tool['name']} returned isError: {str(result)[:200]}",
                "a tool result without error",
                exchanges,
                spec="MCP-access-token-usage",
            )
        return McpOutcome(exchanges, tool["name"], result)

    # -- cleanup ---------------------------------------------------------------------------
    async def cleanup(self) -> list[str]:
        """Revoke every token and delete every registration this run created."""
        problems: list[str] = []
        disc = self._discovery
        if disc is None:
            return problems
        if disc.endpoint("revocation") is not None:
            done: set[str] = set()
            for client, token, kind in list(self.created):
                if token in done:
                    continue
                done.add(token)
                try:
                    ex = await self.revoke(client, token, kind)
                except LiveFailure as exc:
                    problems.append(exc.observed)
                    continue
                if ex.status != 200:
                    problems.append(f"revoking a {kind}: {ex.describe()}")
        elif self.created:
            problems.append(
                f"not-advertised: no revocation_endpoint; {len(self.created)} tokens left to expire"
            )
        self.created.clear()
        for client in self.registrations:
            uri = client.registration.get("registration_client_uri")
            rat = client.registration.get("registration_access_token")
            if isinstance(uri, str) and isinstance(rat, str):
                try:
                    ex = await self.target.request(
                        "DELETE", uri, purpose="registration",
                        headers={"authorization": f"Bearer {rat}"},
                    )
                except LiveFailure as exc:
                    problems.append(exc.observed)
                    continue
                if ex.status not in (200, 204):
                    problems.append(f"deleting client registration: {ex.describe()}")
        self.registrations.clear()
        return problems


def _arguments(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or []:
        kind = (props.get(name) or {}).get("type")
        args[str(name)] = {"integer": 1, "number": 1, "boolean": True, "array": [],
                      "object": {}}.get(str(kind), "authconform")
    return args


def _reply(ex: Exchange, request_id: Any) -> Any:
    if ex.status is None or request_id is None:
        return None
    if ex.content_type == "text/event-stream":
        for event in ex.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(
                line[5:].lstrip() for line in event.split("\n") if line.startswith("data:")
            )
            if not data:
                continue
            import json

            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
        return None
    return ex.json_body()
