"""No open redirect (RFC 6749 4.1.2.1, OAuth 2.1 4.1.2.1, RFC 9700 4.11)."""

import secrets

from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live


def _redirected(auth) -> bool:
    last = auth.last
    return auth.location is not None or (
        last is not None and last.status is not None and 300 <= last.status < 400
    )


@spec("RFC6749-4.1.2.1", "OAUTH21-4.1.2.1")
async def test_unregistered_redirect_uri_gets_error_page(live: Live) -> None:
    """An unregistered redirect_uri gets an error page, never a redirect to it.

    OAuth 2.1 4.1.2.1: for a "missing, invalid, or mismatching redirect URI ... the
    authorization server ... MUST NOT automatically redirect the user agent to the
    invalid redirect URI".
    """
    client = await live.client()
    async with live.control("the same request with the registered redirect URI"):
        await live.code_for(client)
    evil = "http://127.0.0.1:9/authconform-open-redirect"
    auth = await live.authorize(client, redirect_uri=evil)
    if _redirected(auth):
        fail(f"unregistered redirect_uri answered with {auth.describe()}",
             "an error page, no redirect", auth.exchanges)


@spec("RFC6749-4.1.2.1", "OAUTH21-4.1.2.1")
async def test_unknown_client_gets_error_page(live: Live) -> None:
    """An unknown client_id gets an error page, never a redirect."""
    client = await live.client()
    async with live.control("the same request with the registered client"):
        await live.code_for(client)
    auth = await live.authorize(client, client_id="authconform-" + secrets.token_hex(8))
    if _redirected(auth):
        fail(f"unknown client_id answered with {auth.describe()}",
             "an error page, no redirect", auth.exchanges)
