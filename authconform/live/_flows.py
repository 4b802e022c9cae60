"""OAuth and MCP flows over a Target: clients, authorization drivers, PKCE, tokens, probes.

``Live`` is one target under test for the whole run. It keeps what the checks share:
discovery, the clients (the pre-registered one, or one registered once; a second,
public or confidential one only for the checks that need it), the tokens to revoke at
the end, material that ages in the background (codes and tokens for the expiry checks),
and the findings one check makes about another check's rule.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote_plus, urlencode, urljoin

from authconform.live._discovery import (
    MCP_PROTOCOL_VERSION,
    Discovery,
    discover,
    initialize_request,
)
from authconform.live._drivers import BUILTIN_DRIVERS, load_driver
from authconform.live._model import (
    _APPROVE,
    _DENY,
    SECRET_METHODS,
    AuthorizationRequest,
    AuthResult,
    Client,
    LiveConfig,
    McpOutcome,
    Tokens,
    _choose,
    _Forms,
    pkce_pair,
)
from authconform.live._outcome import (
    Finding,
    disabled,
    not_advertised,
    not_applicable,
    unavailable,
)
from authconform.live._record import Exchange, LiveFailure
from authconform.live._target import Target, origin

__all__ = [
    "BUILTIN_DRIVERS",
    "SECRET_METHODS",
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

class Live:
    """One live target under test, with its discovery, clients and created tokens."""

    def __init__(self, target: Target, config: LiveConfig) -> None:
        self.target = target
        self.config = config
        self._discovery: Discovery | None = None
        self._discovery_failure: LiveFailure | None = None
        self._clients: dict[str, Client] = {}
        self._client_failures: dict[str, str] = {}
        self._preregistered: Client | None = None
        self.created: list[tuple[Client, str, str]] = []
        self.issued_to: Counter[str] = Counter()  # client_id -> token responses (200)
        self.registered = 0  # clients registered dynamically by this run
        self.registrations: list[Client] = []
        self.log_source: Callable[[], str] | None = None
        self.findings: list[Finding] = []
        self.reported: set[tuple[str, str]] = set()
        #: material the expiry checks let age while the others run (see ``aged``)
        self._aged: dict[str, tuple[float, Any]] = {}
        self._aging_failure: BaseException | None = None
        #: token pairs issued along the run (see ``roll``)
        self._rolling: list[tuple[float, Tokens]] = []
        self._rolling_off = False
        self.notes: list[str] = []
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
        url = (await self.discovery()).endpoint(name)
        if url is None:
            not_advertised(f"the authorization server metadata has no {name}_endpoint")
        return url

    async def mcp_url(self) -> str:
        """The MCP endpoint, or a ``not-advertised`` skip (MCP rules need one)."""
        disc = await self.discovery()
        if disc.mcp_url is None:
            why = f" ({disc.no_mcp_reason})" if disc.no_mcp_reason else ""
            not_advertised(
                "the target has no MCP endpoint (an authorization server only)" + why
            )
        return disc.mcp_url

    async def resource(self) -> str | None:
        """The resource indicator to request (RFC 8707), when there is a resource server."""
        return (await self.discovery()).resource

    async def scope(self) -> str | None:
        """The scope to request: the option, else MCP's scope selection, else none."""
        if self.config.scope:
            return self.config.scope
        return (await self.discovery()).default_scope

    # -- findings --------------------------------------------------------------------------
    def file(self, finding: Finding) -> None:
        """Record a breach of another rule (its own check reports it, once)."""
        self.findings.append(finding)

    def findings_for(self, *specs: str) -> list[tuple[Finding, int]]:
        """The distinct findings against ``specs`` with how often each was seen."""
        counted: dict[tuple[str, str], tuple[Finding, int]] = {}
        for found in self.findings:
            if found.spec in specs:
                first, count = counted.get(found.key(), (found, 0))
                counted[found.key()] = (first, count + 1)
        for key in counted:
            self.reported.add(key)
        return list(counted.values())

    # -- positive controls -----------------------------------------------------------------
    @asynccontextmanager
    async def control(self, what: str) -> AsyncIterator[None]:
        """The positive control of a negative check: a failure here makes it unavailable.

        A negative check proves nothing against a server that refuses everything, so it
        first runs the same flow without the fault; when that fails, the check is
        ``unavailable`` naming the failed step (the breach, if any, belongs to the
        positive check of that step).
        """
        try:
            yield
        except LiveFailure as exc:
            unavailable(
                f"the positive control failed ({what}): {self.target.redactor.redact(exc.observed)}"
            )

    # -- clients ---------------------------------------------------------------------------
    async def register(
        self, metadata: dict[str, Any], *, instance: int = 0
    ) -> Exchange:
        """POST client metadata to the registration endpoint (no checks)."""
        url = self.target.on(instance, await self.endpoint("registration"))
        return await self.target.request(
            "POST", url, purpose="registration", json_body=metadata, instance=instance
        )

    async def client_metadata(
        self,
        *,
        confidential: bool = False,
        redirect_uri: str | None = None,
        auth_method: str = "client_secret_post",
        redirect_uris: list[str] | None = None,
    ) -> dict[str, Any]:
        """Metadata of a client this harness registers."""
        meta: dict[str, Any] = {
            "redirect_uris": redirect_uris or [redirect_uri or self.default_redirect],
            "token_endpoint_auth_method": auth_method if confidential else "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "authconform live check",
        }
        scope = await self.scope()
        if scope:
            meta["scope"] = scope
        return meta

    async def new_client(
        self,
        *,
        confidential: bool = False,
        instance: int = 0,
        auth_method: str = "client_secret_post",
        metadata: dict[str, Any] | None = None,
    ) -> Client:
        """Register a fresh client (RFC 7591); a failure if the server refuses."""
        meta = metadata or await self.client_metadata(
            confidential=confidential, auth_method=auth_method
        )
        for uri in meta.get("redirect_uris") or []:
            self.target.redirect_uris.add(uri)
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
        secret = secret if isinstance(secret, str) and secret else None
        method = body.get("token_endpoint_auth_method")
        if not isinstance(method, str):
            # RFC 7591 3.2.1: the response holds every registered value; a server that
            # leaves the method out registered what was asked (or the default)
            method = meta.get("token_endpoint_auth_method") or "client_secret_basic"
        if secret is not None:
            self.target.redactor.add_basic(body["client_id"], secret)
        if method in SECRET_METHODS and secret is None:
            method = "none"  # a secret-based method without a secret cannot authenticate
        client = Client(
            client_id=body["client_id"],
            redirect_uri=meta["redirect_uris"][0],
            secret=secret,
            auth_method=method,
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

    async def registered_client(self, key: str, why: str, **kw: Any) -> Client:
        """A client registered once for ``key``; ``unavailable`` when registration fails."""
        if key in self._clients:
            return self._clients[key]
        if key in self._client_failures:
            unavailable(self._client_failures[key])
        disc = await self.discovery()
        if disc.endpoint("registration") is None:
            pre = " (the pre-registered client cannot serve)" if self.config.client_id else ""
            not_advertised(
                f"{why}{pre}, and the metadata has no registration_endpoint: give a "
                "pre-registered client with --authconform-client-id"
                if not self.config.client_id else
                f"{why}{pre}, and the metadata has no registration_endpoint"
            )
        try:
            client = await self.new_client(**kw)
        except LiveFailure as exc:
            self._client_failures[key] = (
                f"{why}, but dynamic registration failed: "
                f"{self.target.redactor.redact(exc.observed)}"
            )
            unavailable(self._client_failures[key])
        self._clients[key] = client
        return client

    async def client(self, *, confidential: bool | None = None) -> Client:
        """The client of this run for one-client flows.

        ``confidential=None``: the pre-registered client (``--authconform-client-id``)
        if given, else one public client registered once. ``True``/``False``: a client of
        that type: the pre-registered one when it is of that type, else one registered
        once (``unavailable``/``not-advertised`` when registration cannot give one).
        """
        pre = self.preregistered()
        if pre is not None and (confidential is None or pre.public != confidential):
            return pre
        if confidential:
            method = await self.secret_method()
            return await self.registered_client(
                "confidential:" + method, "the check needs a confidential client",
                confidential=True, auth_method=method,
            )
        if confidential is None:
            return await self.registered_client(
                "public", "the run needs a client (registered dynamically)"
            )
        return await self.registered_client("public", "the check needs a public client")

    async def maybe_client(self, *, confidential: bool) -> Client | None:
        """``client(confidential=...)``, or None when this run cannot have one."""
        try:
            return await self.client(confidential=confidential)
        except _skip_exception():
            return None

    async def other_client(self) -> Client:
        """A second client (a check about two clients); registered once per run."""
        return await self.registered_client("other", "the check needs a second client")

    async def secret_method(self, wanted: str | None = None) -> str:
        """A secret-based token endpoint auth method the server advertises (post first)."""
        methods = (await self.discovery()).listed("token_endpoint_auth_methods_supported")
        if methods is None:
            methods = ["client_secret_basic"]  # RFC 8414 section 2: the default
        for method in ((wanted,) if wanted else SECRET_METHODS):
            if method in methods:
                return method
        not_advertised(
            "token_endpoint_auth_methods_supported lists "
            + (wanted or "neither client_secret_post nor client_secret_basic")
            + f" ({methods!r})"
        )

    async def client_with_method(self, method: str) -> Client:
        """A confidential client authenticating with ``method`` (pre-registered or new)."""
        await self.secret_method(method)
        pre = self.preregistered()
        if pre is not None and pre.auth_method == method:
            return pre
        return await self.registered_client(
            "confidential:" + method, f"the check needs a client using {method}",
            confidential=True, auth_method=method,
        )

    def client_auth(self, client: Client, data: dict[str, str], headers: dict[str, str]) -> None:
        """Authenticate ``client`` as it registered (RFC 6749 2.3.1, OAuth 2.1 2.4.1).

        ``none``: ``client_id`` only, never a secret (even one the server sent);
        ``client_secret_basic``: HTTP Basic over the form-encoded id and secret;
        ``client_secret_post``: both in the body.
        """
        if client.auth_method == "client_secret_basic" and client.secret:
            raw = f"{quote_plus(client.client_id)}:{quote_plus(client.secret)}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
            return
        data["client_id"] = client.client_id
        if client.auth_method == "client_secret_post" and client.secret:
            data["client_secret"] = client.secret

    # -- authorization ---------------------------------------------------------------------
    async def authorize(
        self,
        client: Client,
        *,
        method: str | None = "S256",
        redirect_uri: str | None = None,
        state: str | None = "",
        response_type: str | None = "code",
        client_id: str | None = None,
        resource: str | None | bool = True,
        instance: int = 0,
        extra: dict[str, str] | None = None,
        scope: str | None | bool = True,
        send_redirect_uri: bool = True,
        challenge: str | None = None,
        verifier: str | None = None,
        decision: str = "approve",
    ) -> AuthResult:
        """Run an authorization request through the configured driver.

        ``state=""`` sends a fresh random state, ``None`` sends none; ``scope=True`` the
        run's scope (``await live.scope()``), ``None`` none; ``decision="deny"`` presses
        the deny button of a consent form (built-in drivers only).
        """
        endpoint = self.target.on(instance, await self.endpoint("authorization"))
        # every authorization is its own user agent: no login session (and so no grant
        # the server may share between flows) carries over from another check
        self.target.client.cookies.clear()
        redirect = redirect_uri or client.redirect_uri
        if state == "":
            state = secrets.token_urlsafe(16)
        params: dict[str, str] = {}
        if response_type is not None:
            params["response_type"] = response_type
        params["client_id"] = client_id or client.client_id
        if send_redirect_uri:
            params["redirect_uri"] = redirect
        if state is not None:
            params["state"] = state
        if challenge is not None:
            params["code_challenge"] = challenge
            params["code_challenge_method"] = method or "S256"
        elif method is not None:
            verifier, params["code_challenge"] = pkce_pair(method, verifier)
            params["code_challenge_method"] = method
        res = await self.resource() if resource is True else resource
        if isinstance(res, str):
            params["resource"] = res
        chosen_scope = await self.scope() if scope is True else scope
        if isinstance(chosen_scope, str) and chosen_scope:
            params["scope"] = chosen_scope
        params.update(extra or {})
        result = AuthResult([], verifier, state, redirect,
                            scope=chosen_scope if isinstance(chosen_scope, str) else None)
        url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
        driver = self.config.driver
        if driver not in BUILTIN_DRIVERS:
            if decision != "approve":
                not_applicable("denying consent needs a built-in driver (auto or form)")
            return await self._external(driver, result, url, client_id or client.client_id,
                                        instance)
        ex = await self.target.request("GET", url, purpose="authorize", instance=instance)
        result.exchanges.append(ex)
        words = _APPROVE if decision == "approve" else _DENY
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
                picked = _choose(parser.forms, words)
                if picked is None and decision != "approve":
                    not_applicable("the consent page has no deny button the driver recognises")
                if picked is None:
                    form = next((f for f in parser.forms if f["method"].lower() == "post"),
                                parser.forms[0])
                    button = form["buttons"][0] if form["buttons"] else None
                else:
                    form, button = picked
                data = dict(form["fields"])
                if button is not None:
                    data[button[0]] = button[1]
                action = urljoin(ex.url, form["action"] or ex.url)
                if form["method"].lower() == "post":
                    ex = await self.target.request("POST", action, purpose="authorize",
                                                   data=data, instance=instance)
                else:
                    ex = await self.target.request("GET", action, purpose="authorize",
                                                   params=data, instance=instance)
                result.exchanges.append(ex)
                result.consent_shown = True
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

    async def code_for(self, client: Client, *, instance: int = 0, **kw: Any) -> AuthResult:
        """Authorize and insist on a code.

        A refusal of a request that carried no scope (``access_denied`` or
        ``invalid_scope``) is the run's configuration, not a breach: the check is
        ``unavailable`` with the advice to pass ``--authconform-scope``.
        """
        auth = await self.authorize(client, instance=instance, **kw)
        if auth.code is None:
            if auth.error in ("access_denied", "invalid_scope") and not auth.scope:
                unavailable(
                    f"the authorization server refused a request without scope "
                    f"(error={auth.error}) and the target declares none: pass the scope to "
                    "request with --authconform-scope"
                )
            raise LiveFailure(
                f"authorization ended in {auth.describe()}",
                f"a redirect to {auth.redirect_uri} carrying a code (RFC 6749 section 4.1.2)",
                auth.exchanges,
                spec="RFC6749-4.1.2",
            )
        return auth

    # -- tokens ----------------------------------------------------------------------------
    async def token_request(
        self,
        client: Client,
        data: dict[str, str],
        *,
        instance: int = 0,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        retry_429: bool = True,
    ) -> Exchange:
        """POST to the token endpoint, authenticating ``client`` as it registered."""
        url = self.target.on(instance, await self.endpoint("token"))
        sent: dict[str, str] = {"accept": "application/json", **(headers or {})}
        data = dict(data)
        if auth:
            self.client_auth(client, data, sent)
        ex = await self.target.request(
            "POST", url, purpose="token", data=data, headers=sent, instance=instance,
            retry_429=retry_429,
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
        redirect_uri: str | None | bool = True,
        instance: int = 0,
        resource: str | None | bool = True,
        auth_client: bool = True,
    ) -> Exchange:
        """Exchange the code of ``auth`` (parameters overridable for negative checks)."""
        data = {"grant_type": "authorization_code", "code": code or auth.code or ""}
        uri = auth.redirect_uri if redirect_uri is True else redirect_uri
        if isinstance(uri, str):
            data["redirect_uri"] = uri
        v = auth.verifier if verifier is True else verifier
        if isinstance(v, str):
            data["code_verifier"] = v
        res = await self.resource() if resource is True else resource
        if isinstance(res, str):
            data["resource"] = res
        return await self.token_request(client, data, instance=instance, auth=auth_client)

    def tokens_of(self, ex: Exchange, what: str, client: Client | None = None) -> Tokens:
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
            client=client,
        )

    async def tokens(
        self, client: Client, *, authorize_on: int = 0, token_on: int = 0, **kw: Any
    ) -> tuple[AuthResult, Tokens]:
        """A full authorization-code flow with PKCE S256."""
        auth = await self.code_for(client, instance=authorize_on, **kw)
        ex = await self.exchange(client, auth, instance=token_on)
        return auth, self.tokens_of(ex, "code exchange", client)

    async def refreshable(self, client: Client) -> Tokens:
        """Tokens with a refresh token, or ``not-applicable`` (issuing one is optional)."""
        _, tokens = await self.tokens(client)
        if tokens.refresh_token is None:
            not_applicable(
                "the token response carries no refresh_token (issuing one is optional, "
                "RFC 6749 section 5.1)"
            )
        return tokens

    async def refresh(
        self,
        client: Client,
        refresh_token: str,
        *,
        instance: int = 0,
        scope: str | None = None,
        auth_client: bool = True,
    ) -> Exchange:
        """A refresh-token grant."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope is not None:
            data["scope"] = scope
        res = await self.resource()
        if res:
            data["resource"] = res
        return await self.token_request(client, data, instance=instance, auth=auth_client)

    # -- revocation and introspection ------------------------------------------------------
    async def endpoint_methods(self, name: str) -> list[str]:
        """``<name>_endpoint_auth_methods_supported`` (RFC 8414 2 defaults applied)."""
        disc = await self.discovery()
        listed = disc.listed(f"{name}_endpoint_auth_methods_supported")
        if listed is None:
            listed = disc.listed("token_endpoint_auth_methods_supported")
        return listed if listed is not None else ["client_secret_basic"]

    async def client_for(self, endpoint: str) -> Client:
        """A client the ``revocation``/``introspection`` endpoint accepts (RFC 8414 2).

        The main client when its method is listed in
        ``<endpoint>_endpoint_auth_methods_supported`` (default: the token endpoint's
        list, else ``client_secret_basic``), else a confidential client with a listed
        method, else ``not-advertised``. Without an MCP endpoint, effects are observed
        through introspection, so the client must be one introspection accepts too.
        """
        await self.endpoint(endpoint)
        methods = await self.endpoint_methods(endpoint)
        disc = await self.discovery()
        if endpoint != "introspection" and disc.mcp_url is None and disc.endpoint(
            "introspection"
        ):
            inspect_methods = await self.endpoint_methods("introspection")
            methods = [m for m in methods if m in inspect_methods]
        main = await self.client()
        if main.auth_method in methods:
            return main
        for method in SECRET_METHODS:
            if method in methods:
                return await self.client_with_method(method)
        not_advertised(
            f"the {endpoint} endpoint accepts only {', '.join(methods)}; this run has no "
            "client authenticating that way"
        )

    async def revocation_request(
        self, client: Client, token: str, hint: str | None = None, *, instance: int = 0
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        """URL, form and headers of an RFC 7009 revocation authenticated as ``client``."""
        url = self.target.on(instance, await self.endpoint("revocation"))
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        headers: dict[str, str] = {}
        self.client_auth(client, data, headers)
        return url, data, headers

    async def revoke(
        self, client: Client, token: str, hint: str | None = None, *, instance: int = 0
    ) -> Exchange:
        """RFC 7009 revocation, authenticated as ``client``."""
        url, data, headers = await self.revocation_request(client, token, hint, instance=instance)
        return await self.target.request(
            "POST", url, purpose="revocation", data=data, headers=headers, instance=instance
        )

    async def revoked(self, client: Client, token: str, hint: str) -> Exchange:
        """Revoke and insist on 200: otherwise the revocation is the cause, ``unavailable``."""
        ex = await self.revoke(client, token, hint)
        if ex.status != 200:
            unavailable(
                f"the revocation itself failed ({ex.describe()}, {ex.body_kind()}): what "
                "follows a revocation cannot be judged (the revocation checks report it)"
            )
        return ex

    async def introspect(self, client: Client, token: str) -> Exchange:
        """RFC 7662 introspection, authenticated as ``client``."""
        url = await self.endpoint("introspection")
        data = {"token": token}
        headers: dict[str, str] = {"accept": "application/json"}
        self.client_auth(client, data, headers)
        return await self.target.request(
            "POST", url, purpose="introspection", data=data, headers=headers
        )

    async def token_works(self, token: str, client: Client | None = None) -> tuple[bool, Exchange]:
        """Whether the target accepts ``token`` now, and the exchange that tells.

        With an MCP endpoint: an ``initialize`` with the token (what every client sends
        first): a JSON-RPC result is accepted, 401/403 refused. Without one: RFC 7662
        introspection (``active``). Anything else (a 400 about sessions, a 404, a 5xx)
        proves nothing: ``unavailable`` with the exchange's summary.
        """
        disc = await self.discovery()
        if disc.mcp_url is not None:
            ex, reply = await self.mcp(token, initialize_request(7))
            if ex.status == 200 and isinstance(reply, dict) and "result" in reply:
                return True, ex
            if ex.status in (401, 403):
                return False, ex
            unavailable(
                f"the MCP probe (initialize with the token) answered {ex.describe()} "
                f"({ex.body_kind()}): neither accepted nor refused, so it proves nothing"
            )
        if disc.endpoint("introspection") is None:
            not_advertised(
                "no MCP endpoint and no introspection_endpoint: nothing tells whether a "
                "token still works"
            )
        accepted = await self.endpoint_methods("introspection")
        who = client if client is not None and client.auth_method in accepted else (
            await self.client_for("introspection"))
        ex = await self.introspect(who, token)
        body = ex.json_body()
        if ex.status == 200 and isinstance(body, dict) and isinstance(body.get("active"), bool):
            return bool(body["active"]), ex
        unavailable(
            f"introspection answered {ex.describe()} ({ex.body_kind()}), not "
            "{\"active\": true|false} (RFC 7662 section 2.2)"
        )

    async def expect_token_works(self, token: str, what: str, client: Client | None = None
                                 ) -> Exchange:
        """The positive control of a revocation-style check: the token works now."""
        works, ex = await self.token_works(token, client)
        if not works:
            unavailable(
                f"the positive control failed: {what} was refused before anything was done "
                f"to it ({ex.describe()})"
            )
        return ex

    # -- MCP -------------------------------------------------------------------------------
    async def mcp(
        self,
        token: str | None,
        message: dict[str, Any],
        *,
        session: str | None = None,
        instance: int = 0,
        scheme: str = "Bearer",
    ) -> tuple[Exchange, Any]:
        """POST one JSON-RPC message; the parsed reply (JSON or SSE), or None."""
        url = self.target.on(instance, await self.mcp_url())
        headers = {"accept": "application/json, text/event-stream",
                   "mcp-protocol-version": MCP_PROTOCOL_VERSION}
        if token is not None:
            headers["authorization"] = f"{scheme} {token}"
        if session:
            headers["mcp-session-id"] = session
        ex = await self.target.request(
            "POST", url, purpose="mcp", json_body=message, headers=headers, instance=instance
        )
        return ex, _reply(ex, message.get("id"))

    async def mcp_open(
        self, token: str, *, instance: int = 0
    ) -> tuple[str | None, list[dict[str, Any]], list[Exchange]]:
        """initialize, notifications/initialized and tools/list: (session, tools, exchanges).

        A failure is a ``LiveFailure`` naming the step (MCP-access-token-usage).
        """
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
        tools = [t for t in tools
                 if ((t.get("execution") or {}).get("taskSupport")) != "required"]
        return session, tools, exchanges

    async def mcp_call(
        self, token: str, session: str | None, tool: dict[str, Any], *, instance: int = 0
    ) -> tuple[Exchange, Any]:
        """One ``tools/call`` of ``tool`` (arguments made up from its input schema)."""
        return await self.mcp(
            token,
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": tool["name"],
                        "arguments": _arguments(tool.get("inputSchema") or {})}},
            session=session, instance=instance,
        )

    async def mcp_session(self, token: str, *, instance: int = 0) -> McpOutcome:
        """initialize, notifications/initialized, tools/list and one tools/call.

        The tool is the callable one with the fewest required arguments (tools that must
        run as tasks are left out). A JSON-RPC ``result`` proves the token was accepted,
        also when the tool itself reports ``isError``.
        """
        session, tools, exchanges = await self.mcp_open(token, instance=instance)
        if not tools:
            return McpOutcome(exchanges, None, None)
        chosen = min(tools, key=lambda t: len((t.get("inputSchema") or {}).get("required") or []))
        ex, reply = await self.mcp_call(token, session, chosen, instance=instance)
        exchanges.append(ex)
        if ex.status != 200 or not isinstance(reply, dict) or "result" not in reply:
            err = reply.get("error") if isinstance(reply, dict) else None
            raise LiveFailure(
                f"MCP tools/call {chosen['name']}: {ex.describe()}"
                + (f" JSON-RPC error {err}" if err else f" ({ex.body_kind()})"),
                f"a JSON-RPC result for tools/call {chosen['name']} with a valid bearer token",
                exchanges,
                spec="MCP-access-token-usage",
            )
        return McpOutcome(exchanges, chosen["name"], reply["result"])

    # -- material that ages while the run goes on ------------------------------------------
    async def start_aging(self) -> None:
        """Obtain, once, the codes and tokens the expiry checks wait on.

        Called by the ``live`` fixture before the first check: a code left unexchanged,
        tokens whose access token expires, and a refresh token that expires. Each expiry
        check then waits only what is left of its lifetime (usually nothing: the run
        took longer). A failure here is kept and re-raised by the check that needs it.
        """
        if self._aged or self._aging_failure is not None:
            return
        try:
            client = await self.client()
            auth = await self.code_for(client)
            self._aged["code"] = (time.monotonic(), (client, auth))
            _, tokens = await self.tokens(client)
            self._aged["tokens"] = (time.monotonic(), tokens)
            _, tokens2 = await self.tokens(client)
            self._aged["refresh"] = (time.monotonic(), tokens2)
        except Exception as exc:
            self._aging_failure = exc
        except _skip_exception() as exc:  # unavailable & co: kept for the checks
            self._aging_failure = exc

    async def roll(self) -> None:
        """Issue a new token pair when the newest one is older than half its access lifetime.

        Called before each check when an aging check is selected. The check that needs a
        refresh token whose access token has just expired (but whose own lifetime has
        not) then finds one of the right age among these instead of waiting.
        """
        if self._rolling_off or self._aging_failure is not None:
            return
        now = time.monotonic()
        if self._rolling:
            issued, first = self._rolling[-1]
            life = first.expires_in
            if life is None or first.refresh_token is None or life + 1 > self.config.max_wait:
                self._rolling_off = True
                return
            if now - issued < max(1.0, life / 2):
                return
        try:
            _, tokens = await self.tokens(await self.client())
        except (Exception, _skip_exception()):
            self._rolling_off = True
            return
        self._rolling.append((time.monotonic(), tokens))
        del self._rolling[:-8]

    async def outlived(self, refresh_ttl: float | None) -> Tokens:
        """A pair whose access token has expired but whose refresh token should not have.

        The youngest rolled pair older than ``expires_in + 1`` (and, when the refresh
        lifetime is known, at least half a second short of it); else the next one to
        get there (waiting); else a new pair, waited out (``disabled`` past max-wait).
        """
        now = time.monotonic()
        fits = []
        for issued, tokens in self._rolling:
            if tokens.expires_in is None or tokens.refresh_token is None:
                continue
            age = now - issued
            if age >= tokens.expires_in + 1 and (refresh_ttl is None or age < refresh_ttl - 0.5):
                fits.append((age, tokens))
        if fits:
            return min(fits, key=lambda pair: pair[0])[1]
        pending = [(issued + t.expires_in + 1 - now, t) for issued, t in self._rolling
                   if t.expires_in is not None and t.refresh_token is not None
                   and now - issued < t.expires_in + 1]
        if not pending:
            _, tokens = await self.tokens(await self.client())
            if tokens.expires_in is None:
                not_applicable("the token response has no expires_in")
            pending = [(tokens.expires_in + 1, tokens)]
        wait, tokens = min(pending, key=lambda pair: pair[0])
        if wait > self.config.max_wait:
            disabled(f"the access token lives {tokens.expires_in or 0:g} s, more than "
                     f"--authconform-max-wait={self.config.max_wait:g}")
        await asyncio.sleep(max(0.0, wait))
        return tokens

    async def aged(self, kind: str, lifetime: float, what: str) -> Any:
        """Aged material of ``kind`` once ``lifetime`` (+1 s) has passed since it was issued.

        ``disabled`` when the rest of the wait exceeds ``--authconform-max-wait``.
        """
        await self.start_aging()
        if kind not in self._aged:
            if self._aging_failure is not None:
                raise self._aging_failure
            unavailable(f"no {what} could be obtained")
        issued, value = self._aged[kind]
        left = issued + lifetime + 1.0 - time.monotonic()
        if left > self.config.max_wait:
            disabled(
                f"{what} lives {lifetime:g} s; {left:.0f} s of it are left, more than "
                f"--authconform-max-wait={self.config.max_wait:g}"
            )
        if left > 0:
            await asyncio.sleep(left)
        return value

    # -- cleanup ---------------------------------------------------------------------------
    async def cleanup(self) -> tuple[list[str], list[str]]:
        """Revoke every token and delete every registration this run created.

        Returns ``(failures, notes)``: a failure is an advertised revocation endpoint that
        refused to revoke a token of a client it accepts (RFC 7009 2.1: 200); everything
        else (no revocation endpoint, tokens of clients it does not accept, registrations
        RFC 7592 does not let us delete) is a note: those features are optional.
        """
        failures: list[str] = []
        notes: list[str] = []
        disc = self._discovery
        if disc is None:
            return failures, notes
        if disc.endpoint("revocation") is not None and self.created:
            methods = await self.endpoint_methods("revocation")
            done: set[str] = set()
            skipped = 0
            for client, token, kind in list(self.created):
                if token in done:
                    continue
                done.add(token)
                if client.auth_method not in methods:
                    skipped += 1
                    continue
                try:
                    ex = await self.revoke(client, token, kind)
                except LiveFailure as exc:
                    failures.append(exc.observed)
                    continue
                except _skip_exception() as exc:  # unavailable (down, rate-limited)
                    notes.append(str(exc))
                    break
                if ex.status != 200:
                    failures.append(f"revoking a {kind}: {ex.describe()}")
            if skipped:
                notes.append(f"{skipped} tokens of clients the revocation endpoint does not "
                             "accept are left to expire")
        elif self.created:
            notes.append(f"no revocation_endpoint: {len(self.created)} tokens left to expire")
        self.created.clear()
        kept: list[str] = []
        deleted = 0
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
                    kept.append(exc.observed)
                    continue
                except _skip_exception() as exc:
                    notes.append(str(exc))
                    break
                if ex.status in (200, 204):
                    deleted += 1
                    continue
                kept.append(ex.describe())
                if ex.status in (404, 405):
                    break  # deletion is not offered: one answer says it for all
        if kept:
            left = sum(1 for c in self.registrations
                       if isinstance(c.registration.get("registration_client_uri"), str))
            left -= deleted
            notes.append(f"{left} client registrations may be left (RFC 7592 deletion is "
                         f"optional; {kept[0]})")
        self.registrations.clear()
        return failures, notes


def _skip_exception() -> type[BaseException]:
    import pytest

    return pytest.skip.Exception


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
