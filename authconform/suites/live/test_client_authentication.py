"""Client authentication of confidential clients (RFC 6749 2.3.1, OAuth 2.1 2.4, 3.2.4)."""

import base64
import secrets
from urllib.parse import quote_plus

import pytest

from authconform import markers
from authconform.live import (
    Client,
    Live,
    fail,
    not_advertised,
    oauth_error,
    unavailable,
)
from authconform.live._flows import SECRET_METHODS
from authconform.live._pytest import note, run_last
from authconform.markers import spec

pytestmark = markers.live


@pytest.mark.parametrize("method", SECRET_METHODS)
@spec("RFC6749-2.3.1", "OAUTH21-2.4.1")
async def test_client_secret_methods_work_as_advertised(live: Live, method: str) -> None:
    """An advertised secret method authenticates a confidential client at the token endpoint.

    ``client_secret_basic`` sends the form-encoded id and secret as HTTP Basic (RFC 6749
    2.3.1, OAuth 2.1 2.4.1), ``client_secret_post`` both in the body (OAuth 2.1 2.4.1:
    the server "MUST support" it).
    """
    methods = (await live.discovery()).listed("token_endpoint_auth_methods_supported")
    if method not in (methods if methods is not None else ["client_secret_basic"]):
        not_advertised(f"token_endpoint_auth_methods_supported does not list {method}")
    client = await live.client_with_method(method)
    auth = await live.code_for(client)
    ex = await live.exchange(client, auth)
    if ex.status != 200:
        fail(f"a code exchange authenticated with {method} answered {ex.describe()} "
             f"({oauth_error(ex) or ex.body_kind()})", "200 with tokens", [ex])


def _impostor(client: Client, case: str) -> tuple[Client, dict[str, str]]:
    """The client as it must not authenticate, and headers to add."""
    if case == "wrong secret":
        return Client(client.client_id, client.redirect_uri, (client.secret or "") + "x",
                      client.auth_method), {}
    if case == "missing secret":
        return Client(client.client_id, client.redirect_uri, None, "none"), {}
    if case == "unknown client":
        return Client("authconform-" + secrets.token_hex(8), client.redirect_uri,
                      secrets.token_urlsafe(24), client.auth_method), {}
    raw = f"{quote_plus(client.client_id)}:{quote_plus(client.secret or '')}".encode()
    both = Client(client.client_id, client.redirect_uri, client.secret, "client_secret_post")
    return both, {"authorization": "Basic " + base64.b64encode(raw).decode()}


CASES = ("wrong secret", "missing secret", "unknown client")


async def _send(live: Live, endpoint: str, client: Client, headers: dict[str, str]):
    data: dict[str, str] = {"token": secrets.token_urlsafe(24)}
    if endpoint == "token":
        data = {"grant_type": "authorization_code", "code": secrets.token_urlsafe(24),
                "redirect_uri": client.redirect_uri,
                "code_verifier": secrets.token_urlsafe(48)}
    url = await live.endpoint(endpoint)
    sent = dict(headers)
    live.client_auth(client, data, sent)
    return await live.target.request("POST", url, purpose=endpoint, data=data, headers=sent)


async def _control(live: Live, endpoint: str) -> Client:
    """A confidential client the endpoint accepts, correctly authenticated once."""
    await live.endpoint(endpoint)
    methods = await live.endpoint_methods(endpoint)
    method = next((m for m in SECRET_METHODS if m in methods), None)
    if method is None:
        not_advertised(f"the {endpoint} endpoint lists no secret-based method ({methods!r})")
    client = await live.client_with_method(method)
    control = await _send(live, endpoint, client, {})
    good = {"token": (400, "invalid_grant"), "revocation": (200, None),
            "introspection": (200, None)}[endpoint]
    if (control.status, oauth_error(control) if control.status != 200 else None) != good:
        unavailable(f"the positive control failed: the correctly authenticated client got "
                    f"{control.describe()} ({oauth_error(control) or control.body_kind()})")
    return client


