"""Several instances sharing one PostgreSQL (issue 6), against the machine's real server.

Each test has a schema of its own (tests/pg.py) and starts two or more real instances on
different ports. Changes reach the other instances through LISTEN/NOTIFY, which is
asynchronous, so a check on another instance waits until it holds (never on a duration).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.mirage_helpers import action_url, stubs_url
from tests.server import RunningServer, refused_serve

STATEFUL = {
    "request": {"method": "POST", "bodyPatterns": {"contains": ["<seq/>"]}},
    "response": {"status": 200, "body": ["1", "2", "3"]},
}


def eventually(check: Callable[[], Any], what: str, patience: float = 20.0) -> Any:
    """Retry ``check`` until it returns a truthy value; fail (saying what) if it never does."""
    deadline = time.monotonic() + patience
    while True:
        try:
            result = check()
        except requests.RequestException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def setup_scenario(url: str, scenario: str, session: str = "rec") -> None:
    assert requests.put(url + "/api/v2/scenarios", json={"scenario": scenario}).status_code == 201
    begin = {"begin": None, "session": session, "mode": "record"}
    assert requests.post(action_url(url, scenario), json=begin).status_code == 200


def play(url: str, scenario: str, session: str, body: str = "<seq/>") -> requests.Response:
    return requests.post(stubs_url(url, scenario), data=body, headers={"session": session})


def test_stub_session_and_tracker_are_shared(instances):
    a, b = instances
    setup_scenario(a.url, "shared")
    put = requests.put(stubs_url(a.url, "shared"), json=STATEFUL, headers={"session": "rec"})
    assert put.status_code == 201, put.text
    # The scenario and its stub, written through A, are listed by B.
    detail = requests.get(b.url + "/api/v2/scenarios/objects/shared").json()
    assert detail["stub_count"] == 1
    assert requests.post(action_url(a.url, "shared"), json={"end": None, "session": "rec"}).ok
    begin = {"begin": None, "session": "play", "mode": "playback"}
    assert requests.post(action_url(a.url, "shared"), json=begin).status_code == 200
    # The session begun on A plays on B as soon as B hears of it.
    first = eventually(
        lambda: (r := play(b.url, "shared", "play")).status_code == 200 and r, "B plays"
    )
    assert first.text == "1"
    # Stubs replaced through A are served by B at once: B compiled the scenario above, and
    # the NOTIFY of A's writes drops that index.
    assert requests.post(action_url(a.url, "shared"), json={"end": None, "session": "play"}).ok
    assert requests.delete(stubs_url(a.url, "shared")).status_code == 200
    begin_rec = {"begin": None, "session": "rec", "mode": "record"}
    assert requests.post(action_url(a.url, "shared"), json=begin_rec).status_code == 200
    another = {
        "request": {"method": "POST", "bodyPatterns": {"contains": ["<new/>"]}},
        "response": {"status": 201, "body": "fresh"},
    }
    put = requests.put(stubs_url(a.url, "shared"), json=another, headers={"session": "rec"})
    assert put.status_code == 201, put.text
    assert requests.post(action_url(a.url, "shared"), json={"end": None, "session": "rec"}).ok
    assert requests.post(action_url(a.url, "shared"), json=begin).status_code == 200
    eventually(lambda: play(b.url, "shared", "play", "<new/>").text == "fresh", "B serves it")
    # A delay policy saved on A is known to B.
    policy = {"name": "slow", "delay_type": "fixed", "milliseconds": 1}
    assert requests.put(a.url + "/api/v2/delay-policy", json=policy).status_code in (200, 201)
    eventually(
        lambda: requests.get(b.url + "/api/v2/delay-policy/objects/slow").status_code == 200,
        "B knows the policy",
    )
    # The tracker lists the calls of both instances (each flushes in batches).
    records = "/api/v2/tracker/records"

    def both_tracked() -> bool:
        data = requests.get(a.url + records, params={"q": "shared", "limit": 1000}).json()
        # B answered the playbacks (it alone did), A the rest; both must be listed.
        playbacks = [r for r in data["data"] if r["return_code"] in (200, 201)]
        return len(playbacks) >= 2 and len(data["data"]) >= 6

    eventually(both_tracked, "the tracker lists both instances' calls")
    on_b = requests.get(b.url + records, params={"q": "shared sc:200", "limit": 1000}).json()
    on_a = requests.get(a.url + records, params={"q": "shared sc:200", "limit": 1000}).json()
    assert {r["id"] for r in on_a["data"]} == {r["id"] for r in on_b["data"]}


def test_sequence_advances_atomically_across_instances(instances):
    a, b = instances
    setup_scenario(a.url, "seq")
    put = requests.put(stubs_url(a.url, "seq"), json=STATEFUL, headers={"session": "rec"})
    assert put.status_code == 201
    assert requests.post(action_url(a.url, "seq"), json={"end": None, "session": "rec"}).ok
    begin = {"begin": None, "session": "play", "mode": "playback"}
    assert requests.post(action_url(a.url, "seq"), json=begin).status_code == 200
    eventually(
        lambda: requests.get(b.url + "/api/v2/scenarios/objects/seq").json()["sessions"],
        "B sees the session",
    )
    eventually(lambda: b_knows_playback(b.url, "seq", "play"), "B knows it plays")
    answers = [play(server.url, "seq", "play").text for server in (a, b, a, b)]
    assert answers == ["1", "2", "3", "3"]
    # Beginning the session again (on B) restarts the sequence for every instance.
    assert requests.post(action_url(b.url, "seq"), json={"end": None, "session": "play"}).ok
    assert requests.post(action_url(b.url, "seq"), json=begin).status_code == 200
    eventually(lambda: b_knows_playback(a.url, "seq", "play"), "A knows it plays again")
    assert [play(server.url, "seq", "play").text for server in (a, b)] == ["1", "2"]


def b_knows_playback(url: str, scenario: str, session: str) -> bool:
    detail = requests.get(f"{url}/api/v2/scenarios/objects/{scenario}").json()
    return any(s["name"] == session and s["status"] == "playback" for s in detail["sessions"])


def pg_ctl(action: str) -> None:
    """Stop, start or restart the machine's PostgreSQL cluster."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def can_restart_postgres() -> str | None:
    if not os.path.isdir("/etc/postgresql") or not os.listdir("/etc/postgresql"):
        return "no local PostgreSQL cluster (/etc/postgresql) to restart"
    if shutil.which("pg_ctlcluster") is None:
        return "pg_ctlcluster is not installed"
    return None


