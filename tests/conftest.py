from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.pg import (  # noqa: F401 - pg_url and instances: fixtures of the shared-store tests
    drop_schema,
    instances,
    pg_url,
    require_postgres,
)
from tests.server import RunningServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for the session, on a throw-away SQLite file."""
    if os.environ.get("SIMULACRA_TEST_SHARED_CLOUD") == "1":
        # The same tests with the cloud state in PostgreSQL (--shared-cloud, docs/scaling.md),
        # over two workers: each loads what the other changed.
        schema = "t_" + uuid.uuid4().hex[:16]
        running = RunningServer(
            store=f"{require_postgres()}?schema={schema}",
            extra_args=["--shared-cloud", "--workers", "2"],
        ).start()
        yield running
        running.stop()
        drop_schema(schema)
        return
    db = tmp_path_factory.mktemp("store") / "simulacra.db"
    running = RunningServer(store=f"sqlite:///{db}").start()
    yield running
    running.stop()


@pytest.fixture
def base_url(server: RunningServer) -> str:
    return server.url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def name() -> str:
    """A fresh scenario/session name, so tests sharing one server never collide."""
    return "t" + uuid.uuid4().hex[:12]
