"""The Store contract, run against every backend: SQLite (file), memory:// and PostgreSQL.

The PostgreSQL cases use the machine's real server, each in a schema of its own
(tests/pg.py); they skip where none answers, and fail instead in CI.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from simulacra.errors import AlreadyExists
from simulacra.store import Store, open_store
from simulacra.store.base import ScenarioImport
from simulacra.virtual.delays import parse_policy
from simulacra.virtual.model import Response, Scenario, Session, Stub
from simulacra.virtual.tracker import TrackerRecord, parse_query
from tests.pg import drop_schema, require_postgres

SC = "localhost:contract"


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'contract.db'}"
        return
    if request.param == "memory":
        yield "memory://"
        return
    base = require_postgres()
    schema = f"contract_{abs(hash(request.node.nodeid)) % 10**12}"
    drop_schema(schema)
    yield f"{base}?schema={schema}"
    drop_schema(schema)


def run(store_url: str, body: Any) -> Any:
    """Open the store, run ``body(store)`` (a coroutine function), close it."""

    async def main() -> Any:
        store: Store = open_store(store_url)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def stub(body: str = "<a/>", responses: tuple[str, ...] = ("one",), scenario: str = SC) -> Stub:
    return Stub(
        scenario=scenario,
        request={"method": "POST", "bodyPatterns": {"contains": [body]}},
        responses=[Response(200, r, {"X": "1"}) for r in responses],
        recorded="2026-01-01",
    )


def test_scenarios(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        with pytest.raises(AlreadyExists):
            await store.create_scenario(Scenario(SC, "2026-01-02"))
        assert await store.get_scenario(SC) == Scenario(SC, "2026-01-01", 0)
        assert [s.name for s in await store.list_scenarios()] == [SC]
        assert await store.delete_scenario(SC) is True
        assert await store.delete_scenario(SC) is False
        assert await store.get_scenario(SC) is None

    run(store_url, body)


def test_stubs_keep_order_and_bump_version(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        first = await store.insert_stub(stub("<a/>", ("1", "2")))
        second = await store.insert_stub(stub("<b/>"))
        assert first.id and second.id and first.seq < second.seq
        listed = await store.list_stubs(SC)
        assert [s.id for s in listed] == [first.id, second.id]
        assert [r.body for r in listed[0].responses] == ["1", "2"]
        assert listed[0].responses[0].headers == {"X": "1"}
        scenario = await store.get_scenario(SC)
        assert scenario is not None and scenario.version == 2
        found = await store.find_stubs(SC, [first.matchers_hash, "absent", second.matchers_hash])
        assert {h: s.id for h, s in found.items()} == {
            first.matchers_hash: first.id,
            second.matchers_hash: second.id,
        }
        assert await store.find_stubs(SC, ["absent"]) == {}
        # Another stub with the same matchers (stored as it was before merging existed):
        # the first one is found.
        await store.insert_stub(stub("<a/>", ("3",)))
        assert (await store.find_stubs(SC, [first.matchers_hash]))[first.matchers_hash].id == (
            first.id
        )
        first.responses = [Response(201, "changed")]
        await store.update_stub(first)
        again = (await store.find_stubs(SC, [first.matchers_hash]))[first.matchers_hash]
        assert again.responses[0].body == "changed"
        stats = await store.stub_stats(SC)
        assert stats.count == 3 and stats.last_recorded == "2026-01-01"
        assert await store.delete_stubs(SC) == 3
        assert await store.list_stubs(SC) == []

    run(store_url, body)


def test_stubs_are_read_a_page_at_a_time(store_url):
    """A page of a scenario's stubs, in insertion order, without reading the others."""

    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        ids = [(await store.insert_stub(stub(f"<s{i}/>"))).id for i in range(7)]
        assert [s.id for s in await store.list_stubs(SC, 0, 3)] == ids[:3]
        assert [s.id for s in await store.list_stubs(SC, 3, 3)] == ids[3:6]
        assert [s.id for s in await store.list_stubs(SC, 6, 3)] == ids[6:]
        assert await store.list_stubs(SC, 7, 3) == []
        assert [s.id for s in await store.list_stubs(SC, 5)] == ids[5:]

    run(store_url, body)


