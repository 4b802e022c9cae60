"""authconform: a conformance suite for the state behind OAuth 2.1 / MCP authorization."""

from authconform.contract import BackendSettings, Capability, StorageBackend
from authconform.errors import (
    AuthconformError,
    ConfigurationError,
    Conflict,
    InvalidArgument,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "AuthconformError",
    "BackendSettings",
    "Capability",
    "ConfigurationError",
    "Conflict",
    "InvalidArgument",
    "StorageBackend",
    "StorageError",
    "StorageUnavailable",
]
__version__ = "0.1.0"
