"""Shared PostgreSQL store: several instances behind a load balancer, one database.

psycopg 3 (async) with a connection pool. The schema is created and migrated at
``open()`` by the numbered SQL files in ``migrations/postgres/``, applied in one
transaction under an advisory lock, so instances starting together don't race.

Every write that changes what playback compiles (scenarios, stubs, sessions,
delay policies) sends ``NOTIFY simulacra, '<kind> <key>'`` in its transaction (the channel
``simulacra:<schema>`` for a store in a schema of its own), so
other instances learn of it when it commits (see ``listen``).

A lost connection surfaces as ``Unavailable`` (503) instead of crashing the
instance; the pool replaces broken connections, so the instance recovers when
the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import select
import struct
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, NamedTuple

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from simulacra.background import Slices
from simulacra.config import split_url
from simulacra.errors import AlreadyExists, DomainError, Unavailable
from simulacra.store.base import (
    STUB_READ_COLUMNS,
    STUB_WRITE_COLUMNS,
    ScenarioImport,
    StubStats,
    dumps,
    first_stubs_by_hash,
    stub_of_row,
    stub_row,
    stub_update_row,
)
from simulacra.store.lanes import Lanes, Statement
from simulacra.virtual.delays import DelayPolicy, parse_policy
from simulacra.virtual.model import SESSION_COLUMNS, Scenario, Session, Stub
from simulacra.virtual.tracker import TrackerQuery, TrackerRecord

log = logging.getLogger("simulacra.store")

CHANNEL = "simulacra"
# How soon the change listener notices stop_listening(): it waits for notifications this
# long at a time (see listen).
LISTEN_POLL_S = 0.2
# Any constant shared by every instance: serializes migrations across processes.
MIGRATION_LOCK = 0x51_4D_55_4C  # "SMUL"
# A connection attempt gives up after this (libpq waits for ever by default): a database
# that does not answer fails the start, or a pooled request, with the reason.
CONNECT_TIMEOUT_S = 5
# A pooled connection lent again within this long of its last loan is checked without a round
# trip (see ConnectionCheck); one that sat idle longer is asked.
RECHECK_AFTER_S = 5.0
# Dedicated connections (lanes, opened as needed) beside the pool's 8: for the round trips of
# the sequence counters, of several counters at once (COUNTER_ROUND_TRIPS each); and for the
# shared cloud's statements (simulacra/cloud/shared.py has at most 6 in flight).
COUNTER_LANES = 4
CLOUD_LANES = 6


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration file, in order."""
    folder = resources.files("simulacra.store.migrations") / "postgres"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class ConnectionCheck:
    """The pool's check of a connection before it lends it, cheap when it can be.

    A round trip on every loan (``AsyncConnectionPool.check_connection``) doubled the cost
    of every store operation. A connection lent within ``RECHECK_AFTER_S`` of its previous
    loan, returned idle and in a good state, whose socket has nothing to read, is lent as
    it is: a backend that ended (a restart, ``pg_terminate_backend``) sends its last message
    and closes, which makes the socket readable at once. Any other connection (idle longer,
    where a connection dropped on the way would not say so; a readable socket; a bad state)
    is checked with a round trip, and the pool replaces it if that fails.
    """

    def __init__(self) -> None:
        self._lent: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        now = time.monotonic()
        lent = self._lent.get(conn)
        self._lent[conn] = now
        if lent is None or now - lent > RECHECK_AFTER_S or not _quiet(conn):
            await AsyncConnectionPool.check_connection(conn)


