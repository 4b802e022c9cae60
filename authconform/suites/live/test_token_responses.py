"""Token endpoint responses: caching, JSON errors, grants OAuth 2.1 removed."""

import secrets

from authconform import markers
from authconform.live import Live, expect_error, fail, run_checks
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC6749-5.1")
async def test_token_responses_are_not_cacheable(live: Live) -> None:
    """Token responses carry Cache-Control: no-store."""
    client = await live.client()
    _, tokens = await live.tokens(client)
    problems = run_checks([tokens.exchange], live.target, ["token-response-no-store"])
    if problems:
        raise problems[0]


@spec("RFC6749-5.2")
async def test_token_errors_are_json_with_registered_codes(live: Live) -> None:
    """Token endpoint errors are JSON objects with the registered error codes."""
    client = await live.client()
    cases = [
        ({"grant_type": "urn:authconform:bogus"}, ("unsupported_grant_type",),
         "an unknown grant_type"),
        ({"grant_type": "authorization_code", "code": secrets.token_urlsafe(24),
          "redirect_uri": client.redirect_uri, "code_verifier": secrets.token_urlsafe(48)},
         ("invalid_grant",), "an unknown code"),
        ({"grant_type": "authorization_code", "redirect_uri": client.redirect_uri},
         ("invalid_request",), "a missing code"),
    ]
    for data, codes, what in cases:
        ex = await live.token_request(client, data)
        expect_error(ex, codes, f"token request with {what}")
    stranger = type(client)(client_id="authconform-" + secrets.token_hex(8),
                            redirect_uri=client.redirect_uri)
    ex = await live.token_request(stranger, cases[1][0])
    expect_error(ex, ("invalid_client",), "token request from an unknown client",
                 statuses=(400, 401))
    problems = run_checks(live.target.recorder.exchanges, live.target, ["oauth-errors-are-json"])
    if problems:
        raise problems[0]


@spec("RFC9700-2.4")
async def test_password_grant_is_refused(live: Live) -> None:
    """grant_type=password is refused."""
    client = await live.client()
    ex = await live.token_request(client, {"grant_type": "password", "username": "admin",
                                           "password": secrets.token_urlsafe(12)})
    expect_error(ex, ("unsupported_grant_type", "unauthorized_client"), "password grant")


@spec("OAUTH21-4.1.1", "RFC9700-2.1.2")
async def test_implicit_response_type_is_refused(live: Live) -> None:
    """response_type=token yields no access token."""
    client = await live.client()
    auth = await live.authorize(client, response_type="token")
    params = auth.params()
    if "access_token" in params:
        fail("response_type=token answered with an access token in the redirect",
             "an error (unsupported_response_type): the implicit grant is gone", auth.exchanges)
    if auth.location is not None and auth.redirected_to(auth.redirect_uri) and not auth.error:
        fail(f"response_type=token answered with {auth.describe()}",
             "error=unsupported_response_type", auth.exchanges)
