"""Assertion helpers of the live checks: each failure is observed vs expected + exchanges.

A negative check asks one question: was the request *refused*? ``refused`` (token,
revocation, introspection and registration endpoints) and ``refused_at_authorize``
answer it and keep the other question, *was it refused correctly*, for the rule that
owns it: a refusal with another error code or status is filed as a finding against
RFC 6749 5.2 (4.1.2.1 at the authorization endpoint, RFC 7591 3.2.2 at registration),
which that rule's own check reports once. A 5xx proves nothing about the check's rule:
the check is ``unavailable`` (and the 5xx is filed too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from authconform.live._outcome import Finding, unavailable
from authconform.live._record import Exchange, LiveFailure

if TYPE_CHECKING:
    from authconform.live._flows import AuthResult, Live

__all__ = [
    "ERROR_RULE",
    "expect_401",
    "expect_error",
    "fail",
    "oauth_error",
    "refused",
    "refused_at_authorize",
]

#: exchange purpose -> the rule its error responses follow
ERROR_RULE = {
    "token": "RFC6749-5.2",
    "revocation": "RFC6749-5.2",
    "introspection": "RFC6749-5.2",
    "registration": "RFC7591-3.2.2",
    "authorize": "RFC6749-4.1.2.1",
}


def fail(
    observed: str,
    expected: str,
    exchanges: Iterable[Exchange | None] = (),
    *,
    spec: str | None = None,
    level: str | None = None,
) -> NoReturn:
    """Raise a ``LiveFailure``."""
    raise LiveFailure(
        observed, expected, [e for e in exchanges if e is not None], spec=spec, level=level
    )


def oauth_error(ex: Exchange) -> str | None:
    """The ``error`` member of a JSON error response, if any."""
    body = ex.json_body()
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return None


def expect_error(
    ex: Exchange,
    codes: Iterable[str],
    what: str,
    *,
    statuses: Iterable[int] = (400,),
    context: Iterable[Exchange] = (),
    spec: str | None = None,
) -> None:
    """``ex`` must be an error response with one of ``codes`` and one of ``statuses``."""
    codes, statuses = tuple(codes), tuple(statuses)
    error = oauth_error(ex)
    if ex.status in statuses and error in codes:
        return
    got = f"error {error!r}" if error else ex.body_kind()
    fail(
        f"{what}: {ex.describe()} with {got}",
        f"{' or '.join(map(str, statuses))} with error {' or '.join(codes)}",
        [*context, ex],
        spec=spec,
    )


def _statuses(codes: tuple[str, ...], ex: Exchange) -> tuple[int, ...]:
    """Allowed statuses: 400, and 401 for invalid_client (required after Basic)."""
    if "invalid_client" in codes:
        basic = ex.request_headers.get("authorization", "").lower().startswith("basic ")
        return (401,) if basic else (400, 401)
    return (400,)


def refused(
    live: Live,
    ex: Exchange,
    what: str,
    *,
    codes: Iterable[str],
    granted: str | None = None,
    context: Iterable[Exchange] = (),
    spec: str | None = None,
) -> None:
    """The verdict of a negative check on one response: the request must be refused.

    - 2xx (or 3xx): the request was granted: the check fails (``granted`` says how).
    - 4xx other than 429 with a JSON error: refused, the check's rule held. A code not
      in ``codes`` (or a status other than 400, 401 for ``invalid_client``) is a finding
      against the endpoint's error rule, reported once by that rule's check.
    - 5xx, or a 4xx that is no OAuth error: refused by accident, which proves nothing:
      filed as a finding, and the check is ``unavailable``.
    """
    codes = tuple(codes)
    status = ex.status or 0
    rule = ERROR_RULE.get(ex.purpose, "RFC6749-5.2")
    allowed = _statuses(codes, ex)
    error = oauth_error(ex)
    if status < 400:
        fail(
            f"{what}: {ex.describe()}: " + (granted or "the request was granted"),
            f"the request refused ({' or '.join(codes)})",
            [*context, ex],
            spec=spec,
        )
    if 400 <= status < 500 and status != 429 and error is not None:
        if error in codes and status in allowed:
            return
        if rule == "RFC7591-3.2.2" and status == 400:
            return  # RFC 7591 does not close its list of registration error codes
        live.file(Finding(
            rule,
            f"{what}: {status} with error {error!r}",
            f"{' or '.join(map(str, allowed))} with error {' or '.join(codes)}",
            [ex],
        ))
        return
    live.file(Finding(
        rule,
        f"{what}: {ex.describe()} ({ex.body_kind()})",
        f"{' or '.join(map(str, allowed))} with a JSON error {' or '.join(codes)}",
        [ex],
    ))
    unavailable(
        f"{what}: the server answered {ex.describe()} ({ex.body_kind()}); a refusal "
        f"that is no OAuth error proves nothing here (filed under {rule})"
    )


def refused_at_authorize(
    live: Live,
    auth: AuthResult,
    what: str,
    *,
    codes: Iterable[str],
    context: Iterable[Exchange] = (),
    spec: str | None = None,
    allow_error_page: bool = True,
) -> None:
    """A negative check at the authorization endpoint: no code may be issued.

    Refused means a redirect carrying ``error`` or (``allow_error_page``) an error page
    (4xx). An ``error`` not in ``codes`` is a finding against RFC 6749 4.1.2.1; a 5xx
    page proves nothing (``unavailable``).
    """
    codes = tuple(codes)
    if auth.code is not None:
        fail(
            f"{what}: answered with {auth.describe()}",
            f"no code: an error ({' or '.join(codes)})",
            [*context, *auth.exchanges],
            spec=spec,
        )
    if auth.location is not None:
        if auth.error is None:
            fail(
                f"{what}: answered with {auth.describe()} (no error parameter)",
                f"a redirect with error={' or '.join(codes)}",
                [*context, *auth.exchanges],
                spec=spec,
            )
        if auth.error not in codes:
            live.file(Finding(
                "RFC6749-4.1.2.1",
                f"{what}: error={auth.error!r}",
                f"error={' or '.join(codes)}",
                auth.exchanges[-1:],
            ))
        return
    status = auth.status or 0
    if allow_error_page and 400 <= status < 500 and status != 429:
        return
    last = auth.last
    if last is not None and 400 <= status < 600:
        live.file(Finding(
            "RFC6749-4.1.2.1",
            f"{what}: {last.describe()} ({last.body_kind()})",
            "an error page (4xx) or a redirect with an error",
            [last],
        ))
    unavailable(
        f"{what}: the authorization endpoint answered {auth.describe()}: neither a "
        "redirect with an error nor an error page, so it proves nothing here"
    )


def expect_401(ex: Exchange, what: str, context: Iterable[Exchange] = ()) -> None:
    """``ex`` must be a 401 with a Bearer ``WWW-Authenticate`` challenge."""
    challenge = ex.header("www-authenticate") or ""
    if ex.status == 401 and challenge.lower().startswith("bearer"):
        return
    if ex.status == 401:
        fail(
            f"{what}: 401 with WWW-Authenticate {challenge or 'missing'!r}",
            "401 with a Bearer WWW-Authenticate challenge (RFC 6750 section 3)",
            [*context, ex],
            spec="RFC6750-3",
        )
    fail(f"{what}: {ex.describe()}", "401 Unauthorized", [*context, ex])
