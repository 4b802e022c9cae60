"""The consent pages (``consent="form"``, SDK workaround 12, see ``_app``).

The SDK's authorize handler can only redirect, so the provider redirects to an internal
consent URL; /authorize (``_oauth``) turns that redirect into ``consent_page``, a form
with Approve and Deny buttons posting to ``CONSENT_PATH``, and ``consent_endpoint``
answers that post with the redirect the provider builds. Pages carry no-store and
anti-framing headers (RFC 6749 10.13, RFC 9700 4.16).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from authconform.server._config import ServerConfig
from authconform.server._provider import CONSENT_PATH, StoredClient
from authconform.server._responses import FRAME_HEADERS, NO_STORE, oauth_error

__all__ = ["consent_endpoint", "consent_page"]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers={**NO_STORE, **FRAME_HEADERS})


def consent_page(
    config: ServerConfig, client: StoredClient, request_id: str, scopes: str
) -> HTMLResponse:
    """The form asking the user to approve or deny ``client``'s request ``request_id``."""
    name = html.escape(client.client_name or client.client_id)
    action = html.escape(config.base_path + CONSENT_PATH)
    rid = html.escape(request_id)
    body = (
        f"<h1>Authorize {name}</h1>"
        f"<p>{name} asks for access with scopes: <code>{html.escape(scopes) or '(none)'}</code></p>"
        f'<form id="consent" method="post" action="{action}">'
        f'<input type="hidden" name="request" value="{rid}">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        "</form>"
        f'<form id="deny" method="post" action="{action}">'
        f'<input type="hidden" name="request" value="{rid}">'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form>"
    )
    return _page("Authorize", body)


def consent_endpoint(provider: Any) -> Callable[[Request], Awaitable[Response]]:
    """``POST CONSENT_PATH``: the user's decision, answered with the client's redirect."""

    async def consent(request: Request) -> Response:
        form = await request.form()
        request_id = form.get("request")
        if not isinstance(request_id, str) or not request_id:
            return oauth_error("invalid_request", "missing consent request id")
        if form.get("decision") == "deny":
            location = await provider.deny(request_id)
        else:
            location = await provider.approve(request_id)
        if location is None:
            return oauth_error(
                "invalid_request", "the consent request is unknown, expired or already answered"
            )
        return RedirectResponse(location, status_code=303, headers=NO_STORE)

    return consent
