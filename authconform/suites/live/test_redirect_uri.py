"""Exact redirect URI matching (RFC 9700 section 2.1)."""


from authconform import markers
from authconform.live import Live, expect_error, fail
from authconform.markers import spec

pytestmark = markers.live


async def _refused(live: Live, variant: str, how: str) -> None:
    client = await live.client()
    auth = await live.authorize(client, redirect_uri=variant)
    if auth.code is not None or auth.redirected_to(variant):
        fail(f"redirect_uri {how} ({variant}) answered with {auth.describe()}",
             "an error page: only the exact registered redirect URI is accepted",
             auth.exchanges)


@spec("RFC9700-2.1")
async def test_redirect_uri_with_extra_characters_is_refused(live: Live) -> None:
    """The registered URI followed by more characters is not a match."""
    client = await live.client()
    await _refused(live, client.redirect_uri + "evil", "extending the registered one")


@spec("RFC9700-2.1")
async def test_redirect_uri_with_added_path_is_refused(live: Live) -> None:
    """The registered URI with an added path segment is not a match."""
    client = await live.client()
    await _refused(live, client.redirect_uri + "/evil", "with an added path")


@spec("RFC9700-2.1")
async def test_redirect_uri_with_added_query_is_refused(live: Live) -> None:
    """The registered URI with an added query is not a match."""
    client = await live.client()
    await _refused(live, client.redirect_uri + "?next=evil", "with an added query")


@spec("RFC6749-4.1.3")
async def test_token_request_redirect_uri_must_match(live: Live) -> None:
    """A code exchanged with a redirect_uri other than the authorization request's is refused."""
    client = await live.client()
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth, redirect_uri=client.redirect_uri + "/other")
    expect_error(ex, ("invalid_grant",), "exchange with a different redirect_uri",
                 context=auth.exchanges)
