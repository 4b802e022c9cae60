"""Token introspection (RFC 7662), when the metadata offers it."""

import secrets

from authconform import markers
from authconform.live import Live, fail
from authconform.markers import spec

pytestmark = markers.live


@spec("RFC7662-2.2")
async def test_introspection_tells_active_from_inactive_tokens(live: Live) -> None:
    """A live token of the client introspects as active, a made-up one as inactive.

    RFC 7662 2.2: ``active`` is REQUIRED, "a boolean indicator of whether or not the
    presented token is currently active"; an unknown token gets ``{"active": false}``.
    """
    client = await live.client_for("introspection")
    _, tokens = await live.tokens(client)
    live_ex = await live.introspect(client, tokens.access_token)
    body = live_ex.json_body()
    if live_ex.status != 200 or not isinstance(body, dict) or body.get("active") is not True:
        fail(f"introspecting a fresh access token answered {live_ex.describe()} "
             f"{live_ex.text[:120]!r}", '200 with {"active": true}', [live_ex])
    dead = await live.introspect(client, secrets.token_urlsafe(32))
    body = dead.json_body()
    if dead.status != 200 or not isinstance(body, dict) or body.get("active") is not False:
        fail(f"introspecting a made-up token answered {dead.describe()} {dead.text[:120]!r}",
             '200 with {"active": false}', [dead])
