"""``--shared-cloud`` keeps the state in rows, one per part (a tenant's compute, a user, a
token...), and locks only the rows a request changes.

Two real instances on one PostgreSQL schema (tests/pg.py), driven by requests. Another
connection holds a part's row lock, as a slow writer on a third instance would: what must
not wait for it is checked to answer while it is held, and what must wait is checked to
still be waiting, then to land once it is released.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests

from simulacra.store.postgres import split_url
from tests.server import RunningServer
from tests.test_shared_cloud import (
    authenticate,
    id_page_part,
    nova_url,
    server_part,
    stored_sizes,
    stored_versions,
    tenant_part,
)
from tests.test_shared_store import eventually

SERVER = {"server": {"name": "s", "imageRef": "img", "flavorRef": "2"}}


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    a = RunningServer(store=pg_url, extra_args=["--shared-cloud"]).start()
    b = RunningServer(store=pg_url, extra_args=["--shared-cloud"]).start()
    yield a, b
    assert a.stop() == 0
    assert b.stop() == 0


def create(url: str, tenant: str, name: str = "s") -> str:
    body = {"server": {**SERVER["server"], "name": name}}
    response = requests.post(nova_url(url, tenant) + "/servers", json=body, timeout=60)
    assert response.status_code == 202, response.text
    return str(response.json()["server"]["id"])


def listed(url: str, tenant: str) -> set[str]:
    response = requests.get(nova_url(url, tenant) + "/servers", timeout=30)
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()["servers"]}


class RowLock:
    """A transaction of its own holding one part's row lock until ``release``."""

    def __init__(self, pg_url: str, key: str) -> None:
        url, schema = split_url(pg_url)
        self.conn = psycopg.connect(url, options=f"-csearch_path={schema}")
        row = self.conn.execute(
            "SELECT version FROM cloud_part WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
        assert row is not None, f"no part {key}"

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def waiting_for(pg_url: str, lock: RowLock) -> int:
    """Statements waiting for ``lock``."""
    url, _schema = split_url(pg_url)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (lock.conn.info.backend_pid,),
        ).fetchone()
    return int(row[0]) if row else 0


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def test_a_writer_holding_one_tenant_stops_neither_other_tenants_nor_readers(pair, pg_url):
    a, b = pair
    held = create(a.url, "910001")
    token = authenticate(a.url, "reader", "910002")["token"]["id"]
    lock = RowLock(pg_url, id_page_part("910001", "ORD", 0))
    try:
        # A create in the locked tenant waits for the lock...
        waiting, created = in_thread(lambda: create(a.url, "910001", "late"))
        # (once its statement waits: a create sent together with it would wait in the same
        # statement, as the requests that arrive together are sent together)
        eventually(lambda: waiting_for(pg_url, lock) > 0, "the create waits for the lock")
        # ...while creates in other tenants land, on both instances,
        others = {create(a.url, "910003"), create(b.url, "910004"), create(b.url, "910003")}
        # reads of the locked tenant answer from its committed state (on the other
        # instance: the waiting create's own instance holds its answers until it commits),
        assert listed(b.url, "910001") == {held}
        # and logins and token checks go on.
        assert authenticate(b.url, "reader", "910002")["token"]["id"] == token
        checked = requests.get(f"{a.url}/identity/v2.0/tokens/{token}", timeout=30)
        assert checked.status_code == 200, checked.text
        assert waiting.is_alive() and not created
    finally:
        lock.release()
    waiting.join(timeout=30)
    assert created, "the create behind the lock never answered"
    for url in (a.url, b.url):
        assert listed(url, "910001") == {held, created[0]}
        assert listed(url, "910003") | listed(url, "910004") == others


def test_creates_in_two_regions_of_one_tenant_on_two_instances_never_share_an_address(pair):
    """A server's addresses are unique across its tenant's regions. Creates in ORD on one
    instance and in DFW on the other write no part in common (each its own page of ids), so
    nothing serializes them: uniqueness must rest on what each writes. (Numbering servers by
    a count of every region's pages, which each create only read, gave one address twice.)"""
    a, b = pair
    tenant = "915001"

    def make(i: int) -> None:
        url, region = ((a.url, "ORD"), (b.url, "DFW"))[i % 2]
        body = {"server": {**SERVER["server"], "name": f"r{i}"}}
        response = requests.post(nova_url(url, tenant, region) + "/servers", json=body, timeout=60)
        assert response.status_code == 202, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(make, range(160)))
    addresses: list[str] = []
    for region in ("ORD", "DFW"):
        detail = requests.get(nova_url(a.url, tenant, region) + "/servers/detail", timeout=30)
        servers = detail.json()["servers"]
        assert len(servers) == 80
        for server in servers:
            addresses += [
                entry["addr"]
                for kind in ("private", "public")
                for entry in server["addresses"][kind]
            ]
    assert len(addresses) == 3 * 160
    assert len(set(addresses)) == len(addresses)


