"""After the run: revoke what it created, and no secret in the server's log."""

from authconform import markers
from authconform.live import Live, disabled, fail, not_applicable
from authconform.live._pytest import note, run_last
from authconform.markers import spec

pytestmark = markers.live


@run_last(4)
@spec("RFC7009-2.1")
async def test_cleanup_revokes_everything_created(live: Live, request) -> None:
    """Every token the run obtained is revoked where the server offers revocation.

    Revocation (RFC 7009) and registration management (RFC 7592) are optional: a server
    without them leaves tokens to expire (a note). A revocation endpoint that refuses to
    revoke a token of a client it accepts fails (RFC 7009 2.1: 200).
    """
    await live.discovery()
    count = len(live.created)
    failures, notes = await live.cleanup()
    for line in notes:
        note(request, f"cleanup: {line}")
    if failures:
        fail(f"cleanup of {count} tokens: {'; '.join(failures[:5])}",
             "every revocation answered 200 (RFC 7009 2.1)",
             live.target.recorder.exchanges[-3:])


@run_last(5)
@spec("RFC6749-10.3", "RFC6749-10.5")
async def test_server_log_contains_no_issued_secret(live: Live) -> None:
    """No token, code or secret issued during the run appears in the server's log."""
    if live.log_source is None:
        disabled("give the server's log with --authconform-server-log FILE")
    text = live.log_source()
    leaked = sorted({kind for value, kind in live.target.issued.items() if value in text})
    if leaked:
        fail(f"the server log contains issued secrets of kind {', '.join(leaked)}",
             f"none of the {len(live.target.issued)} issued secrets in the log")
    if not live.target.issued:
        not_applicable("the run obtained no token, code or secret")
