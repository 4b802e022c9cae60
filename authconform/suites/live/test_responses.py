"""Rules every response of a kind follows, checked once over the whole run.

These checks run after the others and read every exchange the run recorded
(``Target.history``), plus the findings other checks filed against their rule (a refused
replay answered with the wrong error code is reported here, once, not as a breach of
single use). Each one also provokes what it needs, so it stands alone under ``-k``.
"""

import math
import os
import secrets
from urllib.parse import parse_qsl, urljoin, urlsplit

from authconform import markers
from authconform.live import (
    Client,
    Live,
    LiveFailure,
    expect_error,
    fail,
    run_checks,
    unavailable,
)
from authconform.live._checks import TOKEN_ERRORS
from authconform.live._pytest import note, run_last
from authconform.live._target import origin
from authconform.markers import spec

pytestmark = markers.live

#: RFC 6749 4.1.2.1 error codes of the authorization endpoint (and RFC 8707's)
AUTHORIZE_ERRORS = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
    "invalid_scope", "server_error", "temporarily_unavailable", "invalid_target",
    "login_required", "consent_required", "interaction_required", "account_selection_required",
})
#: kinds of secret RFC 6749 10.10 covers, and what the run saw of each
SECRET_KINDS = ("access_token", "refresh_token", "code", "client_secret",
                "registration_access_token")


def _report(live: Live, problems, findings, what: str, expected: str) -> None:
    """Fail once with every distinct problem (and how often it was seen)."""
    counted: dict[str, list] = {}
    for failure in problems:
        counted.setdefault(failure.observed, []).append(failure.exchanges[0])
    for found, count in findings:
        key = f"{found.observed} (expected {found.expected})"
        counted.setdefault(key, []).extend(found.exchanges * max(count, 1))
    if not counted:
        return
    lines = [f"{text} ({len(seen)}x)" if len(seen) > 1 else text
             for text, seen in counted.items()]
    shown = [seen[0] for seen in counted.values() if seen][:3]
    fail(f"{len(counted)} distinct {what}: " + "; ".join(lines[:4])
         + (f" (and {len(lines) - 4} more)" if len(lines) > 4 else ""), expected, shown)


def _authorization_responses(live: Live) -> list:
    """Redirects of the run that leave the target with a code or an error (to a client)."""
    found = []
    for ex in live.target.history:
        if ex.purpose != "authorize" or not (ex.status and 300 <= ex.status < 400):
            continue
        location = ex.header("location")
        if not location:
            continue
        absolute = urljoin(ex.url, location)
        if origin(absolute) in live.target.origins:
            continue  # a hop inside the server (login, consent)
        params = dict(parse_qsl(urlsplit(absolute).query))
        if "code" in params or "error" in params:
            found.append((ex, params))
    return found


@run_last(1)
@spec("RFC6749-5.1")
async def test_token_responses_are_not_cacheable(live: Live) -> None:
    """Every token response of the run carries Cache-Control: no-store."""
    client = await live.client()
    await live.tokens(client)
    problems = run_checks(live.target.history, live.target, ["token-response-no-store"])
    _report(live, problems, [], "token responses without no-store",
            "Cache-Control: no-store on every response carrying tokens (RFC 6749 5.1)")


@run_last(1)
@spec("RFC6749-5.1", "RFC7591-3.2.1")
async def test_registration_responses_are_not_cacheable(live: Live) -> None:
    """Every registration answer carrying credentials says Cache-Control: no-store.

    RFC 6749 5.1: no-store "in any response containing tokens, credentials, or other
    sensitive information" (a client secret, a registration access token).
    """
    seen = [ex for ex in live.target.history if ex.purpose == "registration"
            and ex.status in (200, 201)]
    if not seen:
        await live.endpoint("registration")
        await live.new_client(confidential=True, auth_method=await live.secret_method())
    problems = run_checks(live.target.history, live.target,
                          ["registration-credentials-no-store"])
    _report(live, problems, [], "registration answers without no-store",
            "Cache-Control: no-store on every answer carrying client credentials")


