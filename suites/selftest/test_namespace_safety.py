"""A run never touches data outside its namespace, and leaves nothing of its own behind.

Before the run we plant data of our own on the shared servers: a Redis key outside any
authconform namespace, a key in a *neighbouring* namespace (``<ns>x``, which a careless
``SCAN ac:{<ns>*`` would match), and a row in a table of a schema of our own in
PostgreSQL. Then the full contract suite runs on redis and postgres with a namespace we
chose, and we check that everything we planted is unchanged and that no key or schema of
the run's namespace (or of namespaces derived from it) remains.

That last check sees every namespace a check creates only because the contract checks
derive their extra namespaces from the run's
(``authconform.suites.contract._helpers.fresh_namespace``:
``<run namespace>_<hex>``); the two cheap checks below keep it that way.
"""

from __future__ import annotations

import ast
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from authconform.contract import BackendSettings
from authconform.suites.contract._helpers import NAMESPACE_ROOM, fresh_namespace
from fixtures.mutants.harness import (
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    clean_env,
    run_suite,
    service_unavailable,
)

NAMESPACE = re.compile(r"[a-z0-9_]{1,40}")


@pytest.mark.parametrize("run_namespace", ["ac_0123456789", "ac_selftest_0a1b2c3d", "x" * 40])
def test_extra_namespaces_are_derived_from_the_run_namespace(run_namespace: str) -> None:
    """fresh_namespace() gives new valid names under the run's prefix (trimmed if too long)."""
    settings = BackendSettings(namespace=run_namespace)
    made = {fresh_namespace(settings) for _ in range(20)}
    assert len(made) == 20
    for namespace in made:
        assert NAMESPACE.fullmatch(namespace + "_" * NAMESPACE_ROOM), namespace
        if len(run_namespace) <= 40 - NAMESPACE_ROOM - 9:
            assert namespace.startswith(run_namespace + "_"), namespace
        else:
            assert namespace.startswith(run_namespace[:29]), namespace


def test_contract_checks_make_no_namespace_of_their_own() -> None:
    """No contract check spells a namespace (``"ac_..."``): they all use fresh_namespace()."""
    found = []
    for path in sorted((REPO / "authconform" / "suites" / "contract").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.match(r"ac_", node.value):
                    found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, f"namespaces not derived from the run's: {found}"


@pytest.fixture
def redis_client() -> Iterator[Any]:
    reason = service_unavailable("redis")
    if reason is not None:
        pytest.skip(reason)
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def pg_conn() -> Iterator[Any]:
    reason = service_unavailable("postgres")
    if reason is not None:
        pytest.skip(reason)
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        yield conn


def test_contract_run_touches_nothing_outside_its_namespace(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: Any,
    pg_conn: Any,
) -> None:
    clean_env(monkeypatch)
    tag = secrets.token_hex(4)
    namespace = f"ac_selftest_{tag}"
    outside_key = f"selftest:sentinel:{tag}"
    neighbour_key = f"ac:{{{namespace}x}}:codes:sentinel"
    outside_value = secrets.token_hex(16)
    schema = f"selftest_{tag}"
    row = (1, secrets.token_hex(16))

    redis_client.set(outside_key, outside_value)
    redis_client.set(neighbour_key, outside_value, ex=3600)
    neighbour_ttl = redis_client.ttl(neighbour_key)
    pg_conn.execute(f'CREATE SCHEMA "{schema}"')
    pg_conn.execute(f'CREATE TABLE "{schema}".sentinel (id int PRIMARY KEY, value text)')
    pg_conn.execute(f'INSERT INTO "{schema}".sentinel VALUES (%s, %s)', row)
    try:
        run = run_suite(
            pytester,
            "contract",
            "--backend=redis,postgres",
            f"--authconform-namespace={namespace}",
        )
        assert len(run.passed()) >= 50, run.summary()
        assert any(k.endswith("[redis]") for k in run.outcomes), run.summary()
        assert any(k.endswith("[postgres]") for k in run.outcomes), run.summary()

        # what we planted is intact
        assert redis_client.get(outside_key) == outside_value
        assert redis_client.ttl(outside_key) == -1, "a TTL was added to a key outside the run"
        assert redis_client.get(neighbour_key) == outside_value, (
            f"the run deleted {neighbour_key}, a key of the neighbouring namespace {namespace}x"
        )
        assert 0 < redis_client.ttl(neighbour_key) <= neighbour_ttl
        rows = pg_conn.execute(f'SELECT id, value FROM "{schema}".sentinel').fetchall()
        assert rows == [row], f"rows of {schema}.sentinel changed: {rows}"

        # and the run cleaned up after itself
        left = sorted(redis_client.scan_iter(match=f"ac:{{{namespace}}}:*", count=1000))
        assert not left, f"{len(left)} keys of the run's namespace remain, e.g. {left[:3]}"
        derived = sorted(
            k
            for k in redis_client.scan_iter(match=f"ac:{{{namespace}*", count=1000)
            if k != neighbour_key
        )
        assert not derived, f"keys of namespaces derived from the run's remain: {derived[:3]}"
        schemas = [
            r[0]
            for r in pg_conn.execute(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name = %s OR schema_name LIKE %s",
                (f"authconform_{namespace}", f"authconform_{namespace}%".replace("_", "\\_")),
            ).fetchall()
        ]
        assert not schemas, f"schemas of the run remain: {schemas}"
    finally:
        redis_client.delete(outside_key, neighbour_key)
        pg_conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
