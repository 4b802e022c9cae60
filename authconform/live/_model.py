"""The data of live flows: settings, clients, authorization results, tokens, drivers' API.

Plain values (no requests are sent here): ``Live`` in ``_flows`` produces and consumes
them; ``AuthorizationRequest`` is what a ``module:callable`` authorization driver gets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from authconform.live._record import Exchange, LiveFailure

__all__ = [
    "SECRET_METHODS",
    "AuthResult",
    "AuthorizationRequest",
    "Client",
    "LiveConfig",
    "McpOutcome",
    "Tokens",
    "pkce_pair",
]

_APPROVE = ("approve", "allow", "accept", "consent", "authorize", "authorise", "yes", "grant")
_DENY = ("deny", "reject", "decline", "cancel", "no")
#: client authentication methods with a shared secret, in the order the harness prefers
SECRET_METHODS = ("client_secret_post", "client_secret_basic")


def pkce_pair(method: str = "S256", verifier: str | None = None) -> tuple[str, str]:
    """A fresh ``(verifier, challenge)`` (or the challenge of the given verifier)."""
    verifier = verifier if verifier is not None else secrets.token_urlsafe(48)
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
    code_ttl: float | None = None
    refresh_ttl: float | None = None
    auth_limit: int | None = None
    #: requests per race and rounds per race check (live race checks)
    race_size: int = 8
    race_rounds: int = 3


@dataclass
class Client:
    """A registered (or pre-registered) client; it authenticates as ``auth_method`` says."""

    client_id: str
    redirect_uri: str
    secret: str | None = None
    auth_method: str = "none"
    registration: dict[str, Any] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        """True for a public client (it authenticates with ``none``)."""
        return self.auth_method == "none"


@dataclass
class AuthResult:
    """What an authorization request ended in."""

    exchanges: list[Exchange]
    verifier: str | None
    state: str | None
    redirect_uri: str
    location: str | None = None
    scope: str | None = None
    #: a consent (or login) form was submitted on the way
    consent_shown: bool = False

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

    @property
    def status(self) -> int | None:
        """The HTTP status of the last response (None for an external driver)."""
        return self.last.status if self.last is not None else None

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
    client: Client | None = None

    @property
    def rt(self) -> str:
        """The refresh token (use after ``Live.refreshable``, which insists on one)."""
        if self.refresh_token is None:
            raise LiveFailure("the token response carries no refresh_token",
                              "a refresh_token", [self.exchange])
        return self.refresh_token

    @property
    def scope(self) -> str | None:
        """The ``scope`` member, if the response has one."""
        value = self.body.get("scope")
        return value if isinstance(value, str) else None


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


def _choose(forms: list[dict[str, Any]], words: tuple[str, ...]) -> tuple[Any, Any] | None:
    """(form, button) whose button (or form) says one of ``words``."""
    for form in forms:
        for button in form["buttons"]:
            if any(w in (button[0] + " " + button[1]).lower() for w in words):
                return form, button
    return None


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
    named hosts, secrets (and typed password fields) redacted, and recorded as part of
    the check's transcript.
    """

    url: str
    redirect_uri: str
    state: str | None
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
