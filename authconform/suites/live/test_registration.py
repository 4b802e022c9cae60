"""Dynamic client registration (RFC 7591)."""


from authconform import markers
from authconform.live import Live, expect_error, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC7591-3.2.1")
async def test_registration_is_accepted(live: Live) -> None:
    """Valid client metadata is registered: 201 with client_id and the redirect URIs."""
    await live.endpoint("registration")
    client = await live.new_client()
    uris = client.registration.get("redirect_uris")
    if uris is not None and uris != [client.redirect_uri]:
        fail(f"registered redirect_uris {uris!r}", f"[{client.redirect_uri!r}] as sent")


@spec("MCP-communication-security", "RFC7591-3.2.2")
async def test_registration_rejects_plain_http_redirect_uri(live: Live) -> None:
    """A redirect URI that is neither https nor loopback is refused with a registration error."""
    await live.endpoint("registration")
    meta = live.client_metadata(redirect_uri="http://client.example/callback")
    ex = await live.register(meta)
    expect_error(ex, ("invalid_redirect_uri", "invalid_client_metadata"),
                 "registration with redirect URI http://client.example/callback")
