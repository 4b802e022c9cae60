"""After the run: revoke what it created, and no secret in the server's log."""

import pytest

from authconform import markers
from authconform.live import Live, fail
from authconform.live._pytest import run_last
from authconform.markers import spec

pytestmark = markers.live


@run_last(1)
@spec("RFC7009-2.1")
async def test_cleanup_revokes_everything_created(live: Live) -> None:
    """Every token the run obtained is revoked (and registrations deleted where offered)."""
    await live.discovery()
    count = len(live.created)
    problems = await live.cleanup()
    if problems:
        fail(f"cleanup of {count} tokens: {'; '.join(problems[:5])}",
             "every revocation answered 200 (RFC 7009), every deletion 204 (RFC 7592)",
             live.target.recorder.exchanges[-3:])


@run_last(2)
@spec("RFC6749-10.3", "RFC6749-10.5")
async def test_server_log_contains_no_issued_secret(live: Live) -> None:
    """No token, code or secret issued during the run appears in the server's log."""
    if live.log_source is None:
        pytest.skip("disabled: give the server's log with --authconform-server-log FILE")
    text = live.log_source()
    leaked = sorted({kind for value, kind in live.target.issued.items() if value in text})
    if leaked:
        fail(f"the server log contains issued secrets of kind {', '.join(leaked)}",
             f"none of the {len(live.target.issued)} issued secrets in the log")
    if not live.target.issued:
        pytest.skip("not-applicable: the run obtained no token, code or secret")
