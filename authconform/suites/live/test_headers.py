"""Pages the authorization server renders (RFC 6749 section 10.13)."""

import secrets

import pytest

from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC6749-10.13", "RFC9700-4.16", level="SHOULD")
async def test_rendered_pages_forbid_framing(live: Live) -> None:
    """HTML pages of the authorization endpoint forbid framing (X-Frame-Options or CSP)."""
    client = await live.client()
    await live.authorize(client, client_id="authconform-" + secrets.token_hex(8))
    await live.authorize(client, redirect_uri="http://127.0.0.1:9/unregistered")
    await live.authorize(client)
    pages = [ex for ex in live.target.recorder.exchanges
             if ex.purpose == "authorize" and ex.status is not None and "html" in ex.content_type]
    if not pages:
        pytest.skip("not-applicable: the authorization endpoint rendered no HTML page")
    for ex in pages:
        xfo = (ex.header("x-frame-options") or "").lower()
        csp = (ex.header("content-security-policy") or "").lower()
        if xfo not in ("deny", "sameorigin") and "frame-ancestors" not in csp:
            fail(f"{ex.describe()} renders HTML without X-Frame-Options or CSP frame-ancestors",
                 "X-Frame-Options: DENY (or CSP frame-ancestors) against clickjacking", [ex])
