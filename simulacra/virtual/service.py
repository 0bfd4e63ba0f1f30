"""The virtualization domain: scenarios, sessions, stubs, playback.

Takes plain values, returns plain values, raises ``simulacra.errors`` types.
Sessions and compiled stub indexes are held in memory (loaded at start, written
through to the store on change), so playback never waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulacra.background import Slices, Steps, emptying, run_in_slices
from simulacra.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    Invalid,
    NoMatch,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from simulacra.store.base import ScenarioImport, Store
from simulacra.virtual.archive import ArchiveContent, short_name
from simulacra.virtual.delays import DelayPolicy, sample_ms, split_name
from simulacra.virtual.matching import (
    LARGE_BODY,
    LARGE_REQUEST_WORK_US,
    NearMiss,
    PlaybackRequest,
    StubIndex,
)
from simulacra.virtual.model import (
    DORMANT,
    MODES,
    PLAYBACK,
    RECORD,
    Response,
    Scenario,
    Session,
    Stub,
    check_name,
    qualify,
    stub_from_document,
)
from simulacra.virtual.playback import SequenceCounters
from simulacra.virtual.templates import is_template, render_response

log = logging.getLogger("simulacra")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PutResult:
    status: str  # "created" | "updated" | "ignored"
    stub: Stub

    @property
    def message(self) -> str:
        if self.status == "created":
            return f"inserted scenario_stub: {self.stub.id}"
        if self.status == "updated":
            return "updated with stateful response"
        return "ignored: identical stub exists (stateful is false)"


class Awaiting:
    """A playback that waits only for its sequence's position from a shared store:
    ``position`` resolves to it, and ``answer(position)`` is then the playback's (stub id,
    response). Plain values and a future, no coroutine: the data plane answers from the
    future's callback (``Playback.run``), with no task per playback."""

    __slots__ = ("answer", "position")

    def __init__(
        self, position: asyncio.Future[int], answer: Callable[[int], tuple[str, Response]]
    ) -> None:
        self.position = position
        self.answer = answer


NO_MATCH = "E017:No matching response found"
# Stubs read from the store at a time, for an index or a listing (a few ms of the loop).
STUB_PAGE = 100
# Matchers hashes an import looks up per statement (SQLite: ~1 ms for 100).
FIND_STUBS_AT_ONCE = 100
# An index of more stubs than this is freed in slices (``_let_go``).
RELEASED_AT_ONCE = 2000
# Requests with a large body are matched here, one at a time: one thread, so that however
# many arrive, the loop shares the interpreter with at most one of them.
_MATCHING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simulacra-matching")


