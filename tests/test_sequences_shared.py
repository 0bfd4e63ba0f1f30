"""Stateful sequences on a shared PostgreSQL store (issue 18 item 4).

Two real instances on one schema (tests/pg.py). The store hands out each position of a
sequence once; concurrent playbacks of one counter in a process share a round trip; an
instance that saw a sequence played to its end answers its last response without the store
until the session is begun again anywhere. Changes reach the other instance by NOTIFY, so a
check there waits until it holds (never on a duration).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import psycopg
import requests
from psycopg import sql

from simulacra.config import split_url
from simulacra.store.memory import MemoryStore
from simulacra.store.postgres import COUNTER_ROUND_TRIPS, PostgresStore
from simulacra.virtual.model import Response, Stub
from simulacra.virtual.playback import SequenceCounters
from simulacra.virtual.service import VirtualService
from tests.mirage_helpers import action_url, stubs_url
from tests.server import RunningServer
from tests.test_shared_store import eventually, play, setup_scenario

BEGIN = {"begin": None, "session": "play", "mode": "playback"}
END = {"end": None, "session": "play"}
SESSION = {"session": "play"}


def sequence(*bodies: str) -> dict[str, Any]:
    return {
        "request": {"method": "POST", "bodyPatterns": {"contains": ["<seq/>"]}},
        "response": {"status": 200, "body": list(bodies)},
    }


def status_on(url: str, scenario: str, session: str = "play") -> str | None:
    """The session's status as the instance at ``url`` holds it (its cache)."""
    detail = requests.get(f"{url}/api/v2/scenarios/objects/{scenario}").json()
    return next((s["status"] for s in detail["sessions"] if s["name"] == session), None)


def playing(a: RunningServer, b: RunningServer, scenario: str, document: dict[str, Any]) -> None:
    """``scenario`` with the stub ``document``, session "play" begun on A, known to B."""
    setup_scenario(a.url, scenario)
    put = requests.put(stubs_url(a.url, scenario), json=document, headers={"session": "rec"})
    assert put.status_code == 201, put.text
    assert requests.post(action_url(a.url, scenario), json={"end": None, "session": "rec"}).ok
    assert requests.post(action_url(a.url, scenario), json=BEGIN).status_code == 200
    eventually(lambda: status_on(b.url, scenario) == "playback", "B knows it plays")


def stored_n(pg_url: str) -> list[int]:
    """Every counter row's n: how many positions the store has handed out."""
    url, schema = split_url(pg_url)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f'SELECT n FROM "{schema}".sequence_counter').fetchall()
    return [int(n) for (n,) in rows]


def test_instances_answering_in_turn_play_the_sequence_once(instances, pg_url):
    a, b = instances
    playing(a, b, "turns", sequence("1", "2", "3"))
    answers = [play(server.url, "turns", "play").text for server in (a, b) * 4]
    assert answers == ["1", "2", "3", "3", "3", "3", "3", "3"]
    # A was given position 0 and 2 (the last), B 1 and 3: each then knows the sequence is
    # over, and the six playbacks after those four never asked the store.
    assert stored_n(pg_url) == [4]


def test_a_sequence_past_its_end_is_not_asked_again(instances, pg_url):
    a, b = instances
    playing(a, b, "settled", sequence("1", "2", "3"))
    assert [play(a.url, "settled", "play").text for _ in range(3)] == ["1", "2", "3"]
    assert stored_n(pg_url) == [3]
    assert play(b.url, "settled", "play").text == "3"  # B learns it from the store
    assert stored_n(pg_url) == [4]
    for _ in range(10):
        assert play(a.url, "settled", "play").text == "3"
        assert play(b.url, "settled", "play").text == "3"
    assert stored_n(pg_url) == [4]


def test_concurrent_clients_on_both_instances_get_each_position_once(instances, pg_url):
    """Many clients at once, on both instances: every position is served exactly once,
    and each client's answers come in the order it asked (its requests are sequential)."""
    a, b = instances
    length, clients, each = 400, 8, 40  # 320 playbacks: all within the sequence
    playing(a, b, "crowd", sequence(*(str(i) for i in range(length))))
    answers: dict[int, list[int]] = {}
    failures: list[str] = []

    def client(k: int) -> None:
        server = (a, b)[k % 2]
        got = answers.setdefault(k, [])
        with requests.Session() as http:
            for _ in range(each):
                r = http.post(stubs_url(server.url, "crowd"), data="<seq/>", headers=SESSION)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    return
                got.append(int(r.text))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    served = sorted(p for got in answers.values() for p in got)
    assert served == list(range(clients * each))  # each position once, none skipped
    for got in answers.values():
        assert got == sorted(got)
    assert stored_n(pg_url) == [clients * each]


