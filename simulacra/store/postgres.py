"""Shared PostgreSQL store: several instances behind a load balancer, one database.

psycopg 3 (async) with a connection pool. The schema is created and migrated at
``open()`` by the numbered SQL files in ``migrations/postgres/``, applied in one
transaction under an advisory lock, so instances starting together don't race.

Every write that changes what playback compiles (scenarios, stubs, sessions,
delay policies) sends ``NOTIFY simulacra, '<kind> <key>'`` in its transaction, so
other instances learn of it when it commits (see ``listen``).

A lost connection surfaces as ``Unavailable`` (503) instead of crashing the
instance; the pool replaces broken connections, so the instance recovers when
the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from simulacra.config import split_url
from simulacra.errors import AlreadyExists, DomainError, Unavailable
from simulacra.store.base import ScenarioImport, StubStats
from simulacra.virtual.delays import DelayPolicy, parse_policy
from simulacra.virtual.model import SESSION_COLUMNS, Response, Scenario, Session, Stub
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


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration file, in order."""
    folder = resources.files("simulacra.store.migrations") / "postgres"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class PostgresStore:
    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        self.url, self.schema = split_url(url)
        self._pool: AsyncConnectionPool | None = None
        self._min_size = min_size
        self._max_size = max_size
        self._listening = False
        self.failures = 0  # operations that found the database out of reach (/metrics)

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
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        await pool.open(wait=True, timeout=15.0)
        self._pool = pool
        await self.migrate()

    async def close(self) -> None:
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
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.failures += 1
            log.warning("store unavailable: %s", exc)
            raise Unavailable("the store (PostgreSQL) is unavailable; retry shortly") from exc

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

    @staticmethod
    async def _notify(conn: psycopg.AsyncConnection[Any], kind: str, key: str) -> None:
        # Sent inside the writing transaction: delivered only if it commits.
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{kind} {key}"))

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
                    await conn.execute(f"LISTEN {CHANNEL}")
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

    _STUB_COLUMNS = "seq, id, scenario, priority, recorded, request, responses, args"
    _STUB_INSERT = (
        "INSERT INTO stub (id, scenario, matchers_hash, priority, recorded, space_used,"
        " request, responses, args) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq"
    )

    @staticmethod
    def _stub(row: tuple[Any, ...]) -> Stub:
        seq, id_, scenario, priority, recorded, request, responses, args = row
        return Stub(
            scenario=scenario,
            request=orjson.loads(request),
            responses=[Response.from_dict(r) for r in orjson.loads(responses)],
            priority=priority,
            args=orjson.loads(args),
            recorded=recorded,
            id=id_,
            seq=seq,
        )

    @staticmethod
    def _stub_row(stub: Stub) -> tuple[Any, ...]:
        return (
            stub.id,
            stub.scenario,
            stub.matchers_hash,
            stub.priority,
            stub.recorded,
            stub.space_used,
            _dumps(stub.request),
            _dumps([r.to_dict() for r in stub.responses]),
            _dumps(stub.args),
        )

    async def list_stubs(
        self, scenario: str, offset: int = 0, limit: int | None = None
    ) -> list[Stub]:
        rows = await self._fetchall(
            f"SELECT {self._STUB_COLUMNS} FROM stub WHERE scenario = %s ORDER BY seq"
            " LIMIT %s OFFSET %s",
            (scenario, limit, offset),  # LIMIT NULL: all of them
        )
        return [self._stub(row) for row in rows]

    async def stub_stats(self, scenario: str) -> StubStats:
        row = await self._fetchone(
            "SELECT COUNT(*), COALESCE(SUM(space_used), 0), MAX(recorded) FROM stub"
            " WHERE scenario = %s",
            (scenario,),
        )
        assert row is not None
        count, space, last = row
        return StubStats(int(count), int(space), last)

    async def find_stub(self, scenario: str, matchers_hash: str) -> Stub | None:
        row = await self._fetchone(
            f"SELECT {self._STUB_COLUMNS} FROM stub WHERE scenario = %s AND matchers_hash = %s"
            " ORDER BY seq LIMIT 1",
            (scenario, matchers_hash),
        )
        return self._stub(row) if row else None

    async def get_stub(self, scenario: str, stub_id: str) -> Stub | None:
        row = await self._fetchone(
            f"SELECT {self._STUB_COLUMNS} FROM stub WHERE scenario = %s AND id = %s",
            (scenario, stub_id),
        )
        return self._stub(row) if row else None

    async def insert_stub(self, stub: Stub) -> Stub:
        stub.id = stub.id or secrets.token_hex(12)
        async with self._tx() as conn:
            row = await (await conn.execute(self._STUB_INSERT, self._stub_row(stub))).fetchone()
            await self._bump(conn, stub.scenario)
        stub.seq = row[0] if row else 0
        return stub

    async def update_stub(self, stub: Stub) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE stub SET priority = %s, space_used = %s, responses = %s, args = %s"
                " WHERE id = %s",
                (
                    stub.priority,
                    stub.space_used,
                    _dumps([r.to_dict() for r in stub.responses]),
                    _dumps(stub.args),
                    stub.id,
                ),
            )
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
                        cursor = await conn.execute(self._STUB_INSERT, self._stub_row(stub))
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
                (*policy.key, _dumps(policy.document())),
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

    async def next_response(self, session_key: str, stub_id: str) -> int:
        """Advance the counter of (session, stub) atomically; return the 0-based index of
        this playback (the caller clamps it to the last response)."""
        row = await self._fetchone(
            "INSERT INTO sequence_counter (session_key, stub_id, n) VALUES (%s, %s, 1)"
            " ON CONFLICT (session_key, stub_id) DO UPDATE SET n = sequence_counter.n + 1"
            " RETURNING n",
            (session_key, stub_id),
        )
        return int(row[0]) - 1 if row else 0

    async def reset_counters(self, session_key: str) -> None:
        """Forget the counters of a session (it was begun again)."""
        async with self._conn() as conn:
            await conn.execute(
                "DELETE FROM sequence_counter WHERE session_key = %s", (session_key,)
            )

    # cloud-mock state (--shared-cloud) -------------------------------------

    @contextlib.asynccontextmanager
    async def locked_cloud_state(
        self, known_version: int | None
    ) -> AsyncIterator[LockedCloudState]:
        """Lock the cloud-state row for one transaction; commit when the block ends.

        The state's bytes are fetched only when the stored version is not ``known_version``
        (the one the caller's memory holds). Other instances' cloud requests wait on the lock
        until this transaction ends, so the state changes one request at a time.
        """
        # Pipelined: BEGIN, SET and SELECT go in one round trip, UPDATE and COMMIT in another
        # (this runs for every cloud request, and round trips were most of its cost).
        async with self._conn() as conn:
            # Pipelines need libpq 14+ (psycopg[binary] bundles one); without, one at a time.
            pipeline = conn.pipeline() if psycopg.AsyncPipeline.is_supported() else None
            async with pipeline or contextlib.nullcontext(), conn.transaction():
                yield await self._lock_cloud_state(conn, known_version)

    @staticmethod
    async def _lock_cloud_state(
        conn: psycopg.AsyncConnection[Any], known_version: int | None
    ) -> LockedCloudState:
        # A process stuck while holding the lock must not stall every instance for good.
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        cursor = await conn.execute(
            "SELECT version, CASE WHEN version = %s THEN NULL ELSE data END"
            " FROM cloud_state WHERE id = 1 FOR UPDATE",
            (known_version,),
        )
        row = await cursor.fetchone()
        if row is None:
            raise RuntimeError("the cloud_state row is missing (migration 0002 creates it)")
        data = None if row[1] is None else bytes(row[1])
        return LockedCloudState(conn, int(row[0]), data)

    async def clear(self) -> None:
        async with self._tx() as conn:
            for table in ("session", "stub", "scenario", "delay_policy", "sequence_counter"):
                await conn.execute(f"DELETE FROM {table}")  # fixed names, never a client's
            await conn.execute("DELETE FROM tracker")  # its sequence keeps growing
            await self._notify(conn, "*", "")  # every instance drops its caches

    # tracker ---------------------------------------------------------------

    _TRACKER_FIELDS = TrackerRecord._fields[1:]  # the id is assigned by the sequence
    _TRACKER_COLUMNS = ", ".join(TrackerRecord._fields)

    async def add_tracker_records(self, records: list[TrackerRecord], cap: int) -> None:
        async with self._tx() as conn:
            if records:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        f"INSERT INTO tracker ({', '.join(self._TRACKER_FIELDS)})"
                        f" VALUES ({', '.join(['%s'] * len(self._TRACKER_FIELDS))})",
                        [tuple(r)[1:] for r in records],
                    )
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


class LockedCloudState:
    """The cloud-state row, locked by the current transaction (``locked_cloud_state``)."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], version: int, data: bytes | None
    ) -> None:
        self._conn = conn
        self.version = version
        # None: unchanged since the caller's ``known_version``, or empty (never written, or
        # reset): the state every process starts with.
        self.data = data

    async def write(self, data: bytes) -> int:
        """Store ``data`` as the next version (committed with the transaction); return it."""
        self.version += 1
        await self._conn.execute(
            "UPDATE cloud_state SET version = %s, data = %s WHERE id = 1", (self.version, data)
        )
        return self.version


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
