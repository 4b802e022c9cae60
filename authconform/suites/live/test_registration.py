"""Dynamic client registration (RFC 7591) and its management (RFC 7592), when offered."""

import secrets

import pytest

from authconform import markers
from authconform.live import (
    Client,
    Live,
    fail,
    not_advertised,
    refused,
    unavailable,
)
from authconform.live._pytest import note
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


@spec("MCP-communication-security", "RFC6749-3.1.2.1", level="SHOULD")
async def test_registration_rejects_plain_http_redirect_uri(live: Live, request) -> None:
    """A redirect URI that is neither https nor loopback is refused (MCP targets).

    MCP "Communication Security": "All redirect URIs MUST be either localhost or use
    HTTPS"; the sentence binds the URIs, not the server, and RFC 6749 3.1.2.1 only says
    the redirection endpoint SHOULD require TLS. So an MCP deployment that registers one
    is warned; an authorization server without an MCP endpoint gets a note.
    """
    await live.endpoint("registration")
    async with live.control("a registration with a loopback redirect URI"):
        await live.client()
    meta = await live.client_metadata(redirect_uri="http://client.example/callback")
    ex = await live.register(meta)
    if ex.status not in (200, 201):
        refused(live, ex, "registration with redirect URI http://client.example/callback",
                codes=("invalid_redirect_uri", "invalid_client_metadata"))
        return
    body = ex.json_body() or {}
    if isinstance(body, dict) and "client_id" in body:
        live.registrations.append(Client(str(body["client_id"]), "", registration=body))
    if (await live.discovery()).mcp_url is None:
        note(request, "a plain-http, non-loopback redirect URI was registered (no MCP "
             "endpoint: MCP's rule does not apply)")
        return
    fail(f"registration with redirect URI http://client.example/callback: {ex.describe()}",
         "invalid_redirect_uri: an MCP deployment's redirect URIs are https or loopback",
         [ex], level="SHOULD")


BAD_REDIRECTS = {
    "missing": None,
    "relative": ["/callback"],
    "fragment": ["http://127.0.0.1:9/callback#fragment"],
}


@pytest.mark.parametrize("how", list(BAD_REDIRECTS))
@spec("RFC7591-2", "RFC7591-3.2.2", "OAUTH21-2.3", level="SHOULD")
async def test_registration_refuses_invalid_redirect_uris(live: Live, how: str) -> None:
    """Missing, relative or fragment redirect URIs are refused (invalid_redirect_uri).

    RFC 7591 2: clients using redirect flows "MUST register their redirection URI
    values"; OAuth 2.1 2.3: "The redirect URI MUST be an absolute URI ... MUST NOT include
    a fragment component". Those MUSTs bind the client's URIs; RFC 7591 3.2.2 names the
    error a server uses when it refuses one, so a server that registers it anyway is
    warned (``invalid_redirect_uri`` or ``invalid_client_metadata`` pass).
    """
    await live.endpoint("registration")
    async with live.control("a registration with a valid redirect URI"):
        await live.client()
    meta = await live.client_metadata()
    if BAD_REDIRECTS[how] is None:
        del meta["redirect_uris"]
    else:
        meta["redirect_uris"] = BAD_REDIRECTS[how]
    ex = await live.register(meta)
    body = ex.json_body()
    if ex.status in (200, 201) and isinstance(body, dict) and "client_id" in body:
        live.registrations.append(Client(str(body["client_id"]), "", registration=body))
    refused(live, ex, f"registration with a {how} redirect URI",
            codes=("invalid_redirect_uri", "invalid_client_metadata"),
            granted=f"a client with a {how} redirect URI was registered")


@spec("RFC7591-2", "RFC7591-3.2.1")
async def test_public_client_authenticates_with_none(live: Live, request) -> None:
    """A client registered with token_endpoint_auth_method none gets tokens with client_id only.

    RFC 7591 2: ``none`` is "a public client ... [that] does not have a client secret".
    A secret issued anyway is noted; requiring it would make the client confidential
    against its registration, which fails.
    """
    await live.endpoint("registration")
    meta = await live.client_metadata()
    client = await live.new_client(metadata=meta)
    if client.registration.get("client_secret"):
        note(request, "the registration of a public client (none) returned a client_secret")
    if client.auth_method != "none":
        unavailable(f"the server registered the client as {client.auth_method}, not none")
    await live.tokens(client)


