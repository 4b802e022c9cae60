"""Authorization codes: exchange, single use, replay revocation, client binding, lifetime."""

import secrets

from authconform import markers
from authconform.live import Live, fail, refused, unavailable
from authconform.live._pytest import aging, note, run_last
from authconform.markers import spec

pytestmark = markers.live


async def _grant_works(live: Live, client, tokens) -> tuple[bool, list]:
    """Whether a grant's tokens still work: a refresh when one was issued, else a probe."""
    if tokens.refresh_token is not None:
        ex = await live.refresh(client, tokens.refresh_token)
        if ex.status == 200:
            return True, [ex]
        if ex.status is not None and 400 <= ex.status < 500 and ex.status != 429:
            return False, [ex]
        unavailable(f"the refresh that tells whether the grant lives answered {ex.describe()}")
    works, ex = await live.token_works(tokens.access_token, client)
    return works, [ex]


@spec("RFC6749-5.1")
async def test_code_exchange_issues_bearer_token(live: Live) -> None:
    """The code and verifier are exchanged for a Bearer access token."""
    client = await live.client()
    _, tokens = await live.tokens(client)
    kind = tokens.body.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        fail(f"token_type {kind!r}", "'Bearer' (case-insensitive)", [tokens.exchange])


@spec("RFC6749-4.1.2", "OAUTH21-4.1.3")
async def test_code_is_single_use(live: Live) -> None:
    """A second exchange of the same code is refused (invalid_grant)."""
    client = await live.client()
    async with live.control("the first exchange of a code"):
        auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth)
    refused(live, replay, "second exchange of one code", codes=("invalid_grant",),
            granted="the code was exchanged twice", context=[tokens.exchange])


@spec("OAUTH21-4.1.3", "RFC6749-4.1.2", level="SHOULD")
async def test_replayed_code_revokes_issued_tokens(live: Live) -> None:
    """Replaying a redeemed code revokes the tokens issued for it.

    OAuth 2.1 4.1.3: the AS "MUST deny the request and SHOULD revoke (when possible) all
    access tokens and refresh tokens previously issued based on that authorization code".
    """
    client = await live.client()
    async with live.control("a code exchange"):
        auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth)
    if replay.status == 200:
        unavailable("the replay was exchanged again (the single-use check reports it)")
    works, seen = await _grant_works(live, client, tokens)
    if works:
        fail("tokens issued for a code still work after the code was replayed",
             "every token of the grant revoked", [tokens.exchange, replay, *seen])


@spec("RFC6749-4.1.3", "OAUTH21-4.1.3")
async def test_code_is_bound_to_its_client(live: Live) -> None:
    """A code issued to one client cannot be exchanged by another (invalid_grant)."""
    client = await live.client()
    other = await live.other_client()
    async with live.control("the second client's own flow"):
        await live.tokens(other)
    auth = await live.code_for(client)
    ex = await live.exchange(other, auth)
    refused(live, ex, "exchange of another client's code", codes=("invalid_grant",),
            granted="a client exchanged another client's code")


@spec("RFC7636-4.6", level="MAY")
async def test_replay_with_invalid_parameters_is_reported(live: Live, request) -> None:
    """Whether a replay with a wrong verifier revokes the grant is reported, never judged.

    No specification says a replay that fails PKCE must leave the grant alone (or must
    revoke it): the outcome is a note, and the property ``authconform_replay_revokes``.
    """
    client = await live.client()
    async with live.control("a code exchange"):
        auth, tokens = await live.tokens(client)
    replay = await live.exchange(client, auth, verifier=secrets.token_urlsafe(48))
    refused(live, replay, "replay with a wrong code_verifier", codes=("invalid_grant",))
    works, _ = await _grant_works(live, client, tokens)
    request.node.user_properties.append(("authconform_replay_revokes", str(not works).lower()))
    note(request, "a code replayed with a wrong code_verifier "
         + ("left the grant intact" if works else "revoked the grant"))


@aging
@run_last(2)
@spec("RFC6749-4.1.2", "OAUTH21-4.1.2")
async def test_code_expires_after_its_lifetime(live: Live) -> None:
    """A code redeemed after the deployment's code lifetime is refused (invalid_grant).

    The lifetime is the one the user declares (``--authconform-code-ttl``); the code is
    obtained when the run starts and redeemed once the lifetime has passed.
    """
    ttl = live.config.code_ttl
    if ttl is None:
        from authconform.live import disabled

        disabled("the deployment's code lifetime is unknown: give it with "
                 "--authconform-code-ttl=SECONDS (and --authconform-max-wait at least that)")
    client, auth = await live.aged("code", ttl, "an authorization code")
    ex = await live.exchange(client, auth)
    refused(live, ex, f"a code redeemed {ttl + 1:g} s after it was issued (lifetime {ttl:g} s)",
            codes=("invalid_grant",), granted="an expired code was exchanged")


@spec("OAUTH21-4.1.2", "RFC6749-4.1.2", level="SHOULD")
async def test_code_lifetime_is_at_most_ten_minutes(live: Live) -> None:
    """The deployment's code lifetime is at most 10 minutes (RECOMMENDED maximum).

    The lifetime is what the user declares (``--authconform-code-ttl``); the expiry check
    verifies that codes indeed die within it.
    """
    ttl = live.config.code_ttl
    if ttl is None:
        from authconform.live import disabled

        disabled("the deployment's code lifetime is unknown: give it with "
                 "--authconform-code-ttl=SECONDS")
    if ttl > 600:
        fail(f"authorization codes live {ttl:g} s (--authconform-code-ttl)",
             "at most 600 s (a maximum of 10 minutes is RECOMMENDED)")
