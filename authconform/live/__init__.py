"""Live checks of an authorization server / MCP server over HTTP.

``Target`` (httpx, never following redirects, named hosts only), discovery, flows
(``Live``), the exchange recorder, response checks registered by name, the redactor.
"""

from authconform.live._checks import CHECKS, CheckContext, ResponseCheck, response_check, run_checks
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
