"""Refresh tokens: rotation, reuse detection, binding, scope, lifetimes (RFC 9700 4.14)."""

from authconform import markers
from authconform.live import (
    Client,
    Live,
    disabled,
    fail,
    not_applicable,
    refused,
    unavailable,
)
from authconform.live._pytest import aging, note, run_last
from authconform.markers import spec

pytestmark = markers.live


async def _refreshable(live: Live, confidential: bool | None = False):
    client = await live.client(confidential=confidential)
    return client, await live.refreshable(client)


@spec("RFC9700-4.14.2", "OAUTH21-4.3.1")
async def test_refresh_rotates_refresh_token(live: Live) -> None:
    """A refresh for a public client returns a new refresh token and a working access token."""
    client, tokens = await _refreshable(live)
    if not client.public:
        not_applicable("no public client here (rotation is required of public clients)")
    ex = await live.refresh(client, tokens.rt)
    new = live.tokens_of(ex, "refresh", client)
    if not new.refresh_token or new.refresh_token == tokens.refresh_token:
        fail("the refresh response carries " + ("the same refresh token"
             if new.refresh_token else "no refresh token"),
             "a new refresh token (rotation) for a public client", [ex])


@spec("OAUTH21-4.3", "RFC6749-1.5")
async def test_refresh_issues_a_new_access_token(live: Live) -> None:
    """A refresh returns a new (fresh) access token, not the one the client holds.

    OAuth 2.1 4.3: the refresh token "can be used to obtain new (fresh) access tokens".
    """
    client, tokens = await _refreshable(live)
    ex = await live.refresh(client, tokens.rt)
    new = live.tokens_of(ex, "refresh", client)
    if new.access_token == tokens.access_token:
        fail("the refresh returned the access token the client already had",
             "a new access token", [tokens.exchange, ex])