def _quiet(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Idle, in a good state, and nothing has arrived on its socket since its last use."""
    info = conn.info
    if info.status != ConnStatus.OK or info.transaction_status != TransactionStatus.IDLE:
        return False
    poll = select.poll()  # not select(): a file descriptor may be over FD_SETSIZE
    poll.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poll.poll(0)


class PostgresStore:
    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        self.url, self.schema = split_url(url)
        self._pool: AsyncConnectionPool | None = None
        self._min_size = min_size
        self._max_size = max_size
        self._listening = False
        self.failures = 0  # operations that found the database out of reach (/metrics)
        # Dedicated connections, each opened on first use: for the sequence counters' round
        # trips (thousands a second); and the shared cloud's (``sync_cloud``) apart, since a
        # cloud write may wait seconds for a row another instance holds, and no counter
        # must wait behind it.
        self._counter_lanes = Lanes(self._connect_lane, COUNTER_LANES)
        self._cloud_lanes = Lanes(self._connect_lane, CLOUD_LANES)
        # Set by ``open``: asking asyncio for the running loop costs a getpid() system call
        # (its check for a fork), once per playback of a sequence on this path.
        self._loop: asyncio.AbstractEventLoop

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}
        if self.schema:
            kwargs["options"] = f"-csearch_path={self.schema}"
        return kwargs

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        # One connection first: a database out of reach fails here, at once and with libpq's
        # reason, where the pool would retry for its whole timeout and then say only that.
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise Unavailable(f"cannot connect to the PostgreSQL store: {reason}") from None
        async with conn:
            if self.schema:
                # The search_path names it, so it must exist before the pool's first
                # connection. IF NOT EXISTS still races between instances starting
                # together: take the lock.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        pool = AsyncConnectionPool(
            self.url,
            kwargs=self._connect_kwargs(),
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=5.0,
            # A connection broken by a database restart is found here, not by a request.
            check=ConnectionCheck(),
            open=False,
        )
        await pool.open(wait=True, timeout=15.0)
        self._pool = pool
        await self.migrate()

    async def close(self) -> None:
        await self._counter_lanes.close()
        await self._cloud_lanes.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        """One round trip on a pooled connection (health); Unavailable when none answers."""
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def migrate(self) -> int:
        """Apply the migrations newer than ``schema_version``; return the version reached."""
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone()
            current = (row[0] if row else None) or 0
            for version, sql in migrations():
                if version > current:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
                    log.info("store schema migrated to version %d", version)
                    current = version
        return current

    # connections ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in autocommit; connection loss becomes ``Unavailable``."""
        async with self._unavailable(), self.pool.connection() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _unavailable(self) -> AsyncIterator[None]:
        """Connection loss (or no pooled connection in time) in the block: ``Unavailable``."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.failures += 1
            log.warning("store unavailable: %s", exc)
            raise Unavailable("the store (PostgreSQL) is unavailable; retry shortly") from exc

    async def _connect_lane(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.url, **self._connect_kwargs())

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def _fetchall(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            return await (await conn.execute(sql, args)).fetchall()

    async def _fetchone(self, sql: str, args: Any = ()) -> tuple[Any, ...] | None:
        async with self._conn() as conn:
            return await (await conn.execute(sql, args)).fetchone()

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this installation: channels are the database's, so each
        schema has its own (another schema's scenario of the same name is not ours)."""
        return f"{CHANNEL}:{self.schema}"[:63] if self.schema else CHANNEL

    async def _notify(self, conn: psycopg.AsyncConnection[Any], kind: str, key: str) -> None:
        # Sent inside the writing transaction: delivered only if it commits.
        await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, f"{kind} {key}"))

    async def listen(
        self, on_change: Callable[[str, str], Awaitable[None]], ready: Callable[[], None]
    ) -> None:
        """LISTEN on a dedicated connection and call ``on_change(kind, key)`` per notification;
        reconnect (calling ``on_change("*", "")`` so caches resync) after a lost connection.

        Runs until ``stop_listening()``. Not to be cancelled: psycopg answers a cancel that
        lands in its wait for notifications by cancelling the query on the server and
        waiting again, up to 5 + 5 s, which stalled a server's stop now and then (about 1 in
        5 stops in tests/test_shared_store.py)."""
        self._listening = True
        first = True
        while self._listening:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, **self._connect_kwargs()
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    if first:
                        ready()
                        first = False
                    else:
                        await on_change("*", "")  # changes may have been missed meanwhile
                    while self._listening:
                        async for note in conn.notifies(timeout=LISTEN_POLL_S):
                            kind, _, key = note.payload.partition(" ")
                            try:
                                await on_change(kind, key)
                            except Exception:
                                log.exception("store change handler failed for %r", note.payload)
            except (psycopg.OperationalError, Unavailable) as exc:
                # Unavailable: the resync after a reconnect met the database going down again.
                log.warning("store listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(0.5)

    def stop_listening(self) -> None:
        """``listen`` returns within LISTEN_POLL_S (or after its reconnect pause)."""
        self._listening = False

    # scenarios -------------------------------------------------------------

    async def create_scenario(self, scenario: Scenario) -> None:
        try:
            async with self._tx() as conn:
                await conn.execute(
                    "INSERT INTO scenario (name, created, version) VALUES (%s, %s, %s)",
                    (scenario.name, scenario.created, scenario.version),
                )
                await self._notify(conn, "scenario", scenario.name)
        except pg_errors.UniqueViolation:
            raise AlreadyExists(f"Scenario {scenario.name} already exists") from None

    async def get_scenario(self, name: str) -> Scenario | None:
        row = await self._fetchone(
            "SELECT name, created, version FROM scenario WHERE name = %s", (name,)
        )
        return Scenario(*row) if row else None

    async def list_scenarios(self) -> list[Scenario]:
        rows = await self._fetchall("SELECT name, created, version FROM scenario ORDER BY name")
        return [Scenario(*row) for row in rows]

    async def delete_scenario(self, name: str) -> bool:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM session WHERE scenario = %s", (name,))
            await conn.execute("DELETE FROM stub WHERE scenario = %s", (name,))
            cursor = await conn.execute("DELETE FROM scenario WHERE name = %s", (name,))
            await self._notify(conn, "scenario", name)
            await self._notify(conn, "sessions", "")
        return cursor.rowcount > 0

    # stubs -----------------------------------------------------------------

    _STUB_INSERT = (
        f"INSERT INTO stub ({STUB_WRITE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING seq"
    )
    _STUB_UPDATE = (
        "UPDATE stub SET priority = %s, space_used = %s, responses = %s, args = %s WHERE id = %s"
    )

    async def list_stubs(
        self, scenario: str, offset: int = 0, limit: int | None = None, after: int = 0
    ) -> list[Stub]:
        rows = await self._fetchall(
            f"SELECT {STUB_READ_COLUMNS} FROM stub WHERE scenario = %s AND seq > %s"
            " ORDER BY seq LIMIT %s OFFSET %s",
            (scenario, after, limit, offset),  # LIMIT NULL: all of them
        )
        return [stub_of_row(row) for row in rows]

    async def stub_stats(self, scenario: str) -> StubStats:
        row = await self._fetchone(
            "SELECT COUNT(*), COALESCE(SUM(space_used), 0), MAX(recorded) FROM stub"
            " WHERE scenario = %s",
            (scenario,),
        )
        assert row is not None
        count, space, last = row
        return StubStats(int(count), int(space), last)

    async def find_stubs(self, scenario: str, matchers_hashes: Sequence[str]) -> dict[str, Stub]:
        rows = await self._fetchall(
            f"SELECT {STUB_READ_COLUMNS}, matchers_hash FROM stub WHERE scenario = %s"
            " AND matchers_hash = ANY(%s)",
            (scenario, list(matchers_hashes)),
        )
        return first_stubs_by_hash(rows)

    async def get_stub(self, scenario: str, stub_id: str) -> Stub | None:
        row = await self._fetchone(
            f"SELECT {STUB_READ_COLUMNS} FROM stub WHERE scenario = %s AND id = %s",
            (scenario, stub_id),
        )
        return stub_of_row(row) if row else None

    async def insert_stub(self, stub: Stub) -> Stub:
        stub.id = stub.id or secrets.token_hex(12)
        async with self._tx() as conn:
            row = await (await conn.execute(self._STUB_INSERT, stub_row(stub))).fetchone()
            await self._bump(conn, stub.scenario)
        stub.seq = row[0] if row else 0
        return stub

    async def write_stubs(self, scenario: str, new: list[Stub], changed: list[Stub]) -> None:
        # COPY: one statement streaming every row (an INSERT each took 1-3 ms of round trip),
        # its rows formatted a slice at a time so the loop serves others meanwhile.
        slices = Slices()
        async with self._tx() as conn:
            if new:
                cursor = conn.cursor()
                async with cursor.copy(f"COPY stub ({STUB_WRITE_COLUMNS}) FROM STDIN") as copy:
                    for stub in new:
                        stub.id = stub.id or secrets.token_hex(12)
                        await copy.write_row(stub_row(stub))
                        await slices.pause()
            # Extended sequences: executemany pipelines its statements (one round trip each
            # took as long as the COPY of as many new stubs), a few hundred at a time.
            for start in range(0, len(changed), 500):
                rows = [stub_update_row(stub) for stub in changed[start : start + 500]]
                await conn.cursor().executemany(self._STUB_UPDATE, rows)
                await slices.pause()
            await self._bump(conn, scenario)

    async def update_stub(self, stub: Stub) -> None:
        async with self._tx() as conn:
            await conn.execute(self._STUB_UPDATE, stub_update_row(stub))
            await self._bump(conn, stub.scenario)

    async def delete_stubs(self, scenario: str) -> int:
        async with self._tx() as conn:
            cursor = await conn.execute("DELETE FROM stub WHERE scenario = %s", (scenario,))
            await self._bump(conn, scenario)
        return cursor.rowcount

    async def import_scenarios(self, imports: list[ScenarioImport]) -> None:
        try:
            async with self._tx() as conn:  # all archives of an upload, or none
                for item in imports:
                    scenario = item.scenario
                    await conn.execute(
                        "INSERT INTO scenario (name, created, version) VALUES (%s, %s, %s)",
                        (scenario.name, scenario.created, scenario.version + 1),
                    )
                    for stub in item.stubs:
                        stub.id = stub.id or secrets.token_hex(12)
                        cursor = await conn.execute(self._STUB_INSERT, stub_row(stub))
                        row = await cursor.fetchone()
                        stub.seq = row[0] if row else 0
                    if item.session is not None:
                        await self._upsert_sessions(conn, [item.session], port=True)
                    await self._notify(conn, "scenario", scenario.name)
        except pg_errors.UniqueViolation as exc:
            diag = exc.diag.constraint_name or ""
            if diag.startswith("scenario"):
                names = ", ".join(i.scenario.name for i in imports)
                raise AlreadyExists(f"Scenario {names} already exists") from None
            raise

    async def _bump(self, conn: psycopg.AsyncConnection[Any], scenario: str) -> None:
        await conn.execute("UPDATE scenario SET version = version + 1 WHERE name = %s", (scenario,))
        await self._notify(conn, "scenario", scenario)

    # sessions --------------------------------------------------------------

    _SESSION_UPSERT = (
        f"INSERT INTO session ({SESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (host, name) DO UPDATE SET scenario = EXCLUDED.scenario,"
        " status = EXCLUDED.status, loaded = EXCLUDED.loaded, last_used = EXCLUDED.last_used"
    )

    async def list_sessions(self) -> list[Session]:
        rows = await self._fetchall(f"SELECT {SESSION_COLUMNS} FROM session ORDER BY name")
        return [Session.from_row(row) for row in rows]

    async def get_session(self, host: str, name: str) -> Session | None:
        """One session by key (cache misses and admin calls; playback keeps them in memory)."""
        row = await self._fetchone(
            f"SELECT {SESSION_COLUMNS} FROM session WHERE host = %s AND name = %s",
            (host, name),
        )
        return Session.from_row(row) if row else None

    async def save_session(self, session: Session) -> None:
        async with self._tx() as conn:
            await self._upsert_sessions(conn, [session], port=True)

    async def save_sessions(self, sessions: list[Session]) -> None:
        if not sessions:
            return
        async with self._tx() as conn:
            await self._upsert_sessions(conn, sessions, port=False)

    async def _upsert_sessions(
        self, conn: psycopg.AsyncConnection[Any], sessions: list[Session], port: bool
    ) -> None:
        """Insert or update; an existing row's port binding and upstream are written only
        with ``port`` (save_sessions is the periodic last_used flush, whose copies of
        sessions made by other instances may not know a binding made since)."""
        written = ", port = EXCLUDED.port, upstream = EXCLUDED.upstream" if port else ""
        async with conn.cursor() as cursor:
            await cursor.executemany(self._SESSION_UPSERT + written, [s.row() for s in sessions])
        for session in sessions:
            await self._notify(conn, "session", f"{session.host} {session.name}")

    # delay policies --------------------------------------------------------

    async def list_delay_policies(self) -> list[DelayPolicy]:
        policies = []
        for host, name, document in await self._fetchall(
            "SELECT host, name, document FROM delay_policy ORDER BY host, name"
        ):
            try:
                policies.append(parse_policy(orjson.loads(document), host))
            except DomainError as exc:  # stored by an older version with looser rules
                log.warning("skipping stored delay policy %s:%s: %s", host, name, exc.message)
        return policies

    async def save_delay_policy(self, policy: DelayPolicy) -> bool:
        async with self._tx() as conn:
            # xmax = 0 only for a freshly inserted row: tells insert from update in one statement.
            cursor = await conn.execute(
                "INSERT INTO delay_policy (host, name, document) VALUES (%s, %s, %s)"
                " ON CONFLICT (host, name) DO UPDATE SET document = EXCLUDED.document"
                " RETURNING (xmax = 0)",
                (*policy.key, dumps(policy.document())),
            )
            row = await cursor.fetchone()
            await self._notify(conn, "policy", f"{policy.host} {policy.name}")
        return bool(row and row[0])

    async def delete_delay_policy(self, host: str, name: str) -> bool:
        async with self._tx() as conn:
            cursor = await conn.execute(
                "DELETE FROM delay_policy WHERE host = %s AND name = %s", (host, name)
            )
            await self._notify(conn, "policy", f"{host} {name}")
        return cursor.rowcount > 0

    # sequence counters (stateful stubs, shared by every instance) ----------
    #
    # The row's n is how many positions the store has handed out. Concurrent playbacks of
    # one counter in this process share round trips (group commit): those that arrive while
    # round trips are in flight wait for the next, which reserves as many positions as they
    # are (n = n + k) and hands them out in arrival order. Up to COUNTER_ROUND_TRIPS of one
    # counter are in flight at once: with one, a round trip's latency (the database, and
    # this busy loop noticing its answer) bounded a counter's rate whatever the CPU left.
    # Ranges are contiguous and disjoint across round trips and instances (the row lock
    # orders the updates), so every position is served once. A playback answered before
    # another arrived, on any instance, holds the lower position (its round trip committed
    # before the other's was sent); two in flight together may get theirs either way round.
    #
    # The advance commits without waiting for its WAL flush (synchronous_commit off, for
    # this statement's transaction alone): other instances see it at once, and the row lock
    # is held for microseconds instead of a disk flush, which serialized instances. The cost:
    # a crash of PostgreSQL itself may lose the last fraction of a second of advances, so a
    # sequence may then replay a few positions (docs/scaling.md).

    # On a lane (simulacra/store/lanes.py): a round trip per batch of playbacks, thousands a
    # second, at about half psycopg's CPU per statement.
    _COUNTER_ADVANCE = Statement(
        b"sequence_counter_advance",
        b"WITH lax AS (SELECT set_config('synchronous_commit', 'off', true))"
        b" INSERT INTO sequence_counter (session_key, stub_id, n)"
        b" SELECT $1::text, $2::text, $3::bigint FROM lax"
        b" ON CONFLICT (session_key, stub_id) DO UPDATE SET n = sequence_counter.n + EXCLUDED.n"
        b" RETURNING n",
        (0, 0, 0),
    )

    @functools.cached_property
    def _counters(self) -> dict[tuple[str, str], _Counter]:
        """(session, stub) -> its playbacks waiting and round trips in flight; a key is
        present while a round trip of it is."""
        return {}

    @functools.cached_property
    def _counter_tasks(self) -> set[asyncio.Task[None]]:
        return set()  # referenced until done (the loop holds tasks weakly)

    def next_response(self, session_key: str, stub_id: str) -> asyncio.Future[int]:
        """Advance the counter of (session, stub) atomically: a future of the 0-based index
        of this playback (the caller clamps it to the last response). A future, not a
        coroutine: the data plane answers when it is done, with no task of its own
        (``Playback.run``). Cancelling it before its round trip is sent takes no position."""
        key = (session_key, stub_id)
        waiter: asyncio.Future[int] = self._loop.create_future()
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter()
        counter.waiting.append(waiter)
        # A round trip started but not yet sent takes this waiter too; else one more, if
        # fewer than COUNTER_ROUND_TRIPS are in flight and, beside one in flight, at least
        # two wait: a lone waiter is taken by the next round trip of one in flight, since a
        # round trip for one playback costs the CPU of one for ten (a fifth of them carried
        # one under load; side by side, 4-9 us less CPU per in-sequence playback).
        if (
            not counter.starting
            and counter.trips < COUNTER_ROUND_TRIPS
            and (not counter.trips or len(counter.waiting) >= 2)
        ):
            counter.starting = True
            counter.trips += 1
            # A task of its own, not the first caller's: a client that disconnects cancels
            # its own playback, never the round trip the others wait for.
            task = asyncio.create_task(self._advance_counter(key, counter))
            self._counter_tasks.add(task)
            task.add_done_callback(self._counter_tasks.discard)
        return waiter

    async def _advance_counter(self, key: tuple[str, str], counter: _Counter) -> None:
        """Round trips for ``key`` until nobody waits: each reserves one position per live
        waiter. A playback cancelled after its round trip was sent leaves its position
        unserved (the range's last), as one cancelled during a lone round trip always did."""
        batch: list[asyncio.Future[int]] = []
        try:
            while batch := [w for w in counter.waiting if not w.done()]:
                counter.waiting = []  # who arrives from now on waits for the next round trip
                counter.starting = False
                try:
                    position = await self._reserve(key, len(batch))
                except Exception as exc:
                    for waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                for waiter in batch:
                    if not waiter.done():  # in arrival order, without gaps
                        waiter.set_result(position)
                        position += 1
                # One turn of the loop before the next: the playbacks already received
                # (their requests read in that turn) join it, so fewer round trips serve as
                # many playbacks when the loop is busy.
                await asyncio.sleep(0)
        finally:
            counter.trips -= 1
            if counter.starting and not batch:
                counter.starting = False  # nobody was left waiting when it started
            if not counter.trips:
                for waiter in [*batch, *counter.waiting]:
                    if not waiter.done():
                        waiter.cancel()
                del self._counters[key]
            else:
                for waiter in batch:
                    if not waiter.done():
                        waiter.cancel()

    async def _reserve(self, key: tuple[str, str], count: int) -> int:
        """One round trip: ``count`` positions of ``key``'s counter; the first of them."""
        params = [key[0].encode(), key[1].encode(), b"%d" % count]
        async with self._unavailable():
            result = await self._counter_lanes.run(self._COUNTER_ADVANCE, params)
        return int(result.get_value(0, 0) or count) - count

    async def reset_counters(self, session_key: str) -> None:
        """Forget the counters of a session (it was begun again). The notification tells
        instances that hold a sequence as played to its end to ask the store again."""
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM sequence_counter WHERE session_key = %s", (session_key,)
            )
            await self._notify(conn, "counters", session_key)

    # cloud-mock state (--shared-cloud) -------------------------------------

    async def sync_cloud(self, batch: Sequence[CloudGroup]) -> list[CloudSync]:
        """Cloud requests' parts, checked and (where all current) written, in one statement.

        Per request (``CloudGroup``): ``writes`` (key, collection, the version changed, new
        data or None for absent), ``reads`` (key, the version read), ``colls`` (collections
        read whole). Only the written rows are locked, in key order (function ``cloud_sync``,
        migrations 0008 to 0013): a batch of reads locks nothing, so it never waits behind
        another instance's writer. The answers are in the order of ``batch``.

        The commit does not wait for its WAL flush (as the sequence counters'): a crash of
        PostgreSQL itself may lose the last fraction of a second of cloud changes, which
        answered 2xx (docs/scaling.md); another instance sees them at once.
        """
        async with self._unavailable():
            return await _sync_cloud_on_lane(self._cloud_lanes, batch, CLOUD_LOCK_WAIT)

    @contextlib.asynccontextmanager
    async def cloud_locked(self, keys: Sequence[str]) -> AsyncIterator[CloudLock]:
        """A transaction that holds the stored parts among ``keys`` locked until the block
        ends, so that no other process changes them meanwhile; it yields their stored state
        and a ``sync`` that checks and writes one group in the same transaction, committed
        as the block ends. For a request that kept losing its parts to other processes'
        changes (simulacra/cloud/shared.py).

        The group may write parts beyond those locked (a new server's, a new page of ids),
        whose rows it then takes after the locked ones, out of key order: another process
        holding one of those while it waits for a locked row would wait for this one, which
        waits for it. So ``sync`` waits at most ``CLOUD_UNLOCKED_WAIT`` for them, and answers
        None (nothing written; run again) where it would wait longer."""
        async with self._tx() as conn:
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", (CLOUD_LOCK_WAIT,))
            cursor = await conn.execute(
                "SELECT key, version, data FROM cloud_part WHERE key = ANY(%s)"
                ' ORDER BY key COLLATE "C" FOR UPDATE',  # in cloud_sync's order: no deadlock
                (sorted(keys),),
            )
            parts = [_stored_part(*row) for row in await cursor.fetchall()]

            async def sync(group: CloudGroup) -> CloudSync | None:
                try:
                    async with conn.transaction():  # a savepoint: a wait given up undoes it
                        return (await _sync_cloud(conn, [group], CLOUD_UNLOCKED_WAIT))[0]
                except psycopg.errors.LockNotAvailable:
                    return None

            yield CloudLock(parts, sync)

    async def clear(self) -> None:
        async with self._tx() as conn:
            for table in ("session", "stub", "scenario", "delay_policy", "sequence_counter"):
                await conn.execute(f"DELETE FROM {table}")  # fixed names, never a client's
            await conn.execute("DELETE FROM tracker")  # its sequence keeps growing
            await self._notify(conn, "*", "")  # every instance drops its caches

    # tracker ---------------------------------------------------------------

    _TRACKER_COLUMNS = ", ".join(TrackerRecord._fields)

    # COPY in binary: one statement a batch, where an INSERT a record cost the database and
    # psycopg each about 10 us more a playback (bench.sequences, tracking on).
    _TRACKER_COPY = (
        # the id is assigned by the sequence
        f"COPY tracker ({', '.join(TrackerRecord._fields[1:])}) FROM STDIN (FORMAT BINARY)"
    )
    _TRACKER_TYPES = ("text",) * 4 + ("int4",) * 3 + ("bytea", "int4", "text")

    async def add_tracker_records(self, records: list[TrackerRecord], cap: int) -> None:
        async with self._tx() as conn:
            if records:
                async with conn.cursor() as cursor, cursor.copy(self._TRACKER_COPY) as copy:
                    copy.set_types(self._TRACKER_TYPES)
                    for record in records:
                        await copy.write_row(record[1:])
            # Keep the ids within ``cap`` of the newest: one index probe, no counting. Ids from
            # concurrent instances interleave without gaps; only a rolled-back batch leaves a
            # gap, which then keeps a few records fewer than ``cap`` for a while.
            await conn.execute(
                "DELETE FROM tracker WHERE id <= (SELECT MAX(id) FROM tracker) - %s", (cap,)
            )

    async def tracker_records(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> tuple[int, list[TrackerRecord]]:
        where, args = _tracker_where(query)
        async with self._conn() as conn:
            counted = await conn.execute(f"SELECT COUNT(*) FROM tracker{where}", args)
            row = await counted.fetchone()
            rows = await (
                await conn.execute(
                    f"SELECT {self._TRACKER_COLUMNS} FROM tracker{where}"
                    " ORDER BY id DESC LIMIT %s OFFSET %s",
                    [*args, limit, skip],
                )
            ).fetchall()
        total = int(row[0]) if row else 0
        return total, [_record(r) for r in rows]

    async def tracker_record(self, record_id: int) -> TrackerRecord | None:
        row = await self._fetchone(
            f"SELECT {self._TRACKER_COLUMNS} FROM tracker WHERE id = %s", (record_id,)
        )
        return _record(row) if row else None


# Round trips of one sequence counter in flight at once, per process. Two rather than three
# since they run on lanes: two instances sharing 32 connections played a sequence about 12%
# faster (bigger batches; side by side, 15,300-15,800 against 12,900-15,800 req/s), one
# instance as fast; with one, a round trip's latency bounded a counter's rate.
COUNTER_ROUND_TRIPS = 2


class _Counter:
    """One sequence counter's playbacks in this process: those waiting for a round trip not
    sent yet, how many round trips are in flight, and whether one is about to be sent."""

    __slots__ = ("starting", "trips", "waiting")

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[int]] = []
        self.trips = 0
        self.starting = False