class VirtualService:
    def __init__(self, store: Store, now: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.now = now
        self._sessions: dict[tuple[str, str], Session] = {}  # (host, name) -> session
        self._indexes: dict[str, StubIndex] = {}  # scenario -> compiled stubs
        # An index being built (in slices: 100,000 stubs take seconds), awaited by every
        # request that needs it meanwhile; and each scenario's count of changes, by which a
        # build knows whether what it read is still current when it ends.
        self._building: dict[str, asyncio.Future[StubIndex]] = {}
        self._changes: dict[str, int] = {}
        self._releasing: set[asyncio.Task[None]] = set()  # indexes let go (_let_go)
        self._counters = SequenceCounters()
        self._adding: dict[str, asyncio.Lock] = {}  # scenario -> held while a stub is added
        self._dirty: set[tuple[str, str]] = set()  # sessions with unsaved last_used
        self._stamp_second, self._stamp = -1, ""
        # Delay policies, cached so playback resolves one without the store; PUT and
        # DELETE write through and update the cache, so an edit applies at once.
        self._policies: dict[tuple[str, str], DelayPolicy] = {}
        self.rng = random.Random()
        # A shared store (PostgreSQL) advances sequences in the store, so a stateful stub plays
        # in order whichever instance answers; that is one round-trip per playback of a stub
        # with several responses (docs/scaling.md). Otherwise counters stay in memory.
        self._shared = hasattr(store, "next_response")

    async def start(self) -> None:
        self._sessions = {(s.host, s.name): s for s in await self.store.list_sessions()}
        self._policies = {p.key: p for p in await self.store.list_delay_policies()}

    async def warm(self) -> None:
        """Compile the index of every scenario a session plays (a start runs this in the
        background, so the first playback after a restart finds it built; one arriving
        sooner waits for it, and other requests are served meanwhile)."""
        playing = {s.scenario for s in self._sessions.values() if s.status == PLAYBACK}
        for scenario in sorted(playing):
            try:
                await self._index(scenario)
            except (DomainError, Unavailable) as exc:  # its first playback tries again
                log.warning("index of %s not built at start: %s", scenario, exc)

    async def on_change(self, kind: str, key: str) -> None:
        """Shared state changed (told by the store's LISTEN task, possibly for this instance's
        own write): drop or reload the cached copies. Never called on the hot path.

        ``kind`` is ``scenario`` (key: its name), ``session``/``sessions``, ``policy``,
        ``counters`` (a session's sequences restarted), or ``*`` (resync everything, e.g.
        after the listener reconnected)."""
        if kind == "*":
            await self._rebuild_indexes()
        elif kind == "scenario":
            self._changed(key)
        if kind == "session":  # key: "host name"
            host, _, name = key.partition(" ")
            await self._sync_session(host, name)
        elif kind in ("sessions", "*"):
            await self._reload_sessions()
        if kind in ("policy", "*"):
            self._policies = {p.key: p for p in await self.store.list_delay_policies()}
        # Sequences this instance saw played to their end ask the store again after a reset
        # anywhere (key: "host name"); after a resync, a reset may have been missed.
        if kind == "counters":
            host, _, name = key.partition(" ")
            self._counters.reset((host, name))
        elif kind == "*":
            self._counters.reset_all()

    async def _rebuild_indexes(self) -> None:
        """Every compiled index read again from the store, each swapped in once read.

        Rebuilt rather than dropped: a resync follows the listener's reconnect, when the
        store may go away again; a dropped index would make the next playback wait for the
        store (a 503 while it is down), where the index held still answers. A store failure
        here leaves the rest as they are, and the listener resyncs again once it reconnects.
        """
        for scenario in list(self._indexes):
            self._refresh(scenario)
            await self._index(scenario, current=True)

    async def _reload_sessions(self) -> None:
        stored = {(s.host, s.name): s for s in await self.store.list_sessions()}
        for key, fresh in stored.items():
            self._merge_session(key, fresh)
        for key in [k for k in self._sessions if k not in stored]:
            self._merge_session(key, None)

    def _merge_session(self, key: tuple[str, str], fresh: Session | None) -> None:
        """Take the stored state of one session into the cache (None: it is gone)."""
        mine = self._sessions.get(key)
        if fresh is None:
            if mine is not None:
                del self._sessions[key]  # its scenario was deleted elsewhere
                self._dirty.discard(key)
            return
        if mine is None:
            self._sessions[key] = fresh
            return
        before = (mine.status, mine.loaded, mine.scenario)
        if before != (fresh.status, fresh.loaded, fresh.scenario):
            self._counters.reset(key)  # begun again elsewhere: its sequences restart
        # In place: a request in flight may hold this object.
        mine.status, mine.scenario, mine.loaded = fresh.status, fresh.scenario, fresh.loaded
        mine.port = fresh.port
        if key not in self._dirty:
            mine.last_used = fresh.last_used

    async def _sync_session(self, host: str, name: str) -> Session | None:
        """The session as stored now. With a shared store another instance may have changed
        it before its NOTIFY arrived, so admin calls and cache misses re-read it (one keyed
        query); steady-state playback never does."""
        if self._shared:
            fresh = await self.store.get_session(host, name)
            self._merge_session((host, name), fresh)
        return self._sessions.get((host, name))

    def cached_session(self, host: str, name: str) -> Session | None:
        """The session as this instance holds it, or None (``find_session`` then asks)."""
        return self._sessions.get((host, name))

    async def find_session(self, host: str, name: str) -> Session:
        """``session()``, but a miss is re-read from a shared store before it is NotFound."""
        session = self._sessions.get((host, name))
        if session is None:
            session = await self._sync_session(host, name)
        if session is None:
            raise NotFound(f"session not found - {host}:{name}")
        return session

    async def _reset_counters(self, key: tuple[str, str]) -> None:
        self._counters.reset(key)
        if self._shared:
            await self.store.reset_counters(f"{key[0]} {key[1]}")  # type: ignore[attr-defined]

    async def reset(self) -> None:
        """Forget every scenario, stub, session and delay policy, and the tracker's records
        (the store's ``clear``, in one transaction), and every cached copy of them."""
        await self.store.clear()
        self._sessions = {}
        for scenario in list(self._indexes) + list(self._building):
            self._changed(scenario, drop=True)
        self._policies = {}
        self._counters = SequenceCounters()
        self._dirty = set()
        self._adding = {}

    async def flush(self) -> None:
        """Write playback bookkeeping (last_used) that the hot path kept in memory."""
        keys = self._dirty
        self._dirty = set()
        try:
            await self.store.save_sessions([self._sessions[k] for k in keys if k in self._sessions])
        except Unavailable:
            self._dirty |= keys  # a shared store is briefly down: write them next time
            raise

    # time formats as Mirage shows them
    def _date(self) -> str:
        return self.now().strftime("%Y-%m-%d")

    def _timestamp(self) -> str:
        # Called on every playback; formatting once per second is enough, and with the real
        # clock, time.time() tells whether the second changed without building a datetime.
        if self.now is utcnow and time.time() < self._stamp_second + 1:
            return self._stamp
        now = self.now()
        second = int(now.timestamp())
        if second != self._stamp_second:
            self._stamp_second, self._stamp = second, now.strftime("%Y-%m-%d %H:%M:%S")
        return self._stamp

    # scenarios -------------------------------------------------------------

    async def create_scenario(self, name: str) -> Scenario:
        scenario = Scenario(name=name, created=self.now().isoformat())
        await self.store.create_scenario(scenario)
        return scenario

    async def get_scenario(self, name: str) -> Scenario:
        scenario = await self.store.get_scenario(name)
        if scenario is None:
            raise NotFound(f"Scenario {name} not found")
        return scenario

    async def list_scenarios(self, host: str | None = None) -> list[Scenario]:
        scenarios = await self.store.list_scenarios()
        return [s for s in scenarios if host is None or s.host == host]

    async def describe(self, scenario: Scenario) -> dict[str, Any]:
        stats = await self.store.stub_stats(scenario.name)
        return {
            "name": scenario.name,
            "stub_count": stats.count,
            "recorded": stats.last_recorded or "-",
            "space_used_kb": stats.space_used // 1024,
            "sessions": [s.summary() for s in self.sessions_of(scenario.name)],
        }

    def sessions_of(self, scenario: str) -> list[Session]:
        return sorted(
            (s for s in self._sessions.values() if s.scenario == scenario), key=lambda s: s.name
        )

    def _active_sessions(self, scenario: str) -> list[Session]:
        return [s for s in self.sessions_of(scenario) if s.status != DORMANT]

    async def delete_scenario(self, name: str, force: bool = False) -> None:
        if await self.store.get_scenario(name) is None:
            raise PreconditionFailed(f"Scenario {name} does not exist")
        active = self._active_sessions(name)
        if active and not force:
            names = ", ".join(s.name for s in active)
            raise Conflict(
                f"Scenario {name} has active sessions ({names}): end them first or use force"
            )
        await self.store.delete_scenario(name)
        for session in self.sessions_of(name):
            key = (session.host, session.name)
            self._counters.reset(key)
            del self._sessions[key]
        self._changed(name, drop=True)

    async def import_scenarios(
        self, host: str, archives: list[ArchiveContent]
    ) -> list[dict[str, Any]]:
        """Create each uploaded archive's scenario with its stubs; begin its session in playback.

        All or nothing: every archive is checked before anything is stored, and the
        store writes them all in one transaction.
        """
        imports: list[ScenarioImport] = []
        results: list[dict[str, Any]] = []
        names: set[str] = set()
        keys: set[tuple[str, str]] = set()
        today = self._date()
        for archive in archives:
            try:
                name = qualify(archive.scenario, host)
                session_name = check_name("session", archive.session)
            except Invalid as exc:
                raise Invalid(f"{archive.source}: {exc.message}") from None
            if name in names or await self.store.get_scenario(name) is not None:
                raise AlreadyExists(f"{archive.source}: Scenario {name} already exists")
            names.add(name)
            scenario = Scenario(name=name, created=self.now().isoformat())
            stubs = await run_in_slices(archive_stubs(archive, name, today))
            result: dict[str, Any] = {
                "scenario": archive.scenario,
                "session": session_name,
                "total": len(archive.stubs),
                "name": name,
                "stub_count": len(stubs),
            }
            session = None
            if stubs:
                key = (scenario.host, session_name)
                existing = self._sessions.get(key)
                if existing is not None or key in keys:
                    owner = existing.scenario if existing else "another archive of this upload"
                    raise Invalid(
                        f"{archive.source}: Session {session_name} already belongs to {owner};"
                        " name another session in the YAML"
                    )
                keys.add(key)
                session = Session(scenario.host, session_name, name, PLAYBACK, today, None)
            else:  # nothing to play: Mirage too creates the scenario and begins no session
                result["status"] = [f"no stubs in the archive: session {session_name} not begun"]
            imports.append(ScenarioImport(scenario, stubs, session))
            results.append(result)
        await self.store.import_scenarios(imports)
        for item in imports:
            self._changed(item.scenario.name, drop=True)
            if item.session is not None:
                key = (item.session.host, item.session.name)
                self._sessions[key] = item.session
                self._counters.reset(key)
                await self._index(item.scenario.name)  # compile now, not on the first request
        return results

    # sessions --------------------------------------------------------------

    async def begin_session(
        self,
        scenario_name: str,
        session_name: object,
        mode: object,
        *,
        port: int | None = None,
        append: bool = False,
        upstream: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Begin a session in record or playback mode.

        ``port``: the port a playback session, or one recording an upstream, is bound to
        (the edge has bound it already). ``upstream``: what a recording session forwards to
        and records (``recording.Upstream.to_dict``).
        ``append``: record into a scenario that has stubs (Mirage refused that); new stubs
        join the existing ones, and the same matchers again extend a stub's sequence.
        """
        scenario = await self.get_scenario(scenario_name)
        session_name = check_name("session", session_name)
        if mode not in MODES:
            raise Invalid(f"mode must be 'record' or 'playback', got {mode!r}")
        host = scenario.host
        key = (host, session_name)
        existing = await self._sync_session(host, session_name)
        if existing is not None:
            if existing.scenario != scenario.name:
                raise Invalid(
                    f"Session {session_name} already belongs to scenario {existing.scenario}"
                )
            if existing.status != DORMANT:
                raise Invalid(
                    f"Session {session_name} already exists in {existing.status} mode;"
                    " end it before beginning it again"
                )
        # One row tells whether it has stubs (their count sums an index of 100,000: 12 ms).
        has_stubs = bool(await self.store.list_stubs(scenario.name, limit=1))
        if mode == RECORD and has_stubs and not append:
            raise Invalid(
                f"Scenario ({scenario.name}) has existing stubs, delete them before recording"
                " or create another scenario!"  # Mirage's words, verbatim: clients match them
            )
        if upstream is not None and mode != RECORD:
            raise Invalid("upstream is for a recording session: begin it with mode 'record'")
        if port is not None and mode != PLAYBACK and upstream is None:
            raise Invalid(
                "only a playback session, or one recording an upstream, is bound to a port"
            )
        if mode == PLAYBACK:
            recording = [s.name for s in self._active_sessions(scenario.name) if s.status == RECORD]
            if recording:
                raise Invalid(
                    f"Scenario {scenario.name} is being recorded in session {recording[0]};"
                    " end it before playback"
                )
            if not has_stubs:
                raise PreconditionFailed(
                    f"Scenario {scenario.name} has no stubs: record or add stubs before playback"
                )
            await self._index(scenario.name, current=True)  # now, not on the first request
        session = Session(
            host, session_name, scenario.name, str(mode), self._date(), None, port, upstream
        )
        await self._reset_counters(key)
        await self.store.save_session(session)
        self._sessions[key] = session
        verb = "Record" if mode == RECORD else "Playback"
        begun: dict[str, Any] = {
            "message": f"{verb} mode initiated....",
            "status": mode,
            "scenario": scenario.name,
            "session": session_name,
        }
        if port is not None:
            begun["port"] = port
        if upstream is not None:
            begun["upstream"] = upstream["url"]
        return begun

    async def begin_record_creating(
        self, scenario_name: str, session_name: object
    ) -> dict[str, Any]:
        """API v1's begin record: creates the scenario when missing (v2 needs it first).

        An existing scenario is recorded only while it has no stubs, as in v2 (Mirage v1's
        "Duplicate scenario"; its delete/stubs dropped the scenario, ours keeps it empty).
        """
        name = check_name("session", session_name)
        existing = self._sessions.get((scenario_name.rpartition(":")[0], name))
        if existing is not None and existing.scenario != scenario_name:
            # Checked before creating, so a refused begin leaves no stray scenario behind.
            raise Invalid(f"Session {name} already belongs to scenario {existing.scenario}")
        if await self.store.get_scenario(scenario_name) is None:
            # Created meanwhile by another request: record into it all the same.
            with contextlib.suppress(AlreadyExists):
                await self.create_scenario(scenario_name)
        try:
            return await self.begin_session(scenario_name, name, RECORD)
        except Invalid as exc:
            if "existing stubs" in exc.message:
                raise Invalid(f"Duplicate scenario: {exc.message}") from None
            raise

    async def end_session(self, scenario_name: str, session_name: object) -> dict[str, Any]:
        await self.get_scenario(scenario_name)
        host = scenario_name.rpartition(":")[0]
        name = check_name("session", session_name)
        session = await self._sync_session(host, name)
        if session is None or session.scenario != scenario_name:
            raise NotFound(f"Session {name} not found in scenario {scenario_name}")
        await self._end(session)
        return {"message": "Session ended"}

    async def end_all_sessions(self, scenario_name: str) -> dict[str, Any]:
        await self.get_scenario(scenario_name)
        ended = {}
        for session in self._active_sessions(scenario_name):
            await self._end(session)
            ended[session.name] = {"message": "Session ended"}
        return ended

    async def _end(self, session: Session) -> None:
        session.status = DORMANT
        session.port = None  # its port closes
        await self.store.save_session(session)
        key = (session.host, session.name)
        self._dirty.discard(key)
        await self._reset_counters(key)

    async def bind_session(self, scenario_name: str, session_name: str, port: int) -> Session:
        """Bind a playing session to ``port`` (the edge listens on it already)."""
        scenario = await self.get_scenario(scenario_name)
        session = await self.find_session(scenario.host, session_name)
        if session.scenario != scenario.name:
            raise NotFound(f"Session {session_name} not found in scenario {scenario.name}")
        if session.status != PLAYBACK:
            raise Conflict(f"Session {session_name} is in {session.status} mode, not playback")
        session.port = port
        await self.store.save_session(session)
        return session

    def bound_sessions(self) -> list[Session]:
        """The sessions playing or recording on a port of their own."""
        return [s for s in self._sessions.values() if s.serves_port]

    def session(self, host: str, name: str) -> Session:
        session = self._sessions.get((host, name))
        if session is None:
            raise NotFound(f"session not found - {host}:{name}")
        return session

    # stubs -----------------------------------------------------------------

    async def put_stub(
        self,
        *,
        host: str,
        session_name: str,
        scenario_name: str | None,
        document: object,
        priority: object = None,
        stateful: bool = True,
        args: dict[str, str] | None = None,
        delay_policy: str | None = None,
        recorded: str | None = None,
    ) -> PutResult:
        session = await self._recording(host, session_name, scenario_name)
        stub = stub_from_document(
            document,
            scenario=session.scenario,
            priority=priority,
            args=args,
            delay_policy=delay_policy,
            recorded=recorded or self._date(),
        )
        return await self._add_stub(stub, stateful)

    async def _recording(self, host: str, session_name: str, scenario_name: str | None) -> Session:
        """The session stubs are put into: recording, and ``scenario_name``'s when named."""
        await self._sync_session(host, session_name)
        session = self.session(host, session_name)
        if scenario_name is not None and scenario_name != session.scenario:
            raise Invalid(
                f"Session {session_name} records scenario {session.scenario}, not {scenario_name}"
            )
        if session.status != RECORD:
            raise Conflict(f"Session {session_name} is in {session.status} mode, not record")
        return session

    async def _add_stub(self, stub: Stub, stateful: bool = True) -> PutResult:
        """Store a new stub, or append its responses to the stub with the same matchers.
        One at a time per scenario: two equal requests recorded at once make one stub."""
        async with self._adding.setdefault(stub.scenario, asyncio.Lock()):
            found = await self.store.find_stubs(stub.scenario, [stub.matchers_hash])
            existing = found.get(stub.matchers_hash)
            status = merge_stub(existing, stub, stateful)
            if existing is None:
                await self.store.insert_stub(stub)
            elif status == "updated":
                await self.store.update_stub(existing)
            if status != "ignored":
                self._changed(stub.scenario)
            return PutResult(status, existing or stub)

    async def _add_stubs(self, scenario: str, stubs: list[Stub], stateful: bool) -> ImportCounts:
        """``_add_stub`` for many, in one write: all or nothing. ``stubs`` is emptied, a
        slice at a time (100,000 of them freed at once held the loop ~120 ms)."""
        async with self._adding.setdefault(scenario, asyncio.Lock()):
            # matchers_hash -> the first stored stub with those matchers, for the import's
            # matchers only (a scenario may hold 100,000 stubs).
            held: dict[str, Stub] = {}
            if await self.store.list_stubs(scenario, limit=1):
                hashes = list(dict.fromkeys(stub.matchers_hash for stub in stubs))
                for start in range(0, len(hashes), FIND_STUBS_AT_ONCE):
                    chunk = hashes[start : start + FIND_STUBS_AT_ONCE]
                    held.update(await self.store.find_stubs(scenario, chunk))
            counts, new, changed = await run_in_slices(_merge_stubs(held, stubs, stateful))
            await self.store.write_stubs(scenario, new, changed)
            self._changed(scenario)
        await run_in_slices(emptying(held, new, changed, stubs))
        if self._plays(scenario):
            await self._index(scenario, current=True)  # plays them once this answers
        return counts

    async def import_stubs(
        self,
        scenario_name: str,
        documents: Iterable[object],
        *,
        host: str,
        session_name: str | None = None,
        priority: object = None,
        stateful: bool = True,
        args: dict[str, str] | None = None,
        delay_policy: str | None = None,
        recorded: str | None = None,
    ) -> ImportCounts:
        """Many stubs at once, each taken as ``put_stub`` takes one, all or nothing: into
        the scenario a session records (``session_name``), or straight into the scenario
        whatever its sessions do (a playing one plays them once this returns)."""
        scenario = await self.get_scenario(scenario_name)
        if session_name is not None:
            await self._recording(host, session_name, scenario.name)
        options = {
            "scenario": scenario.name,
            "priority": priority,
            "args": args,
            "delay_policy": delay_policy,
            "recorded": recorded or self._date(),
        }
        stubs = await run_in_slices(_build_stubs(documents, options, _stub_label))
        if not stubs:
            raise Invalid("no stubs to import: send a JSON array of stubs, or one per line")
        return await self._add_stubs(scenario.name, stubs, stateful)

    async def record_documents(
        self,
        scenario_name: str,
        documents: list[dict[str, Any]],
        labels: list[str] | None = None,
    ) -> ImportCounts:
        """Store recorded stub documents (``recording.stub_document``: a proxied call, a HAR
        entry) in the scenario; a request seen again extends its stub's sequence, in order.
        Every stub is checked as a PUT checks it before any is stored; a refusal names
        ``labels[i]``, else the document's method and path."""
        scenario = await self.get_scenario(scenario_name)
        options = {"scenario": scenario.name, "recorded": self._date()}

        def label(i: int, document: object) -> str:
            return labels[i] if labels is not None else _recorded_label(i, document)

        stubs = await run_in_slices(_build_stubs(documents, options, label))
        if not stubs:
            return ImportCounts()
        if len(stubs) == 1:  # a proxied call: one row, as a PUT writes it
            result = await self._add_stub(stubs[0])
            return ImportCounts(**{result.status: 1})
        return await self._add_stubs(scenario.name, stubs, stateful=True)

    async def all_stubs(self, scenario_name: str) -> list[Stub]:
        """Every stub of a scenario in insertion order, read a page at a time."""
        await self.get_scenario(scenario_name)
        return [stub async for page in self.stub_pages(scenario_name) for stub in page]

    async def list_stubs(self, scenario_name: str, offset: int, limit: int) -> list[Stub]:
        """A page of a scenario's stubs in insertion order: ``limit`` of them from
        ``offset`` (all of them: ``stub_pages``)."""
        await self.get_scenario(scenario_name)
        return await self.store.list_stubs(scenario_name, offset, limit)

    async def delete_stubs(self, scenario_name: str, force: bool = False) -> int:
        await self.get_scenario(scenario_name)
        active = self._active_sessions(scenario_name)
        if active and not force:
            raise Conflict(
                f"Sessions in playback/record mode ({', '.join(s.name for s in active)}):"
                " end them before deleting stubs, or use force"
            )
        count = await self.store.delete_stubs(scenario_name)
        self._changed(scenario_name, drop=True)
        return count

    # delay policies --------------------------------------------------------

    async def put_delay_policy(self, policy: DelayPolicy) -> bool:
        """Create or replace; True when it is new."""
        created = await self.store.save_delay_policy(policy)
        self._policies[policy.key] = policy
        return created

    def delay_policies(self, host: str) -> list[DelayPolicy]:
        return sorted((p for p in self._policies.values() if p.host == host), key=lambda p: p.name)

    def delay_policy(self, host: str, name: str) -> DelayPolicy:
        policy = self._policies.get((host, name))
        if policy is None:
            raise NotFound(f"Delay policy '{name}' not found in host {host}")
        return policy

    async def delete_delay_policy(self, host: str, name: str) -> None:
        self.delay_policy(host, name)
        await self.store.delete_delay_policy(host, name)
        del self._policies[(host, name)]

    def delay_ms(self, host: str, policy_name: str) -> int:
        """The delay a stub's named policy asks for now; 0 when there is no such policy.

        Resolved in the scenario's host (``host:name`` names another), on every call, so
        an edited policy applies to the next response. A missing policy is no delay, as
        in Mirage: stubs may name a policy before it is created.
        """
        policy = self._policies.get((host, policy_name))
        if policy is None and ":" in policy_name:
            try:
                policy = self._policies.get(split_name(policy_name, host))
            except Invalid:
                policy = None
        return sample_ms(policy, self.rng) if policy is not None else 0

    # playback --------------------------------------------------------------

    async def _index(self, scenario: str, current: bool = False) -> StubIndex:
        """The scenario's compiled index: the one held, else built once however many
        requests wait for it. ``current``: with every change made so far (a build under
        way, the one held is not, is waited for)."""
        index = self._indexes.get(scenario)
        building = self._building.get(scenario)
        if index is not None and (building is None or not current):
            return index
        if building is None:
            building = self._start_build(scenario)
        return await asyncio.shield(building)  # a waiter cancelled leaves the build going

    def _start_build(self, scenario: str) -> asyncio.Future[StubIndex]:
        building = asyncio.ensure_future(self._build(scenario))
        self._building[scenario] = building
        building.add_done_callback(functools.partial(self._built, scenario))
        return building

    async def _build(self, scenario: str) -> StubIndex:
        while True:  # a change came while compiling: compile again, so what is kept is current
            changes = self._changes.get(scenario, 0)
            index = await self._compile(scenario)
            if self._changes.get(scenario, 0) == changes:
                self._let_go(self._indexes.get(scenario))
                self._indexes[scenario] = index
                return index
            self._let_go(index)

    def _built(self, scenario: str, building: asyncio.Future[StubIndex]) -> None:
        if self._building.get(scenario) is building:
            del self._building[scenario]
        if not building.cancelled():
            building.exception()  # retrieved: a failed build is its waiters' error

    async def _compile(self, scenario: str) -> StubIndex:
        """Read the scenario's stubs and compile them, a slice at a time (background.py)."""
        stubs = [stub async for page in self.stub_pages(scenario) for stub in page]
        return await run_in_slices(StubIndex.build(stubs))

    def _changed(self, scenario: str, *, drop: bool = False) -> None:
        """The scenario's stubs changed (call it once the store has them): a build under
        way compiles again, and the index held answers until its successor is built
        (compiling 100,000 stubs takes seconds). ``drop``, or when no session plays it, the
        index is forgotten at once (the stubs or the scenario are gone; or nothing needs it
        until a session begins, which builds it)."""
        if drop or not self._plays(scenario):
            self._changes[scenario] = self._changes.get(scenario, 0) + 1
            self._let_go(self._indexes.pop(scenario, None))
        else:
            self._refresh(scenario)

    def _let_go(self, index: StubIndex | None) -> None:
        """Free an index no longer held, a slice at a time if it is large: 100,000 stubs
        freed at once held the loop 60-140 ms."""
        if index is not None and len(index) > RELEASED_AT_ONCE:
            task = asyncio.ensure_future(_release(index))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    def _refresh(self, scenario: str) -> None:
        """Compile the scenario's index again, the one held answering meanwhile."""
        self._changes[scenario] = self._changes.get(scenario, 0) + 1
        if scenario in self._indexes and scenario not in self._building:
            self._start_build(scenario)

    def _plays(self, scenario: str) -> bool:
        return any(s.status == PLAYBACK for s in self.sessions_of(scenario))

    async def stub_pages(
        self, scenario: str, size: int = STUB_PAGE
    ) -> AsyncGenerator[list[Stub], None]:
        """The scenario's stubs in insertion order, ``size`` at a time, pausing between
        pages (background.py): reading 100,000 takes a second of the loop's time."""
        slices = Slices()
        after = 0
        while True:
            page = await self.store.list_stubs(scenario, limit=size, after=after)
            if not page:
                return
            yield page
            if len(page) < size:
                return
            after = page[-1].seq
            await slices.pause()

    def playback_now(
        self, session: Session, request: PlaybackRequest
    ) -> tuple[str, Response] | Awaiting | None:
        """``playback`` when it can answer without waiting for the store; Awaiting when it
        waits only for a sequence's position (on a shared store); else None.

        It waits (None here, nothing changed) for a stub index not built yet, and, on a
        shared store, for a session not in playback mode here.
        """
        if session.status != PLAYBACK:
            if self._shared:
                return None  # begun on another instance, its NOTIFY not here yet?
            raise _not_playing(session)
        index = self._indexes.get(session.scenario)
        if index is None or len(request.body) > LARGE_BODY:
            return None
        stub = index.match(request)
        awaiting = self._awaiting(session, request, stub)
        return self._answer(session, request, stub, None) if awaiting is None else awaiting

    async def playback(
        self, session: Session, request: PlaybackRequest, near_misses: bool = False
    ) -> tuple[str, Response]:
        """The matching stub's id and the response the session plays for ``request``
        (NoMatch when none; with the stubs that came closest when ``near_misses`` and they
        were found off the loop). ``playback_now``'s steps, waiting where that one gives up:
        its callers try it first, so this matches the request once, not again twice."""
        if session.status != PLAYBACK and self._shared:
            await self._sync_session(session.host, session.name)
        if session.status != PLAYBACK:
            raise _not_playing(session)
        index = self._indexes.get(session.scenario)
        if index is None:
            index = await self._index(session.scenario)
        misses = None
        if len(request.body) > LARGE_BODY:
            stub, misses = await self._match_large(index, request, near_misses)
        else:
            stub = index.match(request)
        awaiting = self._awaiting(session, request, stub)
        if awaiting is not None:
            return awaiting.answer(await awaiting.position)
        return self._answer(session, request, stub, None, misses)

    def _awaiting(
        self, session: Session, request: PlaybackRequest, stub: Stub | None
    ) -> Awaiting | None:
        """Ask the shared store for the next position of ``stub``'s sequence: what to await
        and then answer. None when the answer needs no store (no stub, one response, a
        sequence played to its end here, or a store of this process alone)."""
        if stub is None or not self._shared:
            return None
        key = (session.host, session.name)
        if self._counters.settled(key, stub):
            return None
        position = self.store.next_response(  # type: ignore[attr-defined]
            f"{session.host} {session.name}", stub.id
        )
        counters = self._counters  # the one asked: reset() replaces it
        answer = functools.partial(self._served, counters, counters.resets, session, request, stub)
        return Awaiting(position, answer)

    def _served(
        self,
        counters: SequenceCounters,
        resets: int,
        session: Session,
        request: PlaybackRequest,
        stub: Stub,
        position: int,
    ) -> tuple[str, Response]:
        """What a playback answers at the ``position`` the shared store gave it, asked of
        ``counters`` when they had seen ``resets`` resets."""
        counters.served((session.host, session.name), stub, position, resets)
        return self._answer(session, request, stub, position)

    @staticmethod
    async def _match_large(
        index: StubIndex, request: PlaybackRequest, near_misses: bool
    ) -> tuple[Stub | None, list[NearMiss] | None]:
        """Match a request with a large body on the matching thread, and find its near
        misses there when asked and nothing matched: scanning megabytes (whitespace, anchors,
        patterns) takes tens of ms, and on the loop it would hold every request that long."""
        loop = asyncio.get_running_loop()
        work = LARGE_REQUEST_WORK_US
        stub = await loop.run_in_executor(_MATCHING, index.match, request, work)
        if stub is not None or not near_misses:
            return stub, None
        near = functools.partial(index.near_misses, request, work_us=work)
        return None, await loop.run_in_executor(_MATCHING, near)

    def near_misses(self, session: Session, request: PlaybackRequest) -> list[NearMiss]:
        """The stubs of the session's scenario that came closest to ``request``."""
        index = self._indexes.get(session.scenario)
        return index.near_misses(request) if index is not None else []

    def _answer(
        self,
        session: Session,
        request: PlaybackRequest,
        stub: Stub | None,
        served: int | None,
        misses: list[NearMiss] | None = None,
    ) -> tuple[str, Response]:
        """The matched stub's id and its next response (``served``: its position from a
        shared store; ``misses``: the near misses already found, for the NoMatch when there
        is no stub)."""
        key = (session.host, session.name)
        session.last_used = self._timestamp()
        self._dirty.add(key)
        if stub is None:
            raise NoMatch(NO_MATCH, misses)
        if served is not None:
            response = stub.responses[min(served, len(stub.responses) - 1)]
        else:
            response = self._counters.next_response(key, stub)
        if not response.binary and is_template(response.body):  # {{ or {% in it
            response = render_response(response, stub, request, self.now())
        return stub.id, response


async def _release(index: StubIndex) -> None:
    """``index.release()`` in slices, once nothing else holds the index: a request that
    took it before it was let go may still be matching with it (a large body, on a thread).
    Nothing can take it again, so the count only falls."""
    while sys.getrefcount(index) > 2:  # this frame's reference and the call's argument
        await asyncio.sleep(0.05)
    await run_in_slices(index.release())


def merge_stub(existing: Stub | None, stub: Stub, stateful: bool) -> str:
    """What storing ``stub`` does beside ``existing``, the stored stub with the same
    matchers: "created" (there is none), "ignored" (not stateful, and the same responses),
    or "updated" (``existing`` gets ``stub``'s responses appended: its sequence grows)."""
    if existing is None:
        return "created"
    if not stateful and [(r.body, r.fault, r.dribble) for r in existing.responses] == [
        (r.body, r.fault, r.dribble) for r in stub.responses
    ]:
        return "ignored"
    existing.responses.extend(stub.responses)
    return "updated"


@dataclass
class ImportCounts:
    """What storing many stubs did (``merge_stub``'s outcomes, counted)."""

    created: int = 0
    updated: int = 0
    ignored: int = 0


def _merge_stubs(
    held: dict[str, Stub], stubs: list[Stub], stateful: bool
) -> Steps[tuple[ImportCounts, list[Stub], list[Stub]]]:
    """``merge_stub`` for each of ``stubs`` in order, against ``held`` (matchers_hash ->
    stored stub; the new ones join it): the counts, the stubs to insert and those changed."""
    counts = ImportCounts()
    new: list[Stub] = []
    changed: dict[int, Stub] = {}  # id() -> a stored stub whose responses grew
    fresh: set[int] = set()  # id() of the new ones (they are inserted as they end up)
    for i, stub in enumerate(stubs):
        existing = held.get(stub.matchers_hash)
        status = merge_stub(existing, stub, stateful)
        if existing is None:
            held[stub.matchers_hash] = stub
            new.append(stub)
            fresh.add(id(stub))
            counts.created += 1
        elif status == "updated":
            if id(existing) not in fresh:
                changed[id(existing)] = existing
            counts.updated += 1
        else:
            counts.ignored += 1
        if i % 500 == 499:
            yield
    return counts, new, list(changed.values())


def _build_stubs(
    documents: Iterable[object], options: dict[str, Any], label: Callable[[int, object], str]
) -> Steps[list[Stub]]:
    """Each document as ``stub_from_document`` takes it with ``options``; a refusal names
    ``label(i, document)``."""
    stubs = []
    for i, document in enumerate(documents):
        try:
            stubs.append(stub_from_document(document, **options))
        except Invalid as exc:
            raise Invalid(f"{label(i, document)}: {exc.message}") from None
        if i % 50 == 49:
            yield
    return stubs


def archive_stubs(archive: ArchiveContent, scenario: str, recorded: str) -> Steps[list[Stub]]:
    """An archive's stub documents, each checked as a PUT checks it; stubs with equal
    matchers become one whose responses play in file order (as PUTs append them)."""
    entries = [entry for entry, _ in archive.stubs]

    def label(i: int, document: object) -> str:
        return f"{archive.source}: {short_name(entries[i])}"

    options = {"scenario": scenario, "recorded": recorded}
    stubs = yield from _build_stubs((d for _, d in archive.stubs), options, label)
    _, merged, _ = yield from _merge_stubs({}, stubs, stateful=True)
    return merged


def _stub_label(i: int, document: object) -> str:
    return f"stub {i}"


def _recorded_label(i: int, document: object) -> str:
    request = document.get("request", {}) if isinstance(document, dict) else {}
    request = request if isinstance(request, dict) else {}
    return f"exchange {i} ({request.get('method')} {str(request.get('urlPath'))[:200]})"


def _not_playing(session: Session) -> Conflict:
    return Conflict(
        f"Session {session.name} is in {session.status} mode;"
        " begin it in playback mode to get responses"
    )