@spec("RFC9700-4.14.2", "OAUTH21-4.3.1")
async def test_reused_refresh_token_revokes_family(live: Live) -> None:
    """A public client's reuse of a rotated refresh token is refused and revokes the family.

    RFC 9700 4.14.2 / OAuth 2.1 4.3.1: for public clients the AS MUST detect refresh
    token replay (rotation): on reuse it "will revoke the active refresh token as well as
    the access authorization grant associated with it".
    """
    client, tokens = await _refreshable(live)
    if not client.public:
        not_applicable("no public client (registration not advertised)")
    async with live.control("the first refresh"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh", client)
    if not rotated.refresh_token or rotated.refresh_token == tokens.refresh_token:
        not_applicable("the server does not rotate (the rotation check reports it)")
    await live.expect_token_works(rotated.access_token, "the rotated family's access token",
                                  client)
    reuse = await live.refresh(client, tokens.rt)
    refused(live, reuse, "reuse of a rotated refresh token", codes=("invalid_grant",),
            granted="a rotated refresh token was accepted again", context=[first])
    after = await live.refresh(client, rotated.refresh_token)
    refused(live, after, "the successor of a reused refresh token", codes=("invalid_grant",),
            granted="after reuse of a rotated refresh token, its successor still refreshes "
            "(the family was not revoked)", context=[first, reuse])
    works, probe = await live.token_works(rotated.access_token, client)
    if works:
        fail(f"the family's access token still works after reuse ({probe.describe()})",
             "the family's access tokens revoked with it", [first, reuse, probe])


@spec("RFC9700-4.14.2", level="MAY")
async def test_confidential_client_refresh_reuse_is_reported(live: Live, request) -> None:
    """A confidential client's reuse of a rotated refresh token is reported, never failed.

    RFC 9700 4.14.2: refresh tokens for public clients MUST be sender-constrained or use
    rotation; for a confidential client the client authentication binds the token, so a
    grace period for reuse (or no rotation at all) is allowed. The outcome is recorded as
    the ``authconform_refresh_reuse`` property and a summary note: ``refused`` (the
    family revoked), ``refused-family-kept``, ``grace-period`` or ``no-rotation``.
    """
    client, tokens = await _refreshable(live, confidential=True)
    if client.public:
        not_applicable("the server registered the confidential client without a secret")
    async with live.control("the first refresh"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh (confidential client)", client)
    how = f"confidential client ({client.auth_method})"
    if not rotated.refresh_token or rotated.refresh_token == tokens.refresh_token:
        outcome, text = "no-rotation", f"{how}: refresh tokens are not rotated"
    else:
        reuse = await live.refresh(client, tokens.rt)
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


@spec("RFC6749-6", "OAUTH21-4.3.1")
async def test_refresh_token_is_bound_to_its_client(live: Live) -> None:
    """Another client cannot use a client's refresh token."""
    client, tokens = await _refreshable(live, confidential=None)
    other = await live.other_client()
    ex = await live.refresh(other, tokens.refresh_token)
    refused(live, ex, "refresh with another client's refresh token", codes=("invalid_grant",),
            granted="a client refreshed another client's refresh token")


async def _two_scopes(live: Live) -> tuple[str, str]:
    scopes = (await live.discovery()).scopes
    wanted = (await live.scope() or "").split()
    pool = [s for s in wanted if s in scopes]
    pool += [s for s in scopes if s not in pool]
    if len(pool) < 2:
        not_applicable(f"the target declares fewer than two scopes ({scopes!r})")
    return pool[0], pool[1]


def _scope_of(tokens) -> set[str] | None:
    return set(tokens.scope.split()) if tokens.scope is not None else None


@spec("OAUTH21-4.3.1", "RFC6749-6")
async def test_refresh_cannot_widen_the_scope(live: Live) -> None:
    """A refresh asking for a scope the grant lacks gets invalid_scope (or is left out).

    OAuth 2.1 4.3.1: "The requested scope MUST NOT include any scope not originally
    granted"; RFC 6749 5.2 ``invalid_scope``: "exceeds the scope granted". A server may
    also ignore the extra scope (1.4.1), naming what it granted in ``scope``.
    """
    a, b = await _two_scopes(live)
    client = await live.client()
    _, tokens = await live.tokens(client, scope=a)
    if tokens.refresh_token is None:
        not_applicable("the token response carries no refresh_token")
    ex = await live.refresh(client, tokens.refresh_token, scope=f"{a} {b}")
    if ex.status != 200:
        refused(live, ex, f"a refresh widening {a!r} to {a} {b!r}", codes=("invalid_scope",))
        return
    new = live.tokens_of(ex, "refresh", client)
    granted = _scope_of(new)
    if granted is None or b in granted:
        fail(f"a grant for {a!r} refreshed into scope {new.scope!r}",
             f"invalid_scope, or a scope member without {b!r}", [tokens.exchange, ex])


@spec("OAUTH21-4.3.1", "OAUTH21-1.4.1")
async def test_refresh_scope_omitted_keeps_and_narrower_narrows(live: Live) -> None:
    """Without scope a refresh keeps the grant's scope; with a narrower one it narrows.

    OAuth 2.1 4.3.1: an omitted scope "is treated as equal to the scope originally
    granted"; 1.4.1: a token scope other than the requested one MUST be named in
    ``scope`` (so an absent ``scope`` means the requested one).
    """
    a, b = await _two_scopes(live)
    client = await live.client()
    _, tokens = await live.tokens(client, scope=f"{a} {b}")
    if tokens.refresh_token is None:
        not_applicable("the token response carries no refresh_token")
    original = _scope_of(tokens) or {a, b}
    kept_ex = await live.refresh(client, tokens.rt)
    kept = live.tokens_of(kept_ex, "refresh without scope", client)
    if _scope_of(kept) not in (None, original):
        fail(f"a refresh without scope narrowed {sorted(original)} to {kept.scope!r}",
             "the scope originally granted", [tokens.exchange, kept_ex])
    token = kept.refresh_token or tokens.refresh_token
    narrow_ex = await live.refresh(client, token, scope=a)
    if narrow_ex.status != 200:
        fail(f"a refresh narrowing to {a!r} answered {narrow_ex.describe()}",
             f"a token for {a!r}", [narrow_ex])
    narrowed = live.tokens_of(narrow_ex, "refresh with a narrower scope", client)
    if _scope_of(narrowed) not in (None, {a}):
        fail(f"a refresh asking for {a!r} got scope {narrowed.scope!r}",
             f"scope {a!r} (or no scope member, meaning the requested one)", [narrow_ex])


@aging
@run_last(2)
@spec("RFC6749-1.5", "OAUTH21-1.3.2")
async def test_refresh_token_outlives_its_access_token(live: Live) -> None:
    """A refresh token still works after its access token expired (independent lifetimes).

    RFC 6749 1.5 / OAuth 2.1 1.3.2: refresh tokens are used "to obtain a new access token
    when the current access token becomes invalid or expires". The pair was issued
    earlier in the run; its access token has expired, its refresh token has not.
    """
    ttl = live.config.refresh_ttl
    tokens = await live.outlived(ttl)
    if ttl is not None and tokens.expires_in is not None and ttl <= tokens.expires_in + 1:
        not_applicable(f"the refresh token lives {ttl:g} s, not longer than the access token")
    ex = await live.refresh(tokens.client or await live.client(), tokens.rt)
    if ex.status != 200:
        fail(f"a refresh token whose access token expired ({tokens.expires_in:g} s) answered "
             f"{ex.describe()}", "200 with a new access token", [tokens.exchange, ex])


@aging
@run_last(2)
@spec("OAUTH21-4.3.1", "RFC6749-5.2")
async def test_refresh_token_expires_after_its_lifetime(live: Live) -> None:
    """A refresh token past its lifetime is refused (invalid_grant).

    The lifetime is the one the user declares (``--authconform-refresh-ttl``); the token
    is obtained when the run starts and used once the lifetime has passed.
    """
    ttl = live.config.refresh_ttl
    if ttl is None:
        disabled("the deployment's refresh-token lifetime is unknown: give it with "
                 "--authconform-refresh-ttl=SECONDS (and --authconform-max-wait at least that)")
    tokens = await live.aged("refresh", ttl, "a refresh token")
    if tokens.refresh_token is None:
        not_applicable("the token response carries no refresh_token")
    ex = await live.refresh(tokens.client, tokens.rt)
    refused(live, ex, f"a refresh token used {ttl + 1:g} s after it was issued "
            f"(lifetime {ttl:g} s)", codes=("invalid_grant",),
            granted="an expired refresh token was accepted")


@spec("OAUTH21-4.3.1", "RFC6749-6")
async def test_confidential_refresh_without_authentication_is_refused(live: Live) -> None:
    """A confidential client's refresh without its credentials is refused (invalid_client).

    OAuth 2.1 4.3.1: "Confidential clients MUST authenticate"; RFC 6749 6: the AS MUST
    "require client authentication for confidential clients".
    """
    client, tokens = await _refreshable(live, confidential=True)
    if client.public:
        not_applicable("the server registered the confidential client without a secret")
    async with live.control("the same refresh with client authentication"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh (confidential client)", client)
    token = rotated.refresh_token or tokens.rt
    bare = Client(client.client_id, client.redirect_uri)  # client_id, no secret
    ex = await live.refresh(bare, token)
    if ex.status == 200:
        fail("a confidential client's refresh token was accepted without client "
             "authentication (client_id alone)", "401 (or 400) invalid_client", [first, ex])
    if ex.status is not None and ex.status >= 500:
        unavailable(f"the unauthenticated refresh answered {ex.describe()}")
    refused(live, ex, "a refresh without client authentication",
            codes=("invalid_client", "invalid_request"))
