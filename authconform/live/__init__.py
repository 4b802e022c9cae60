"""Live checks of an authorization server / MCP server over HTTP.

``Target`` (httpx, never following redirects, named hosts only), discovery, flows
(``Live``), the exchange recorder, response checks registered by name, the redactor.
Names load on first use, so importing this package needs no httpx until a name that
sends requests is used.
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
    from authconform.live._expect import expect_401, expect_error, fail, oauth_error
    from authconform.live._flows import (
        AuthorizationRequest,
        AuthResult,
        Client,
        Live,
        LiveConfig,
        McpOutcome,
        Tokens,
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
    "AuthorizationRequest": "_flows",
    "AuthResult": "_flows",
    "Client": "_flows",
    "Live": "_flows",
    "LiveConfig": "_flows",
    "McpOutcome": "_flows",
    "Tokens": "_flows",
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
    "Live",
    "LiveConfig",
    "LiveFailure",
    "McpOutcome",
    "Recorder",
    "Redactor",
    "ResponseCheck",
    "Target",
    "Tokens",
    "discover",
    "expect_401",
    "expect_error",
    "fail",
    "oauth_error",
    "prm_url_for",
    "response_check",
    "run_checks",
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