def test_pages_read_after_a_seq(store_url):
    """Keyset paging: the stubs after the last one of the page before."""

    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        await store.write_stubs(SC, [stub(f"<s{i}/>") for i in range(5)], [])
        first = await store.list_stubs(SC, limit=2)
        rest = await store.list_stubs(SC, limit=10, after=first[-1].seq)
        assert [s.request for s in first + rest] == [stub(f"<s{i}/>").request for i in range(5)]
        assert await store.list_stubs(SC, after=rest[-1].seq) == []

    run(store_url, body)


def test_write_stubs_inserts_and_extends_in_one_transaction(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        kept = await store.insert_stub(stub("<kept/>"))
        version = (await store.get_scenario(SC)).version  # type: ignore[union-attr]
        kept.responses.append(Response(201, "two"))
        new = [stub(f"<n{i}/>") for i in range(1500)]
        await store.write_stubs(SC, new, [kept])
        assert all(s.id for s in new)  # assigned
        stored = await store.list_stubs(SC)
        assert [s.id for s in stored] == [kept.id] + [s.id for s in new]
        assert [r.body for r in stored[0].responses] == ["one", "two"]
        assert stored[1].responses == new[0].responses
        assert (await store.get_scenario(SC)).version == version + 1  # type: ignore[union-attr]
        # A stub of another scenario refuses the whole write (its foreign key): none stored.
        with pytest.raises(Exception):  # noqa: B017 - each store's own integrity error
            await store.write_stubs(SC, [stub("<x/>"), stub("<y/>", scenario="h:none")], [])
        assert len(await store.list_stubs(SC)) == 1501
        assert await store.delete_stubs(SC) == 1501

    run(store_url, body)


def test_import_is_all_or_nothing(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario("localhost:taken", "2026-01-01"))
        fresh = Scenario("localhost:fresh", "2026-01-01")
        taken = Scenario("localhost:taken", "2026-01-01")
        session = Session("localhost", "s", "localhost:fresh", "playback")
        item = ScenarioImport(fresh, [stub(scenario=fresh.name)], session)
        with pytest.raises(AlreadyExists):
            await store.import_scenarios([item, ScenarioImport(taken, [], None)])
        assert await store.get_scenario("localhost:fresh") is None
        await store.import_scenarios([ScenarioImport(fresh, [stub(scenario=fresh.name)], session)])
        assert len(await store.list_stubs("localhost:fresh")) == 1
        assert await store.list_sessions() == [session]

    run(store_url, body)


def test_sessions_upsert_and_cascade(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        session = Session("localhost", "s1", SC, "record", "2026-01-01")
        await store.save_session(session)
        session.status, session.last_used = "playback", "2026-01-02 00:00:00"
        await store.save_sessions([session, Session("localhost", "s2", SC, "dormant")])
        assert [(s.name, s.status) for s in await store.list_sessions()] == [
            ("s1", "playback"),
            ("s2", "dormant"),
        ]
        await store.delete_scenario(SC)
        assert await store.list_sessions() == []

    run(store_url, body)


def test_session_port_round_trips(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        bound = Session("localhost", "s1", SC, "playback", "2026-01-01", None, 8101)
        await store.save_session(bound)
        await store.save_sessions([Session("localhost", "s2", SC, "playback", port=8102)])
        assert await store.list_sessions() == [
            bound,
            Session("localhost", "s2", SC, "playback", port=8102),
        ]
        assert await store.get_session("localhost", "s1") == bound
        assert await store.get_session("localhost", "nope") is None
        # The last_used flush (save_sessions) of a copy that does not know the binding, as
        # another instance's may not, keeps the stored port.
        stale = Session("localhost", "s1", SC, "playback", "2026-01-01", "2026-01-02 00:00:00")
        await store.save_sessions([stale])
        again = await store.get_session("localhost", "s1")
        assert again is not None
        assert (again.last_used, again.port) == ("2026-01-02 00:00:00", 8101)
        # save_session is the call that binds and unbinds.
        await store.save_session(Session("localhost", "s1", SC, "playback", port=8103))
        assert (await store.get_session("localhost", "s1")).port == 8103  # type: ignore[union-attr]
        await store.save_session(Session("localhost", "s1", SC, "dormant"))
        assert (await store.get_session("localhost", "s1")).port is None  # type: ignore[union-attr]
        # An imported scenario's session keeps its port too.
        fresh = Scenario("localhost:fresh", "2026-01-01")
        imported = Session("localhost", "s3", fresh.name, "playback", port=8104)
        await store.import_scenarios([ScenarioImport(fresh, [stub(scenario=fresh.name)], imported)])
        assert await store.get_session("localhost", "s3") == imported

    run(store_url, body)


def test_session_summary_shows_port_only_when_bound():
    unbound = Session("localhost", "s", SC, "playback", "2026-01-01")
    assert "port" not in unbound.summary()
    bound = Session("localhost", "s", SC, "playback", "2026-01-01", port=8101)
    assert bound.summary() == {**unbound.summary(), "port": 8101}


# The session table as the previous version created it (before the port column).
OLD_SESSION_TABLE = """
CREATE TABLE session (
    host       TEXT NOT NULL,
    name       TEXT NOT NULL,
    scenario   TEXT NOT NULL REFERENCES scenario(name) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    loaded     TEXT,
    last_used  TEXT,
    PRIMARY KEY (host, name)
);
"""


def test_sqlite_file_of_an_earlier_version_gains_the_added_columns(tmp_path):
    path = tmp_path / "simulacra.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE scenario (name TEXT PRIMARY KEY, created TEXT NOT NULL,"
        " version INTEGER NOT NULL DEFAULT 0);" + OLD_SESSION_TABLE
    )
    db.execute(f"INSERT INTO scenario VALUES ('{SC}', '2026-01-01', 3)")
    db.execute(
        "INSERT INTO session VALUES ('localhost', 'old', ?, 'playback', '2026-01-01', NULL)",
        (SC,),
    )
    db.commit()
    db.close()

    async def body(store: Store) -> None:
        old = Session("localhost", "old", SC, "playback", "2026-01-01")
        assert await store.list_sessions() == [old]
        await store.save_session(Session("localhost", "new", SC, "playback", port=8101))
        assert [(s.name, s.port) for s in await store.list_sessions()] == [
            ("new", 8101),
            ("old", None),
        ]

    async def reopened(store: Store) -> None:  # the column is there: nothing to add again
        assert [(s.name, s.port) for s in await store.list_sessions()] == [
            ("new", 8101),
            ("old", None),
        ]

    url = f"sqlite:///{path}"
    run(url, body)
    run(url, reopened)
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(session)")]
    assert columns == [
        "host",
        "name",
        "scenario",
        "status",
        "loaded",
        "last_used",
        "port",
        "upstream",
    ]


def test_postgres_schema_of_an_earlier_version_gains_the_added_columns(pg_url):
    """A database migrated by the previous version (through 0002) with a session in it."""
    import psycopg

    from simulacra.store.postgres import migrations, split_url

    url, schema = split_url(pg_url)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, sql in migrations():
            if version <= 2:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        conn.execute("INSERT INTO scenario VALUES (%s, '2026-01-01', 3)", (SC,))
        conn.execute(
            "INSERT INTO session VALUES ('localhost', 'old', %s, 'playback', '2026-01-01', NULL)",
            (SC,),
        )

    async def body(store: Store) -> None:
        old = Session("localhost", "old", SC, "playback", "2026-01-01")
        assert await store.list_sessions() == [old]
        await store.save_session(Session("localhost", "new", SC, "playback", port=8101))
        assert [(s.name, s.port) for s in await store.list_sessions()] == [
            ("new", 8101),
            ("old", None),
        ]

    run(pg_url, body)


def test_a_recording_sessions_upstream_is_kept(store_url):
    upstream = {"url": "https://api.example.com", "record": {"ignoreQuery": ["t"]}}

    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        recording = Session("localhost", "rec", SC, "record", port=8102, upstream=upstream)
        await store.save_session(recording)
        assert await store.get_session("localhost", "rec") == recording
        # The periodic last_used flush keeps the stored upstream and port.
        await store.save_sessions([Session("localhost", "rec", SC, "record", last_used="x")])
        kept = await store.get_session("localhost", "rec")
        assert kept is not None and (kept.upstream, kept.port) == (upstream, 8102)

    run(store_url, body)


def test_the_answering_stub_round_trips(store_url):
    async def body(store: Store) -> None:
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        kept = await store.insert_stub(stub())
        played = record(1)._replace(stub_id=kept.id)
        await store.add_tracker_records([played, record(2)], cap=10)
        _, page = await store.tracker_records(parse_query(None), skip=0, limit=10)
        assert [(r.function, r.stub_id) for r in page] == [
            ("/api/v2/x2", None),
            ("/api/v2/x1", kept.id),
        ]
        assert page[1].id is not None
        assert await store.tracker_record(page[1].id) == page[1]
        assert await store.get_stub(SC, kept.id) == kept
        assert await store.get_stub("other:sc", kept.id) is None  # another scenario's id
        assert await store.get_stub(SC, "no-such-stub") is None

    run(store_url, body)


def test_sqlite_tracker_of_an_earlier_version_gains_the_stub_id(tmp_path):
    path = tmp_path / "simulacra.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tracker (id INTEGER PRIMARY KEY, function TEXT NOT NULL, scenario TEXT,"
        " session TEXT, host TEXT NOT NULL, return_code INTEGER NOT NULL,"
        " duration_ms INTEGER NOT NULL, delay INTEGER NOT NULL, detail BLOB NOT NULL,"
        " recorded INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO tracker VALUES (1, '/old', NULL, NULL, 'h', 200, 1, 0, '[]', 0)")
    db.commit()
    db.close()

    async def body(store: Store) -> None:
        await store.add_tracker_records([record(2)._replace(stub_id="s2")], cap=10)
        _, page = await store.tracker_records(parse_query(None), skip=0, limit=10)
        assert [(r.function, r.stub_id) for r in page] == [("/api/v2/x2", "s2"), ("/old", None)]

    run(f"sqlite:///{path}", body)


def test_delay_policies(store_url):
    async def body(store: Store) -> None:
        policy = parse_policy({"name": "p", "delay_type": "fixed", "milliseconds": 5}, "h")
        assert await store.save_delay_policy(policy) is True
        assert await store.save_delay_policy(policy) is False
        assert [p.key for p in await store.list_delay_policies()] == [("h", "p")]
        assert await store.delete_delay_policy("h", "p") is True
        assert await store.delete_delay_policy("h", "p") is False

    run(store_url, body)


def record(i: int, scenario: str | None = SC) -> TrackerRecord:
    return TrackerRecord(
        None, f"/api/v2/x{i}", scenario, "s1", "localhost", 200 + i % 2, i, 0, orjson.dumps([i])
    )


def test_tracker_cap_and_queries(store_url):
    async def body(store: Store) -> None:
        await store.add_tracker_records([record(i) for i in range(10)], cap=6)
        total, page = await store.tracker_records(parse_query(None), skip=0, limit=3)
        assert total == 6
        assert [r.function for r in page] == ["/api/v2/x9", "/api/v2/x8", "/api/v2/x7"]
        assert isinstance(page[0].detail, bytes) and orjson.loads(page[0].detail) == [9]
        total, page = await store.tracker_records(parse_query("sc:201 X9"), skip=0, limit=10)
        assert (total, [r.function for r in page]) == (1, ["/api/v2/x9"])
        total, _ = await store.tracker_records(parse_query("CONTRACT rt:>=8"), skip=0, limit=10)
        assert total == 2
        first = page[0]
        assert first.id is not None
        assert await store.tracker_record(first.id) == first
        assert await store.tracker_record(10**9) is None

    run(store_url, body)


def test_each_schema_has_its_own_notification_channel():
    """Channels are the database's: a store in a schema of its own must not hear another
    schema's changes (its scenario of the same name would drop this one's index)."""
    from simulacra.store.postgres import CHANNEL, PostgresStore

    assert PostgresStore("postgresql://h/db").channel == CHANNEL
    a, b = PostgresStore("postgresql://h/db?schema=a"), PostgresStore("postgresql://h/db?schema=b")
    assert a.channel != b.channel and CHANNEL not in (a.channel, b.channel)
