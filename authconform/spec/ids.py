"""Spec id grammar ``<DOC>-<locator>[-<n>]`` and the DOC -> URL table.

URLs are derived, never typed. An id whose DOC is not in ``DOCS`` is a collection error.
``CONTRACT`` is the storage contract of this project (docs/contract.md); its locators
are anchor slugs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DOCS", "LEVELS", "SpecRef", "parse"]

LEVELS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")

#: DOC -> (what it pins, URL stem). Numeric locators become ``#section-<locator>``.
DOCS: dict[str, tuple[str, str]] = {
    "RFC6749": ("OAuth 2.0", "https://www.rfc-editor.org/rfc/rfc6749"),
    "RFC6750": ("Bearer tokens", "https://www.rfc-editor.org/rfc/rfc6750"),
    "RFC7009": ("Token revocation", "https://www.rfc-editor.org/rfc/rfc7009"),
    "RFC7591": ("Dynamic client registration", "https://www.rfc-editor.org/rfc/rfc7591"),
    "RFC7592": ("Dynamic client registration management", "https://www.rfc-editor.org/rfc/rfc7592"),
    "RFC7636": ("PKCE", "https://www.rfc-editor.org/rfc/rfc7636"),
    "RFC7662": ("Token introspection", "https://www.rfc-editor.org/rfc/rfc7662"),
    "RFC8252": ("OAuth for native apps", "https://www.rfc-editor.org/rfc/rfc8252"),
    "RFC8414": ("AS metadata", "https://www.rfc-editor.org/rfc/rfc8414"),
    "RFC8707": ("Resource indicators", "https://www.rfc-editor.org/rfc/rfc8707"),
    "RFC9110": ("HTTP semantics", "https://www.rfc-editor.org/rfc/rfc9110"),
    "RFC9207": ("AS issuer identification", "https://www.rfc-editor.org/rfc/rfc9207"),
    "RFC9700": ("OAuth 2.0 security BCP", "https://www.rfc-editor.org/rfc/rfc9700"),
    "RFC9728": ("Protected resource metadata", "https://www.rfc-editor.org/rfc/rfc9728"),
    "OAUTH21": (
        "OAuth 2.1, draft-ietf-oauth-v2-1-13",
        "https://datatracker.ietf.org/doc/html/draft-ietf-oauth-v2-1-13",
    ),
    "MCP": (
        "MCP authorization, revision 2025-06-18",
        "https://modelcontextprotocol.io/specification/2025-06-18/basic/authorization",
    ),
    "MCP20251125": (
        "MCP authorization, revision 2025-11-25 (scope challenges)",
        "https://modelcontextprotocol.io/specification/2025-11-25/basic/authorization",
    ),
    "CONTRACT": ("authconform storage contract", "docs/contract.md"),
}

_ID = re.compile(
    r"^(?P<doc>[A-Z][A-Z0-9]*)-(?:(?P<num>(?:[A-Z]|\d+)(?:\.\d+)*)(?:-(?P<n>\d+))?"
    r"|(?P<slug>[a-z][a-z0-9-]*))$"
)


@dataclass(frozen=True)
class SpecRef:
    """One parsed spec id with its derived URL and RFC 2119 level."""

    id: str
    doc: str
    locator: str
    level: str
    url: str


def parse(spec_id: str, level: str = "MUST") -> SpecRef:
    """Parse and validate an id; raise ValueError naming the problem."""
    if level not in LEVELS:
        raise ValueError(f"spec level {level!r} is not one of {', '.join(LEVELS)}")
    m = _ID.match(spec_id)
    if not m:
        raise ValueError(
            f"spec id {spec_id!r} does not match <DOC>-<section>[-n] or <DOC>-<anchor-slug>"
        )
    doc = m["doc"]
    if doc not in DOCS:
        raise ValueError(f"spec id {spec_id!r}: unknown document {doc!r}; known: {', '.join(DOCS)}")
    stem = DOCS[doc][1]
    if m["num"]:
        locator = m["num"]
        prefix = "appendix" if locator[0].isalpha() else "section"
        url = f"{stem}#{prefix}-{locator}"
    else:
        locator = m["slug"]
        url = f"{stem}#{locator}"
    return SpecRef(spec_id, doc, locator, level, url)
