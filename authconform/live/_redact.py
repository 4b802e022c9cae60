"""The redactor: every secret the run sees is registered here and masked everywhere."""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import quote, quote_plus

from authconform import redaction

__all__ = ["Redactor"]

_MIN_LEN = 6


class Redactor:
    """Replace registered secrets by ``[redacted:<kind>]`` in any text."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None, kind: str) -> None:
        """Register a secret (and its URL-encoded spellings) as ``kind``."""
        if not value or len(value) < _MIN_LEN:
            return
        redaction.register(value, kind)  # the run-wide registry the logging layer redacts
        with self._lock:
            for variant in {value, quote(value, safe=""), quote_plus(value)}:
                if variant not in self._kinds:
                    self._kinds[variant] = kind
                    self._pattern = None

    def add_basic(self, client_id: str, secret: str) -> None:
        """Register the HTTP Basic credentials built from a client id and secret."""
        self.add(secret, "client_secret")
        raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        self.add(base64.b64encode(raw).decode(), "client_secret")
        self.add(base64.b64encode(f"{client_id}:{secret}".encode()).decode(), "client_secret")

    def secrets(self) -> dict[str, str]:
        """A copy of value -> kind (for the token-leak check; never print it)."""
        with self._lock:
            return dict(self._kinds)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret masked."""
        with self._lock:
            if not self._kinds:
                return text
            if self._pattern is None:
                ordered = sorted(self._kinds, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            pattern, kinds = self._pattern, self._kinds
        return pattern.sub(lambda m: f"[redacted:{kinds[m.group(0)]}]", text)
