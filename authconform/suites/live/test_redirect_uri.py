"""Redirect URIs: exact matching (RFC 9700 2.1), any port on loopback (RFC 8252 7.3)."""

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from authconform import markers
from authconform.live import Live, fail, not_applicable, refused
from authconform.live._pytest import note
from authconform.markers import spec

pytestmark = markers.live


def _case(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=parts.path.upper() if parts.path != parts.path.upper()
                                     else parts.path.lower()))


def _percent(uri: str) -> str:
    parts = urlsplit(uri)
    path = parts.path
    for i, ch in enumerate(path):
        if ch.isalpha():
            path = path[:i] + f"%{ord(ch):02X}" + path[i + 1:]
            break
    return urlunsplit(parts._replace(path=path))


#: variant name -> how to derive it from the registered URI; none of them may match
VARIANTS: dict[str, Callable[[str], str]] = {
    "extra-characters": lambda u: u + "evil",
    "added-path": lambda u: u.rstrip("/") + "/evil",
    "added-query": lambda u: u + ("&" if "?" in u else "?") + "next=evil",
    "changed-case": _case,
    "trailing-slash": lambda u: u + "/" if not u.endswith("/") else u[:-1],
    "percent-encoded": _percent,
    "fragment": lambda u: u + "#evil",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@spec("RFC9700-2.1", "OAUTH21-2.3.1", "OAUTH21-4.1.1")
async def test_redirect_uri_must_match_exactly(live: Live, variant: str) -> None:
    """A redirect URI that differs from the registered one in any way gets no redirect.

    OAuth 2.1 4.1.1: "the authorization server MUST ensure that the two URIs are equal"
    (simple string comparison); 2.3.1: it "MUST reject authorization requests that
    specify a redirect URI that doesn't exactly match one that was registered".
    """
    client = await live.client()
    changed = VARIANTS[variant](client.redirect_uri)
    if changed == client.redirect_uri:
        not_applicable(f"the registered redirect URI has nothing to change for {variant}")
    async with live.control("the same request with the registered redirect URI"):
        await live.code_for(client)
    auth = await live.authorize(client, redirect_uri=changed)
    bare = changed.split("#", 1)[0]
    # a code is the breach; so is any redirect to the changed URI. An error redirect to
    # the registered URI itself (the fragment variant's bare URI) goes nowhere new.
    if auth.code is not None or (auth.redirected_to(bare) and bare != client.redirect_uri):
        fail(f"redirect_uri {variant} ({changed}) answered with {auth.describe()}",
             "an error page: only the exact registered redirect URI is accepted",
             auth.exchanges)


@spec("OAUTH21-4.1.1", "RFC8252-7.3")
async def test_loopback_redirect_uri_matches_any_port(live: Live) -> None:
    """A registered loopback-IP redirect URI matches with any port.

    RFC 8252 7.3 (quoted by OAuth 2.1 4.1.1 for native apps): "The authorization server
    MUST allow any port to be specified at the time of the request for loopback IP
    redirect URIs". The client registers as a native application.
    """
    port = 40000 + secrets.randbelow(20000)
    registered = f"http://127.0.0.1:{port}/loopback"
    pre = live.preregistered()
    if pre is not None and urlsplit(pre.redirect_uri).hostname in ("127.0.0.1", "::1"):
        client = pre
    else:
        meta = await live.client_metadata(redirect_uri=registered)
        meta["application_type"] = "native"
        client = await live.registered_client(
            "loopback", "the check needs a client with a loopback redirect URI", metadata=meta
        )
    parts = urlsplit(client.redirect_uri)
    other = (parts.port or 80) % 20000 + 40001
    moved = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{other}"))
    live.target.redirect_uris.add(moved)
    async with live.control("the registered port"):
        await live.code_for(client)
    auth = await live.authorize(client, redirect_uri=moved)
    if auth.code is None or not auth.redirected_to(moved):
        fail(f"the loopback redirect URI on port {other} (registered: {parts.port}) answered "
             f"with {auth.describe()}", f"a redirect to {moved} with a code", auth.exchanges)


@spec("RFC6749-4.1.3", "OAUTH21-10.2", level="MAY")
async def test_token_request_redirect_uri_is_reported(live: Live, request) -> None:
    """A redirect_uri at /token other than the authorization request's: reported, not judged.

    RFC 6749 4.1.3 requires the server to compare it; OAuth 2.1 10.2 removed the
    parameter from the token request ("serve[s] no purpose" with PKCE), and only an AS
    serving OAuth 2.0 clients too must enforce it. Refusing passes (the error code is RFC
    6749 5.2's business: ``invalid_grant``); accepting is a note.
    """
    client = await live.client()
    async with live.control("the same exchange with the right redirect_uri"):
        await live.tokens(client)
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth, redirect_uri=client.redirect_uri + "/other")
    if ex.status == 200:
        note(request, "a different redirect_uri at the token endpoint was accepted "
             "(allowed by OAuth 2.1; an AS that also serves OAuth 2.0 clients must refuse)")
        return
    refused(live, ex, "exchange with a different redirect_uri", codes=("invalid_grant",))