@run_last(1)
@spec("RFC6749-5.2", "OAUTH21-3.2.4")
async def test_token_errors_are_json_with_registered_codes(live: Live) -> None:
    """Token, revocation and introspection errors are JSON with the right registered code.

    Its own cases, every error answer the run recorded, and every refusal another check
    saw with a wrong code or status (those checks pass: their rule held).
    """
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
    failures = []
    for data, codes, what in cases:
        ex = await live.token_request(client, data)
        try:
            expect_error(ex, codes, f"token request with {what}")
        except AssertionError as exc:
            failures.append(exc)
    stranger = type(client)(client_id="authconform-" + secrets.token_hex(8),
                            redirect_uri=client.redirect_uri)
    ex = await live.token_request(stranger, cases[1][0])
    try:
        expect_error(ex, ("invalid_client",), "token request from an unknown client",
                     statuses=(400, 401))
    except AssertionError as exc:
        failures.append(exc)
    problems = run_checks(live.target.history, live.target, ["oauth-errors-are-json"])
    _report(live, [*failures, *problems], live.findings_for("RFC6749-5.2"),
            "token-endpoint error answers off RFC 6749 5.2",
            "400 (401 for invalid_client) with a JSON object whose error is the registered "
            f"code for the case ({', '.join(sorted(TOKEN_ERRORS))})")


@run_last(1)
@spec("RFC6749-4.1.2.1", "OAUTH21-4.1.2.1")
async def test_authorization_errors_use_registered_codes(live: Live) -> None:
    """Every error redirect of the authorization endpoint carries the right registered code."""
    client = await live.client()
    provoked = await live.authorize(client, response_type="token")
    responses = _authorization_responses(live)
    findings = live.findings_for("RFC6749-4.1.2.1")
    if not findings and not any("error" in params for _, params in responses):
        unavailable(f"no authorization error response in the run to judge (response_type="
                    f"token answered {provoked.describe()})")
    problems = []
    for ex, params in responses:
        error = params.get("error")
        if error is not None and error not in AUTHORIZE_ERRORS:
            problems.append(LiveFailure(f"error={error!r}", "", [ex]))
    _report(live, problems, findings,
            "authorization error answers off RFC 6749 4.1.2.1",
            "error redirects with the code RFC 6749 4.1.2.1 defines for the case "
            "(an error page where no redirect is allowed)")


@run_last(1)
@spec("RFC7591-3.2.2")
async def test_registration_errors_are_json_with_registered_codes(live: Live) -> None:
    """Registration errors are JSON objects with a code of RFC 7591 3.2.2."""
    await live.endpoint("registration")
    meta = await live.client_metadata(redirect_uri="http://127.0.0.1:9/cb#fragment")
    ex = await live.register(meta)
    body = ex.json_body()
    if ex.status in (200, 201) and isinstance(body, dict) and "client_id" in body:
        live.registrations.append(Client(str(body["client_id"]), "", registration=body))
    problems = run_checks(live.target.history, live.target, ["registration-errors-are-json"])
    _report(live, problems, live.findings_for("RFC7591-3.2.2"),
            "registration error answers off RFC 7591 3.2.2",
            "400 with a JSON object whose error is invalid_redirect_uri, "
            "invalid_client_metadata, invalid_software_statement or "
            "unapproved_software_statement")


