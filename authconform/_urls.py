"""URLs as they may be shown: passwords never leave the process in a message."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["safe_url"]

_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def safe_url(url: str) -> str:
    """``url`` with any password (URL userinfo or ``password=`` pair) replaced by ``***``."""
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    query = _CONNINFO_PASSWORD.sub(r"\1***", parts.query) if parts.query else parts.query
    if password is None:
        return urllib.parse.urlunsplit(parts._replace(query=query))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
