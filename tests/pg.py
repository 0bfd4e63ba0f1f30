"""The machine's real PostgreSQL for shared-store tests: one fresh schema per test.

Where no server answers the tests skip with the reason; with ``SIMULACRA_REQUIRE_POSTGRES=1``
(set by ``.ci/run``) that skip is a failure instead, so CI cannot pass without PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.server import RunningServer

PG_URL = os.environ.get("SIMULACRA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _unreachable_reason() -> str | None:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"no PostgreSQL answers at {PG_URL}: {exc}".strip()
    return None


def require_postgres() -> str:
    """Return the server URL, or skip (fail under SIMULACRA_REQUIRE_POSTGRES=1) with why not."""
    reason = _unreachable_reason()
    if reason is not None:
        if os.environ.get("SIMULACRA_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"SIMULACRA_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return PG_URL


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on a schema of its own, dropped after the test."""
    base = require_postgres()
    schema = "t_" + uuid.uuid4().hex[:16]
    yield f"{base}?schema={schema}"
    drop_schema(schema)


@pytest.fixture
def instances(pg_url: str) -> Iterator[list[RunningServer]]:
    """Two servers on one PostgreSQL schema (``pg_url``'s)."""
    servers = [RunningServer(store=pg_url).start(), RunningServer(store=pg_url).start()]
    yield servers
    for server in servers:
        assert server.stop() == 0