def test_a_sequence_under_a_delay_policy_answers_after_it_in_order(instances, pg_url):
    """A playback that waits for its position is answered from the position's callback,
    with no task: its response's delay policy still holds the answer, and the tracker
    records the delay, as for any playback."""
    a, b = instances
    policy = {"name": "slow_seq", "delay_type": "fixed", "milliseconds": 150}
    assert requests.put(a.url + "/api/v2/delay-policy", json=policy).status_code == 201
    document = sequence("1", "2")
    document["response"]["delayPolicy"] = "slow_seq"
    playing(a, b, "slowseq", document)
    for expected in ("1", "2", "2"):  # the last from this instance alone: the sequence ended
        started = time.perf_counter()
        answer = play(a.url, "slowseq", "play")
        assert (answer.status_code, answer.text) == (200, expected)
        assert time.perf_counter() - started >= 0.15
    records = requests.get(
        a.url + "/api/v2/tracker/records", params={"q": "session:play slowseq", "limit": 10}
    ).json()["data"]
    plays = [(r["delay"], r["return_code"]) for r in records if r["function"].endswith("/stubs")]
    assert plays == [(150, 200)] * 3, records
    assert stored_n(pg_url) == [2]


def test_beginning_again_on_the_other_instance_restarts_the_sequence(instances, pg_url):
    a, b = instances
    playing(a, b, "again", sequence("1", "2", "3"))
    assert [play(a.url, "again", "play").text for _ in range(4)] == ["1", "2", "3", "3"]
    # Ended and begun again on B: A, which held the sequence as over, asks the store again.
    assert requests.post(action_url(b.url, "again"), json=END).ok
    eventually(lambda: status_on(a.url, "again") == "dormant", "A knows it ended")
    assert requests.post(action_url(b.url, "again"), json=BEGIN).status_code == 200
    eventually(lambda: status_on(a.url, "again") == "playback", "A knows it plays again")
    assert [play(s.url, "again", "play").text for s in (a, a, b, a)] == ["1", "2", "3", "3"]
    assert stored_n(pg_url) == [4]


def test_beginning_again_back_to_back_restarts_the_sequence(instances, pg_url):
    """End and begin again at once on B: whether or not A saw the session dormant between
    the two, A asks the store again once it has heard of them."""
    a, b = instances
    playing(a, b, "quick", sequence("1", "2"))
    assert [play(a.url, "quick", "play").text for _ in range(3)] == ["1", "2", "2"]
    assert stored_n(pg_url) == [2]
    assert requests.post(action_url(b.url, "quick"), json=END).ok
    assert requests.post(action_url(b.url, "quick"), json=BEGIN).status_code == 200
    # Until A has heard, it answers "2" without the store, which holds no row then.
    eventually(lambda: play(a.url, "quick", "play").ok and stored_n(pg_url), "A asks again")
    assert stored_n(pg_url) == [1]


def test_a_reset_notifies_every_instance(pg_url):
    """The reset's own notification, sent when the counters are gone: an end and a begin
    read back to back look like no change of the stored session, so the session's
    notification alone would not tell an instance that its sequences restarted."""
    key = f"127.0.0.1 s{uuid.uuid4().hex[:12]}"
    url, _ = split_url(pg_url)

    async def main() -> list[str]:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.channel)))
                await store.reset_counters(key)
                async for note in conn.notifies(timeout=10.0):
                    if key in note.payload:
                        return [note.payload]
            return []
        finally:
            await store.close()

    assert asyncio.run(main()) == [f"counters {key}"]


def test_concurrent_calls_in_one_process_share_a_round_trip(pg_url):
    """32 playbacks of one counter started together: one round trip reserves 32 positions,
    handed out in the order the calls arrived."""

    async def main() -> tuple[list[int], int, list[int]]:
        store = PostgresStore(pg_url)
        await store.open()
        trips = 0
        reserve = store._reserve

        async def counted(key: tuple[str, str], count: int) -> int:
            nonlocal trips
            trips += 1
            return await reserve(key, count)

        store._reserve = counted  # type: ignore[method-assign]
        try:
            first = await asyncio.gather(*(store.next_response("h s", "stub") for _ in range(32)))
            one_trip = trips
            # One at a time, each call is its own round trip, and the count goes on.
            more = [await store.next_response("h s", "stub") for _ in range(3)]
            return list(first), one_trip, more
        finally:
            await store.close()

    positions, trips, more = asyncio.run(main())
    assert positions == list(range(32))
    assert trips == 1
    assert more == [32, 33, 34]


def _slow_round_trips(store: PostgresStore) -> dict[str, int]:
    """Make ``store``'s round trips take 50 ms (long enough for the next arrivals to come);
    the dict counts them, and the most in flight at once."""
    seen = {"trips": 0, "in_flight": 0, "most": 0}
    reserve = store._reserve

    async def slow(key: tuple[str, str], count: int) -> int:
        seen["trips"] += 1
        seen["in_flight"] += 1
        seen["most"] = max(seen["most"], seen["in_flight"])
        try:
            await asyncio.sleep(0.05)
            return await reserve(key, count)
        finally:
            seen["in_flight"] -= 1

    store._reserve = slow  # type: ignore[method-assign]
    return seen