@pytest.mark.parametrize("endpoint", ["token", "revocation", "introspection"])
@spec("RFC6749-5.2", "OAUTH21-3.2.4", "RFC7009-2.1", "RFC7662-2.1")
async def test_bad_client_authentication_is_refused(live: Live, endpoint: str) -> None:
    """A wrong or missing secret, or an unknown client: 401 (or 400) invalid_client.

    OAuth 2.1 3.2.4: ``invalid_client`` when "Client authentication failed (e.g., unknown
    client, no client authentication included ...)"; "If the client attempted to
    authenticate via the Authorization request header field, the authorization server
    MUST respond with an HTTP 401 ... and include the WWW-Authenticate response header
    field matching the authentication scheme used by the client". RFC 7009 2.1 and RFC
    7662 2.1 send the revocation and introspection endpoints to the same answer. The
    same client, correctly authenticated, is the positive control.
    """
    client = await _control(live, endpoint)
    wrong = []
    for case in CASES:
        impostor, headers = _impostor(client, case)
        ex = await _send(live, endpoint, impostor, headers)
        if ex.status is not None and ex.status >= 500:
            unavailable(f"{case}: the {endpoint} endpoint answered {ex.describe()}")
        basic = "authorization" in ex.request_headers
        statuses = (401,) if basic else (400, 401)
        challenge = (ex.header("www-authenticate") or "").lower()
        if ex.status not in statuses or oauth_error(ex) != "invalid_client":
            wrong.append((f"{case}: {ex.describe()} with "
                          f"{oauth_error(ex) or ex.body_kind()}", ex))
        elif basic and not challenge.startswith("basic"):
            wrong.append((f"{case}: 401 after Basic with WWW-Authenticate "
                          f"{ex.header('www-authenticate')!r}", ex))
    if wrong:
        fail(f"at the {endpoint} endpoint: " + "; ".join(w for w, _ in wrong),
             "401 (400 without Basic) invalid_client, WWW-Authenticate: Basic after Basic",
             [ex for _, ex in wrong][:3])


@spec("OAUTH21-2.4", "OAUTH21-3.2.4", level="SHOULD")
async def test_two_client_authentication_methods_are_refused(live: Live) -> None:
    """Basic and client_secret in the body at once is refused (invalid_request or _client).

    OAuth 2.1 2.4: "The client MUST NOT use more than one authentication method in each
    request"; 3.2.4 files such a request under ``invalid_request`` ("utilizes more than
    one mechanism for authenticating the client"). The MUST binds the client, so a server
    that accepts the request is warned.
    """
    client = await _control(live, "token")
    impostor, headers = _impostor(client, "two methods")
    ex = await _send(live, "token", impostor, headers)
    if ex.status is not None and ex.status >= 500:
        unavailable(f"two methods: the token endpoint answered {ex.describe()}")
    if oauth_error(ex) not in ("invalid_request", "invalid_client") or ex.status not in (400,
                                                                                         401):
        fail(f"Basic plus client_secret in the body: {ex.describe()} with "
             f"{oauth_error(ex) or ex.body_kind()} (the authentication was accepted)",
             "400 invalid_request (or 401 invalid_client)", [ex])


@run_last(3)
@spec("OAUTH21-2.4.1", "RFC6749-10.10")
async def test_repeated_wrong_secrets_are_never_accepted(live: Live, request) -> None:
    """Repeated wrong secrets and codes are refused every time (429 or 400/401), never accepted.

    OAuth 2.1 2.4.1: the server "MUST protect any endpoint utilizing [a client secret]
    against brute force attacks". Long random secrets protect by themselves, so whether
    the server also rate-limits is a note, unless the deployment declares its limit
    (``--authconform-auth-limit``): then a 429 must come by then.
    """
    client = await live.client(confidential=True)
    if client.public:
        not_advertised("no confidential client (the server registered it without a secret)")
    limit = live.config.auth_limit
    attempts = max(12, (limit or 0) + 2)
    impostor, _ = _impostor(client, "wrong secret")
    async with live.control("a refresh token of the confidential client"):
        tokens = await live.refreshable(client)
    limited_at = None
    for i in range(attempts):
        ex = await live.token_request(impostor, {
            "grant_type": "refresh_token", "refresh_token": tokens.rt,
        }, retry_429=False)
        if ex.status == 200:
            fail(f"attempt {i + 1} with a wrong client secret was accepted (a refresh "
                 "answered 200)", "every wrong secret refused", [ex])
        if ex.status == 429:
            limited_at = i + 1
            break
        if ex.status is None or ex.status >= 500:
            unavailable(f"attempt {i + 1} with a wrong secret answered {ex.describe()}")
    for i in range(6 if limited_at is None else 0):
        ex = await live.token_request(client, {
            "grant_type": "authorization_code", "code": secrets.token_urlsafe(24),
            "redirect_uri": client.redirect_uri, "code_verifier": secrets.token_urlsafe(48),
        }, retry_429=False)
        if ex.status == 200:
            fail(f"guessed code {i + 1} was accepted", "every unknown code refused", [ex])
    if limit is not None and (limited_at is None or limited_at > limit + 1):
        fail(f"{attempts} wrong secrets in a row, no 429"
             + (f" before attempt {limited_at}" if limited_at else ""),
             f"429 after at most {limit} failures (--authconform-auth-limit)")
    note(request, f"wrong client secrets were answered 429 from attempt {limited_at}"
         if limited_at else f"{attempts} wrong client secrets in a row: all refused, none "
         "rate-limited (not required: long secrets resist guessing)")
