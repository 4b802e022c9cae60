"""Pattern redaction by shape: a safety net behind the run-wide registry of issued secrets.

The live plugin masks every secret it registered (``[redacted:<kind>]``) before a report
is built. Reports also carry text from other checks and from files merged from elsewhere,
so the writers mask, by shape, every value that sits where OAuth puts a secret: the
``Authorization`` and cookie headers, and the fields ``code``, ``code_verifier``,
``access_token``, ``refresh_token``, ``id_token``, ``token``, ``client_secret``,
``password``, ``assertion`` and ``client_assertion`` as query or form parameters, JSON
members and Python dict items. Values that are already ``[redacted:...]`` stay as they are.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

_FIELDS = (
    "client_assertion",
    "assertion",
    "client_secret",
    "code_verifier",
    "refresh_token",
    "access_token",
    "id_token",
    "password",
    "token",
    "code",
)
_NAMES = "|".join(_FIELDS)

# ``name=value`` in a query string or form body (``code_challenge=`` does not match).
_PARAM = re.compile(rf"(?<![\w-])({_NAMES})=(?!\[redacted)([^&\s\"'<>#;,)\]]+)")
# ``"name": "value"`` (JSON) or ``'name': 'value'`` (a Python repr).
_ITEM = re.compile(
    rf"""(["'])({_NAMES})\1(\s*:\s*)(["'])(?!\[redacted)((?:(?!\4)[^\\\n]|\\.)*)\4"""
)
# ``Authorization: Bearer x`` / ``Basic x`` / anything, and cookies, up to the end of line.
_HEADER = re.compile(
    r"(?im)^([<>]?\s*(?:authorization|proxy-authorization|cookie|set-cookie)\s*:\s*)"
    r"(?:(bearer|basic|dpop)\s+)?(?!\[redacted)(\S[^\r\n]*)$"
)
# ``Bearer x`` anywhere else (a repr of headers, an exception message).
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+(?!\[redacted)([A-Za-z0-9\-._~+/]{6,}=*)")


def redact(text: str) -> str:
    """``text`` with every secret-shaped value replaced by ``[redacted:<field>]``."""
    if not text:
        return text
    text = _HEADER.sub(_header, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted:credentials]", text)
    text = _ITEM.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}"
        f"[redacted:{m.group(2)}]{m.group(4)}",
        text,
    )
    return _PARAM.sub(lambda m: f"{m.group(1)}=[redacted:{m.group(1)}]", text)


def _header(m: re.Match[str]) -> str:
    scheme = f"{m.group(2)} " if m.group(2) else ""
    kind = "cookie" if "cookie" in m.group(1).lower() else "credentials"
    return f"{m.group(1)}{scheme}[redacted:{kind}]"
