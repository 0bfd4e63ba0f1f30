"""The Store protocol: everything durable in the virtualization domain goes through it.

Methods are async so that a networked backend (PostgreSQL) fits the same shape;
the SQLite backend runs its tiny indexed statements inline, since a thread hop
would cost more than the statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from simulacra.virtual.delays import DelayPolicy
from simulacra.virtual.model import Response, Scenario, Session, Stub
from simulacra.virtual.tracker import TrackerQuery, TrackerRecord

# A stub as the SQL stores keep it: what ``stub_row`` writes (in this order), what
# ``stub_of_row`` reads (``STUB_READ_COLUMNS``), and what ``stub_update_row`` replaces.
STUB_WRITE_COLUMNS = (
    "id, scenario, matchers_hash, priority, recorded, space_used, request, responses, args"
)
STUB_READ_COLUMNS = "seq, id, scenario, priority, recorded, request, responses, args"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def stub_row(stub: Stub) -> tuple[Any, ...]:
    return (
        stub.id,
        stub.scenario,
        stub.matchers_hash,
        stub.priority,
        stub.recorded,
        stub.space_used,
        dumps(stub.request),
        dumps([r.to_dict() for r in stub.responses]),
        dumps(stub.args),
    )


def stub_update_row(stub: Stub) -> tuple[Any, ...]:
    """(priority, space_used, responses, args, id): what a stub whose sequence grew changes."""
    responses = dumps([r.to_dict() for r in stub.responses])
    return (stub.priority, stub.space_used, responses, dumps(stub.args), stub.id)


def stub_of_row(row: tuple[Any, ...]) -> Stub:
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


def first_stubs_by_hash(rows: Iterable[tuple[Any, ...]]) -> dict[str, Stub]:
    """``find_stubs``'s answer from its rows (``STUB_READ_COLUMNS`` then ``matchers_hash``,
    in any order): each hash's stub of the lowest seq, the first column."""
    found: dict[str, Stub] = {}
    for *row, matchers_hash in sorted(rows):
        if matchers_hash not in found:
            found[matchers_hash] = stub_of_row(tuple(row))
    return found


@dataclass(frozen=True)
class StubStats:
    count: int = 0
    space_used: int = 0  # bytes of stub JSON
    last_recorded: str | None = None


@dataclass
class ScenarioImport:
    """One uploaded archive: a new scenario, its stubs, and the session to begin."""

    scenario: Scenario
    stubs: list[Stub]
    session: Session | None  # None when the archive has no stubs to play


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise unless the store answers a trivial query (``GET /health``; the caller bounds
        the wait)."""

    # scenarios
    async def create_scenario(self, scenario: Scenario) -> None:
        """Insert; raise ``AlreadyExists`` when the name is taken."""

    async def get_scenario(self, name: str) -> Scenario | None: ...
    async def list_scenarios(self) -> list[Scenario]: ...
    async def delete_scenario(self, name: str) -> bool:
        """Remove the scenario with its stubs and sessions; False when it did not exist."""

    # stubs
    async def list_stubs(
        self, scenario: str, offset: int = 0, limit: int | None = None, after: int = 0
    ) -> list[Stub]:
        """In insertion order; ``limit`` of them from ``offset`` (a page of a large one),
        counted among those whose ``seq`` is above ``after`` (a page read after another)."""

    async def stub_stats(self, scenario: str) -> StubStats: ...
    async def find_stubs(self, scenario: str, matchers_hashes: Sequence[str]) -> dict[str, Stub]:
        """matchers_hash -> the first stored stub with it, for those of ``matchers_hashes``
        that the scenario holds (one statement: callers pass a few hundred at a time)."""

    async def get_stub(self, scenario: str, stub_id: str) -> Stub | None:
        """The stub with this id in this scenario (None: not there, or deleted)."""

    async def insert_stub(self, stub: Stub) -> Stub:
        """Assign ``id`` and ``seq``; bump the scenario's version."""

    async def update_stub(self, stub: Stub) -> None:
        """Replace responses/priority/args; bump the scenario's version."""

    async def write_stubs(self, scenario: str, new: list[Stub], changed: list[Stub]) -> None:
        """Insert ``new`` (assigning ids, not seqs) and replace the responses of ``changed``
        in one transaction, all or nothing; bump the scenario's version once. Many stubs at
        once (a bulk import): the store keeps the loop free meanwhile."""

    async def delete_stubs(self, scenario: str) -> int: ...
    async def import_scenarios(self, imports: list[ScenarioImport]) -> None:
        """Create every scenario with its stubs and session in one transaction: raise
        ``AlreadyExists`` (storing nothing) when a name is taken. Assigns stub ids/seqs."""

    # sessions
    async def list_sessions(self) -> list[Session]: ...
    async def get_session(self, host: str, name: str) -> Session | None: ...
    async def save_session(self, session: Session) -> None:
        """Insert or replace, keyed by (host, name), with its ``port`` binding (None: unbound).
        The call that binds or unbinds a port."""

    async def save_sessions(self, sessions: list[Session]) -> None:
        """Insert or update, keyed by (host, name), but keep an existing row's ``port`` (a
        new row gets the session's). The periodic flush of last_used writes through this:
        with a shared store its copies may predate a binding another instance made."""

    # delay policies (durable; the service keeps them cached in memory)
    async def list_delay_policies(self) -> list[DelayPolicy]: ...
    async def save_delay_policy(self, policy: DelayPolicy) -> bool:
        """Insert or replace, keyed by (host, name); True when it was new."""

    async def delete_delay_policy(self, host: str, name: str) -> bool:
        """False when there was no such policy."""

    # tracker (written in batches, off the hot path)
    async def clear(self) -> None:
        """Delete every scenario, stub, session, delay policy and tracker record (a reset),
        all or nothing. Tracker ids may start again from 1 (SQLite)."""
        ...

    async def add_tracker_records(self, records: list[TrackerRecord], cap: int) -> None:
        """Append, then delete the oldest records beyond the newest ``cap``."""

    async def tracker_records(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> tuple[int, list[TrackerRecord]]:
        """(how many match, one page of them newest first)."""

    async def tracker_record(self, record_id: int) -> TrackerRecord | None: ...
