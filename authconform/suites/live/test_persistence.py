"""State shared by every instance: flows hop between instances of one deployment."""

import pytest

from authconform import markers
from authconform.live import Live, LiveFailure, fail
from authconform.markers import spec

pytestmark = markers.live


async def _hopping_flow(live: Live, start: int) -> None:
    """Register on one instance, authorize on the next, exchange, call MCP, refresh on others."""
    n = live.target.instances
    at = [(start + k) % n for k in range(5)]
    disc = await live.discovery()
    if disc.endpoint("registration"):
        client = await live.new_client(instance=at[0])
    else:
        client = await live.client()
    steps = ["registered", "authorized", "exchanged", "called MCP", "refreshed"]
    try:
        auth = await live.code_for(client, instance=at[1])
    except LiveFailure as exc:
        raise _hop(exc, steps[0], at[0], steps[1], at[1]) from None
    ex = await live.exchange(client, auth, instance=at[2])
    if ex.status != 200:
        raise _hop(LiveFailure(f"code exchange: {ex.describe()}", "200", [ex]),
                   steps[1], at[1], "exchanging the code", at[2])
    tokens = live.tokens_of(ex, "code exchange")
    if disc.mcp_url is not None:
        try:
            await live.mcp_session(tokens.access_token, instance=at[3])
        except LiveFailure as exc:
            raise _hop(exc, "issued the token", at[2], "using it for MCP", at[3]) from None
    if tokens.refresh_token is not None:
        rex = await live.refresh(client, tokens.refresh_token, instance=at[4])
        if rex.status != 200:
            raise _hop(LiveFailure(f"refresh: {rex.describe()}", "200", [rex]),
                       "issued the refresh token", at[2], "refreshing", at[4])


def _hop(exc: LiveFailure, did: str, a: int, doing: str, b: int) -> LiveFailure:
    if a == b:
        return exc
    return LiveFailure(
        f"instance {b} failed {doing} after instance {a} {did} ({exc.observed}): "
        "state is not shared between instances",
        "every instance sees the state the others wrote (one shared store)",
        exc.exchanges,
        spec=exc.spec,
    )


def _need_instances(live: Live) -> None:
    if live.target.instances < 2:
        pytest.skip("not-applicable: the target has one instance; give --server-url once per "
                    "instance (or --authconform-instances=2 for the reference server)")


@spec("RFC6749-4.1.3", "RFC6749-6")
async def test_flow_hops_between_instances(live: Live) -> None:
    """A flow spread over every instance succeeds."""
    _need_instances(live)
    await _hopping_flow(live, 0)


@spec("RFC6749-4.1.3", "RFC6749-6")
async def test_repeated_flows_all_succeed(live: Live) -> None:
    """N hopping flows in a row all succeed (an intermittent failure is caught)."""
    n = live.config.flows
    failures: list[LiveFailure] = []
    for i in range(n):
        try:
            await _hopping_flow(live, i)
        except LiveFailure as exc:
            failures.append(exc)
    if failures:
        first = failures[0]
        fail(f"{len(failures)} of {n} flows failed; first: {first.observed}",
             f"all {n} flows succeed", first.exchanges, spec=first.spec)