def test_round_trips_of_one_counter_overlap_and_hand_out_each_position_once(pg_url):
    """Playbacks arriving two by two while round trips are in flight go in further round
    trips, up to COUNTER_ROUND_TRIPS at once: the positions are still each handed out once,
    without gaps, and a playback answered before another arrived holds the lower one."""

    async def main() -> tuple[int, list[int], list[int]]:
        store = PostgresStore(pg_url)
        await store.open()
        seen = _slow_round_trips(store)
        try:
            waves = []
            for _ in range(COUNTER_ROUND_TRIPS + 2):
                for _ in range(2):
                    waves.append(store.next_response("h s", "stub"))
                await asyncio.sleep(0.005)  # each pair arrives while earlier ones are in flight
            positions = list(await asyncio.gather(*waves))
            # Answered one after the other: each after all those before it.
            after = [await store.next_response("h s", "stub") for _ in range(3)]
            return seen["most"], positions, after
        finally:
            await store.close()

    most, positions, after = asyncio.run(main())
    assert most == COUNTER_ROUND_TRIPS
    assert sorted(positions) == list(range(len(positions)))
    assert after == [len(positions), len(positions) + 1, len(positions) + 2]


def test_a_lone_playback_beside_a_round_trip_in_flight_waits_for_its_next(pg_url):
    """A round trip for one playback costs what one for ten does: a playback arriving alone
    while one of its counter's round trips is in flight starts none of its own (a second
    arrival does, for both); positions still follow arrival."""

    async def main() -> tuple[int, dict[str, int], list[int], list[int]]:
        store = PostgresStore(pg_url)
        await store.open()
        seen = _slow_round_trips(store)
        try:
            first = store.next_response("h s", "stub")
            await asyncio.sleep(0.01)  # its round trip is in flight
            lone = store.next_response("h s", "stub")
            await asyncio.sleep(0.01)
            beside_lone = seen["in_flight"]
            positions = list(await asyncio.gather(first, lone))
            trips = dict(seen)
            # Two arriving beside a round trip in flight: one more goes, for both.
            third = store.next_response("h s", "stub")
            await asyncio.sleep(0.01)
            pair = [store.next_response("h s", "stub") for _ in range(2)]
            more = list(await asyncio.gather(third, *pair))
            trips["most_after"] = seen["most"]
            return beside_lone, trips, positions, more
        finally:
            await store.close()

    beside_lone, trips, positions, more = asyncio.run(main())
    assert beside_lone == 1  # the lone playback started no round trip
    assert trips["trips"] == 2 and trips["most"] == 1  # the first's round trip took it next
    assert positions == [0, 1]
    assert sorted(more) == [2, 3, 4] and more[0] == 2
    assert trips["most_after"] == 2  # the pair went beside the third's round trip


def test_a_playback_cancelled_before_its_round_trip_takes_no_position(pg_url):
    """A waiting playback whose client went away is left out of the round trip: the others
    get contiguous positions, in arrival order, and the next one follows on."""

    async def main() -> tuple[list[int], int]:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            calls = [store.next_response("h s", "stub") for _ in range(5)]
            calls[1].cancel()  # all five wait; the round trip has not started (no await yet)
            done = await asyncio.gather(*calls, return_exceptions=True)
            positions = [p for p in done if isinstance(p, int)]
            return positions, await store.next_response("h s", "stub")
        finally:
            await store.close()

    positions, following = asyncio.run(main())
    assert positions == [0, 1, 2, 3]
    assert following == 4


def test_a_reset_heard_makes_a_settled_sequence_ask_again():
    """``on_change`` of a reset elsewhere (or of a resync, which may have missed one) forgets
    the sequences this instance held as played to their end."""

    async def main() -> None:
        store = MemoryStore()
        await store.open()
        try:
            service = VirtualService(store)
            stub = two_responses()
            counters = service._counters
            for kind, key in (("counters", "h play"), ("*", "")):
                counters.served(("h", "play"), stub, 1, counters.resets)
                assert counters.settled(("h", "play"), stub)
                await service.on_change(kind, key)
                assert not counters.settled(("h", "play"), stub), kind
        finally:
            await store.close()

    asyncio.run(main())


def two_responses() -> Stub:
    return Stub(
        scenario="h:s",
        request={"method": "GET"},
        id="s1",
        responses=[Response(body="1"), Response(body="2")],
    )


def test_an_answer_asked_before_a_reset_settles_nothing():
    """A store's position for a question asked before the session was reset is about the
    dropped counters: it must not make the new sequence answer its last response."""
    stub = two_responses()
    key = ("h", "play")
    counters = SequenceCounters()
    asked = counters.resets
    counters.reset(key)  # the session begun again while the question was in flight
    counters.served(key, stub, 5, asked)
    assert not counters.settled(key, stub)
    counters.served(key, stub, 1, counters.resets)  # the last position, asked after it
    assert counters.settled(key, stub)
    assert counters.next_response(key, stub).body == "2"
    counters.reset_all()
    assert not counters.settled(key, stub)
