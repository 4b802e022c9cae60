"""The reference OAuth 2.1 authorization server + MCP resource server (ASGI).

``create_app(backend, ServerConfig(...))`` builds it over any storage-contract backend;
``authconform serve`` runs it with uvicorn (see ``authconform.server.cli``).
"""

from authconform.server._app import create_app
from authconform.server._config import Delay, Fault, ServerConfig, parse_delay, parse_fault
from authconform.server._provider import StoreProvider

__all__ = [
    "Delay",
    "Fault",
    "ServerConfig",
    "StoreProvider",
    "create_app",
    "parse_delay",
    "parse_fault",
]
