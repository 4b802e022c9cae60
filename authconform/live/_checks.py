"""Response checks: plain functions registered by name, run over the run's exchanges.

A check returns ``None`` when the exchange is fine, else one line saying what is wrong
(observed vs expected). Register more with ``@response_check(name, spec, level)``.
They run once per run, over every exchange the run recorded (``Target.history``), in the
check of the suite that owns their rule (``test_responses.py``): a missing
``Cache-Control: no-store`` is one finding against RFC 6749 5.1, reported once with how
often it was seen, not a failure of every check that happened to get a token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from authconform.live._record import Exchange, LiveFailure

__all__ = [
    "CHECKS",
    "ResponseCheck",
    "TOKEN_ERRORS",
    "CheckContext",
    "response_check",
    "run_checks",
]

#: RFC 6749 section 5.2 error codes, plus RFC 8707 ``invalid_target``.
TOKEN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_target",
    }
)
#: RFC 7009 section 2.2.1 adds one code to the token endpoint's.
REVOCATION_ERRORS = TOKEN_ERRORS | {"unsupported_token_type"}
#: RFC 7591 section 3.2.2.
REGISTRATION_ERRORS = frozenset(
    {
        "invalid_redirect_uri",
        "invalid_client_metadata",
        "invalid_software_statement",
        "unapproved_software_statement",
    }
)


class CheckContext(Protocol):
    """What a response check may ask about the run."""

    def location_allowed(self, location: str, base: str) -> bool:
        """True when a redirect to ``location`` (relative to ``base``) stays on named hosts."""
        ...


Check = Callable[[Exchange, CheckContext], "str | None"]


@dataclass(frozen=True)
class ResponseCheck:
    """A registered response check."""

    name: str
    spec: str
    level: str
    fn: Check


CHECKS: dict[str, ResponseCheck] = {}


def response_check(name: str, spec: str, level: str = "MUST") -> Callable[[Check], Check]:
    """Register ``fn`` as the response check ``name`` citing ``spec``."""

    def register(fn: Check) -> Check:
        if name in CHECKS:
            raise ValueError(f"response check {name!r} is registered twice")
        CHECKS[name] = ResponseCheck(name, spec, level, fn)
        return fn

    return register


def run_checks(
    exchanges: list[Exchange], ctx: CheckContext, names: list[str] | None = None
) -> list[LiveFailure]:
    """Every violation of the named checks (all by default) in ``exchanges``."""
    failures = []
    for check in CHECKS.values():
        if names is not None and check.name not in names:
            continue
        for ex in exchanges:
            if ex.error is not None:
                continue
            problem = check.fn(ex, ctx)
            if problem is not None:
                observed, _, expected = problem.partition(" || ")
                failures.append(
                    LiveFailure(
                        f"[{check.name}] {observed}",
                        expected or "see the spec",
                        [ex],
                        spec=check.spec,
                        level=check.level,
                    )
                )
    return failures


def _error_problem(ex: Exchange, allowed: frozenset[str] | None, where: str) -> str | None:
    if ex.content_type != "application/json":
        return (
            f"{ex.describe()} error response with {ex.body_kind()}"
            f" || a JSON error object (application/json) from the {where}"
        )
    body = ex.json_body()
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return f"{ex.describe()} JSON without a string 'error' member || {{'error': <code>}}"
    if allowed is not None and body["error"] not in allowed:
        return (
            f"{ex.describe()} error code {body['error']!r}"
            f" || one of the registered codes {', '.join(sorted(allowed))}"
        )
    return None


@response_check("token-response-no-store", "RFC6749-5.1")
def _no_store(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.purpose != "token" or ex.status != 200:
        return None
    cache = (ex.header("cache-control") or "").lower()
    if "no-store" not in cache:
        return (
            f"{ex.describe()} with Cache-Control {ex.header('cache-control')!r}"
            " || Cache-Control: no-store on every token response"
        )
    return None


@response_check("registration-credentials-no-store", "RFC6749-5.1")
def _registration_no_store(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.purpose != "registration" or ex.status not in (200, 201):
        return None
    body = ex.json_body()
    if not isinstance(body, dict):
        return None
    if not any(isinstance(body.get(k), str) for k in ("client_secret",
                                                       "registration_access_token")):
        return None
    cache = (ex.header("cache-control") or "").lower()
    if "no-store" not in cache:
        return (
            f"{ex.describe()} carries client credentials with Cache-Control "
            f"{ex.header('cache-control')!r}"
            " || Cache-Control: no-store on every response containing credentials"
        )
    return None


@response_check("expires-in-is-a-positive-integer", "RFC6749-5.1")
def _expires_in(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.purpose != "token" or ex.status != 200:
        return None
    body = ex.json_body()
    if not isinstance(body, dict) or "expires_in" not in body:
        return None
    value = body["expires_in"]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return (
            f"{ex.describe()} with expires_in {value!r}"
            " || expires_in a positive integer number of seconds (RFC 6749 A.14: 1*DIGIT)"
        )
    return None


@response_check("oauth-errors-are-json", "RFC6749-5.2")
def _token_errors(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.purpose not in ("token", "revocation", "introspection") or ex.status not in (400, 401):
        return None
    allowed = TOKEN_ERRORS if ex.purpose == "token" else REVOCATION_ERRORS
    return _error_problem(ex, allowed, f"{ex.purpose} endpoint")


@response_check("registration-errors-are-json", "RFC7591-3.2.2")
def _registration_errors(ex: Exchange, ctx: CheckContext) -> str | None:
    """RFC 7591 3.2.2: a JSON object with a string ``error``.

    It "defines the following error codes" without closing the list (an OAuth error such
    as ``invalid_request`` for a malformed request fits too), so only the shape is judged.
    """
    if ex.purpose != "registration" or ex.status != 400:
        return None
    return _error_problem(ex, None, "registration endpoint")


@response_check("401-has-www-authenticate", "RFC6750-3")
def _www_authenticate(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.status != 401:
        return None
    basic = ex.request_headers.get("authorization", "").lower().startswith("basic ")
    if ex.purpose != "mcp" and not (ex.purpose == "token" and basic):
        return None
    value = ex.header("www-authenticate")
    if not value:
        return f"{ex.describe()} without a WWW-Authenticate header || 401 with WWW-Authenticate"
    if ex.purpose == "mcp" and not value.lower().startswith("bearer"):
        return f"{ex.describe()} WWW-Authenticate {value!r} || a Bearer challenge"
    return None


@response_check("redirects-stay-on-named-hosts", "RFC9700-4.11")
def _redirects(ex: Exchange, ctx: CheckContext) -> str | None:
    if ex.status is None or not 300 <= ex.status < 400:
        return None
    location = ex.header("location")
    if not location:
        return f"{ex.describe()} without a Location header || a Location on every redirect"
    if not ctx.location_allowed(location, ex.url):
        return (
            f"{ex.describe()} redirects to a host you did not name"
            " || redirects only to the target's hosts or the client's registered redirect URI"
        )
    return None
