"""The state parameter (RFC 6749 section 4.1.2)."""


from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC6749-4.1.2")
async def test_state_is_returned_unchanged(live: Live) -> None:
    """The redirect carries the exact state the client sent."""
    client = await live.client()
    state = "st a+te/=~.%é-0123456789"
    auth = await live.code_for(client, state=state)
    got = auth.params().get("state")
    if got != state:
        fail(f"state {got!r} in the redirect", f"{state!r}, exactly as sent", auth.exchanges)