def test_concurrent_creates_in_one_tenant_and_across_tenants_lose_nothing(pair):
    a, b = pair
    urls = [a.url, b.url]
    tenants = ["920001", "920002", "920003"]

    def make(i: int) -> tuple[str, str]:
        tenant = tenants[i % 2] if i % 5 else tenants[2]
        return tenant, create(urls[i % 2], tenant, f"c{i}")

    with ThreadPoolExecutor(max_workers=12) as pool:
        made = list(pool.map(make, range(90)))
    for tenant in tenants:
        expected = {server for owner, server in made if owner == tenant}
        assert expected
        for url in urls:
            assert listed(url, tenant) == expected


def test_a_request_writes_only_the_parts_it_changes(pair, pg_url):
    a, b = pair
    # A cloud with many servers in many tenants...
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: create((a.url, b.url)[i % 2], f"93{i % 40:04d}"), range(800)))
    token = authenticate(a.url, "one", "930999")["token"]["id"]
    versions = stored_versions(pg_url)
    sizes = stored_sizes(pg_url)
    # ...is not written whole by a request: a login and a read write nothing,
    assert authenticate(b.url, "one", "930999")["token"]["id"] == token
    assert len(listed(b.url, "930007")) == 20
    assert stored_versions(pg_url) == versions
    # and a create writes its page of server ids and its new server's, once each: not the
    # tenant's 20 other servers, which are parts of their own, nor its tenant's part (a
    # server's addresses follow from its page's block of numbers and its place there).
    server = create(b.url, "930007")
    after = stored_versions(pg_url)
    written = {key for key in after if after[key] != versions.get(key)}
    page = id_page_part("930007", "ORD", 0)
    assert written == {page, server_part("930007", server)}
    others = [size for key, size in sizes.items() if key.startswith("compute.servers:('930007'")]
    assert len(others) == 20
    assert sizes[tenant_part("930007")] < sum(others) / 2


def test_reset_on_one_instance_empties_the_cloud_for_both(pair):
    a, b = pair
    create(a.url, "940001")
    create(b.url, "940002")
    assert requests.post(b.url + "/mimic/v1.1/tick", json={"amount": 50}).status_code == 200
    assert requests.post(a.url + "/api/v2/reset/cloud").status_code == 200
    for url in (a.url, b.url):
        assert listed(url, "940001") == set() and listed(url, "940002") == set()
        now = requests.post(url + "/mimic/v1.1/tick", json={"amount": 0}).json()["now"]
        assert now.startswith("1970-01-01T00:00:00")
    # The cloud works afresh after it, on both.
    server = create(b.url, "940001")
    assert listed(a.url, "940001") == {server}


def test_a_request_queued_as_the_last_flush_ends_is_sent():
    """The batcher's flushes are counted down as each finds its queue empty: a request that
    arrives right then (its predecessor's answer woke it) starts a flush of its own rather
    than waiting for one that is ending."""
    import asyncio

    from simulacra.cloud.shared import _Batcher

    async def main() -> list[int]:
        async def send(groups: list[int]) -> list[int]:
            return groups

        batcher = _Batcher(send, 1)
        answers = [await batcher.submit(1)]
        async with asyncio.timeout(5):  # in this task, woken by the first answer
            answers.append(await batcher.submit(2))
        return answers

    assert asyncio.run(main()) == [1, 2]


