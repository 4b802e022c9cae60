"""Fixtures of the restart suite (registered for this suite's items by the plugin).

- ``store_services`` (session): one service per kind of store the run needs (our own
  ``redis-server`` / PostgreSQL cluster, or the user's store when named explicitly),
  started on first use and gone at the end of the run, whatever ends it.
- ``stores``: ``stores("strict"|"relaxed"|"none") -> Store`` puts the service in that
  durability variant (a restart with the new settings when it changes) and returns the
  :class:`Store` for the backend under test; skips say why a variant cannot be had.
- ``store``: the strict variant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authconform.backends._registry import BackendSpec
from authconform.contract import BackendSettings
from authconform.procs import Service, Unsupported
from authconform.suites.restart._store import VARIANTS, Store, provide, store_kind


class _Services:
    """The services of this run, by kind; started lazily, each in one variant at a time."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.services: dict[str, Service | None] = {}
        self.reasons: dict[str, str] = {}
        self.variant: dict[str, str] = {}

    def get(self, spec: BackendSpec, base: BackendSettings) -> Service | None:
        kind = store_kind(spec)
        if kind is None or kind == "sqlite":
            return None
        if kind not in self.services and kind not in self.reasons:
            service, reason = provide(spec, self.config, base)
            if service is not None:
                variant = VARIANTS[kind]["strict"]
                if service.provider != "external":
                    _configure(service, variant.store)
                try:
                    service.start()
                except Exception as exc:  # a store that does not come up: say why, skip
                    service.close()
                    self.reasons[kind] = f"unavailable: the {kind} store did not start: {exc}"
                else:
                    self.services[kind] = service
                    self.variant[kind] = "strict"
            if reason is not None:
                self.reasons[kind] = reason
        if kind in self.reasons:
            pytest.skip(self.reasons[kind])
        return self.services[kind]

    def close(self) -> None:
        for service in self.services.values():
            if service is not None:
                service.close()


def _configure(service: Service, settings: dict[str, str]) -> None:
    configure: Callable[..., None] | None = getattr(service, "configure", None)
    if configure is not None:
        configure(**settings)


@pytest.fixture(scope="session")
def store_services(request: pytest.FixtureRequest) -> Iterator[_Services]:
    """Every store service of the run (closed at the end)."""
    services = _Services(request.config)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def stores(
    store_services: _Services, backend_spec: BackendSpec, backend_settings: BackendSettings
) -> Callable[[str], Store]:
    """``stores(variant)``: the store under test in that durability variant."""

    def get(variant: str = "strict") -> Store:
        kind = store_kind(backend_spec)
        if kind is None:
            pytest.skip(
                f"not-applicable: backend {backend_spec.name} keeps its records in process "
                "memory: there is no store to restart (the server-restart checks show what "
                "that costs)"
            )
        table = VARIANTS[kind]
        if variant not in table:
            pytest.skip(f"not-applicable: a {kind} store has no {variant!r} durability variant")
        service = store_services.get(backend_spec, backend_settings)
        if service is not None and service.provider == "external":
            if variant != "strict":
                pytest.skip(
                    f"not-applicable: the {kind} store at the given URL is someone else's; the "
                    f"suite does not change its settings (variant {table[variant].label})"
                )
            return Store(backend_spec, backend_settings, service, variant=None)
        if service is not None and store_services.variant.get(kind) != variant:
            _configure(service, table[variant].store)
            try:
                service.restart()
            except Unsupported as exc:
                pytest.skip(f"not-applicable: {exc}")
            store_services.variant[kind] = variant
        return Store(backend_spec, backend_settings, service, variant=table[variant])

    return get


@pytest.fixture
def store(stores: Callable[[str], Store]) -> Store:
    """The store under test in its strict (no-loss) variant."""
    return stores("strict")


def need_kill(store: Store) -> None:
    """Skip unless the suite may SIGKILL this store (it must be ours)."""
    if store.service is not None and not store.service.can_kill:
        pytest.skip(
            "not-applicable: SIGKILL needs a store the suite started; the store at the given "
            "URL is restarted only gracefully, with --authconform-restart-cmd"
        )


def need_restart(store: Store) -> None:
    """Skip unless the store can be restarted (ours, or external with a restart command)."""
    service = store.service
    if service is not None and service.provider == "external":
        if not getattr(service, "restart_cmd", None):
            pytest.skip(
                f"disabled: the {store.kind} store at the given URL is someone else's; give "
                "--authconform-restart-cmd (env AUTHCONFORM_RESTART_CMD) to let the suite "
                "restart it"
            )


def first_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for messages."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


class _FiguresReport:
    """A plugin object: prints the figures the restart checks measured, at the end."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from authconform.suites.restart._figures import figures

        rows = figures()
        if not rows:
            return
        terminalreporter.section("restart suite figures")
        for row in rows:
            line = f"{row.topic:<22} {row.store:<10} {row.setting:<38} {row.value}"
            terminalreporter.write_line(line)
            if row.detail:
                terminalreporter.write_line(f"{'':<22} {'':<10} {'':<38} {row.detail}")


@pytest.fixture(scope="session", autouse=True)
def _authconform_restart_figures(request: pytest.FixtureRequest) -> None:
    """Register the end-of-run figures table once (this suite has no conftest hooks)."""
    name = "authconform-restart-figures"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(_FiguresReport(), name)
