"""The state parameter (RFC 6749 section 4.1.2, OAuth 2.1 section 4.1.1)."""

from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live

#: a long state with characters that need encoding (1200 characters)
LONG_STATE = ("st a+te/=~.%é-0123456789" * 50)[:1200]


@spec("RFC6749-4.1.2")
async def test_state_is_returned_unchanged(live: Live) -> None:
    """The redirect carries the exact state the client sent."""
    client = await live.client()
    state = "st a+te/=~.%é-0123456789"
    auth = await live.code_for(client, state=state)
    got = auth.params().get("state")
    if got != state:
        fail(f"state {got!r} in the redirect", f"{state!r}, exactly as sent", auth.exchanges)


@spec("OAUTH21-4.1.1", "RFC6749-4.1.2")
async def test_request_without_state_works(live: Live) -> None:
    """A request without state gets a code, and no state comes back.

    OAuth 2.1 4.1.1: ``state`` is OPTIONAL (PKCE protects the flow); 4.1.2: ``state`` is
    returned only "if the state parameter was present in the client authorization
    request".
    """
    client = await live.client()
    auth = await live.code_for(client, state=None)
    if "state" in auth.params():
        fail(f"a state {auth.params()['state']!r} in the redirect of a request without one",
             "no state parameter", auth.exchanges)


@spec("RFC6749-4.1.2")
async def test_long_state_is_echoed_exactly_or_refused(live: Live) -> None:
    """A 1200-character state is returned exactly, or the request is refused.

    The specification sets no length limit; a server may refuse a state it finds too
    long (an error), but one it accepts comes back unchanged.
    """
    client = await live.client()
    async with live.control("the same request with a short state"):
        await live.code_for(client)
    auth = await live.authorize(client, state=LONG_STATE)
    if auth.code is None:
        return
    got = auth.params().get("state")
    if got != LONG_STATE:
        shown = f"{len(got)} characters" if got is not None else "no state"
        fail(f"a {len(LONG_STATE)}-character state came back as {shown}",
             "the exact state (or an error refusing it)", auth.exchanges)
