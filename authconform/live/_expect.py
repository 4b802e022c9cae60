"""Assertion helpers of the live checks: each failure is observed vs expected + exchanges."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from authconform.live._record import Exchange, LiveFailure

__all__ = ["expect_401", "expect_error", "fail", "oauth_error"]


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
