"""The store's lanes (simulacra/store/lanes.py): dedicated connections running prepared
statements with libpq's own calls, against the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from simulacra.errors import Unavailable
from simulacra.store.lanes import Lanes, Statement
from simulacra.store.postgres import PostgresStore
from tests.pg import require_postgres
from tests.test_server import LOOPS

ECHO = Statement(b"echo", b"SELECT $1::bigint * 2, pg_backend_pid()", (0,))
SLEEP = Statement(b"sleep", b"SELECT pg_sleep($1::float8), pg_backend_pid()", (0,))
DIVIDE = Statement(b"divide", b"SELECT 1 / $1::int", (0,))
BYTES = Statement(b"bytes", b"SELECT $1::bytea, length($1::bytea)", (1,), binary_result=True)


def _lanes(size: int) -> Lanes:
    url = require_postgres()

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)

    return Lanes(connect, size)


def _value(result: Any, column: int = 0) -> int:
    return int(result.get_value(0, column))


def test_statements_beyond_the_lanes_wait_for_one_and_all_answer():
    async def main() -> tuple[list[int], int]:
        lanes = _lanes(2)
        try:
            results = await asyncio.gather(*(lanes.run(ECHO, [b"%d" % i]) for i in range(20)))
            pids = {_value(r, 1) for r in results}
            return [_value(r) for r in results], len(pids)
        finally:
            await lanes.close()

    doubled, connections = asyncio.run(main())
    assert doubled == [2 * i for i in range(20)]
    assert connections == 2  # never more lanes than its size


def test_binary_parameters_and_results_pass_unchanged():
    async def main() -> tuple[bytes, int]:
        lanes = _lanes(1)
        try:
            data = bytes(range(256)) * 300  # larger than a socket buffer may take at once
            result = await lanes.run(BYTES, [data])
            length = int.from_bytes(result.get_value(0, 1), "big")
            return result.get_value(0, 0), length
        finally:
            await lanes.close()

    data, length = asyncio.run(main())
    assert data == bytes(range(256)) * 300 and length == 76_800


def test_a_database_error_raises_its_psycopg_class_and_the_lane_goes_on():
    async def main() -> tuple[int, int]:
        lanes = _lanes(1)
        try:
            first = _value(await lanes.run(ECHO, [b"1"]), 1)
            with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
                await lanes.run(DIVIDE, [b"0"])
            return first, _value(await lanes.run(ECHO, [b"1"]), 1)
        finally:
            await lanes.close()

    before, after = asyncio.run(main())
    assert before == after  # the same connection


def test_a_lost_connection_fails_its_statement_and_the_next_opens_another():
    async def main() -> tuple[int, int]:
        lanes = _lanes(1)
        try:
            pid = _value(await lanes.run(ECHO, [b"1"]), 1)
            sleeping = asyncio.create_task(lanes.run(SLEEP, [b"5"]))
            await asyncio.sleep(0.2)
            async with await psycopg.AsyncConnection.connect(
                require_postgres(), autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(sleeping, 5)
            return pid, _value(await lanes.run(ECHO, [b"1"]), 1)
        finally:
            await lanes.close()

    before, after = asyncio.run(main())
    assert before != after


def test_a_caller_that_leaves_frees_its_lane_when_the_statement_ends():
    async def main() -> tuple[float, int]:
        lanes = _lanes(1)
        try:
            pid = _value(await lanes.run(ECHO, [b"1"]), 1)
            leaving = asyncio.create_task(lanes.run(SLEEP, [b"0.3"]))
            await asyncio.sleep(0.05)
            leaving.cancel()
            loop = asyncio.get_running_loop()
            started = loop.time()
            # The one lane is busy until the sleep ends: then this statement takes it.
            after = _value(await asyncio.wait_for(lanes.run(ECHO, [b"1"]), 5), 1)
            assert after == pid
            return loop.time() - started, after
        finally:
            await lanes.close()

    waited, _ = asyncio.run(main())
    assert 0.1 < waited < 2


def test_closing_fails_a_statement_in_flight():
    async def main() -> None:
        lanes = _lanes(1)
        sleeping = asyncio.create_task(lanes.run(SLEEP, [b"5"]))
        await asyncio.sleep(0.2)
        await lanes.close()
        with pytest.raises(psycopg.OperationalError, match="closing"):
            await asyncio.wait_for(sleeping, 2)

    asyncio.run(main())


def test_a_counter_without_its_database_is_unavailable(pg_url):
    """The store's counters run on lanes: a database out of reach is the store's 503."""

    async def main() -> int:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            await store.next_response("h s", "stub")
            store.url = "postgresql://postgres@127.0.0.1:1/none"  # where nothing listens
            await store._counter_lanes.close()  # the next round trip opens a lane there
            with pytest.raises(Unavailable):
                await store.next_response("h s", "stub")
            return store.failures
        finally:
            await store.close()

    assert asyncio.run(main()) >= 1


class _Held:
    """Stands for a lane in the queue's tests (only ``broken`` is read there)."""

    broken = False


def test_a_lane_handed_to_a_statement_whose_caller_left_is_not_lost():
    async def main() -> list[Any]:
        async def connect() -> psycopg.AsyncConnection[Any]:
            raise AssertionError("the one lane exists")

        lanes = Lanes(connect, 1)
        held = _Held()
        lanes._lanes.append(held)  # type: ignore[arg-type]  # the one lane, busy
        waiting = asyncio.create_task(lanes._take())
        await asyncio.sleep(0)  # queued for a lane
        lanes._release(held)  # type: ignore[arg-type]  # handed to it...
        waiting.cancel()  # ... as its caller leaves, before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return list(lanes._free)

    free = asyncio.run(main())
    assert len(free) == 1 and isinstance(free[0], _Held)


def test_a_statement_waiting_for_a_lane_that_failed_to_open_tries_to_open_its_own():
    async def main() -> tuple[int, BaseException | Any, BaseException | Any]:
        attempts = 0
        go = asyncio.Event()

        async def connect() -> psycopg.AsyncConnection[Any]:
            nonlocal attempts
            attempts += 1
            await go.wait()
            raise psycopg.OperationalError("nothing listens")

        lanes = Lanes(connect, 1)
        first = asyncio.create_task(lanes._take())
        await asyncio.sleep(0)  # opening the one lane
        second = asyncio.create_task(lanes._take())
        await asyncio.sleep(0)  # queued behind it
        go.set()
        done = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), timeout=5
        )
        return attempts, done[0], done[1]

    attempts, first, second = asyncio.run(main())
    assert attempts == 2
    assert isinstance(first, psycopg.OperationalError)
    assert isinstance(second, psycopg.OperationalError)


def test_a_caller_that_leaves_while_its_statement_is_prepared_leaves_it_prepared():
    """The first run of a statement on a lane prepares it: a caller cancelled then leaves
    the preparation to finish, and the next run of it on that lane only executes it."""

    async def main() -> tuple[int, int]:
        lanes = _lanes(1)
        try:
            pid = _value(await lanes.run(ECHO, [b"1"]), 1)  # the lane, ECHO prepared
            leaving = asyncio.create_task(lanes.run(SLEEP, [b"0"]))
            await asyncio.sleep(0)  # it has sent SLEEP's preparation and waits for it
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
            again = await asyncio.wait_for(lanes.run(SLEEP, [b"0"]), 5)
            return pid, _value(again, 1)
        finally:
            await lanes.close()

    before, after = asyncio.run(main())
    assert before == after  # the same lane, SLEEP not prepared twice


ARRAYS = Statement(
    b"arrays",
    b"SELECT $1::int4[]::text, $2::int8[]::text, $3::text[]::text, $4::bytea[]::text,"
    b" cardinality($5::int4[])",
    (1, 1, 1, 1, 1),
)


def test_arrays_are_sent_in_the_binary_format_postgresql_reads():
    """``_int_array`` packs an int4[] or int8[] at once: the same bytes as an item at a time
    (``_binary_array``), and PostgreSQL reads them, and text[] and bytea[] with a NULL, as
    sent (the shared cloud's ``cloud_sync`` takes its batch so)."""
    import struct

    from simulacra.store.postgres import (
        _BYTEA_OID,
        _INT4_OID,
        _INT8_OID,
        _TEXT_OID,
        _binary_array,
        _int_array,
    )

    for oid, code, values in (
        (_INT4_OID, "!i", [0, 1, -5, 2**31 - 1]),
        (_INT8_OID, "!q", [0, 7, -(2**63), 2**63 - 1]),
        (_INT4_OID, "!i", []),
    ):
        packed = [struct.pack(code, value) for value in values]
        assert _int_array(oid, values) == _binary_array(oid, packed)

    async def main() -> list[bytes]:
        lanes = _lanes(1)
        try:
            result = await lanes.run(
                ARRAYS,
                [
                    _int_array(_INT4_OID, [3, -1]),
                    _int_array(_INT8_OID, [2**40]),
                    _binary_array(_TEXT_OID, ["é".encode(), b""]),
                    _binary_array(_BYTEA_OID, [b"\x00\xff", None]),
                    _int_array(_INT4_OID, []),
                ],
            )
            return [result.get_value(0, column) for column in range(5)]
        finally:
            await lanes.close()

    assert asyncio.run(main()) == [
        b"{3,-1}",
        b"{1099511627776}",
        '{é,""}'.encode(),
        b'{"\\\\x00ff",NULL}',
        b"0",
    ]


def test_a_statement_not_answered_in_time_fails_and_its_lane_is_given_up(monkeypatch):
    """A statement whose answer does not come within ANSWER_DEADLINE_S fails (the store
    answers 503 for it) and its connection is dropped, rather than holding its caller, and
    what its caller changed, for an answer that may never come; the next opens a new one."""
    from simulacra.store import lanes as lanes_module

    monkeypatch.setattr(lanes_module, "ANSWER_DEADLINE_S", 0.3)

    async def main() -> tuple[float, int, int, int]:
        lanes = _lanes(1)
        loop = asyncio.get_running_loop()
        try:
            first = _value(await lanes.run(SLEEP, [b"0"]), 1)
            started = loop.time()
            with pytest.raises(psycopg.OperationalError, match=r"did not answer in 0\.3 s"):
                await asyncio.wait_for(lanes.run(SLEEP, [b"3"]), 5)
            waited = loop.time() - started
            again = await asyncio.wait_for(lanes.run(ECHO, [b"21"]), 5)
            return waited, first, _value(again, 1), _value(again)
        finally:
            await lanes.close()

    waited, first_pid, next_pid, doubled = asyncio.run(main())
    assert 0.25 < waited < 2
    assert next_pid != first_pid and doubled == 42


class _Relay:
    """A TCP relay to PostgreSQL that can stop reading what its clients send (as a
    database that has stopped reading would), so that a large statement fills the socket."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.target = target
        self.stalled = asyncio.Event()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def close(self, server: asyncio.Server) -> None:
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.get("host", "127.0.0.1"), int(self.target.get("port", 5432))
        up_reader, up_writer = await asyncio.open_connection(host, port)
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, upstream=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream and not self.flowing.is_set():
                    self.stalled.set()
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_statement_the_database_stops_reading_fails_in_time_too(monkeypatch, new_loop):
    """A statement too large for the socket, which the database stops reading, fails at
    ANSWER_DEADLINE_S as one not answered does: the wait for the socket to take more ends
    when the lane fails (it used to go on for ever). The next runs on a new connection."""
    from simulacra.store import lanes as lanes_module

    monkeypatch.setattr(lanes_module, "ANSWER_DEADLINE_S", 0.5)
    url = require_postgres()

    async def main() -> tuple[int, int, int]:
        relay = _Relay(conninfo_to_dict(url))
        server = await relay.start()

        async def connect() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(
                url, host="127.0.0.1", port=relay.port, autocommit=True
            )

        lanes = Lanes(connect, 1)
        try:
            first = _value(await lanes.run(ECHO, [b"1"]), 1)
            await lanes.run(BYTES, [b"x"])  # prepared: what follows is one large message
            relay.flowing.clear()
            large = asyncio.create_task(lanes.run(BYTES, [b"x" * (64 << 20)]))
            await asyncio.wait_for(relay.stalled.wait(), 10)
            with pytest.raises(psycopg.OperationalError, match=r"did not answer in 0\.5 s"):
                await asyncio.wait_for(large, 10)
            relay.flowing.set()
            again = await asyncio.wait_for(lanes.run(ECHO, [b"21"]), 10)
            return first, _value(again, 1), _value(again)
        finally:
            relay.flowing.set()
            await lanes.close()
            await relay.close(server)

    loop = new_loop()
    try:
        first_pid, next_pid, doubled = loop.run_until_complete(main())
    finally:
        loop.close()
    assert next_pid != first_pid and doubled == 42