def test_a_part_that_moves_while_its_write_waits_for_the_lock_is_answered_stale(pg_url):
    """A write found current, then blocked on the row's lock by another writer that changes
    the part and commits, writes nothing: it gets the part as the other left it."""
    import asyncio

    from simulacra.store.postgres import CloudGroup, PostgresStore

    key, coll = "compute.tenants:'920001'", "compute.tenants"

    async def main() -> tuple[Any, Any]:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            first = await store.sync_cloud([CloudGroup([(key, coll, 0, b"one")], [], [])])
            assert first[0].written is not None
            version = first[0].written[key]
            lock = RowLock(pg_url, key)
            try:
                late = asyncio.create_task(
                    store.sync_cloud([CloudGroup([(key, coll, version, b"mine")], [], [])])
                )
                while not await asyncio.to_thread(waiting_for, pg_url, lock):
                    await asyncio.sleep(0.02)
                lock.conn.execute(
                    "UPDATE cloud_part SET version = nextval('cloud_part_version'),"
                    " data = 'theirs' WHERE key = %s",
                    (key,),
                )
                lock.conn.commit()
            finally:
                lock.release()
            answer = (await late)[0]
            stored = await store._fetchone("SELECT data FROM cloud_part WHERE key = %s", (key,))
            return answer, stored
        finally:
            await store.close()

    answer, stored = asyncio.run(main())
    assert answer.written is None
    assert [(k, bytes(d)) for k, _v, d in answer.stale] == [(key, b"theirs")]
    assert stored is not None and bytes(stored[0]) == b"theirs"


def test_creates_racing_on_one_tenant_from_two_instances_all_succeed(pair):
    """Eight connections per instance create servers in one tenant as fast as they can. A
    request waits behind its own instance's commits of the page of ids (no longer counted as
    lost runs), and one that keeps losing the page to the other instance runs with it locked:
    none gives up (a few in a hundred answered 503 after 50 runs). Then each instance lists
    the hundreds of servers the other created, loading them in one more run, not one each."""
    a, b = pair
    tenant = "940001"
    statuses: list[int] = []
    made: list[str] = []
    stop = threading.Event()

    def writer(url: str) -> None:
        with requests.Session() as http:
            while not stop.is_set():
                response = http.post(nova_url(url, tenant) + "/servers", json=SERVER, timeout=60)
                statuses.append(response.status_code)
                if response.status_code == 202:
                    made.append(response.json()["server"]["id"])

    threads = [threading.Thread(target=writer, args=(url,)) for url in (a.url, b.url) * 8]
    for thread in threads:
        thread.start()
    eventually(lambda: len(statuses) >= 600, "600 creates answered")
    stop.set()
    for thread in threads:
        thread.join()
    assert set(statuses) == {202}, {s: statuses.count(s) for s in set(statuses)}
    for url in (a.url, b.url):
        assert listed(url, tenant) == set(made)


def test_a_locked_run_waits_briefly_for_a_row_beyond_its_lock(pg_url):
    """Inside ``cloud_locked`` a write to a part outside the lock (taken out of key order,
    so its wait may close a cycle) gives up after CLOUD_UNLOCKED_WAIT: None, nothing written,
    the locked part still locked; a write to the locked part alone goes through."""
    import asyncio
    import time

    from simulacra.store.postgres import CloudGroup, PostgresStore

    mine, theirs = tenant_part("920011"), id_page_part("920011", "ORD", 1)

    async def main() -> tuple[Any, float, Any, Any]:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            stored = await store.sync_cloud(
                [CloudGroup([(mine, "t", 0, b"a"), (theirs, "p", 0, b"b")], [], [])]
            )
            versions = stored[0].written
            assert versions is not None
            other = RowLock(pg_url, theirs)  # another process holds the page's row
            try:
                async with store.cloud_locked([mine]) as lock:
                    assert [key for key, _v, _d in lock.parts] == [mine]
                    started = time.monotonic()
                    both = CloudGroup(
                        [
                            (mine, "t", versions[mine], b"a2"),
                            (theirs, "p", versions[theirs], b"b2"),
                        ],
                        [],
                        [],
                    )
                    gave_up = await lock.sync(both)
                    waited = time.monotonic() - started
                    alone = await lock.sync(
                        CloudGroup([(mine, "t", versions[mine], b"a3")], [], [])
                    )
            finally:
                other.release()
            rows = await store._fetchall("SELECT key, data FROM cloud_part ORDER BY key")
            return gave_up, waited, alone, {k: bytes(d) for k, d in rows}
        finally:
            await store.close()

    gave_up, waited, alone, rows = asyncio.run(main())
    assert gave_up is None
    assert 0.15 < waited < 5
    assert alone is not None and alone.written is not None
    assert rows == {mine: b"a3", theirs: b"b"}
