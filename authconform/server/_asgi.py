"""Import-string factory for uvicorn (``--workers``): config and backend from env vars.

``authconform serve`` sets ``AUTHCONFORM_SERVE_CONFIG`` (``ServerConfig`` as JSON) and
``AUTHCONFORM_SERVE_BACKEND`` (backend spec, see ``cli.backend_from_spec``) and points
uvicorn at ``authconform.server._asgi:app_from_env`` with ``factory=True``; each worker
process builds its own app and its own backend connection.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from authconform.server._app import create_app
from authconform.server._config import ServerConfig

__all__ = ["app_from_env"]


def app_from_env() -> ASGIApp:
    """Build the app from the environment ``authconform serve`` prepared."""
    from authconform import redaction
    from authconform.server.cli import backend_from_env

    redaction.install()  # this worker's log records: issued secrets and patterns redacted
    return create_app(backend_from_env(), ServerConfig.from_env())
