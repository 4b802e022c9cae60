"""Readiness: a protocol-level probe and one timeout/poll policy.

A port that accepts connections is not a ready store: Redis answers ``-LOADING`` while it
reads its AOF, PostgreSQL refuses queries during crash recovery, our server binds before
its app is up. So each service is probed in its own protocol: Redis ``PING`` -> ``+PONG``,
PostgreSQL ``SELECT 1``, an authorization server's metadata GET -> 200 JSON with its
issuer. Probes are synchronous (sockets, psycopg, urllib): they run from any thread.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "NotReady",
    "Readiness",
    "http_metadata_probe",
    "postgres_probe",
    "redis_probe",
]

Probe = Callable[[], None]  # returns when ready, raises when not


class NotReady(RuntimeError):
    """The service did not become ready in time (the message says what the probe saw)."""


@dataclass(frozen=True)
class Readiness:
    """Poll ``probe`` every ``interval`` s until it passes or ``timeout`` s have gone."""

    probe: Probe
    what: str
    timeout: float = 30.0
    interval: float = 0.05

    def wait(
        self, *, timeout: float | None = None, alive: Callable[[], str | None] | None = None
    ) -> float:
        """Block until ready; returns the seconds it took. ``alive()`` names a dead process."""
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        last = "no answer yet"
        while True:
            try:
                self.probe()
                return time.monotonic() - started
            except Exception as exc:  # any failure of a probe means "not yet"
                last = f"{type(exc).__name__}: {exc}"[:300]
            if alive is not None and (dead := alive()) is not None:
                raise NotReady(f"{self.what}: {dead} (last probe: {last})")
            if time.monotonic() - started > limit:
                raise NotReady(f"{self.what} not ready within {limit:g} s (last probe: {last})")
            time.sleep(self.interval)

    def ready(self) -> bool:
        """One probe: True if it passes now."""
        try:
            self.probe()
        except Exception:  # a failed probe is a plain "no"
            return False
        return True


def _redis_command(sock: socket.socket, *parts: str) -> bytes:
    payload = f"*{len(parts)}\r\n".encode()
    for part in parts:
        data = part.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        reply += chunk
    return reply


def redis_probe(host: str, port: int, password: str | None = None, timeout: float = 1.0) -> Probe:
    """``PING`` must answer ``+PONG`` (``-LOADING`` during AOF/RDB load is not ready)."""

    def probe() -> None:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if password:
                reply = _redis_command(sock, "AUTH", password)
                if not reply.startswith(b"+OK"):
                    raise ConnectionError(reply.decode(errors="replace").strip())
            reply = _redis_command(sock, "PING")
            if not reply.startswith(b"+PONG"):
                raise ConnectionError(reply.decode(errors="replace").strip()[:100])

    return probe


def postgres_probe(url: str, timeout: float = 2.0) -> Probe:
    """``SELECT 1`` must return 1 (refused during start-up and crash recovery)."""

    def probe() -> None:
        import psycopg

        with psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            row = conn.execute("SELECT 1").fetchone()
            if row is None or row[0] != 1:
                raise ConnectionError(f"SELECT 1 returned {row!r}")

    return probe


def http_metadata_probe(base_url: str, timeout: float = 2.0) -> Probe:
    """GET ``/.well-known/oauth-authorization-server`` (or protected-resource) -> 200 JSON."""
    base = base_url.rstrip("/")
    paths = ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource")

    def probe() -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        last = ""
        for path in paths:
            try:
                with opener.open(base + path, timeout=timeout) as resp:
                    data = json.loads(resp.read().decode())
                if isinstance(data, dict) and (data.get("issuer") or data.get("resource")):
                    return
                last = f"{path}: JSON without issuer/resource"
            except urllib.error.HTTPError as exc:
                last = f"{path}: HTTP {exc.code}"
        raise ConnectionError(last)

    return probe


def split_hostport(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of a URL (loopback and the default port when absent)."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port
