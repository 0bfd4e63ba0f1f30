"""Dedicated PostgreSQL connections ("lanes") for the store's statements that run thousands
of times a second: a sequence counter's advance (a round trip per batch of in-sequence
playbacks) and the shared cloud's ``cloud_sync`` (one per batch of cloud requests).

psycopg's ``execute`` on a pooled connection costs about 100-115 us of the process's CPU per
statement on the 2-core VM, where the same prepared statement sent with libpq's own calls,
on a connection whose socket the loop keeps watching, costs about 45 us (measured side by
side, four connections busy; docs/scaling.md). Most of the difference is psycopg waiting
for each answer: it registers the socket with the loop and unregisters it again, with a
future and a timer, for every wait; the rest is its Python layers (cursor, query conversion,
preparation bookkeeping, rows) and the pool's check-out.

A lane is a connection of its own (autocommit, the store's schema), its socket registered
once, for as long as it lives; its statements are prepared on first use and sent with
``psycopg.pq`` (psycopg's public wrapper of libpq), one at a time. Parameters and results are
bytes, in the formats the statement names: the caller encodes and decodes them. A lane
whose connection fails is dropped (the statement in flight fails with the error) and the
next statement opens a new one: a restarted database is found by the first statement
after it, as the pool finds it. A statement that has not answered in ``ANSWER_DEADLINE_S``
fails the same way: its lane is dropped rather than held for an answer that may never come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import pq

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]

# How long a lane waits for its statement's answer before it gives the connection up. Its
# statements take milliseconds, or ``cloud_sync``'s lock_timeout (10 s) at most; but after
# a restart of PostgreSQL one was seen never to be answered nor to fail, holding its
# requests (and what they had changed) for good.
ANSWER_DEADLINE_S = 30.0


class Statement(NamedTuple):
    """A statement a lane prepares once (as ``name``) and runs many times."""

    name: bytes
    sql: bytes  # with $1, $2... placeholders
    param_formats: tuple[int, ...]  # per parameter: 0 text, 1 binary
    binary_result: bool = False


class Lanes:
    """Up to ``size`` lanes; a statement waits for a free one when all are busy."""

    def __init__(self, connect: Connect, size: int) -> None:
        self._connect = connect
        self._size = size
        self._lanes: list[_Lane] = []  # open, busy or not
        self._free: list[_Lane] = []
        self._opening = 0
        # Statements waiting for a lane: each gets one, or None (one was dropped: open one).
        self._queue: list[asyncio.Future[_Lane | None]] = []

    async def run(self, statement: Statement, params: Sequence[bytes | None]) -> pq.abc.PGresult:
        """Run ``statement`` on a free lane; its result (TUPLES_OK or COMMAND_OK).

        Raises the ``psycopg.Error`` of the database's error (a ``psycopg.OperationalError``
        when the connection failed). Cancelled, it leaves the statement to finish on its
        lane, which is free again only then."""
        lane = await self._take()
        try:
            if statement.name not in lane.prepared:
                # Noted as it is sent: a caller that leaves meanwhile leaves it prepared.
                lane.prepared.add(statement.name)
                try:
                    await lane.send(lambda pg: pg.send_prepare(statement.name, statement.sql))
                except psycopg.Error:
                    lane.prepared.discard(statement.name)
                    raise
            return await lane.send(
                lambda pg: pg.send_query_prepared(
                    statement.name,
                    params,
                    param_formats=statement.param_formats,
                    result_format=pq.Format.BINARY if statement.binary_result else pq.Format.TEXT,
                )
            )
        finally:
            if not lane.busy:  # else it is released when its statement ends (``_Lane``)
                self._release(lane)

    async def close(self) -> None:
        """Close every lane; a statement in flight fails (OperationalError)."""
        lanes, self._lanes, self._free = self._lanes, [], []
        for lane in lanes:
            await lane.close()

    async def _take(self) -> _Lane:
        while True:
            if self._free:
                return self._free.pop()
            if len(self._lanes) + self._opening < self._size:
                self._opening += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self._wake(None)  # one waiting for this lane tries to open its own
                    raise
                finally:
                    self._opening -= 1
                lane = _Lane(conn, self)
                self._lanes.append(lane)
                return lane
            waiter: asyncio.Future[_Lane | None] = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                lane_or_none = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as its caller left
                    handed = waiter.result()
                    if handed is None:
                        self._wake(None)
                    else:
                        self._release(handed)
                raise
            if lane_or_none is not None:
                return lane_or_none

    def _release(self, lane: _Lane) -> None:
        """``lane``'s statement ended: the lane goes to the first statement waiting, or is
        free; a broken one is dropped, and the first waiting opens another."""
        if lane.broken:
            self._drop(lane)
            self._wake(None)
        elif not self._wake(lane):
            self._free.append(lane)

    def _wake(self, lane: _Lane | None) -> bool:
        """Hand ``lane`` (None: the right to open one) to the first statement waiting."""
        while self._queue:
            waiter = self._queue.pop(0)
            if not waiter.done():
                waiter.set_result(lane)
                return True
        return False

    def _drop(self, lane: _Lane) -> None:
        if lane in self._lanes:
            self._lanes.remove(lane)
        if lane in self._free:
            self._free.remove(lane)


class _Lane:
    """One connection, its socket watched by the loop while it lives; one statement at a
    time (``send``)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], lanes: Lanes) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.lanes = lanes
        self.prepared: set[bytes] = set()
        self.busy = False  # a statement is in flight (its caller may have left)
        self.broken = False
        self._waiter: asyncio.Future[pq.abc.PGresult] | None = None
        self._result: pq.abc.PGresult | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future[None] | None = None  # waiting to write the rest
        self._loop = asyncio.get_running_loop()
        self._fd = self.pgconn.socket
        self._loop.add_reader(self._fd, self._readable)

    async def send(self, send: Callable[[pq.abc.PGconn], None]) -> pq.abc.PGresult:
        if self.broken:
            raise psycopg.OperationalError("the store's connection was lost")
        waiter = self._waiter = self._loop.create_future()
        self.busy = True
        # Kept if the caller leaves: the lane is busy until its statement ends or fails.
        self._deadline = self._loop.call_later(ANSWER_DEADLINE_S, self._late)
        try:
            send(self.pgconn)
            # A large statement, a full socket buffer: rare. A failure meanwhile ends it.
            while not self.broken and self.pgconn.flush():
                await self._writable()
        except psycopg.Error as exc:  # the connection failed as it was written to
            self._fail(str(exc))
        result: pq.abc.PGresult = await waiter
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise _error(result, self.pgconn)
        return result

    def _readable(self) -> None:
        try:
            self.pgconn.consume_input()
            while not self.pgconn.is_busy():
                result = self.pgconn.get_result()
                if result is None:  # the statement's results have all come (or none was sent)
                    self._ended()
                    return
                self._result = result  # one statement, one result: the last is its answer
        except psycopg.Error as exc:
            self._fail(str(exc))

    def _late(self) -> None:
        self._deadline = None
        self._fail(f"the store did not answer in {ANSWER_DEADLINE_S:g} s")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _ended(self) -> None:
        waiter, result = self._waiter, self._result
        if waiter is None or result is None:
            return  # nothing in flight: what came was the server's own (a notice, a setting)
        self._waiter = self._result = None
        self._cancel_deadline()
        self.busy = False
        if not waiter.done():
            waiter.set_result(result)
        else:  # its caller left (cancelled): the lane is free only now
            self.lanes._release(self)

    def _fail(self, reason: str, closing: bool = False) -> None:
        """The connection failed (or is closing): the statement in flight fails, the lane
        is dropped."""
        if not self.broken:
            self.broken = True
            self._loop.remove_reader(self._fd)
            flushing = self._flushing
            if flushing is not None:
                # Its writer goes with the connection: left on the closed socket's number,
                # it would never fire (nor would a reader for a new socket given that number).
                self._loop.remove_writer(self._fd)
                if not flushing.done():
                    flushing.set_result(None)
            if not closing:
                task = self._loop.create_task(self.conn.close())
                _closing.add(task)  # referenced until done (the loop holds tasks weakly)
                task.add_done_callback(_closing.discard)
        waiter, self._waiter, self._result = self._waiter, None, None
        was_busy, self.busy = self.busy, False
        self._cancel_deadline()
        if waiter is not None and not waiter.done():
            waiter.set_exception(psycopg.OperationalError(reason))
        elif was_busy:  # its caller left: nobody releases it but this
            self.lanes._release(self)
        else:
            self.lanes._drop(self)  # an idle lane: nobody holds it

    async def _writable(self) -> None:
        """Until the socket takes more, or the lane fails (``_fail`` ends the wait)."""
        ready = self._flushing = self._loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, writable)
        try:
            await ready
        finally:
            self._flushing = None
            if not self.broken:
                self._loop.remove_writer(self._fd)

    async def close(self) -> None:
        if not self.broken:
            self._fail("the store is closing", closing=True)
            await self.conn.close()


_closing: set[asyncio.Task[None]] = set()


def _error(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> psycopg.Error:
    """The psycopg exception of a failed statement's result, by its SQLSTATE."""
    sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii")
    message = (result.error_message or pgconn.error_message).decode("utf-8", "replace").strip()
    try:
        kind: type[psycopg.Error] = psycopg.errors.lookup(sqlstate)
    except KeyError:
        kind = psycopg.DatabaseError
    return kind(message)