ONE = {
    "request": {"method": "POST", "bodyPatterns": {"contains": ["<one/>"]}},
    "response": {"status": 200, "body": "steady"},
}


def test_postgres_outage_under_load(pg_url):
    """Stop PostgreSQL while two instances take writes and playbacks, then start it again:
    writes answer 503 with a JSON error meanwhile, no instance dies, playback of compiled
    stubs goes on, and every acknowledged (201) stub is in the store afterwards."""
    reason = can_restart_postgres()
    if reason:
        pytest.skip(reason)
    servers = [RunningServer(store=pg_url).start(), RunningServer(store=pg_url).start()]
    a, b = servers
    stopped = False
    try:
        setup_scenario(a.url, "load")
        setup_scenario(a.url, "steady", session="srec")
        put = requests.put(stubs_url(a.url, "steady"), json=ONE, headers={"session": "srec"})
        assert put.status_code == 201
        assert requests.post(action_url(a.url, "steady"), json={"end": None, "session": "srec"}).ok
        begin = {"begin": None, "session": "splay", "mode": "playback"}
        assert requests.post(action_url(a.url, "steady"), json=begin).status_code == 200
        for server in servers:  # compiled on both before the outage
            eventually(lambda s=server: play(s.url, "steady", "splay", "<one/>").ok, "playing")

        acknowledged: list[str] = []  # stub bodies whose PUT answered 201
        statuses: dict[int, int] = {}
        playbacks: dict[int, int] = {}
        unavailable: list[dict[str, Any]] = []
        stop = threading.Event()

        def writer(server: RunningServer, tag: str) -> None:
            i = 0
            with requests.Session() as http:
                while not stop.is_set():
                    i += 1
                    body = f"<{tag}{i}/>"
                    doc = {
                        "request": {"method": "POST", "bodyPatterns": {"contains": [body]}},
                        "response": {"status": 200, "body": body},
                    }
                    url = stubs_url(server.url, "load")
                    r = http.put(url, json=doc, headers={"session": "rec"})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 201:
                        acknowledged.append(body)
                    elif r.status_code == 503:
                        unavailable.append(r.json())
                        time.sleep(0.02)

        def player(server: RunningServer) -> None:
            with requests.Session() as http:
                while not stop.is_set():
                    r = http.post(
                        stubs_url(server.url, "steady"), data="<one/>", headers={"session": "splay"}
                    )
                    playbacks[r.status_code] = playbacks.get(r.status_code, 0) + 1

        threads = [threading.Thread(target=writer, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
        threads += [threading.Thread(target=player, args=(s,)) for s in servers]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: len(acknowledged) >= 20, "stubs stored before the outage")
            pg_ctl("stop")
            stopped = True
            eventually(lambda: len(unavailable) >= 4, "writes answer 503 during the outage")
            pg_ctl("start")
            stopped = False
            before = len(acknowledged)
            eventually(lambda: len(acknowledged) >= before + 20, "stubs stored after the outage")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert all(s.process and s.process.poll() is None for s in servers), "an instance died"
        assert set(statuses) <= {201, 503}, statuses
        message = unavailable[0]["error"]["message"]
        assert unavailable[0]["error"]["code"] == 503 and "unavailable" in message
        # Playback of compiled stubs needs no store: it went on through the outage.
        assert set(playbacks) == {200}, playbacks
        # Nothing acknowledged is lost: every 201 PUT is in the store, seen from both instances.
        for server in servers:
            stubs = requests.get(stubs_url(server.url, "load")).json()["data"]
            stored = {s["stub"]["response"]["body"] for s in stubs}
            assert set(acknowledged) <= stored

        # Tracker batches that failed during the outage were kept and written afterwards:
        # every answered playback is listed (probes before the load add a few more).
        def tracked() -> int:
            q = {"q": "session:splay sc:200", "limit": 1}
            body = requests.get(a.url + "/api/v2/tracker/records", params=q).json()
            return body["paging"]["totalItems"]

        eventually(lambda: tracked() >= playbacks[200], "every answered playback is tracked")
        # B's listener reconnected: a change made through A after the outage reaches B's cache.
        policy = {"name": "after", "delay_type": "fixed", "milliseconds": 1}
        assert requests.put(a.url + "/api/v2/delay-policy", json=policy).status_code in (200, 201)
        eventually(
            lambda: requests.get(b.url + "/api/v2/delay-policy/objects/after").status_code == 200,
            "B hears of changes again",
        )
    finally:
        if stopped:
            pg_ctl("start")
        for server in servers:
            server.stop()
        # Leave PostgreSQL running for the rest of the suite.
        eventually(pg_ready, "PostgreSQL is back", patience=60)


def pg_ready() -> bool:
    import psycopg

    from tests.pg import PG_URL

    try:
        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def test_workers_share_the_store(pg_url):
    """``--workers 2``: two processes on one port; a sequence advances across both."""
    server = RunningServer(store=pg_url, extra_args=["--workers", "2"]).start()
    try:
        # Each request on a new connection, so either worker may answer; the one that did not
        # handle the previous call may not have heard of it yet, so each call is retried
        # until it succeeds (a session unknown there is a 404/409, never a wrong answer).
        url = server.url
        assert requests.put(url + "/api/v2/scenarios", json={"scenario": "workers"}).ok
        calls: list[Callable[[], requests.Response]] = [
            lambda: requests.post(
                action_url(url, "workers"), json={"begin": None, "session": "rec", "mode": "record"}
            ),
            lambda: requests.put(
                stubs_url(url, "workers"), json=STATEFUL, headers={"session": "rec"}
            ),
            lambda: requests.post(action_url(url, "workers"), json={"end": None, "session": "rec"}),
            lambda: requests.post(
                action_url(url, "workers"),
                json={"begin": None, "session": "play", "mode": "playback"},
            ),
        ]
        for call in calls:
            eventually(lambda c=call: c().status_code in (200, 201), "a call on either worker")
        # Each request on a new connection, so either worker may answer; the worker that did
        # not begin the session may not have heard of it yet (409/404 until it has).
        answers = []
        while len(answers) < 8:
            r = play(server.url, "workers", "play")
            if r.status_code == 200:
                answers.append(r.text)
            else:
                assert r.status_code in (404, 409), r.text
                time.sleep(0.05)
        assert answers == ["1", "2", "3", "3", "3", "3", "3", "3"]
    finally:
        assert server.stop() == 0


def test_workers_need_a_shared_store(tmp_path):
    stderr = refused_serve("--workers", "2", "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert "--workers above 1 needs a shared store" in stderr


def test_instances_starting_together_migrate_once(pg_url):
    """Migrations run under an advisory lock: concurrent opens neither fail nor repeat."""
    import asyncio

    import psycopg

    from simulacra.store.postgres import PostgresStore, migrations, split_url

    async def open_many() -> list[int]:
        stores = [PostgresStore(pg_url) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            return [await s.migrate() for s in stores]
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    latest = migrations()[-1][0]
    assert asyncio.run(open_many()) == [latest] * 4
    url, schema = split_url(pg_url)
    with psycopg.connect(url, options=f"-csearch_path={schema}") as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [v for (v,) in rows] == [v for v, _ in migrations()]


def test_a_connection_ended_by_the_database_is_replaced_before_it_is_lent(pg_url):
    """The pool lends a connection used moments ago without a round trip to check it, but
    not one whose backend ended meanwhile (a restart, pg_terminate_backend): its socket has
    something to read, so it is checked, found broken and replaced. No operation fails."""
    import asyncio

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from simulacra.store.postgres import PostgresStore

    async def main() -> tuple[int, int, int]:
        store = PostgresStore(pg_url, min_size=2, max_size=2)
        await store.open()
        asked = 0
        check_connection = AsyncConnectionPool.check_connection

        async def counted(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal asked
            asked += 1
            await check_connection(conn)

        try:
            pids = set()
            for _ in range(6):
                row = await store._fetchone("SELECT pg_backend_pid()")
                assert row is not None
                pids.add(row[0])
            AsyncConnectionPool.check_connection = counted  # type: ignore[method-assign]
            for _ in range(10):
                await store.ping()
            quiet = asked  # lent again within moments of their last use: not asked
            base = pg_url.split("?")[0]
            async with await psycopg.AsyncConnection.connect(base, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                    (list(pids),),
                )
            await asyncio.sleep(0.2)  # the backends' goodbyes reach the sockets
            for _ in range(10):
                await store.ping()  # each lent connection is a working one
            return quiet, asked, store.failures
        finally:
            AsyncConnectionPool.check_connection = check_connection  # type: ignore[method-assign]
            await store.close()

    quiet, asked, failures = asyncio.run(main())
    assert quiet == 0
    assert asked >= 1  # the ended ones were asked (and failed the check)
    assert failures == 0
