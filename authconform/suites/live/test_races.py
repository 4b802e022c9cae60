"""Races over HTTP: single use, rotation, revocation and registration under real parallelism.

Each race sends ``--authconform-race-size`` requests at once (lockstep: one open
connection per request, one barrier releases them all, see ``authconform.live._parallel``),
spread over the target's instances, and repeats ``--authconform-race-rounds`` times. A
verdict is drawn from what the requests answered and from sequential probes afterwards.
A property the specification makes conditional (revocation on replay, rotation, family
revocation) is first probed sequentially: a server that does not behave that way is
``not-applicable`` with the reason, never failed.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from authconform import markers
from authconform.live import (
    Client,
    Finding,
    Live,
    Tokens,
    fail,
    not_applicable,
    oauth_error,
    unavailable,
)
from authconform.live._parallel import (
    Call,
    authorize_call,
    exchange_call,
    lanes,
    lockstep,
    refresh_call,
    revoke_call,
    token_call,
)
from authconform.live._pytest import note
from authconform.live._record import Exchange
from authconform.markers import spec

pytestmark = [markers.live, markers.race]


def _spread(live: Live, n: int) -> list[int]:
    """Instances for ``n`` requests, round robin (different processes where there are)."""
    return [i % live.target.instances for i in range(n)]


def _jitter(round_no: int, index: int) -> float:
    """No jitter in the first round; then every other request a little later (seconds)."""
    return 0.0 if round_no == 0 or index % 2 == 0 else 0.0002 * round_no


#: the step of a sweep of offsets across a race window (seconds): finer than one store
#: round trip of a server (~0.1-1 ms), so some offset of every sweep falls inside it
_STEP = 0.00012


def _offset(p: int, r: int, pairs: int, rounds: int) -> float:
    """Pair ``p``'s offset in round ``r``: the rounds interleave one sweep of the window."""
    return _STEP * (p + r / rounds)


def _pair_instances(k: int, p: int, r: int) -> tuple[int, int]:
    """The instances of pair ``p``'s two requests: one process and two, alternately."""
    home = (p + r) % k
    return home, home if p % 2 == 0 else (home + 1) % k


def _where(ex: Exchange) -> str:
    return f"instance {ex.instance}"


def _broken(exchanges: list[Exchange]) -> list[Exchange]:
    """Answers that are neither a grant nor an OAuth refusal: no response, 5xx, non-JSON."""
    bad = []
    for ex in exchanges:
        if ex.status is None or ex.status >= 500:
            bad.append(ex)
        elif ex.status == 200 and not isinstance((ex.json_body() or {}).get("access_token"), str):
            bad.append(ex)
        elif ex.status != 200 and oauth_error(ex) is None:
            bad.append(ex)
    return bad


def _tally(
    live: Live, exchanges: list[Exchange], what: str, allowed: tuple[str, ...]
) -> list[Exchange]:
    """The 200s of a token-endpoint race; a failure for answers that are no verdict.

    A refusal with another error code than ``allowed`` is filed against RFC 6749 5.2 (its
    own check reports it once); no response, a 5xx or a body that is not JSON fails the
    check with that reason: the server broke under concurrency.
    """
    bad = _broken(exchanges)
    winners = [ex for ex in exchanges if ex.status == 200 and ex not in bad]
    if bad and len(winners) > 1:
        # the breach the race is about comes first: the caller reports the winners; the
        # broken answers are filed against the rule for token-endpoint errors
        first = bad[0]
        live.file(
            Finding(
                "RFC6749-5.2",
                f"{what}: {len(bad)} of {len(exchanges)} answers were no OAuth answer "
                f"(first: {first.describe()}, {first.body_kind() if first.status else 'none'})",
                "200 with tokens or 400 with a JSON error, also under concurrency",
                bad[:3],
            )
        )
        return winners
    if bad:
        first = bad[0]
        fail(
            f"{what}: {len(bad)} of {len(exchanges)} answers were no OAuth answer "
            f"(first: {first.describe()}, {first.body_kind() if first.status else 'none'})",
            "200 with tokens or 400 with a JSON error, also under concurrency",
            bad[:3],
        )
    for ex in exchanges:
        error = oauth_error(ex)
        if ex.status != 200 and (error not in allowed or ex.status != 400):
            live.file(
                Finding(
                    "RFC6749-5.2",
                    f"{what}: {ex.status} with error {error!r}",
                    f"400 with error {' or '.join(allowed)}",
                    [ex],
                )
            )
    return [ex for ex in exchanges if ex.status == 200]