# One statement, on a lane (the batches, ``sync_cloud``) and through psycopg (a locked run, in
# its transaction): $n placeholders there, %s here. On a lane every parameter goes in binary
# (the parts' data as text would go hex-encoded, twice its size). ``cloud_sync`` turns
# synchronous_commit off for its transaction (docs/scaling.md).
_CLOUD_SYNC_SQL = (
    "SELECT * FROM cloud_sync({}::int4[], {}::text[], {}::text[], {}::int8[], {}::bytea[],"
    " {}::int4[], {}::text[], {}::int8[], {}::int4[], {}::text[], {}::text)"
)
_CLOUD_SYNC = Statement(
    b"cloud_sync",
    _CLOUD_SYNC_SQL.format(*(f"${n}" for n in range(1, 12))).encode(),
    (1,) * 11,
    True,
)

# How long a cloud write waits for a row another transaction holds: a process stuck while
# holding a lock must not stall every instance for good. And, in ``cloud_locked``'s run, for
# a row beyond those it locked (a wait that may close a cycle: see there).
CLOUD_LOCK_WAIT = "10s"
CLOUD_UNLOCKED_WAIT = "200ms"

CloudRow = tuple[int, str, int, "bytes | None", bool]  # group, key, version, data, written


class _CloudArrays(NamedTuple):
    """``cloud_sync``'s batch: an entry per part written (``w_``: its group, key, collection,
    the version it was changed from, its new data), per part read (``r_``) and per
    collection read whole (``c_``), each numbered by its group's place in the batch."""

    w_groups: list[int]
    w_keys: list[str]
    w_colls: list[str]
    w_known: list[int]
    w_data: list[bytes | None]
    r_groups: list[int]
    r_keys: list[str]
    r_known: list[int]
    c_groups: list[int]
    c_colls: list[str]