@run_last(1)
@spec("RFC6750-3", "RFC6749-5.2")
async def test_401_responses_carry_www_authenticate(live: Live) -> None:
    """Every 401 of the resource server (and of Basic client authentication) has a challenge."""
    disc = await live.discovery()
    if disc.mcp_url is not None:
        await live.mcp(None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    problems = run_checks(live.target.history, live.target, ["401-has-www-authenticate"])
    _report(live, problems, [], "401 answers without a fitting WWW-Authenticate",
            "WWW-Authenticate on every 401 (a Bearer challenge from the resource server, "
            "Basic after Basic client authentication)")


@run_last(1)
@spec("RFC9700-4.11", "OAUTH21-7.12.2")
async def test_redirects_stay_on_named_hosts(live: Live) -> None:
    """No redirect of the run leads anywhere but the target's hosts or a registered URI."""
    problems = run_checks(live.target.history, live.target, ["redirects-stay-on-named-hosts"])
    _report(live, problems, [], "redirects to hosts nobody named",
            "redirects only to the target's hosts or the client's registered redirect URI")


def _upper_bound_bits(values: list[str]) -> float:
    """At most this many bits of entropy per value (varying positions x alphabet)."""
    prefix = len(os.path.commonprefix(values))
    suffix = len(os.path.commonprefix([v[::-1] for v in values]))
    cores = [v[prefix:len(v) - suffix] if len(v) - suffix > prefix else "" for v in values]
    alphabet = set("".join(cores))
    if len(alphabet) < 2:
        return 0.0
    shortest = min(len(c) for c in cores)
    varying = sum(1 for i in range(shortest) if len({c[i] for c in cores}) > 1)
    varying += max(len(c) for c in cores) - shortest
    return varying * math.log2(len(alphabet))


@run_last(1)
@spec("RFC6749-10.10", "OAUTH21-7.7")
async def test_tokens_have_128_bits_of_entropy(live: Live) -> None:
    """Tokens, codes and client credentials of the run carry at least 128 bits of entropy.

    RFC 6749 10.10: the probability of guessing them "MUST be less than or equal to
    2^(-128)". The estimate is an upper bound (varying characters x log2 of the alphabet
    seen, over every value of a kind the run obtained), so a value below 128 bits is a
    certain failure; a pass means only that nothing shorter was seen.
    """
    client = await live.client()
    for _ in range(2):
        await live.tokens(client)
    by_kind: dict[str, list[str]] = {}
    for value, kind in live.target.issued.items():
        if kind in SECRET_KINDS:
            by_kind.setdefault(kind, []).append(value)
    weak = []
    for kind, values in sorted(by_kind.items()):
        if len(values) < 2:
            continue
        bits = _upper_bound_bits(values)
        if bits < 128:
            weak.append(f"{kind}: at most {bits:.0f} bits over {len(values)} values")
    if weak:
        fail("guessable secrets: " + "; ".join(weak),
             "at least 128 bits of entropy in every token, code and client credential")


@run_last(1)
@spec("RFC6749-5.1", "OAUTH21-A.14")
async def test_expires_in_is_a_positive_integer(live: Live) -> None:
    """Every expires_in of the run is a positive integer number of seconds."""
    client = await live.client()
    await live.tokens(client)
    problems = run_checks(live.target.history, live.target,
                          ["expires-in-is-a-positive-integer"])
    _report(live, problems, [], "token responses with a malformed expires_in",
            "expires_in a positive integer (RFC 6749 A.14: 1*DIGIT)")


@run_last(1)
@spec("RFC9207-2", "RFC9207-2.3")
async def test_authorization_responses_carry_iss(live: Live, request) -> None:
    """With RFC 9207 advertised, every authorization response carries iss = the issuer.

    RFC 9207 2: "In authorization responses to the client, including error responses,
    an authorization server supporting this specification MUST indicate its identity by
    including the iss parameter"; 2.3: its value "MUST be identical" to the metadata's
    issuer. Without ``authorization_response_iss_parameter_supported`` the check notes
    whether ``iss`` is sent anyway (and fails a wrong one).
    """
    disc = await live.discovery()
    client = await live.client()
    await live.code_for(client)
    await live.authorize(client, response_type="token")
    issuer = disc.metadata.get("issuer")
    advertised = disc.metadata.get("authorization_response_iss_parameter_supported") is True
    responses = _authorization_responses(live)
    missing = [(ex, p) for ex, p in responses if "iss" not in p]
    wrong = [(ex, p) for ex, p in responses if "iss" in p and p["iss"] != issuer]
    if wrong:
        ex, p = wrong[0]
        fail(f"{len(wrong)} of {len(responses)} authorization responses carry iss "
             f"{p['iss']!r}", f"iss identical to the issuer {issuer!r}", [ex])
    if advertised and missing:
        kinds = sorted({"error" if "error" in p else "success" for _, p in missing})
        fail(f"{len(missing)} of {len(responses)} authorization responses ({', '.join(kinds)})"
             " carry no iss although authorization_response_iss_parameter_supported is true",
             "iss in every authorization response, error responses included",
             [missing[0][0]])
    if not advertised:
        sent = len(responses) - len(missing)
        note(request, f"RFC 9207 not advertised; {sent} of {len(responses)} authorization "
             "responses carried iss anyway")
