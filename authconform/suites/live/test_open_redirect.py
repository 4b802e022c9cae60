"""No open redirect (RFC 6749 section 4.1.2.1, RFC 9700 section 4.11)."""

import secrets

from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC6749-4.1.2.1", "MCP-open-redirection")
async def test_unregistered_redirect_uri_gets_error_page(live: Live) -> None:
    """An unregistered redirect_uri gets an error page, never a redirect to it."""
    client = await live.client()
    evil = "http://127.0.0.1:9/authconform-open-redirect"
    auth = await live.authorize(client, redirect_uri=evil)
    last = auth.last
    if auth.location is not None or (last is not None and last.status is not None
                                     and 300 <= last.status < 400):
        fail(f"unregistered redirect_uri answered with {auth.describe()}",
             "an error page (4xx), no redirect", auth.exchanges)


@spec("RFC6749-4.1.2.1", "MCP-open-redirection")
async def test_unknown_client_gets_error_page(live: Live) -> None:
    """An unknown client_id gets an error page, never a redirect."""
    client = await live.client()
    auth = await live.authorize(client, client_id="authconform-" + secrets.token_hex(8))
    last = auth.last
    if auth.location is not None or (last is not None and last.status is not None
                                     and 300 <= last.status < 400):
        fail(f"unknown client_id answered with {auth.describe()}",
             "an error page (4xx), no redirect", auth.exchanges)