def _cloud_arrays(batch: Sequence[CloudGroup]) -> _CloudArrays:
    arrays = _CloudArrays([], [], [], [], [], [], [], [], [], [])
    w_groups, w_keys, w_colls, w_known, w_data, r_groups, r_keys, r_known, c_groups, c_colls = (
        arrays
    )
    for index, (changed, read, whole) in enumerate(batch):
        for key, coll, version, value in changed:
            w_groups.append(index)
            w_keys.append(key)
            w_colls.append(coll)
            w_known.append(version)
            w_data.append(value)
        for key, version in read:
            r_groups.append(index)
            r_keys.append(key)
            r_known.append(version)
        for coll in whole:
            c_groups.append(index)
            c_colls.append(coll)
    return arrays


def _cloud_answers(size: int, rows: Iterable[CloudRow]) -> list[CloudSync]:
    """``cloud_sync``'s rows as each of the batch's ``size`` groups' answer."""
    found = [CloudSync(None, []) for _ in range(size)]
    for index, key, version, data, written in rows:
        if written:
            versions = found[index].written
            if versions is None:
                versions = {}
                found[index] = CloudSync(versions, [])
            versions[key] = version
        else:
            found[index].stale.append((key, version, data))
    return found


async def _sync_cloud(
    conn: psycopg.AsyncConnection[Any], batch: Sequence[CloudGroup], lock_wait: str
) -> list[CloudSync]:
    """``cloud_sync`` on ``conn`` (in its transaction); it waits ``lock_wait`` at most for a
    row lock (a ``lock_timeout``)."""
    query = _CLOUD_SYNC_SQL.format(*["%s"] * 11)
    rows = await (await conn.execute(query, (*_cloud_arrays(batch), lock_wait))).fetchall()
    return _cloud_answers(len(batch), (_cloud_row(*row) for row in rows))