async def _refresh_works(live: Live, client: Client, token: str) -> tuple[bool, Exchange]:
    """Whether ``token`` refreshes now (a refusal is a 4xx; a 5xx proves nothing)."""
    ex = await live.refresh(client, token)
    if ex.status == 200:
        return True, ex
    if ex.status is not None and 400 <= ex.status < 500 and ex.status != 429:
        return False, ex
    unavailable(f"the refresh that tells whether a token lives answered {ex.describe()}")


# -- authorization codes ----------------------------------------------------------------------
@spec("RFC6749-4.1.2", "OAUTH21-4.1.3")
async def test_parallel_exchanges_of_one_code_have_one_winner(live: Live) -> None:
    """N exchanges of one code sent at once: exactly one 200, the others invalid_grant.

    RFC 6749 4.1.2: "The client MUST NOT use the authorization code more than once"; the
    authorization server MUST deny a second use (OAuth 2.1 4.1.3: the code is single
    use), whichever instance the uses reach and however close together they arrive.
    """
    client = await live.client()
    n, rounds = live.config.race_size, live.config.race_rounds
    for r in range(rounds):
        async with live.control("an authorization code"):
            auth = await live.code_for(client)
        calls = [await exchange_call(live, client, auth, instance=i) for i in _spread(live, n)]
        for i, call in enumerate(calls):
            call.delay = _jitter(r, i)
        exchanges = await lockstep(live, calls)
        what = f"{n} exchanges of one code sent at once (round {r + 1} of {rounds})"
        won = _tally(live, exchanges, what, ("invalid_grant",))
        if len(won) > 1:
            fail(
                f"{what}: {len(won)} answered 200 (on "
                f"{', '.join(sorted({_where(e) for e in won}))}): the code was exchanged "
                f"{len(won)} times",
                "exactly one 200, the others 400 invalid_grant",
                won,
            )
        if not won:
            fail(
                f"{what}: none answered 200 (a valid code was refused to every request)",
                "exactly one 200: the first exchange of a valid code succeeds",
                exchanges[:3],
            )


async def _grant_alive(
    live: Live, client: Client, tokens: Tokens
) -> tuple[bool, Tokens, list[Exchange]]:
    """Whether a grant's tokens work: a refresh when there is one (its successor kept)."""
    if tokens.refresh_token is not None:
        works, ex = await _refresh_works(live, client, tokens.refresh_token)
        if works:
            return True, live.tokens_of(ex, "refresh", client), [ex]
        return False, tokens, [ex]
    works, ex = await live.token_works(tokens.access_token, client)
    return works, tokens, [ex]


