"""Exceptions raised by authconform.

::

    AuthconformError
    ├── InvalidArgument (also ValueError)   bad id, TTL, payload; raised before the store is touched
    ├── StorageError
    │   ├── StorageUnavailable              the store cannot be reached or failed; fail closed
    │   └── Conflict                        create of something that already exists
    └── ConfigurationError                  unknown backend, bad option value (a usage error)
"""

from __future__ import annotations

__all__ = [
    "AuthconformError",
    "ConfigurationError",
    "Conflict",
    "InvalidArgument",
    "StorageError",
    "StorageUnavailable",
]


class AuthconformError(Exception):
    """Base class of every error authconform raises on purpose."""


class InvalidArgument(AuthconformError, ValueError):
    """An argument breaks the contract (empty id, TTL <= 0, oversized payload)."""


class StorageError(AuthconformError):
    """The store refused or failed an operation."""


class StorageUnavailable(StorageError):
    """The store is down or failed mid-operation; callers must fail closed."""


class Conflict(StorageError):
    """A create met an existing record (e.g. a client id already registered)."""


class ConfigurationError(AuthconformError):
    """A setting is invalid: unknown backend, unreachable service, bad option value."""