def _cloud_row(index: Any, key: str, version: Any, data: Any, written: bool) -> CloudRow:
    return int(index), *_stored_part(key, version, data), bool(written)


async def _sync_cloud_on_lane(
    lanes: Lanes, batch: Sequence[CloudGroup], lock_wait: str
) -> list[CloudSync]:
    """``cloud_sync`` on a lane, in binary both ways (``_sync_cloud``'s statement)."""
    arrays = _cloud_arrays(batch)
    result = await lanes.run(
        _CLOUD_SYNC,
        [
            _int_array(_INT4_OID, arrays.w_groups),
            _binary_array(_TEXT_OID, [key.encode() for key in arrays.w_keys]),
            _binary_array(_TEXT_OID, [coll.encode() for coll in arrays.w_colls]),
            _int_array(_INT8_OID, arrays.w_known),
            _binary_array(_BYTEA_OID, arrays.w_data),
            _int_array(_INT4_OID, arrays.r_groups),
            _binary_array(_TEXT_OID, [key.encode() for key in arrays.r_keys]),
            _int_array(_INT8_OID, arrays.r_known),
            _int_array(_INT4_OID, arrays.c_groups),
            _binary_array(_TEXT_OID, [coll.encode() for coll in arrays.c_colls]),
            lock_wait.encode(),
        ],
    )
    get = result.get_value  # bytes; None for NULL, which only the data may be
    rows: list[CloudRow] = [
        (
            _INT4.unpack(get(row, 0) or b"")[0],
            (get(row, 1) or b"").decode(),
            _INT8.unpack(get(row, 2) or b"")[0],
            get(row, 3),
            get(row, 4) == b"\x01",
        )
        for row in range(result.ntuples)
    ]
    return _cloud_answers(len(batch), rows)


