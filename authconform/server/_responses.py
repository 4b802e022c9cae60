"""HTTP answers every part of the reference server shares: OAuth JSON errors and headers.

``oauth_error`` is the one shape of an error answer (RFC 6749 5.2: a JSON object with
``error`` and ``error_description``, never cached); ``NO_STORE`` goes on anything that
carries a secret, ``FRAME_HEADERS`` on every page a browser renders (RFC 6749 10.13,
RFC 9700 4.16).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

__all__ = ["FRAME_HEADERS", "NO_STORE", "oauth_error"]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FRAME_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def oauth_error(
    error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 5.2 style JSON error, never cached."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )
