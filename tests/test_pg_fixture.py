"""The shared-store tests skip without PostgreSQL, except in CI where that is a failure."""

from __future__ import annotations

import pytest

from tests import pg
from tests.server import free_port


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "PG_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/test")


def test_skips_with_the_reason_where_no_server_answers(nowhere, monkeypatch):
    monkeypatch.delenv("SIMULACRA_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL answers at"):
        pg.require_postgres()


def test_fails_instead_when_ci_requires_postgres(nowhere, monkeypatch):
    monkeypatch.setenv("SIMULACRA_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="SIMULACRA_REQUIRE_POSTGRES=1 but no Postgre"):
        pg.require_postgres()