_INT4 = struct.Struct("!i")
_INT8 = struct.Struct("!q")
_BYTEA_OID, _INT8_OID, _INT4_OID, _TEXT_OID = 17, 20, 23, 25


def _array_head(oid: int, count: int, has_null: bool = False) -> bytes:
    """The head of a one-dimensional array of ``count`` items of type ``oid`` in
    PostgreSQL's binary format (array_recv); an empty array has no dimension."""
    if not count:
        return struct.pack("!iii", 0, 0, oid)
    return struct.pack("!iiiii", 1, has_null, oid, count, 1)


def _binary_array(oid: int, items: Sequence[bytes | None]) -> bytes:
    """A one-dimensional array of type ``oid`` in PostgreSQL's binary format (array_recv),
    of items each in its type's binary format (None: NULL)."""
    if not items:
        return _array_head(oid, 0)
    parts = [_array_head(oid, len(items), any(item is None for item in items))]
    for item in items:
        parts.append(b"\xff\xff\xff\xff" if item is None else _INT4.pack(len(item)) + item)
    return b"".join(parts)


def _int_array(oid: int, values: Sequence[int]) -> bytes:
    """``_binary_array`` of int4 (``_INT4_OID``) or int8 values, the items packed in one
    ``struct`` call: an item at a time took three times as long."""
    if not values:
        return _array_head(oid, 0)
    width, code = (4, "i") if oid == _INT4_OID else (8, "q")
    fields = [width, 0] * len(values)
    fields[1::2] = values
    return _array_head(oid, len(values)) + struct.pack("!" + ("i" + code) * len(values), *fields)


