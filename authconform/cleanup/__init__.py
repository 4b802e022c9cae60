"""Leases on a run's namespaces in the shared stores, the end-of-run sweep, ``authconform clean``.

How a run ends, and what cleans up after it:

- the end, a failing check or fixture, Ctrl-C, SIGTERM (turned into the same interrupt by
  ``authconform.cleanup._pytest``), a pytest-timeout in its ``signal`` method (the check
  fails with ``Timeout``): fixture teardown stops every process we started and drops the
  namespaces; then the sweep drops whatever of the run's namespace family is still in the
  store (a teardown cut short by a second signal, a fresh namespace of a check that died).
- a hard kill (SIGKILL, the OOM killer, pytest-timeout's ``thread`` method, which calls
  ``os._exit``) runs no Python code. The processes we started die with us
  (``PR_SET_PDEATHSIG``, see ``authconform.procs``); the store keeps the data. Every run on
  a shared store therefore holds a *lease* on its namespace there, renewed by a heartbeat
  thread; ``authconform clean`` drops the namespace family of every lease that has
  expired, then the lease. It never drops a namespace without an expired lease of ours,
  nor one that has a live lease of its own.

A run's namespace family is ``<ns>`` and every ``<ns>_<suffix>`` derived from it (the live
suite's reference server uses ``<ns>_live``, the contract checks ``<ns>_<hex>``); a
neighbour such as ``<ns>x`` is not in it. Where the lease lives:

- Redis: the string ``ac:lease:{<ns>}`` (JSON: ``expires_at``, ``pid``, ``host``,
  ``started_at``), without a TTL, so that an expired lease is still there to say the
  namespace was ours. Namespaces are the keys ``ac:{<ns>}:*``.
- PostgreSQL: a row of ``authconform_leases.lease`` (that schema is ours: commented
  ``authconform leases``). Namespaces are the schemas ``authconform_<ns>`` commented as ours.

Only the built-in ``redis`` and ``postgres`` backends are leased: a user's own backend
keeps its own layout, and its namespaces are dropped by fixture teardown alone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from authconform.contract import BackendSettings

__all__ = [
    "HEARTBEAT",
    "LEASE_TTL",
    "LEASED_BACKENDS",
    "Lease",
    "LeaseStore",
    "clean",
    "drop_family",
    "lease_store",
]

#: seconds a lease lasts without a heartbeat (a hard-killed run's data may go after that)
LEASE_TTL = 120.0
#: seconds between heartbeats
HEARTBEAT = 30.0
#: the built-in backends whose stores outlive the run
LEASED_BACKENDS = ("redis", "postgres")

_NS = re.compile(r"^[a-z0-9_]{1,40}$")


class LeaseStore(Protocol):
    """Where leases live in one store, and which namespaces of a family exist there."""

    service: str

    def put(self, namespace: str, record: dict[str, Any]) -> None:
        """Write (or renew) the lease of ``namespace``."""

    def delete(self, namespace: str) -> None:
        """Remove the lease of ``namespace``."""

    def leases(self) -> dict[str, dict[str, Any]]:
        """Every lease in the store: namespace -> record."""

    def family(self, namespace: str) -> list[str]:
        """The namespaces of ``namespace``'s family that hold data in the store."""

    def close(self) -> None:
        """Release the connection."""


def in_family(candidate: str, namespace: str) -> bool:
    """True for ``namespace`` itself and ``namespace_<suffix>`` (not ``namespacex``)."""
    return candidate == namespace or candidate.startswith(namespace + "_")


class _RedisLeases:
    service = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )

    @staticmethod
    def _key(namespace: str) -> str:
        return f"ac:lease:{{{namespace}}}"

    def put(self, namespace: str, record: dict[str, Any]) -> None:
        self._r.set(self._key(namespace), json.dumps(record))

    def delete(self, namespace: str) -> None:
        self._r.delete(self._key(namespace))

    def leases(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in self._r.scan_iter(match="ac:lease:{*}", count=1000):
            namespace = key[len("ac:lease:{") : -1]
            raw = self._r.get(key)
            if raw is None or not _NS.match(namespace):
                continue
            try:
                out[namespace] = dict(json.loads(raw))
            except (ValueError, TypeError):
                out[namespace] = {"expires_at": 0.0, "detail": "unreadable lease"}
        return out

    def family(self, namespace: str) -> list[str]:
        found: set[str] = set()
        for pattern in (f"ac:{{{namespace}}}:*", f"ac:{{{namespace}_*"):
            for key in self._r.scan_iter(match=pattern, count=1000):
                inner = key[len("ac:{") :].split("}", 1)[0]
                if _NS.match(inner) and in_family(inner, namespace):
                    found.add(inner)
        return sorted(found)

    def close(self) -> None:
        self._r.close()


_PG_SCHEMA = "authconform_leases"
_PG_COMMENT = "authconform leases"


class _PostgresLeases:
    service = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        import psycopg

        for attempt in range(3):  # two runs creating the schema at once: one wins
            try:
                with self._conn.transaction():
                    self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_PG_SCHEMA}")
                    self._conn.execute(f"COMMENT ON SCHEMA {_PG_SCHEMA} IS '{_PG_COMMENT}'")
                    self._conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {_PG_SCHEMA}.lease "
                        "(namespace text PRIMARY KEY, expires_at double precision NOT NULL, "
                        "record text NOT NULL)"
                    )
                break
            except psycopg.errors.UniqueViolation:
                if attempt == 2:
                    raise
        self._ready = True

    def put(self, namespace: str, record: dict[str, Any]) -> None:
        self._ensure()
        self._conn.execute(
            f"INSERT INTO {_PG_SCHEMA}.lease VALUES (%s, %s, %s) ON CONFLICT (namespace) "
            "DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
            (namespace, float(record["expires_at"]), json.dumps(record)),
        )

    def delete(self, namespace: str) -> None:
        if self._exists():
            self._conn.execute(f"DELETE FROM {_PG_SCHEMA}.lease WHERE namespace = %s", (namespace,))

    def _exists(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'lease'",
            (_PG_SCHEMA,),
        ).fetchone()
        return row is not None

    def leases(self) -> dict[str, dict[str, Any]]:
        if not self._exists():
            return {}
        rows = self._conn.execute(f"SELECT namespace, record FROM {_PG_SCHEMA}.lease").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for namespace, raw in rows:
            try:
                out[str(namespace)] = dict(json.loads(raw))
            except (ValueError, TypeError):
                out[str(namespace)] = {"expires_at": 0.0, "detail": "unreadable lease"}
        return out

    def family(self, namespace: str) -> list[str]:
        prefix = f"authconform_{namespace}_".replace("_", "\\_")  # LIKE's _ is a wildcard
        rows = self._conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
            (f"authconform_{namespace}", prefix + "%"),
        ).fetchall()
        names = [str(r[0])[len("authconform_") :] for r in rows]
        return sorted(n for n in names if _NS.match(n) and in_family(n, namespace))

    def close(self) -> None:
        self._conn.close()