@spec("OAUTH21-4.1.3", "RFC6749-4.1.2", level="SHOULD")
async def test_parallel_code_replays_revoke_the_winners_tokens(live: Live, request: Any) -> None:
    """After a code's exchange and its replay at once, the winner's tokens are revoked.

    OAuth 2.1 4.1.3: the AS "SHOULD revoke (when possible) all access tokens and refresh
    tokens previously issued based on that authorization code". Applies where the
    server revokes on a sequential replay (probed first). A replay that ran while the
    winner's tokens were being issued may miss them (they were not issued yet), so when
    they survive the race, one more replay is sent: after it they must be revoked.
    """
    client = await live.client()
    async with live.control("a code exchange and its replay"):
        auth, tokens = await live.tokens(client)
        started = time.perf_counter()
        replay = await live.exchange(client, auth)
        took = time.perf_counter() - started
    if replay.status == 200:
        unavailable("a sequential replay was exchanged again (the single-use checks report it)")
    alive, _, _ = await _grant_alive(live, client, tokens)
    if alive:
        not_applicable(
            "a sequential replay of a code leaves its tokens working: this "
            "server does not revoke on replay (test_replayed_code_revokes_issued_"
            "tokens reports that), so there is nothing to check after a race"
        )
    # twice the rounds of the other races: whether a replay lands between the winner's
    # two writes is up to the server's scheduling (about 60% of rounds on the reference's
    # racy mutant), so the rounds buy the certainty (4 rounds missed it 2-3% of runs)
    n, rounds = live.config.race_size, 2 * live.config.race_rounds
    pairs = max(1, n // 2)
    k = live.target.instances
    late = 0
    disc = await live.discovery()
    can_probe = tokens.refresh_token is not None and (
        disc.mcp_url is not None or disc.endpoint("introspection") is not None
    )
    for r in range(rounds):
        # codes exchanged twice each, all released at once: every first exchange on one
        # instance, every second on another, later by an offset (the offsets sweep from
        # under to over a sequential exchange's time). A replay on the same instance
        # could never be caught between the winner's consuming the code and storing its
        # tokens (one process's store calls may queue in order); the firsts together
        # stretch that window, so some replay lands in it, and its refusal must revoke
        # tokens issued after it (at the latest on a later replay)
        auths = [await live.code_for(client) for _ in range(pairs)]
        calls: list[Call] = []
        first, second = r % k, (r + 1) % k
        for auth in auths:
            calls.append(await exchange_call(live, client, auth, instance=first))
        for p, auth in enumerate(auths):
            calls.append(await exchange_call(live, client, auth, instance=second))
            calls[-1].delay = took * (0.4 + 1.2 * (p + r / rounds) / pairs)
        exchanges = await lockstep(live, calls)
        what = (
            f"{pairs} codes each exchanged twice, all sent at once, the second exchanges "
            f"on instance {second} {calls[pairs].delay * 1e3:.1f}-{calls[-1].delay * 1e3:.1f} ms "
            f"later (round {r + 1} of {rounds})"
        )
        _tally(live, exchanges, what, ("invalid_grant",))
        for p, auth in enumerate(auths):
            pair = [exchanges[p], exchanges[pairs + p]]
            won = [ex for ex in pair if ex.status == 200]
            if len(won) != 1:
                unavailable(
                    f"{what}: {len(won)} of the two exchanges of a code answered 200, not one "
                    "(the single-winner check reports it)"
                )
            winner = live.tokens_of(won[0], "the winning exchange", client)
            alive, newest, seen = await _grant_alive(live, client, winner)
            if not alive:
                continue
            late += 1
            again = await live.exchange(client, auth)
            alive, _, more = await _grant_alive(live, client, newest)
            if alive:
                fail(
                    f"{what}: the winner's tokens still work after a concurrent replay "
                    f"(on instance {pair[1 if pair[0] is won[0] else 0].instance}) and one "
                    "more replay sent after the race",
                    "every token issued for the code revoked once a replay was refused "
                    "(as a sequential replay does on this server)",
                    [won[0], *seen, again, *more],
                )
        if can_probe:
            late += await _replays_racing_refreshes(live, client, r, rounds, pairs, k)
    if late:
        note(
            request,
            f"a concurrent replay left tokens issued while it ran working ({late} "
            f"time{'s' if late > 1 else ''}); a later replay revoked them",
        )


async def _replays_racing_refreshes(
    live: Live, client: Client, r: int, rounds: int, pairs: int, k: int
) -> int:
    """Replays of exchanged codes at once with refreshes of their tokens; how many late.

    A replay refused while a refresh of the code's tokens is under way may revoke the
    grant between the refresh's rotation and its storing the new access token: that
    token outlives the replay, and the next replay must revoke it (a server that handles
    a code's replay only once never does). Each pair (one code) sends the replay first
    and the refresh at another offset, the offsets sweeping the window (a store round
    trip or two), on two instances where there are (each way round in turn).
    """
    issued = [await live.tokens(client) for _ in range(pairs)]
    calls: list[Call] = []
    where: list[str] = []
    for p, (auth, tokens) in enumerate(issued):
        home = (p + r) % k
        other = (home + 1) % k  # across two processes, each way in turn (measured: one
        # process's queue never let the window open in the reference's store round trips)
        calls.append(await exchange_call(live, client, auth, instance=home))
        calls.append(await refresh_call(live, client, tokens.rt, instance=other))
        calls[-1].delay = _offset(p, r, pairs, rounds)
        where.append(
            f"replay on instance {home}, refresh on instance {other} "
            f"{calls[-1].delay * 1e6:.0f} us later"
        )
    exchanges = await lockstep(live, calls)
    what = (
        f"{pairs} replays of exchanged codes, each with a refresh of its tokens, all sent at "
        f"once (round {r + 1} of {rounds})"
    )
    _tally(live, exchanges[0::2], what, ("invalid_grant",))
    won = _tally(live, exchanges[1::2], what, ("invalid_grant",))
    late = 0
    for (auth, _), replay, refresh, place in zip(
        issued, exchanges[0::2], exchanges[1::2], where, strict=True
    ):
        if replay.status == 200:
            unavailable(
                f"{what}: a replay of a code exchanged before answered 200 ({place}; the "
                "single-use checks report it)"
            )
        if refresh not in won:
            continue
        fresh = live.tokens_of(refresh, "the refresh racing the replay", client)
        alive, seen = await _issued_alive(live, client, fresh)
        if not alive:
            continue
        late += 1
        again = await live.exchange(client, auth)
        alive, more = await _issued_alive(live, client, fresh)
        if alive:
            fail(
                f"{what}: tokens the refresh issued ({place}) still work after the "
                "concurrent replay and one more replay sent after the race",
                "every token issued for the code revoked once a replay was refused "
                "(as a sequential replay does on this server)",
                [replay, refresh, *seen, again, *more],
            )
    return late


async def _issued_alive(live: Live, client: Client, tokens: Tokens) -> tuple[bool, list[Exchange]]:
    """Whether the access token works, or failing that the refresh token refreshes."""
    works, ex = await live.token_works(tokens.access_token, client)
    if works or tokens.refresh_token is None:
        return works, [ex]
    refreshes, probe = await _refresh_works(live, client, tokens.refresh_token)
    return refreshes, [ex, probe]


# -- refresh tokens ---------------------------------------------------------------------------
async def _rotating(live: Live, client: Client) -> None:
    """``not-applicable`` unless a refresh rotates and the old token is then refused."""
    tokens = await live.refreshable(client)
    async with live.control("a sequential refresh"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh", client)
    if not rotated.refresh_token or rotated.refresh_token == tokens.refresh_token:
        not_applicable(
            "the server does not rotate refresh tokens (the same token stays "
            "valid: allowed for confidential clients, RFC 9700 4.14.2; the "
            "rotation check reports public clients)"
        )
    works, ex = await _refresh_works(live, client, tokens.rt)
    if works:
        not_applicable(
            "a rotated refresh token still refreshes (a grace period): a race "
            "cannot be told from an allowed reuse"
        )


@spec("RFC9700-4.14.2", "OAUTH21-4.3.1")
async def test_parallel_refreshes_of_one_token_have_at_most_one_winner(live: Live) -> None:
    """N refreshes of one rotating refresh token at once: at most one succeeds.

    RFC 9700 4.14.2 / OAuth 2.1 4.3.1: with rotation, a refresh token is invalidated when
    it is used and a reuse revokes the family. So of N uses at once at most one gets a
    successor, and afterwards the family is intact with that one successor, or revoked
    as a whole: never two usable successors.
    """
    client = await live.client(confidential=False)
    if not client.public:
        not_applicable("no public client here (rotation is required of public clients)")
    await _rotating(live, client)
    n, rounds = live.config.race_size, live.config.race_rounds
    for r in range(rounds):
        tokens = await live.refreshable(client)
        calls = [await refresh_call(live, client, tokens.rt, instance=i) for i in _spread(live, n)]
        for i, call in enumerate(calls):
            call.delay = _jitter(r, i)
        exchanges = await lockstep(live, calls)
        what = f"{n} refreshes of one refresh token sent at once (round {r + 1} of {rounds})"
        won = _tally(live, exchanges, what, ("invalid_grant",))
        if len(won) > 1:
            successors = {(e.json_body() or {}).get("refresh_token") for e in won}
            fail(
                f"{what}: {len(won)} answered 200 ({len(successors)} different successors)",
                "at most one 200: a rotated refresh token is invalidated by its first use",
                won,
            )
        if won:
            successor = live.tokens_of(won[0], "the winning refresh", client)
            if successor.refresh_token in (None, tokens.refresh_token):
                continue  # not rotated this time: nothing more to say
            intact, probe = await _refresh_works(live, client, successor.refresh_token or "")
            if not intact:
                old, again = await _refresh_works(live, client, tokens.rt)
                if old:
                    fail(
                        f"{what}: the family was revoked, but the token raced for "
                        "refreshes again afterwards",
                        "the family intact with one successor, or revoked as a whole",
                        [won[0], probe, again],
                    )


# -- refresh racing revocation -----------------------------------------------------------------
@spec("RFC7009-2.1", level="SHOULD")
async def test_refresh_racing_revocation_leaves_no_usable_refresh_token(live: Live) -> None:
    """A refresh and a revocation of one refresh token at once: afterwards none of its family works.

    RFC 7009 2.1: "The invalidation takes place immediately, and the token cannot be used
    again after the revocation" (the revoked token refreshing again fails as a MUST);
    the revocation of a refresh token "may cause the revocation of related tokens and
    the underlying authorization grant". Where it does (probed: revoking a token that was
    already rotated ends its successor), a refresh in flight must not escape it: once a
    revocation answered 200, no refresh token of the family refreshes (SHOULD).
    """
    client = await live.client_for("revocation")
    tokens = await live.refreshable(client)
    async with live.control("a sequential refresh"):
        first = await live.refresh(client, tokens.rt)
        rotated = live.tokens_of(first, "refresh", client)
    successor = rotated.refresh_token
    if successor and successor != tokens.refresh_token:
        await live.revoked(client, tokens.rt, "refresh_token")
        works, _ = await _refresh_works(live, client, successor)
        if works:
            not_applicable(
                "revoking a refresh token that was already rotated leaves its "
                "successor working (RFC 7009 leaves that policy open), so a "
                "refresh that escaped a revocation cannot be told from one that "
                "came first"
            )
    n, rounds = live.config.race_size, live.config.race_rounds
    pairs = max(1, n // 2)
    k = live.target.instances
    for r in range(rounds):
        # pairs of (one revocation, one refresh) of their own family each, all released at
        # once (a second refresh or revocation of one family would end it by itself: a
        # reuse, a revocation after the rotation); each pair sends its refresh at another
        # offset after its revocation, the offsets sweeping the window in which a
        # revocation has read the token and not yet revoked it (a store round trip or two)
        families = [await live.refreshable(client) for _ in range(pairs)]
        calls: list[Call] = []
        where: list[str] = []
        for p, tokens in enumerate(families):
            home, other = _pair_instances(k, p, r)
            calls.append(await revoke_call(live, client, tokens.rt, "refresh_token", instance=home))
            calls.append(await refresh_call(live, client, tokens.rt, instance=other))
            calls[-1].delay = _offset(p, r, pairs, rounds)
            where.append(
                f"revocation on instance {home}, refresh on instance {other} "
                f"{calls[-1].delay * 1e6:.0f} us later"
            )
        exchanges = await lockstep(live, calls)
        what = (
            f"{pairs} revocation and refresh pairs sent at once, each of one refresh token "
            f"(round {r + 1} of {rounds})"
        )
        won = _tally(live, exchanges[1::2], what, ("invalid_grant",))
        for tokens, revocation, refresh, place in zip(
            families, exchanges[0::2], exchanges[1::2], where, strict=True
        ):
            if revocation.status != 200:
                fail(
                    f"{what}: a revocation answered {revocation.describe()}",
                    "200 for a revocation (RFC 7009 2.1, 2.2)",
                    [revocation],
                    spec="RFC7009-2.1",
                    level="MUST",
                )
            new = (refresh.json_body() or {}).get("refresh_token") if refresh in won else None
            if isinstance(new, str) and new != tokens.refresh_token:
                works, probe = await _refresh_works(live, client, new)
                if works:
                    fail(
                        f"{what}: the refresh answered 200 ({place}), and its new "
                        "refresh token still refreshes after the revocation answered 200",
                        "no refresh token of the family usable once the revocation answered "
                        "(as when the revocation comes after a sequential refresh)",
                        [revocation, refresh, probe],
                    )
            works, probe = await _refresh_works(live, client, tokens.rt)
            if works:
                fail(
                    f"{what}: the revoked refresh token refreshes after the revocation "
                    f"answered 200 ({place})",
                    "the revoked token refused (invalid_grant)",
                    [revocation, probe],
                    spec="RFC7009-2.1",
                    level="MUST",
                )


# -- registration ------------------------------------------------------------------------------
def _unknown_client(ex: Exchange, client: Client) -> str | None:
    """Why ``ex`` shows the client unknown, or None when it was recognised."""
    if ex.status is None or ex.status >= 500:
        return f"{ex.describe()} ({ex.body_kind() if ex.status else 'no answer'})"
    if ex.purpose == "token":
        error = oauth_error(ex)
        if error == "invalid_client" or ex.status == 401:
            return f"{ex.describe()} with error {error!r} (an unknown client)"
        return None
    location = ex.header("location") or ""
    if 300 <= ex.status < 400:
        return None  # to the client's redirect URI, or to a login/consent page
    if ex.status == 200:
        return None  # a consent or login page
    return f"{ex.describe()} ({ex.body_kind()}){' to ' + location if location else ''}"


@spec("RFC7591-3.2.1")
async def test_registered_client_is_known_at_once_on_every_instance(live: Live) -> None:
    """As soon as registration answers, every instance knows the new client.

    RFC 7591 3.2.1: the server "returns a client identifier" for the client it
    registered; a client uses it right away, on whichever instance its next request
    reaches. The authorization and token requests are sent at once, the moment the
    registration answered, spread over the instances: none may treat the client as
    unknown (an error page, invalid_client).
    """
    await live.endpoint("registration")
    n, rounds = live.config.race_size, live.config.race_rounds
    k = live.target.instances
    for r in range(rounds):
        home = r % k
        # wave 1 goes only to the instances that did not take the registration (a request
        # to that one could make it publish a registration it held back, and hide that
        # the others did not know the client); wave 2 goes to every instance
        others = [i for i in range(k) if i != home] or [home]
        waves = [[others[i % len(others)] for i in range(n)], _spread(live, n)]
        exchanges: list[Exchange] = []
        async with lanes(live, waves[0]) as first, lanes(live, waves[1]) as second:
            async with live.control("a dynamic registration"):
                client = await live.new_client(instance=home)
            for opened, instances in ((first, waves[0]), (second, waves[1])):
                calls: list[Call] = []
                for i, instance in enumerate(instances):
                    if i % 2 == 0:
                        calls.append(await authorize_call(live, client, instance=instance))
                    else:
                        data = {
                            "grant_type": "authorization_code",
                            "code": secrets.token_urlsafe(32),
                            "redirect_uri": client.redirect_uri,
                            "code_verifier": secrets.token_urlsafe(48),
                        }
                        calls.append(await token_call(live, client, data, instance=instance))
                exchanges += await opened.fire(calls)
        what = (
            f"{n} requests with a client registered on instance {home}, sent at once the "
            f"moment registration answered{' to the other instances' if k > 1 else ''}, "
            f"then {n} more spread over every instance (round {r + 1} of {rounds})"
        )
        unknown = [
            (ex, why) for ex in exchanges if (why := _unknown_client(ex, client)) is not None
        ]
        if unknown:
            ex, why = unknown[0]
            fail(
                f"{what}: {len(unknown)} did not know the client (first: {_where(ex)}: {why})",
                "the client known to every instance once registration answered",
                [u[0] for u in unknown[:3]],
            )
