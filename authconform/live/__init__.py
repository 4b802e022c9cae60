"""Live checks of an authorization server / MCP server over HTTP.

``Target`` (httpx, never following redirects, named hosts only, paced, 429-aware),
discovery, flows (``Live``), the exchange recorder, response checks registered by name,
the redactor. Names load on first use, so importing this package needs no httpx until a
name that sends requests is used.

Every check of ``authconform.suites.live`` follows these principles:

- Its level is what its cited text says: MUST fails, SHOULD warns (fails only under
  ``--authconform-strict``), and where no normative text exists it is an informational
  ``note`` (``authconform.live._pytest.note``), never a warning.
- A rule applies only where its document applies: MCP rules only with an MCP endpoint;
  optional features (RFC 7592, RFC 7662, RFC 9207, RFC 8707, RFC 7009, CIMD) when
  advertised or discovered, else ``not-advertised:``.
- A check whose precondition fails (the registration, the flow, the revocation) reports
  that step as the cause or skips ``unavailable:``, never a later consequence as the
  breach; one root cause is reported once per check, against the rule it breaks
  (``refused`` files a wrong error code as a ``Finding`` for RFC 6749 5.2, which its own
  check reports once).
- Where a specification allows two behaviours, both pass (listed, never "any 4xx").
- Every negative check first runs its positive control (``Live.control``): against a
  server that refuses everything it is ``unavailable:``, never passed.
- A rate-limiting target is not broken: ``Retry-After`` is honoured, requests are paced
  (``--authconform-rate``), and a target still limiting makes checks ``unavailable:
  rate-limited (...)``.
- With a pre-registered client, every one-client check uses it; more clients are
  registered only for checks that need a second, and skip with the reason when
  registration is unavailable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authconform.live._checks import (
        CHECKS,
        CheckContext,
        ResponseCheck,
        response_check,
        run_checks,
    )
    from authconform.live._discovery import Discovery, discover, prm_url_for
    from authconform.live._expect import (
        expect_401,
        expect_error,
        fail,
        oauth_error,
        refused,
        refused_at_authorize,
    )
    from authconform.live._flows import Live
    from authconform.live._model import (
        AuthorizationRequest,
        AuthResult,
        Client,
        LiveConfig,
        McpOutcome,
        Tokens,
    )
    from authconform.live._outcome import (
        Finding,
        disabled,
        not_advertised,
        not_applicable,
        unavailable,
    )
    from authconform.live._record import Exchange, LiveFailure, Recorder
    from authconform.live._redact import Redactor
    from authconform.live._target import Target

_WHERE = {
    "CHECKS": "_checks",
    "CheckContext": "_checks",
    "ResponseCheck": "_checks",
    "response_check": "_checks",
    "run_checks": "_checks",
    "Discovery": "_discovery",
    "discover": "_discovery",
    "prm_url_for": "_discovery",
    "expect_401": "_expect",
    "expect_error": "_expect",
    "fail": "_expect",
    "oauth_error": "_expect",
    "refused": "_expect",
    "refused_at_authorize": "_expect",
    "Finding": "_outcome",
    "disabled": "_outcome",
    "not_advertised": "_outcome",
    "not_applicable": "_outcome",
    "unavailable": "_outcome",
    "AuthorizationRequest": "_model",
    "AuthResult": "_model",
    "Client": "_model",
    "Live": "_flows",
    "LiveConfig": "_model",
    "McpOutcome": "_model",
    "Tokens": "_model",
    "Exchange": "_record",
    "LiveFailure": "_record",
    "Recorder": "_record",
    "Redactor": "_redact",
    "Target": "_target",
}

__all__ = [
    "CHECKS",
    "AuthResult",
    "AuthorizationRequest",
    "CheckContext",
    "Client",
    "Discovery",
    "Exchange",
    "Finding",
    "Live",
    "LiveConfig",
    "LiveFailure",
    "McpOutcome",
    "Recorder",
    "Redactor",
    "ResponseCheck",
    "Target",
    "Tokens",
    "disabled",
    "discover",
    "expect_401",
    "expect_error",
    "fail",
    "not_advertised",
    "not_applicable",
    "oauth_error",
    "prm_url_for",
    "refused",
    "refused_at_authorize",
    "response_check",
    "run_checks",
    "unavailable",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'authconform.live' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"authconform.live.{where}")
    except ModuleNotFoundError as exc:
        if exc.name in ("httpx", "httpcore"):
            raise ModuleNotFoundError(
                "the live suite needs httpx: pip install 'authconform[live]'", name=exc.name
            ) from None
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value
