"""The store under test: the backend, the service behind it, its durability variant.

For ``redis`` and ``postgres`` backends the suite never restarts the user's store
behind their back: it starts its own (``authconform.procs``: a container when Docker
answers, else the local binary) on a free loopback port, unless the run names the
store explicitly (``--authconform-redis-url`` / ``--authconform-postgres-url``, from
the CLI, the environment or the ini file). An explicit store is someone else's: the
suite restarts it only with ``--authconform-restart-cmd`` (gracefully; never SIGKILL,
never a settings change), and otherwise skips the restart checks with that reason.

SQLite's store is its file: a "restart" is a new process opening it; the writing
process is killed mid-transaction. Backends that keep records in process memory
(``memory``, ``fakeredis``) have no store to restart.

Durability variants (the ``strict`` one promises no loss of acknowledged writes):

=========  ==========================  ===============================  ==============
kind       strict                      relaxed                          none
=========  ==========================  ===============================  ==============
redis      AOF, appendfsync always     AOF, appendfsync everysec        no AOF, no RDB
postgres   synchronous_commit on       synchronous_commit off           (n/a)
sqlite     synchronous FULL (WAL)      synchronous NORMAL (WAL)         (n/a)
=========  ==========================  ===============================  ==============
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from authconform._options import resolve, setting
from authconform.backends._registry import BackendSpec
from authconform.contract import ALL_CAPABILITIES, JSON, BackendSettings, StorageBackend
from authconform.procs import Service, Unavailable, store_service

__all__ = [
    "VARIANTS",
    "Store",
    "Variant",
    "explicit",
    "option",
    "restart_cmd",
    "store_kind",
]

#: timeouts of every backend the suite makes: a fault must surface in seconds
CONNECT_TIMEOUT = 1.0
OPERATION_TIMEOUT = 2.0
RETRIES = 2


@dataclass(frozen=True)
class Variant:
    """One durability setting of one kind of store."""

    name: str
    label: str
    store: dict[str, str] = field(default_factory=dict)
    options: dict[str, JSON] = field(default_factory=dict)
    #: seconds a write needs before a crash cannot lose it (the setting's loss window)
    window: float = 0.0
    #: what a SIGKILL of the store may lose: "none", "window" or "all"
    loses: str = "none"


VARIANTS: dict[str, dict[str, Variant]] = {
    "redis": {
        "strict": Variant(
            "strict", "appendonly yes, appendfsync always",
            {"appendonly": "yes", "appendfsync": "always", "save": ""},
        ),
        "relaxed": Variant(
            "relaxed", "appendonly yes, appendfsync everysec",
            {"appendonly": "yes", "appendfsync": "everysec", "save": ""}, window=2.0,
            loses="window",
        ),
        "none": Variant(
            "none", "appendonly no, save ''", {"appendonly": "no", "save": ""}, loses="all"
        ),
    },
    "postgres": {
        "strict": Variant("strict", "synchronous_commit on", {"synchronous_commit": "on"}),
        "relaxed": Variant(
            "relaxed", "synchronous_commit off", {"synchronous_commit": "off"}, window=1.0,
            loses="window",
        ),
    },
    "sqlite": {
        "strict": Variant(
            "strict", "journal_mode WAL, synchronous FULL", options={"sqlite_synchronous": "FULL"}
        ),
        "relaxed": Variant(
            "relaxed", "journal_mode WAL, synchronous NORMAL",
            options={"sqlite_synchronous": "NORMAL"},
        ),
    },
}  # fmt: skip


def store_kind(spec: BackendSpec) -> str | None:
    """``redis``, ``postgres``, ``sqlite`` or None (records in process memory).

    Read from the factory's ``store`` attribute, else its ``service``.
    """
    kind = getattr(spec.factory, "store", None) or spec.service
    return kind if kind in ("redis", "postgres", "sqlite") else None


def option(config: pytest.Config, name: str, default: Any = None) -> Any:
    """A setting of the option table (CLI > env > ini > default)."""
    value = setting(config, name)
    return default if value in (None, "", []) else value


def explicit(config: pytest.Config, name: str) -> bool:
    """True when the run set ``name`` itself (CLI, environment or ini), not by default."""
    return resolve(config, name)[1] != "default"


def restart_cmd(config: pytest.Config) -> str | None:
    """``--authconform-restart-cmd``: how to restart the named store or live server."""
    value = option(config, "restart_cmd")
    return str(value) if value else None


class Store:
    """The store behind one backend under test, and backends made on it."""

    def __init__(
        self,
        spec: BackendSpec,
        base: BackendSettings,
        service: Service | None,
        *,
        variant: Variant | None = None,
    ) -> None:
        """``service`` is None for sqlite (the file) and for memory-only backends."""
        self.spec = spec
        self.kind = store_kind(spec)
        self.base = base
        self.service = service
        self.variant = variant
        self.made: list[StorageBackend] = []

    @property
    def name(self) -> str:
        """The backend's test id."""
        return self.spec.name

    @property
    def external(self) -> bool:
        """True when the store is someone else's (explicit URL)."""
        return self.service is not None and self.service.provider == "external"

    @property
    def describe(self) -> str:
        """The backend, its store and the variant in force, for messages."""
        where = "" if self.service is None else f" ({self.service.provider} {self.kind})"
        variant = "" if self.variant is None else f", {self.variant.label}"
        return f"{self.name}{where}{variant}"

    def settings(self, namespace: str | None = None, **options: JSON) -> BackendSettings:
        """Backend settings on this store, with the suite's short timeouts."""
        settings = dataclasses.replace(
            self.base,
            namespace=namespace or self.base.namespace,
            connect_timeout=CONNECT_TIMEOUT,
            operation_timeout=OPERATION_TIMEOUT,
            retries=RETRIES,
            options={
                **self.base.options,
                **(self.variant.options if self.variant else {}),
                **options,
            },
        )
        if self.service is not None and self.kind == "redis":
            settings = dataclasses.replace(settings, redis_url=self.service.url)
        elif self.service is not None and self.kind == "postgres":
            settings = dataclasses.replace(settings, postgres_url=self.service.url)
        return settings

    def namespace(self) -> str:
        """A fresh namespace derived from the run's."""
        return f"{self.base.namespace[:28]}_r{secrets.token_hex(4)}"

    def make(self, namespace: str | None = None, **overrides: Any) -> StorageBackend:
        """A new backend instance on this store (closed by :meth:`close_all`)."""
        settings = self.settings(namespace)
        if overrides:
            settings = dataclasses.replace(settings, **overrides)
        backend = self.spec.factory(settings)
        self.made.append(backend)
        missing = ALL_CAPABILITIES - backend.capabilities
        if missing:
            names = ", ".join(sorted(c.value for c in missing))
            pytest.skip(
                f"not-applicable: the restart checks use every kind of record; backend "
                f"{self.name} does not declare {names}"
            )
        return backend

    async def close_all(self, *, drop: bool = True) -> None:
        """Drop the namespaces of (when ``drop``) and close every backend made here."""
        made, self.made = self.made, []
        dropped: set[str] = set()
        for backend in reversed(made):
            ns = str(getattr(backend, "namespace", ""))
            try:
                if drop and ns not in dropped:
                    dropped.add(ns)
                    with contextlib.suppress(Exception):
                        await backend.drop_namespace()
            finally:
                with contextlib.suppress(Exception):
                    await backend.close()

    def restart(self, *, kill: bool = False) -> float:
        """Restart the store (SIGKILL with ``kill``); seconds from start to ready."""
        if self.service is None:
            return 0.0
        return self.service.restart(kill=kill)

    @contextlib.asynccontextmanager
    async def keeping(self, *, drop: bool) -> AsyncIterator[Store]:
        """Like ``async with store``, but drops the namespaces only when ``drop``."""
        try:
            yield self
        finally:
            await self.close_all(drop=drop)

    async def __aenter__(self) -> Store:
        """``async with store:`` closes (and drops) every backend made in the block."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close what was made."""
        await self.close_all()

    @contextlib.contextmanager
    def down(self, *, kill: bool = False) -> Iterator[None]:
        """The store is stopped (or killed) inside the block."""
        assert self.service is not None
        with self.service.stopped(kill=kill):
            yield


def provide(
    spec: BackendSpec, config: pytest.Config, base: BackendSettings
) -> tuple[Service | None, str | None]:
    """The service behind ``spec`` (not started) or None, and a skip reason if none can be had."""
    kind = store_kind(spec)
    if kind not in ("redis", "postgres"):
        return None, None
    url_option = f"{kind}_url"
    url = base.redis_url if kind == "redis" else base.postgres_url
    try:
        if explicit(config, url_option):
            return store_service(kind, url=url, restart_cmd=restart_cmd(config)), None
        return store_service(kind), None
    except Unavailable as exc:
        return None, str(exc)
