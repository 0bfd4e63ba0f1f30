"""Long work in slices (simulacra/background.py) and the service's index builds on it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulacra.background import SHARE, SLICE_S, Slices, drain, emptying, run_in_slices
from simulacra.store.sqlite import SQLiteStore
from simulacra.virtual.matching import PlaybackRequest, StubIndex
from simulacra.virtual.model import stub_from_document
from simulacra.virtual.service import VirtualService


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def steps(n: int, each_s: float, done: list[int]) -> Iterator[None]:
    for i in range(n):
        busy(each_s)
        done.append(i)
        yield
    return "finished"  # type: ignore[return-value]


def test_run_in_slices_runs_every_step_and_returns_the_value() -> None:
    done: list[int] = []
    assert asyncio.run(run_in_slices(steps(5, 0, done))) == "finished"  # type: ignore[arg-type]
    assert done == [0, 1, 2, 3, 4]
    assert drain(steps(3, 0, [])) == "finished"  # type: ignore[arg-type]


def test_others_run_between_slices_of_a_long_job_and_not_within_a_short_one() -> None:
    async def go(each_s: float) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        done: list[int] = []

        async def other() -> None:
            while len(done) < 4:
                seen.append(("other", len(done)))
                await asyncio.sleep(0)

        competitor = asyncio.create_task(other())
        await asyncio.sleep(0)  # it runs once before the job starts
        await run_in_slices(steps(4, each_s, done))  # type: ignore[arg-type]
        await competitor
        return seen

    # Each step longer than a slice: the job yields after each, and the other task runs
    # with 1, 2 and 3 steps done.
    long_seen = asyncio.run(go(SLICE_S * 1.5))
    assert {n for _, n in long_seen} >= {0, 1, 2, 3}
    # Steps far shorter than a slice: the whole job runs in one slice, never yielding.
    short_seen = asyncio.run(go(0))
    assert {n for _, n in short_seen} <= {0, 4}


def test_a_pause_within_a_slice_returns_without_yielding() -> None:
    async def go() -> bool:
        ran = False

        async def other() -> None:
            nonlocal ran
            ran = True

        slices = Slices()
        task = asyncio.create_task(other())
        await slices.pause()  # just begun: within the slice
        within = not ran
        await task
        return within

    assert asyncio.run(go())


# the service's index builds ------------------------------------------------------------


def stub_doc(i: int) -> dict[str, object]:
    return {
        "request": {"bodyPatterns": {"contains": [f"<id>{i}</id>"]}},
        "response": {"status": 200, "body": f"answer {i}"},
    }


async def service_with(n: int) -> VirtualService:
    store = SQLiteStore(":memory:")
    await store.open()
    svc = VirtualService(store)
    await svc.create_scenario("h:s")
    stubs = [stub_from_document(stub_doc(i), scenario="h:s", recorded="d") for i in range(n)]
    await store.write_stubs("h:s", stubs, [])
    return svc


def test_one_build_serves_every_request_waiting_for_the_index() -> None:
    async def go() -> None:
        svc = await service_with(1000)
        first, second = await asyncio.gather(svc._index("h:s"), svc._index("h:s"))
        assert first is second and len(first) == 1000
        assert await svc._index("h:s") is first  # kept

    asyncio.run(go())


def test_a_change_during_a_build_is_in_the_index_it_finishes() -> None:
    async def go() -> None:
        svc = await service_with(2000)
        read = svc.store.list_stubs
        first_page_read = asyncio.Event()

        async def list_stubs(*args: object, **kwargs: object) -> list[object]:
            page = await read(*args, **kwargs)  # type: ignore[arg-type]
            first_page_read.set()
            await asyncio.sleep(0)  # a store that makes the build wait, as PostgreSQL does
            return page

        svc.store.list_stubs = list_stubs  # type: ignore[method-assign]
        building = asyncio.ensure_future(svc._index("h:s"))
        await first_page_read.wait()  # the build has begun reading
        added = stub_from_document(stub_doc(5000), scenario="h:s", recorded="d")
        await svc._add_stub(added)  # a change meanwhile
        built = await building  # compiled again, once it saw the change
        assert len(built) == 2001 and await svc._index("h:s") is built

    asyncio.run(go())


def test_stub_pages_read_every_stub_once_in_order() -> None:
    async def go() -> None:
        svc = await service_with(1001)
        pages = [page async for page in svc.stub_pages("h:s", size=100)]
        assert [len(p) for p in pages] == [100] * 10 + [1]
        bodies = [s.responses[0].body for p in pages for s in p]
        assert bodies == [f"answer {i}" for i in range(1001)]

    asyncio.run(go())


def test_the_held_index_answers_until_its_successor_is_built() -> None:
    async def go() -> None:
        svc = await service_with(500)
        await svc.begin_session("h:s", "p", "playback")  # a session plays it
        held = await svc._index("h:s")
        added = stub_from_document(stub_doc(5000), scenario="h:s", recorded="d")
        await svc._add_stub(added)
        assert await svc._index("h:s") is held  # still answering: its successor is building
        current = await svc._index("h:s", current=True)
        assert current is not held and len(current) == 501
        assert await svc._index("h:s") is current
        await svc.delete_stubs("h:s", force=True)  # dropped at once: never played again
        assert len(await svc._index("h:s")) == 0
        await svc.end_session("h:s", "p")
        await svc._add_stub(stub_from_document(stub_doc(1), scenario="h:s", recorded="d"))
        assert "h:s" not in svc._indexes  # nothing plays it: forgotten, not rebuilt

    asyncio.run(go())


def test_a_large_index_let_go_is_freed_in_slices_once_nothing_holds_it() -> None:
    """Freeing 100,000 stubs at once held the loop 60-140 ms: an index let go (dropped, or
    replaced by its successor) is emptied a step at a time, once no request still uses it."""

    async def go() -> None:
        svc = await service_with(5000)
        await svc.begin_session("h:s", "p", "playback")
        old = await svc._index("h:s")
        stubs = old.stubs
        added = stub_from_document(stub_doc(9000), scenario="h:s", recorded="d")
        await svc._add_stub(added)
        current = await svc._index("h:s", current=True)  # the successor replaces it
        assert current is not old and len(current) == 5001
        await asyncio.sleep(0.2)
        assert len(stubs) == 5000  # a request may still be using it: this test holds it
        del old
        await asyncio.wait_for(asyncio.gather(*svc._releasing), 5)
        assert stubs == []  # freed, in steps
        assert len(current) == 5001 and (await svc._index("h:s")) is current
        request = PlaybackRequest("POST", "/", "", {}, "<id>4999</id>")
        _, response = await svc.playback(svc.session("h", "p"), request)
        assert response.body == "answer 4999"
        await svc.end_session("h:s", "p")
        await svc._add_stub(stub_from_document(stub_doc(1), scenario="h:s", recorded="d"))
        assert "h:s" not in svc._indexes  # dropped: nothing plays it
        stubs = current.stubs
        del current
        await asyncio.wait_for(asyncio.gather(*svc._releasing), 5)
        assert stubs == []

    asyncio.run(go())


def test_release_frees_an_index_a_step_at_a_time() -> None:
    index = StubIndex(
        [stub_from_document(stub_doc(i), scenario="h:s", recorded="d") for i in range(4000)]
    )
    steps = index.release()
    next(steps)
    assert 0 < len(index.stubs) < 4000  # one step frees a part
    drain(steps)
    assert index.stubs == [] and index._automata == []


def test_emptying_frees_lists_and_dicts_a_step_at_a_time() -> None:
    items, table = list(range(3500)), {i: str(i) for i in range(2000)}
    steps = emptying(items, table, step=1500)
    sizes = []
    for _ in steps:
        sizes.append((len(items), len(table)))
    assert sizes == [(2000, 2000), (500, 2000), (0, 2000), (0, 500), (0, 0)]


@pytest.mark.skipif(sys.platform != "linux", reason="nice values per thread are Linux's")
def test_the_sqlite_reader_thread_runs_below_the_process_priority(tmp_path):
    """A tracker query's scan runs on the reader thread, niced: with fewer cores than busy
    threads, it takes the CPU that playback leaves."""
    from simulacra.background import BACKGROUND_NICENESS
    from simulacra.virtual.tracker import TrackerQuery

    def niceness_here() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def main() -> tuple[int, int]:
        store = SQLiteStore(str(tmp_path / "s.db"))
        await store.open()
        try:
            await store.tracker_records(TrackerQuery(), 0, 10)
            assert store._reader is not None
            loop = asyncio.get_running_loop()
            return niceness_here(), await loop.run_in_executor(store._reader, niceness_here)
        finally:
            await store.close()

    loop_niceness, reader_niceness = asyncio.run(main())
    assert reader_niceness == min(loop_niceness + BACKGROUND_NICENESS, 19)


def test_sqlite_reads_back_to_back_keep_to_a_share_of_a_core(tmp_path: Any) -> None:
    """A file store's reads (tracker queries) run on a reader thread: one that took ``c``
    seconds of CPU delays the next by ``c * (1 - SHARE) / SHARE``, so a client polling as fast
    as it can takes SHARE of a core, not one."""

    def burn(db: Any, seconds: float) -> tuple[float, float]:
        started = time.monotonic()
        cpu = time.thread_time()
        while time.thread_time() - cpu < seconds:
            pass
        return started, time.monotonic()

    async def main() -> tuple[float, float, float]:
        store = SQLiteStore(str(tmp_path / "s.db"))
        await store.open()
        try:
            _, first_end = await store._read(burn, 0.02)
            second_start, second_end = await store._read(burn, 0.0)
            third_start, _ = await store._read(burn, 0.0)
            return second_start - first_end, third_start - second_end, 0.02
        finally:
            await store.close()

    waited, after_nothing, cpu = asyncio.run(main())
    assert waited >= cpu * (1 - SHARE) / SHARE * 0.95
    assert after_nothing < 0.05  # a read that cost nothing owes nothing