def lease_store(service: str, settings: BackendSettings) -> LeaseStore:
    """The lease store of ``service`` (``redis`` or ``postgres``) at the settings' URL."""
    if service == "redis":
        return _RedisLeases(settings.redis_url)
    if service == "postgres":
        return _PostgresLeases(settings.postgres_url)
    raise ValueError(f"no leases for {service!r}; leased: {', '.join(LEASED_BACKENDS)}")


def drop_family(
    service: str, settings: BackendSettings, namespaces: Iterable[str]
) -> list[str]:
    """Drop each namespace through the built-in backend (its own safety checks apply)."""
    import asyncio

    from authconform.backends._registry import resolve

    factory = resolve(service).factory
    dropped: list[str] = []

    async def drop(namespace: str) -> None:
        backend = factory(replace(settings, namespace=namespace))
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()

    for namespace in namespaces:
        asyncio.run(drop(namespace))
        dropped.append(namespace)
    return dropped


@dataclass
class Lease:
    """A run's lease on its namespace in one store, renewed until released."""

    service: str
    settings: BackendSettings
    ttl: float = LEASE_TTL
    heartbeat: float = HEARTBEAT
    store: LeaseStore | None = None
    started_at: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def namespace(self) -> str:
        """The run's namespace."""
        return self.settings.namespace

    def _record(self) -> dict[str, Any]:
        return {
            "expires_at": time.time() + self.ttl,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at,
        }

    def acquire(self) -> Lease:
        """Write the lease and start the heartbeat thread."""
        self.store = lease_store(self.service, self.settings)
        self.store.put(self.namespace, self._record())
        self._thread = threading.Thread(
            target=self._beat, name=f"authconform-lease-{self.service}", daemon=True
        )
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if self.store is not None:
                    self.store.put(self.namespace, self._record())
            except Exception:  # noqa: BLE001 - a missed beat is retried; expiry is the backstop
                continue

    def release(self, *, sweep: bool = True) -> tuple[list[str], str | None]:
        """Stop the heartbeat; drop what is left of the family; remove the lease.

        Returns the namespaces the sweep dropped and a problem (None if all went), in
        which case the lease stays, expired, for ``authconform clean``.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        store = self.store
        if store is None:
            return [], None
        try:
            dropped: list[str] = []
            if sweep:
                owned = _live_leases(store, exclude=self.namespace)
                left = [n for n in store.family(self.namespace) if n not in owned]
                dropped = drop_family(self.service, self.settings, left)
                still = [n for n in store.family(self.namespace) if n not in owned]
                if still:
                    record = self._record()
                    record["expires_at"] = time.time()
                    store.put(self.namespace, record)
                    return dropped, (
                        f"namespaces {', '.join(still)} remain in {self.service}; "
                        "`authconform clean` removes them"
                    )
            store.delete(self.namespace)
            return dropped, None
        except Exception as exc:  # noqa: BLE001 - reported, the lease expires on its own
            return [], f"{type(exc).__name__}: {exc}; `authconform clean` removes what is left"
        finally:
            store.close()


def _live_leases(store: LeaseStore, exclude: str = "") -> set[str]:
    now = time.time()
    return {
        ns for ns, rec in store.leases().items()
        if ns != exclude and float(rec.get("expires_at", 0)) > now
    }


def clean(
    service: str,
    settings: BackendSettings,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """Drop the namespace family of every expired lease in one store; returns how many leases."""
    store = lease_store(service, settings)
    try:
        leases = store.leases()
        now = time.time()
        live = {ns for ns, rec in leases.items() if float(rec.get("expires_at", 0)) > now}
        done = 0
        for namespace, record in sorted(leases.items()):
            if namespace in live:
                left = int(float(record.get("expires_at", 0)) - now)
                say(f"{service}: {namespace}: lease live ({left} s left, pid "
                    f"{record.get('pid')} on {record.get('host')}): kept")
                continue
            family = [n for n in store.family(namespace) if n not in live]
            if dry_run:
                say(f"{service}: {namespace}: lease expired: would drop {family or 'nothing'}")
                continue
            drop_family(service, settings, family)
            store.delete(namespace)
            done += 1
            say(f"{service}: {namespace}: lease expired: dropped "
                f"{', '.join(family) if family else 'nothing (already empty)'}")
        if not leases:
            say(f"{service}: no leases")
        return done
    finally:
        store.close()
