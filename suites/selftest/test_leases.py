"""Leases: the end-of-run sweep and ``authconform clean`` drop only what is ours and abandoned.

Directly on the shared Redis and PostgreSQL (no pytest run): a run's namespace family
(``<ns>``, ``<ns>_<suffix>``) is dropped; a neighbour (``<ns>x``), a family member holding
a live lease of its own, and a namespace without any lease are never touched.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from typing import Any

import pytest

from authconform.backends._registry import resolve
from authconform.cleanup import Lease, clean, lease_store
from authconform.contract import BackendSettings, CodeRecord
from fixtures.mutants.harness import POSTGRES_URL, REDIS_URL, service_unavailable

SETTINGS = BackendSettings(redis_url=REDIS_URL, postgres_url=POSTGRES_URL)


def _put(service: str, namespace: str) -> None:
    async def put() -> None:
        backend = resolve(service).factory(replace(SETTINGS, namespace=namespace))
        try:
            await backend.put_code(secrets.token_hex(16), CodeRecord("c", "s", "g"), 600)
        finally:
            await backend.close()

    asyncio.run(put())


def _has_data(service: str, namespace: str) -> bool:
    async def stats() -> dict[str, int]:
        backend = resolve(service).factory(replace(SETTINGS, namespace=namespace))
        try:
            return await backend.stats()
        finally:
            await backend.close()

    return asyncio.run(stats()).get("codes", 0) > 0


def _drop(service: str, *namespaces: str) -> None:
    async def drop(namespace: str) -> None:
        backend = resolve(service).factory(replace(SETTINGS, namespace=namespace))
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()

    for namespace in namespaces:
        asyncio.run(drop(namespace))


@pytest.fixture(params=["redis", "postgres"])
def service(request: pytest.FixtureRequest) -> str:
    reason = service_unavailable(request.param)
    if reason is not None:
        pytest.skip(reason)
    return str(request.param)


def _names() -> dict[str, str]:
    ns = f"ac_lease_{secrets.token_hex(4)}"
    return {
        "run": ns,
        "derived": f"{ns}_live",
        "neighbour": f"{ns}x",
        "other_run": f"{ns}_other",  # a family member with a live lease of its own
        "unleased": f"ac_nolease_{secrets.token_hex(4)}",
    }


def _lease(service: str, namespace: str, expires_in: float) -> None:
    store = lease_store(service, replace(SETTINGS, namespace=namespace))
    try:
        store.put(namespace, {"expires_at": time.time() + expires_in, "pid": 0, "host": "t"})
    finally:
        store.close()


def _leases(service: str) -> dict[str, Any]:
    store = lease_store(service, SETTINGS)
    try:
        return store.leases()
    finally:
        store.close()


def test_sweep_drops_the_family_and_nothing_else(service: str) -> None:
    names = _names()
    try:
        for namespace in names.values():
            _put(service, namespace)
        _lease(service, names["other_run"], 600)
        lease = Lease(service, replace(SETTINGS, namespace=names["run"])).acquire()
        assert names["run"] in _leases(service)
        dropped, problem = lease.release()
        assert problem is None
        assert sorted(dropped) == sorted([names["run"], names["derived"]])
        assert not _has_data(service, names["run"])
        assert not _has_data(service, names["derived"])
        for kept in ("neighbour", "other_run", "unleased"):
            assert _has_data(service, names[kept]), f"the sweep touched {kept}"
        assert names["run"] not in _leases(service)
    finally:
        _drop(service, *names.values())
        store = lease_store(service, SETTINGS)
        for namespace in names.values():
            store.delete(namespace)
        store.close()


def test_clean_drops_expired_leases_only(service: str) -> None:
    names = _names()
    said: list[str] = []
    try:
        for namespace in names.values():
            _put(service, namespace)
        _lease(service, names["run"], -1)  # a killed run: its lease expired
        _lease(service, names["other_run"], 600)
        clean(service, SETTINGS, say=said.append)
        assert not _has_data(service, names["run"])
        assert not _has_data(service, names["derived"])
        for kept in ("neighbour", "other_run", "unleased"):
            assert _has_data(service, names[kept]), f"clean touched {kept}: {said}"
        leases = _leases(service)
        assert names["run"] not in leases and names["other_run"] in leases
        assert any(f"{names['other_run']}: lease live" in line for line in said), said
    finally:
        _drop(service, *names.values())
        store = lease_store(service, SETTINGS)
        for namespace in names.values():
            store.delete(namespace)
        store.close()
