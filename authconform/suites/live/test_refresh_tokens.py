"""Refresh tokens: rotation, reuse detection, client binding (RFC 9700 section 4.14)."""

import pytest

from authconform import markers
from authconform.live import Live, expect_error, fail
from authconform.live._pytest import note
from authconform.markers import spec

pytestmark = markers.live


async def _refreshable(live: Live, confidential: bool | None = False):  # noqa: ANN202
    client = await live.client(confidential=confidential)
    _, tokens = await live.tokens(client)
    if tokens.refresh_token is None:
        pytest.skip("not-advertised: the token response carries no refresh_token")
    return client, tokens


@spec("RFC9700-4.14.2", "OAUTH21-4.3.1")
async def test_refresh_rotates_refresh_token(live: Live) -> None:
    """A refresh for a public client returns a new refresh token and a working access token."""
    client, tokens = await _refreshable(live)
    ex = await live.refresh(client, tokens.refresh_token)
    new = live.tokens_of(ex, "refresh")
    if not new.refresh_token or new.refresh_token == tokens.refresh_token:
        fail("the refresh response carries " + ("the same refresh token"
             if new.refresh_token else "no refresh token"),
             "a new refresh token (rotation) for a public client", [ex])


@spec("RFC9700-4.14.2")
async def test_reused_refresh_token_revokes_family(live: Live) -> None:
    """A public client's reuse of a rotated refresh token is refused and revokes the family.

    RFC 9700 4.14.2: for public clients the authorization server MUST detect refresh
    token reuse (rotation with reuse detection) when it does not sender-constrain them.
    """
    client, tokens = await _refreshable(live)
    if not client.public:
        pytest.skip("not-applicable: no public client (registration not advertised)")
    first = await live.refresh(client, tokens.refresh_token)
    rotated = live.tokens_of(first, "refresh")
    if not rotated.refresh_token or rotated.refresh_token == tokens.refresh_token:
        pytest.skip("not-applicable: the server does not rotate (see the rotation check)")
    reuse = await live.refresh(client, tokens.refresh_token)
    expect_error(reuse, ("invalid_grant",), "reuse of a rotated refresh token", context=[first])
    after = await live.refresh(client, rotated.refresh_token)
    if after.status == 200:
        fail("after reuse of a rotated refresh token, its successor still refreshes",
             "the whole family revoked (reuse detection)", [first, reuse, after])
    disc = await live.discovery()
    if disc.mcp_url is not None:
        ex, _ = await live.mcp(rotated.access_token, {"jsonrpc": "2.0", "id": 1,
                                                      "method": "tools/list"})
        if ex.status != 401:
            fail(f"the family's access token still works after reuse: {ex.describe()}",
                 "401: the family's access tokens revoked", [first, reuse, ex])


@spec("RFC9700-4.14.2", level="MAY")
async def test_confidential_client_refresh_reuse_is_reported(
    live: Live, request: pytest.FixtureRequest
) -> None:
    """A confidential client's reuse of a rotated refresh token is reported, never failed.

    RFC 9700 4.14.2: refresh tokens for public clients MUST be sender-constrained or use
    rotation; for a confidential client the client authentication binds the token, so a
    grace period for reuse (or no rotation at all) is allowed. The outcome is recorded as
    the ``authconform_refresh_reuse`` property and a summary note: ``refused`` (the
    family revoked), ``refused-family-kept``, ``grace-period`` or ``no-rotation``.
    """
    client, tokens = await _refreshable(live, confidential=True)
    if client.public:
        pytest.skip("not-applicable: the server registered the confidential client "
                    "without a client secret")
    first = await live.refresh(client, tokens.refresh_token)
    rotated = live.tokens_of(first, "refresh (confidential client)")
    how = f"confidential client ({client.auth_method})"
    if not rotated.refresh_token or rotated.refresh_token == tokens.refresh_token:
        outcome, text = "no-rotation", f"{how}: refresh tokens are not rotated"
    else:
        reuse = await live.refresh(client, tokens.refresh_token)
        if reuse.status == 200:
            outcome = "grace-period"
            text = (f"{how}: a rotated refresh token was accepted again "
                    f"({reuse.describe()}): grace period")
        else:
            after = await live.refresh(client, rotated.refresh_token)
            kept = after.status == 200
            outcome = "refused-family-kept" if kept else "refused"
            text = (f"{how}: reuse of a rotated refresh token refused ({reuse.describe()}); "
                    + ("its family kept working" if kept else "its family revoked"))
    request.node.user_properties.append(("authconform_refresh_reuse", outcome))
    note(request, text)


@spec("RFC6749-6")
async def test_refresh_token_is_bound_to_its_client(live: Live) -> None:
    """Another client cannot use a client's refresh token."""
    await live.endpoint("registration")
    client, tokens = await _refreshable(live, confidential=None)
    other = await live.new_client()
    ex = await live.refresh(other, tokens.refresh_token)
    expect_error(ex, ("invalid_grant",), "refresh with another client's refresh token")