@spec("RFC7591-3.1")
async def test_registration_refuses_a_non_json_body(live: Live) -> None:
    """Client metadata sent as a form is refused (400 invalid_client_metadata, or 415).

    RFC 7591 3.1: the client sends its metadata "with a content type of
    application/json".
    """
    url = await live.endpoint("registration")
    async with live.control("the same metadata as JSON"):
        await live.client()
    meta = await live.client_metadata()
    form = {k: " ".join(v) if isinstance(v, list) else str(v) for k, v in meta.items()}
    ex = await live.target.request("POST", url, purpose="registration", data=form)
    if ex.status in (200, 201):
        body = ex.json_body()
        if isinstance(body, dict) and "client_id" in body:
                live.registrations.append(Client(str(body["client_id"]), "", registration=body))
        fail(f"form-encoded client metadata was registered: {ex.describe()}",
             "400 invalid_client_metadata (or 415): the body must be JSON", [ex])
    if ex.status == 415:
        return
    refused(live, ex, "registration with a form-encoded body",
            codes=("invalid_client_metadata", "invalid_request"))


async def _managed(live: Live):
    """A registration of its own with RFC 7592 members, or not-advertised."""
    await live.endpoint("registration")
    client = await live.new_client()
    uri = client.registration.get("registration_client_uri")
    token = client.registration.get("registration_access_token")
    if not (isinstance(uri, str) and isinstance(token, str)):
        not_advertised("registration answers carry no registration_client_uri and "
                       "registration_access_token (RFC 7592 is not offered)")
    return client, uri, token


async def _call(live: Live, method: str, uri: str, token: str, body=None):
    return await live.target.request(method, uri, purpose="registration", json_body=body,
                                     headers={"authorization": f"Bearer {token}",
                                              "accept": "application/json"})


@spec("RFC7592-2.1", "RFC7592-2.2", "RFC7592-2.3")
async def test_registration_management_reads_updates_and_deletes(live: Live, request) -> None:
    """With its registration access token a client reads, updates and deletes itself.

    RFC 7592: read answers 200 with the client's information (2.1); an update answers 200
    with the new values (2.2); a delete answers 204 (2.3), after which the registration
    access token no longer works. A server that does not offer update or delete may answer
    405 (or 404): noted.
    """
    client, uri, token = await _managed(live)
    read = await _call(live, "GET", uri, token)
    body = read.json_body()
    if read.status != 200 or not isinstance(body, dict) or body.get("client_id") != (
        client.client_id
    ):
        fail(f"reading the registration answered {read.describe()}",
             "200 with the client's information (RFC 7592 2.1)", [read])
    name = "authconform renamed " + secrets.token_hex(3)
    update = {k: v for k, v in body.items()
              if k not in ("registration_access_token", "registration_client_uri",
                           "client_secret_expires_at", "client_id_issued_at")}
    update["client_name"] = name
    put = await _call(live, "PUT", uri, token, update)
    if put.status in (404, 405):
        note(request, f"RFC 7592 update not offered ({put.describe()})")
    elif put.status != 200 or (put.json_body() or {}).get("client_name") != name:
        fail(f"updating client_name answered {put.describe()} with "
             f"{(put.json_body() or {}).get('client_name')!r}",
             f"200 with client_name {name!r} (RFC 7592 2.2)", [put])
    else:
        fresh = (put.json_body() or {}).get("registration_access_token")
        token = fresh if isinstance(fresh, str) else token
    gone = await _call(live, "DELETE", uri, token)
    if gone.status in (404, 405):
        note(request, f"RFC 7592 delete not offered ({gone.describe()})")
        return
    if gone.status != 204:
        fail(f"deleting the registration answered {gone.describe()}",
             "204 (RFC 7592 2.3)", [gone])
    live.registrations = [c for c in live.registrations if c.client_id != client.client_id]
    after = await _call(live, "GET", uri, token)
    if after.status == 200:
        fail("the registration still reads after it was deleted",
             "401: the client and its registration access token invalidated", [gone, after])


@spec("RFC7592-2.1", "RFC6750-3.1")
async def test_registration_management_refuses_a_wrong_token(live: Live) -> None:
    """The client configuration endpoint refuses a wrong registration access token (401)."""
    _, uri, token = await _managed(live)
    async with live.control("reading with the right token"):
        read = await _call(live, "GET", uri, token)
        if read.status != 200:
            fail(f"reading the registration answered {read.describe()}", "200", [read])
    wrong = await _call(live, "GET", uri, secrets.token_urlsafe(32))
    if wrong.status not in (401, 403):
        fail(f"reading with a wrong registration access token answered {wrong.describe()}",
             "401 (invalid_token) or 403", [wrong])
