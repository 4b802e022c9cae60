"""Recorded HTTP exchanges and the failure they end up in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Exchange", "LiveFailure", "Recorder", "format_exchanges"]

_BODY_LIMIT = 1500
_SHOWN_HEADERS = (
    "authorization",
    "content-type",
    "location",
    "cache-control",
    "www-authenticate",
    "x-frame-options",
    "content-security-policy",
    "mcp-session-id",
    "pragma",
)


@dataclass
class Exchange:
    """One request and its response (or the reason there was none)."""

    method: str
    url: str
    purpose: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str = ""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    instance: int = 0

    def header(self, name: str) -> str | None:
        """A response header (case-insensitive)."""
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        """The media type of the response, lowercased, without parameters."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json_body(self) -> Any:
        """The response body parsed as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def json_object(self, expected: str) -> dict[str, Any]:
        """The body as a JSON object; a ``LiveFailure`` naming what came instead."""
        body = self.json_body()
        if isinstance(body, dict):
            return body
        raise LiveFailure(
            f"{self.describe()} with a body that is not a JSON object ({self.body_kind()})",
            expected,
            [self],
        )

    def body_kind(self) -> str:
        """A short description of what the body is (for failure lines)."""
        if not self.text.strip():
            return "empty body"
        if self.text.lstrip().lower().startswith(("<!doctype html", "<html")) or "html" in (
            self.content_type
        ):
            return f"HTML, content-type {self.content_type or 'missing'}"
        first = self.text.strip().splitlines()[0][:60]
        return f"content-type {self.content_type or 'missing'}, starts {first!r}"

    def describe(self) -> str:
        """``POST /token -> 400`` style summary."""
        if self.error is not None:
            return f"{self.method} {self.url} -> no response ({self.error})"
        return f"{self.method} {self.url} -> {self.status}"

    def transcript(self) -> str:
        """The exchange as text (the caller redacts)."""
        lines = [f"> {self.method} {self.url}"]
        for key, value in self.request_headers.items():
            if key.lower() in _SHOWN_HEADERS:
                lines.append(f"> {key}: {value}")
        if self.request_body:
            lines.append("> " + _clip(self.request_body))
        if self.error is not None:
            lines.append(f"< (no response: {self.error})")
            return "\n".join(lines)
        lines.append(f"< {self.status}")
        for key, value in self.headers.items():
            if key in _SHOWN_HEADERS:
                lines.append(f"< {key}: {value}")
        if self.text:
            lines.append("< " + _clip(self.text).replace("\n", "\n< "))
        return "\n".join(lines)


def _clip(text: str) -> str:
    if len(text) <= _BODY_LIMIT:
        return text
    return text[:_BODY_LIMIT] + f"... ({len(text) - _BODY_LIMIT} more characters)"


def format_exchanges(exchanges: list[Exchange]) -> str:
    """All transcripts, separated by blank lines."""
    return "\n\n".join(ex.transcript() for ex in exchanges)


class Recorder:
    """The exchanges of one check (the target swaps recorders per test)."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def add(self, exchange: Exchange) -> None:
        """Record one exchange."""
        self.exchanges.append(exchange)


class LiveFailure(AssertionError):
    """A failed live check: observed vs expected, optional spec id, the exchanges."""

    def __init__(
        self,
        observed: str,
        expected: str,
        exchanges: list[Exchange] | None = None,
        *,
        spec: str | None = None,
        level: str | None = None,
    ) -> None:
        self.observed = observed
        self.expected = expected
        self.exchanges = list(exchanges or [])
        self.spec = spec
        self.level = level
        super().__init__(f"observed: {observed}; expected: {expected}")

    def headline(self) -> str:
        """Line one of the failure text."""
        return f"observed: {self.observed}; expected: {self.expected}"
