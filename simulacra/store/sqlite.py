"""Embedded SQLite store: one file, WAL, survives restarts.

Statements are tiny and indexed, so they run inline on the event loop: a thread
hop (aiosqlite) costs more than the statement itself. Every write commits before
the method returns, so an acknowledged write is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from simulacra.background import SHARE, Steps, lower_priority, run_in_slices
from simulacra.errors import AlreadyExists, DomainError
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
from simulacra.virtual.delays import DelayPolicy, parse_policy
from simulacra.virtual.model import SESSION_COLUMNS, Scenario, Session, Stub
from simulacra.virtual.tracker import TrackerQuery, TrackerRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS scenario (
    name     TEXT PRIMARY KEY,
    created  TEXT NOT NULL,
    version  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS stub (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    scenario       TEXT NOT NULL REFERENCES scenario(name) ON DELETE CASCADE,
    matchers_hash  TEXT NOT NULL,
    priority       INTEGER,
    recorded       TEXT NOT NULL,
    space_used     INTEGER NOT NULL,
    request        TEXT NOT NULL,
    responses      TEXT NOT NULL,
    args           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stub_scenario ON stub(scenario, seq);
CREATE INDEX IF NOT EXISTS stub_hash ON stub(scenario, matchers_hash);
-- stub_stats reads only this index (a scenario's stubs may be 100,000 large rows).
CREATE INDEX IF NOT EXISTS stub_stats ON stub(scenario, space_used, recorded);
CREATE TABLE IF NOT EXISTS session (
    host       TEXT NOT NULL,
    name       TEXT NOT NULL,
    scenario   TEXT NOT NULL REFERENCES scenario(name) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    loaded     TEXT,
    last_used  TEXT,
    port       INTEGER,
    upstream   TEXT,
    PRIMARY KEY (host, name)
);
CREATE TABLE IF NOT EXISTS delay_policy (
    host      TEXT NOT NULL,
    name      TEXT NOT NULL,
    document  TEXT NOT NULL,
    PRIMARY KEY (host, name)
);
-- Ids only grow (the newest row is never deleted, so a rowid is never reused) and only
-- the oldest rows are deleted (the cap): newest first is rowid order, needing no index.
-- Columns follow TrackerRecord's fields, so a record is written as the tuple it is.
CREATE TABLE IF NOT EXISTS tracker (
    id           INTEGER PRIMARY KEY,
    function     TEXT NOT NULL,
    scenario     TEXT,
    session      TEXT,
    host         TEXT NOT NULL,
    return_code  INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    delay        INTEGER NOT NULL,
    detail       BLOB NOT NULL,
    recorded     INTEGER NOT NULL DEFAULT 0,
    stub_id      TEXT
);
"""

# Columns added since a table was first created: CREATE TABLE IF NOT EXISTS leaves an
# existing database's table as it was, so ``open()`` adds whichever of these it lacks.
# (table, column, declaration); append only, and keep SCHEMA's CREATE TABLE in step.
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    ("session", "port", "INTEGER"),
    ("session", "upstream", "TEXT"),
    ("tracker", "recorded", "INTEGER NOT NULL DEFAULT 0"),
    ("tracker", "stub_id", "TEXT"),
]


