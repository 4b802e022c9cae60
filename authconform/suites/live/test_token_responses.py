"""Token endpoint: grants OAuth 2.1 removed, and its error answers."""

import secrets

from authconform import markers
from authconform.live import Live, fail, refused, refused_at_authorize
from authconform.live._pytest import note
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC9700-2.4", "OAUTH21-10")
async def test_password_grant_is_refused(live: Live, request) -> None:
    """grant_type=password yields no token.

    The promise is "no token": any OAuth error passes. Which code a server uses is RFC
    6749 5.2's business (the error-answer check); ``invalid_grant`` means the server
    judged the (random) credentials, which is noted.
    """
    client = await live.client()
    async with live.control("an authorization-code flow of the same client"):
        await live.tokens(client)
    ex = await live.token_request(client, {"grant_type": "password", "username": "admin",
                                           "password": secrets.token_urlsafe(12)})
    if ex.status == 200:
        fail("grant_type=password answered with a token", "the grant refused", [ex])
    refused(live, ex, "the password grant",
            codes=("unsupported_grant_type", "unauthorized_client", "invalid_grant",
                   "invalid_request"))
    from authconform.live import oauth_error

    if oauth_error(ex) == "invalid_grant":
        note(request, "grant_type=password answered invalid_grant: the server judged the "
             "credentials (it may support the password grant for valid ones)")


@spec("OAUTH21-4.1.1", "RFC9700-2.1.2")
async def test_implicit_response_type_is_refused(live: Live) -> None:
    """response_type=token yields no access token."""
    client = await live.client()
    async with live.control("the same request with response_type=code"):
        await live.code_for(client)
    auth = await live.authorize(client, response_type="token")
    if "access_token" in auth.params():
        fail("response_type=token answered with an access token in the redirect",
             "an error (unsupported_response_type): the implicit grant is gone",
             auth.exchanges)
    refused_at_authorize(live, auth, "response_type=token",
                         codes=("unsupported_response_type", "invalid_request",
                                "unauthorized_client"))