def _stored_part(key: str, version: Any, data: Any) -> tuple[str, int, bytes | None]:
    """A cloud part's row as the shared cloud takes it (BYTEA arrives as a memoryview)."""
    return key, int(version), None if data is None else bytes(data)


class CloudGroup(NamedTuple):
    """One cloud request's parts for ``sync_cloud``."""

    writes: Sequence[tuple[str, str, int, bytes | None]]
    reads: Sequence[tuple[str, int]]
    colls: Sequence[str]


class CloudSync(NamedTuple):
    """What ``sync_cloud`` found for one request: the new versions of the parts written
    (None: nothing was written), or the parts whose stored version was not the one given
    (key, version, data; data None: absent)."""

    written: dict[str, int] | None
    stale: list[tuple[str, int, bytes | None]]


class CloudLock(NamedTuple):
    """``cloud_locked``'s yield: the locked parts as stored (key, version, data), and the
    check-and-write of one group inside the lock (None: it would have waited too long for a
    row beyond the lock; nothing was written)."""

    parts: list[tuple[str, int, bytes | None]]
    sync: Callable[[CloudGroup], Awaitable[CloudSync | None]]


def _record(row: tuple[Any, ...]) -> TrackerRecord:
    record = TrackerRecord(*row)
    # BYTEA comes back as memoryview/bytes; the rest of the code expects bytes.
    return record._replace(detail=bytes(record.detail))


def _tracker_where(query: TrackerQuery) -> tuple[str, list[Any]]:
    """The SQL form of ``TrackerQuery.matches`` (as in the SQLite store)."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.host is not None:
        clauses.append("host = %s")
        args.append(query.host)
    for session in query.sessions:
        clauses.append("session = %s")
        args.append(session)
    for c in query.comparisons:
        # field and op come from fixed tables in tracker.py, never from the client
        clauses.append(f"{c.field} {c.op} %s")
        args.append(c.value)
    for word in query.words:
        # translate() folds A-Z only, as tracker.ascii_lower does (lower() would follow the
        # database's locale)
        fold = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        in_function = fold.format("function")
        in_scenario = fold.format("COALESCE(scenario, '')")
        clauses.append(f"(strpos({in_function}, %s) > 0 OR strpos({in_scenario}, %s) > 0)")
        args += [word, word]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