log = logging.getLogger("simulacra.store")
T = TypeVar("T")


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._bulk: asyncio.Future[None] | None = None  # while _bulk_transaction holds the db
        # Tracker queries (a filtered count of 100,000 rows: tens of ms) run on this thread
        # with a connection of their own: SQLite lets go of the interpreter while it scans,
        # so the loop goes on meanwhile. Only for a file: a private database (":memory:",
        # or "", SQLite's temporary one) is one connection's.
        self._reader: ThreadPoolExecutor | None = None
        self._reader_db = threading.local()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @property
    def private(self) -> bool:
        """One connection's database, gone when it closes: ":memory:", or "" (SQLite's
        private temporary database, which pages out to a deleted file past its cache)."""
        return self.path in (":memory:", "")

    async def open(self) -> None:
        if not self.private:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.private:  # gone at close anyway: nothing to make durable
            db.execute("PRAGMA journal_mode=MEMORY")
            db.execute("PRAGMA synchronous=OFF")
        else:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        _add_missing_columns(db)
        self._db = db

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ping(self) -> None:
        """Health: the open connection answers, and the file can still be opened and read
        (deleted or replaced under the server, its writes would not survive a restart)."""
        if self._bulk is None:  # else the connection is busy writing: it answers
            self.db.execute("SELECT 1").fetchone()
        if not self.private:
            await asyncio.to_thread(_read_schema, self.path)

    # scenarios -------------------------------------------------------------

    async def create_scenario(self, scenario: Scenario) -> None:
        try:
            db = await self._ready()
            db.execute(
                "INSERT INTO scenario (name, created, version) VALUES (?, ?, ?)",
                (scenario.name, scenario.created, scenario.version),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"Scenario {scenario.name} already exists") from None

    async def get_scenario(self, name: str) -> Scenario | None:
        db = await self._ready()
        row = db.execute(
            "SELECT name, created, version FROM scenario WHERE name = ?", (name,)
        ).fetchone()
        return Scenario(*row) if row else None

    async def list_scenarios(self) -> list[Scenario]:
        db = await self._ready()
        rows = db.execute("SELECT name, created, version FROM scenario ORDER BY name")
        return [Scenario(*row) for row in rows]

    async def delete_scenario(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM session WHERE scenario = ?", (name,))
            db.execute("DELETE FROM stub WHERE scenario = ?", (name,))
            return db.execute("DELETE FROM scenario WHERE name = ?", (name,)).rowcount > 0

        return await self._bulk_transaction(delete)

    # stubs -----------------------------------------------------------------

    async def list_stubs(
        self, scenario: str, offset: int = 0, limit: int | None = None, after: int = 0
    ) -> list[Stub]:
        db = await self._ready()
        rows = db.execute(
            f"SELECT {STUB_READ_COLUMNS} FROM stub WHERE scenario = ? AND seq > ? ORDER BY seq"
            " LIMIT ? OFFSET ?",
            (scenario, after, -1 if limit is None else limit, offset),
        )
        return [stub_of_row(row) for row in rows]

    async def stub_stats(self, scenario: str) -> StubStats:
        db = await self._ready()
        count, space, last = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(space_used), 0), MAX(recorded) FROM stub"
            " WHERE scenario = ?",
            (scenario,),
        ).fetchone()
        return StubStats(count, space, last)

    async def find_stubs(self, scenario: str, matchers_hashes: Sequence[str]) -> dict[str, Stub]:
        db = await self._ready()
        marks = ",".join("?" * len(matchers_hashes))
        # Ordered here, not by ORDER BY seq: with it SQLite walks the scenario's stubs in
        # seq order (100,000 rows: 50 ms for 200 hashes) instead of looking each one up.
        rows = db.execute(
            f"SELECT {STUB_READ_COLUMNS}, matchers_hash FROM stub WHERE scenario = ?"
            f" AND matchers_hash IN ({marks})",
            (scenario, *matchers_hashes),
        ).fetchall()
        return first_stubs_by_hash(rows)

    async def get_stub(self, scenario: str, stub_id: str) -> Stub | None:
        db = await self._ready()
        row = db.execute(
            f"SELECT {STUB_READ_COLUMNS} FROM stub WHERE scenario = ? AND id = ?",
            (scenario, stub_id),
        ).fetchone()
        return stub_of_row(row) if row else None

    async def insert_stub(self, stub: Stub) -> Stub:
        stub.id = stub.id or secrets.token_hex(12)
        with await self._transaction() as db:
            cursor = db.execute(_STUB_INSERT, stub_row(stub))
            self._bump(db, stub.scenario)
        stub.seq = cursor.lastrowid or 0
        return stub

    async def write_stubs(self, scenario: str, new: list[Stub], changed: list[Stub]) -> None:
        inserts, updates = await run_in_slices(_rows(new, changed))

        def write(db: sqlite3.Connection) -> None:
            db.executemany(_STUB_INSERT, inserts)
            db.executemany(_STUB_UPDATE, updates)
            self._bump(db, scenario)

        await self._bulk_transaction(write)

    async def _bulk_transaction(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """``write(db)`` in one transaction, on a thread: inserting or deleting 100,000
        stubs takes a second of SQLite, which lets go of the interpreter meanwhile. The
        loop's own statements wait for it (``_ready``), so none runs inside it."""
        db = await self._ready()
        self._bulk = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.to_thread(_in_transaction, db, write)
        finally:
            self._bulk.set_result(None)
            self._bulk = None

    async def update_stub(self, stub: Stub) -> None:
        with await self._transaction() as db:
            db.execute(_STUB_UPDATE, stub_update_row(stub))
            self._bump(db, stub.scenario)

    async def delete_stubs(self, scenario: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            count = db.execute("DELETE FROM stub WHERE scenario = ?", (scenario,)).rowcount
            self._bump(db, scenario)
            return count

        return await self._bulk_transaction(delete)

    async def import_scenarios(self, imports: list[ScenarioImport]) -> None:
        rows = [(await run_in_slices(_rows(item.stubs, [])))[0] for item in imports]

        def write(db: sqlite3.Connection) -> None:  # all archives of an upload, or none
            for item, inserts in zip(imports, rows, strict=True):
                scenario = item.scenario
                try:
                    db.execute(
                        "INSERT INTO scenario (name, created, version) VALUES (?, ?, ?)",
                        (scenario.name, scenario.created, scenario.version + 1),
                    )
                except sqlite3.IntegrityError:
                    raise AlreadyExists(f"Scenario {scenario.name} already exists") from None
                db.executemany(_STUB_INSERT, inserts)
                if item.session is not None:
                    db.execute(self._SESSION_SAVE, item.session.row())

        await self._bulk_transaction(write)

    @staticmethod
    def _bump(db: sqlite3.Connection, scenario: str) -> None:
        db.execute("UPDATE scenario SET version = version + 1 WHERE name = ?", (scenario,))

    # sessions --------------------------------------------------------------

    _SESSION_UPSERT = (
        f"INSERT INTO session ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (host, name) DO UPDATE SET scenario = excluded.scenario,"
        " status = excluded.status, loaded = excluded.loaded, last_used = excluded.last_used"
    )
    # save_session writes the port binding and the upstream too; save_sessions keeps the
    # stored ones.
    _SESSION_SAVE = _SESSION_UPSERT + ", port = excluded.port, upstream = excluded.upstream"

    async def list_sessions(self) -> list[Session]:
        db = await self._ready()
        rows = db.execute(f"SELECT {SESSION_COLUMNS} FROM session ORDER BY name")
        return [Session.from_row(row) for row in rows]

    async def get_session(self, host: str, name: str) -> Session | None:
        db = await self._ready()
        row = db.execute(
            f"SELECT {SESSION_COLUMNS} FROM session WHERE host = ? AND name = ?",
            (host, name),
        ).fetchone()
        return Session.from_row(row) if row else None

    async def save_session(self, session: Session) -> None:
        with await self._transaction() as db:
            db.execute(self._SESSION_SAVE, session.row())

    async def save_sessions(self, sessions: list[Session]) -> None:
        if not sessions:
            return
        with await self._transaction() as db:
            db.executemany(self._SESSION_UPSERT, [s.row() for s in sessions])

    # delay policies --------------------------------------------------------

    async def list_delay_policies(self) -> list[DelayPolicy]:
        policies = []
        db = await self._ready()
        for host, name, document in db.execute(
            "SELECT host, name, document FROM delay_policy ORDER BY host, name"
        ):
            try:
                policies.append(parse_policy(orjson.loads(document), host))
            except DomainError as exc:  # stored by an older version with looser rules
                log.warning("skipping stored delay policy %s:%s: %s", host, name, exc.message)
        return policies

    async def save_delay_policy(self, policy: DelayPolicy) -> bool:
        with await self._transaction() as db:
            exists = db.execute(
                "SELECT 1 FROM delay_policy WHERE host = ? AND name = ?", policy.key
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO delay_policy (host, name, document) VALUES (?, ?, ?)",
                (*policy.key, dumps(policy.document())),
            )
        return exists is None

    async def delete_delay_policy(self, host: str, name: str) -> bool:
        db = await self._ready()
        cursor = db.execute("DELETE FROM delay_policy WHERE host = ? AND name = ?", (host, name))
        return cursor.rowcount > 0

    async def clear(self) -> None:
        def delete(db: sqlite3.Connection) -> None:
            for table in ("session", "stub", "scenario", "delay_policy", "tracker"):
                db.execute(f"DELETE FROM {table}")  # fixed names, never a client's

        await self._bulk_transaction(delete)

    # tracker ---------------------------------------------------------------

    _TRACKER_INSERT = (
        f"INSERT INTO tracker ({', '.join(TrackerRecord._fields[1:])})"
        f" VALUES ({', '.join('?' * (len(TrackerRecord._fields) - 1))})"
    )

    async def add_tracker_records(self, records: list[TrackerRecord], cap: int) -> None:
        with await self._transaction() as db:
            if records:
                # Without the id (SQLite assigns it) and with the detail as a bytearray: the
                # sqlite3 module binds str, int, float and bytearray directly but looks up an
                # adapter for None and bytes, which cost more than the rest of the row
                # (callgrind: ~6,600 instructions of ~47,000 per tracked call).
                db.executemany(
                    self._TRACKER_INSERT, [(*r[1:8], bytearray(r[8]), *r[9:]) for r in records]
                )
            # Ids are contiguous (only the oldest are ever deleted), so this keeps
            # exactly the newest ``cap`` with a range delete on the rowid.
            db.execute("DELETE FROM tracker WHERE id <= (SELECT MAX(id) FROM tracker) - ?", (cap,))

    async def tracker_records(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> tuple[int, list[TrackerRecord]]:
        return await self._read(_tracker_page, query, skip, limit)

    async def tracker_record(self, record_id: int) -> TrackerRecord | None:
        return await self._read(_tracker_record, record_id)

    async def _read(self, read: Callable[..., T], *args: Any) -> T:
        """``read(db, *args)`` on the reader thread's own connection (a file store), or
        inline on the loop's (a private database)."""
        if self.private:
            return read(await self._ready(), *args)
        if self._reader is None:
            self._reader = ThreadPoolExecutor(
                1, thread_name_prefix="simulacra-sqlite-reader", initializer=lower_priority
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._on_reader, read, args)

    def _on_reader(self, read: Callable[..., T], args: tuple[Any, ...]) -> T:
        state = self._reader_db  # the reader thread's own
        db = getattr(state, "db", None)
        if db is None:
            db = state.db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA busy_timeout=5000")
        # Reads asked back to back (a client polling tracker queries as fast as it can, each
        # a scan of 100,000 records) keep to SHARE of a core, as work on the loop does: a
        # read waits for the CPU time of the one before times (1 - SHARE) / SHARE since it
        # ended. Niced, the scans still took half a core beside playback on two cores, and
        # playback lost a quarter of its rate (bench.scale, item 1a).
        rest = getattr(state, "rest_until", 0.0) - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        started = time.thread_time()
        try:
            return read(db, *args)
        finally:
            spent = time.thread_time() - started
            state.rest_until = time.monotonic() + spent * (1 - SHARE) / SHARE

    # helpers ---------------------------------------------------------------

    async def _ready(self) -> sqlite3.Connection:
        """The connection, once no bulk write holds it (``write_stubs`` runs one on a
        thread; meanwhile the loop's statements wait here, not on the connection)."""
        while self._bulk is not None:
            await asyncio.shield(self._bulk)
        return self.db

    async def _transaction(self) -> _Transaction:
        return _Transaction(await self._ready())


_STUB_INSERT = f"INSERT INTO stub ({STUB_WRITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_STUB_UPDATE = "UPDATE stub SET priority = ?, space_used = ?, responses = ?, args = ? WHERE id = ?"


def _rows(
    new: list[Stub], changed: list[Stub]
) -> Steps[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """``write_stubs``' rows, built a few hundred at a time (ids assigned to new stubs)."""
    inserts, updates = [], []
    for i, stub in enumerate(new):
        stub.id = stub.id or secrets.token_hex(12)
        inserts.append(stub_row(stub))
        if i % 200 == 199:
            yield
    for i, stub in enumerate(changed):
        updates.append(stub_update_row(stub))
        if i % 200 == 199:
            yield
    return inserts, updates


def _in_transaction(db: sqlite3.Connection, write: Callable[[sqlite3.Connection], T]) -> T:
    with _Transaction(db):
        return write(db)


_TRACKER_COLUMNS = ", ".join(TrackerRecord._fields)


def _tracker_page(
    db: sqlite3.Connection, query: TrackerQuery, skip: int, limit: int
) -> tuple[int, list[TrackerRecord]]:
    where, args = _tracker_where(query)
    (total,) = db.execute(f"SELECT COUNT(*) FROM tracker{where}", args).fetchone()
    rows = db.execute(
        f"SELECT {_TRACKER_COLUMNS} FROM tracker{where} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*args, limit, skip],
    )
    return total, [TrackerRecord(*row) for row in rows]


def _tracker_record(db: sqlite3.Connection, record_id: int) -> TrackerRecord | None:
    row = db.execute(
        f"SELECT {_TRACKER_COLUMNS} FROM tracker WHERE id = ?", (record_id,)
    ).fetchone()
    return TrackerRecord(*row) if row else None


def _tracker_where(query: TrackerQuery) -> tuple[str, list[Any]]:
    """The SQL form of ``TrackerQuery.matches`` (tests check that the two agree)."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.host is not None:
        clauses.append("host = ?")
        args.append(query.host)
    for session in query.sessions:
        clauses.append("session = ?")
        args.append(session)
    for c in query.comparisons:
        # field and op come from fixed tables in tracker.py, never from the client
        clauses.append(f"{c.field} {c.op} ?")
        args.append(c.value)
    for word in query.words:
        # SQLite's lower() folds A-Z only, as tracker.ascii_lower does
        clauses.append(
            "(instr(lower(function), ?) > 0 OR instr(lower(COALESCE(scenario, '')), ?) > 0)"
        )
        args += [word, word]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _read_schema(path: str) -> None:
    """Open ``path`` read-only, as a new connection would, and read its schema; raises
    sqlite3.Error (or OSError) when it cannot."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=1.0)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    finally:
        db.close()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to SCHEMA (see ADDED_COLUMNS). In one
    write transaction, so two processes opening the same file don't both add a column."""
    with _Transaction(db):
        for table, column, declaration in ADDED_COLUMNS:
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                log.info("store schema: added column %s.%s", table, column)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
