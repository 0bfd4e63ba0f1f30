"""``--shared-cloud``: the cloud mocks' state and virtual clock live in the shared store.

Without it every process keeps its own cloud state in memory, as Mimic did. With it (only
on the PostgreSQL store) the state is kept in rows (``cloud_part``, migration 0008), one
per *part*: the virtual clock; each service's state outside its keyed collections
(``rest:<service>``); and each member of the collections a backend names in its
``SHARED_PARTS`` (a tenant's compute, a user, a token, a Fastly customer...). Every
process holds the parts it has seen, each with the version it holds. A cloud request, on
any instance or worker:

1. runs its handler against this process's memory, its answer held back; the collections
   are ``_Tracked`` dicts, which note the members it touched (all of them if it iterated);
2. pickles the parts it touched (the clock always; a service's rest when it looked the
   service up in ``core.services``, as handlers do) and compares them with their bytes as
   last loaded or committed: the parts that differ are its changes;
3. in one statement (``cloud_sync``) checks that every part it touched is still at the
   version it ran on and, if so, writes its changes, locking only the changed rows. A
   request that changed nothing locks nothing: reads never wait behind a writer;
4. if a part had moved (another process changed it), puts back what the handler changed,
   loads the parts that moved and runs the handler again; after ``LOCK_AFTER`` such runs, it
   runs once more holding the parts it changes locked in the store, so it cannot lose again;
5. only then sends the answer: a 2xx means the change is committed (its WAL flush is not
   waited for: docs/scaling.md).

``SharedCloud.run`` is that loop, around any unit of work (which must be safe to run again):
the data plane's cloud routes (simulacra/dataplane/cloud.py) call it with their answer's
work, and ``SharedCloudMiddleware`` with the Starlette app's, for every other cloud route.

Within a process, handlers run one at a time (an ``asyncio.Lock``), but commits overlap: a
part whose change is being committed is *pending*, and a request that touches it waits for
that commit and runs again, so no answer is built on a change that might not commit. A
failure anywhere (the database gone, a handler raising) puts back what was changed and
marks the parts touched stale: the next request that touches them reloads them. So
requests of different tenants (or users, tokens) never wait for each other's locks, and a
request costs what its own parts cost, not what the whole state does.

The parts are pickled, and read back through ``RestrictedUnpickler``, which builds only
Simulacra's cloud classes and a short list of standard types: loading the state never runs
anything else. Long-lived objects that are wiring rather than state (the clock object, the
service backends themselves, their random generators, behavior events) are pickled as
references to this process's own objects, and parts are loaded *into* the existing
backends, so every route's ``request.app.state.cloud.services[...]`` lookup sees them. A
part must not share a mutable object with another part (each is pickled alone); the
backends keep cross-references as ids (a token names its user), which keeps that true.
"""

from __future__ import annotations

import asyncio
import copyreg
import functools
import io
import itertools
import logging
import pickle
import random
import re
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, TypeVar, cast

from simulacra.cloud.behaviors import Event
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import flat_error
from simulacra.errors import Unavailable
from simulacra.web import starlette_response

log = logging.getLogger("simulacra.cloud")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

# The standard types the cloud state may hold; everything else must be a class of a
# ``simulacra.cloud`` module (or ``simulacra.clock``).
ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("random", "Random"),
        ("itertools", "count"),
        ("ipaddress", "IPv4Address"),
        ("ipaddress", "IPv6Address"),
        ("ipaddress", "IPv4Network"),
        ("ipaddress", "IPv6Network"),
        ("collections", "OrderedDict"),
        ("collections", "deque"),
    }
)
ALLOWED_MODULES = re.compile(r"^simulacra\.(cloud(\.[a-z_]+)*|clock)$")

# Wiring at the top of a backend (the image service's view of compute): not state.
_CALLABLES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)
_COUNT = re.compile(r"^count\((.+?)(?:, (.+))?\)$")


class _Ref:
    """Stands in a pickle for an object of this process's own (``SharedCloud``'s wiring):
    ``_Ref(name)`` unpickles as this process's object of that name; never instantiated.
    (A reduction rather than a persistent id: the pickler then calls no Python code for
    the strings and numbers that are most of the state.)"""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only allowed classes; a ``_Ref`` resolves to this process's object."""

    def __init__(self, file: io.BytesIO, objects: dict[str, object] | None = None) -> None:
        super().__init__(file)
        self._objects = objects or {}

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == _Ref.__name__:
            return self.persistent_load
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if ALLOWED_MODULES.match(module):
            value: Any = sys.modules.get(module)  # never imports: the app loaded them all
            for part in name.split("."):
                value = getattr(value, part, None) if not part.startswith("<") else None
            # Defined there, not imported there (a module's namespace holds others' classes).
            if isinstance(value, type) and value.__module__ == module:
                return value
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not an allowed class")

    def persistent_load(self, pid: Any) -> object:
        try:
            return self._objects[pid]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"unknown persistent reference {pid!r}") from None


def restricted_loads(data: bytes, objects: dict[str, object] | None = None) -> Any:
    """``pickle.loads`` through ``RestrictedUnpickler``."""
    return RestrictedUnpickler(io.BytesIO(data), objects).load()


class _Pickler(pickle.Pickler):
    """Pickles a part: this process's wiring (``refs``: id -> name) as a ``_Ref`` to it.

    The hooks go by type (``dispatch_table``): the types of the wiring's objects, counters
    and callables. Every other object is pickled without calling Python code, where a
    ``reducer_override`` ran for each (23 calls in a server create: in-process, its commit's
    CPU fell from about 120 to 110 us). A plain function is pickled by name (the pickler
    saves functions before it looks at the table), and no process loads it."""

    def __init__(self, file: io.BytesIO, refs: dict[int, str], wiring: Iterable[object]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._refs = refs
        table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
        for obj in wiring:
            table[type(obj)] = self._reduce_wiring
        table[itertools.count] = _reduce_count
        for kind in _CALLABLES:
            table[kind] = _refuse_callable
        self.dispatch_table = table

    def _reduce_wiring(self, obj: Any) -> Any:
        ref = self._refs.get(id(obj))
        if ref is not None:
            return _Ref, (ref,)
        return obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)  # state of a wiring's type


def _reduce_count(counter: itertools.count[Any]) -> Any:
    # Python 3.14 no longer pickles counters: rebuild one from its repr, count(n[, s]).
    match = _COUNT.match(repr(counter))
    if match is None:
        raise pickle.PicklingError(f"cannot pickle {counter!r}")
    start, step = match.groups()
    args = (_number(start),) if step is None else (_number(start), _number(step))
    return itertools.count, args


def _refuse_callable(obj: Any) -> Any:
    raise pickle.PicklingError(
        f"the cloud state holds a function ({obj!r}); --shared-cloud cannot store it"
    )


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".en") else int(text)


# How many times a request runs again after finding its parts moved before it gives up (a
# 503): each run but the last lost to a change that another process committed. And how many
# times it may wait for this process's own commits of the parts it touched (each ends as a
# commit does: the queue behind a part moves, if slowly when many requests change it).
MAX_RUNS = 50
MAX_WAITS = 1000
# How many of those runs a request loses to other processes' changes before it runs with the
# parts it changes locked in the store (``SharedCloud.run``): a part that another process
# changes in a tight loop could otherwise starve it (a tenant's servers created on two
# instances at once, several connections each).
LOCK_AFTER = 3

_CLOCK = "clock"
_ABSENT = -1  # no version: memory may differ from every stored one (reload when touched)


class _Tracked(dict):
    """A keyed collection of a backend that notes which members a request touched.

    ``whole``: the request iterated it (or cleared it), so it depends on every member.
    Only --shared-cloud installs these; without it the backends keep plain dicts.
    """

    __slots__ = ("touched", "whole")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.touched: set[Any] = set()
        self.whole = False

    def __getitem__(self, key: Any) -> Any:
        self.touched.add(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.touched.add(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self.touched.add(key)
        return dict.__contains__(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.touched.add(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.touched.add(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.touched.add(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.touched.add(key)
        return dict.setdefault(self, key, default)

    # Everything else reads (or changes) the collection as a whole.

    def __iter__(self) -> Iterator[Any]:
        self.whole = True
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.whole = True
        return dict.__len__(self)

    def __reversed__(self) -> Iterator[Any]:
        self.whole = True
        return dict.__reversed__(self)

    def keys(self) -> Any:
        self.whole = True
        return dict.keys(self)

    def values(self) -> Any:
        self.whole = True
        return dict.values(self)

    def items(self) -> Any:
        self.whole = True
        return dict.items(self)

    def clear(self) -> None:
        self.whole = True
        dict.clear(self)

    def popitem(self) -> tuple[Any, Any]:
        self.whole = True
        return dict.popitem(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.whole = True
        dict.update(self, *args, **kwargs)

    def copy(self) -> dict[Any, Any]:
        self.whole = True
        return dict(dict.items(self))

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("a keyed collection is stored member by member, not whole")


class _Part:
    """One stored part as this process holds it."""

    __slots__ = ("coll", "key", "member", "saved", "version")

    def __init__(self, key: str, coll: str, member: Any, version: int, saved: bytes | None):
        self.key = key
        self.coll = coll  # "" for the clock and the services' rest
        self.member = member  # the collection's key (None for the clock and a rest)
        self.version = version  # the stored version memory holds (0: never stored)
        self.saved = saved  # memory's bytes as last loaded or committed; None: absent


class _Touched:
    """What one run of a handler touched: (part, its bytes now, the version it ran on)."""

    __slots__ = ("changes", "colls", "reads", "waits")

    def __init__(self) -> None:
        self.reads: list[tuple[_Part, int]] = []
        self.changes: list[tuple[_Part, int, bytes | None]] = []
        self.colls: list[str] = []
        self.waits: list[asyncio.Future[None]] = []

    def unchange(self) -> None:
        """The changes were put back: what they changed was only read."""
        self.reads += [(part, version) for part, version, _data in self.changes]
        self.changes = []


class _Run:
    """One run of a request's work: its result or error, and whether it stands; or the
    commits it must wait for before it runs again."""

    __slots__ = ("changed", "failed", "result", "stands", "waits")

    def __init__(self) -> None:
        self.result: Any = None
        self.failed: Exception | None = None
        self.waits: list[asyncio.Future[None]] = []
        self.stands = False
        self.changed: list[str] = []  # the keys of the parts it changed


# A batch's size at most (the statement's arrays grow with it), and how many statements a
# process has in flight at once, of writes and of reads (the store's pool holds 8).
MAX_BATCH = 64
WRITE_SLOTS = 4
READ_SLOTS = 2


class _Batcher:
    """Concurrent requests' checks and commits, sent together: up to ``slots`` statements
    in flight; the requests that come while all are, queue and go together in the next one.
    So a commit's disk flush and round trip serve every request that was waiting for one,
    and a statement waiting for a lock (another instance writing the same part) holds up
    only its own batch."""

    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Any]]], slots: int) -> None:
        self._send = send
        self._slots = slots
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        # Flushes running, counted down as each finds the queue empty (in the same step: a
        # count kept by the tasks' done callbacks, which run later, let a request queued in
        # between wait with no flush to send it).
        self._flushing = 0
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done

    async def submit(self, group: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((group, future))
        if self._flushing < self._slots:
            self._flushing += 1
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    found = await self._send([group for group, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), answer in zip(batch, found, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._flushing -= 1


class SharedCloud:
    """One process's view of the shared cloud state: the parts it holds and their versions."""

    def __init__(self, core: CloudCore) -> None:
        self.core = core
        self.store: Any = None  # the PostgreSQL store, set by the app's lifespan
        self._lock = asyncio.Lock()  # one handler at a time in this process
        # Wiring every process has of its own, pickled as a ``_Ref`` to it, never copied.
        objects: dict[str, object] = {
            "core": core,
            "clock": core.clock,
            "catalog": core.catalog,
            **{f"service:{name}": backend for name, backend in core.services.items()},
            **_events(),
        }
        # The collections, each replaced by a _Tracked copy; a backend's random generator,
        # which members share (a compute tenant's): wiring, each process its own.
        self._colls: dict[str, tuple[object, str]] = {}
        self._rest: dict[str, tuple[object, frozenset[str]]] = {}
        for name, backend in core.services.items():
            attrs = tuple(getattr(type(backend), "SHARED_PARTS", ()))
            for attr in attrs:
                coll = f"{name}.{attr}"
                self._colls[coll] = (backend, attr)
                setattr(backend, attr, _Tracked(getattr(backend, attr)))
            self._rest[f"rest:{name}"] = (backend, frozenset(attrs))
            for attr, value in vars(backend).items():
                if isinstance(value, random.Random):
                    objects[f"rng:{name}.{attr}"] = value
        self._objects = objects
        # An object known by several names (an event re-exported) is written by its first.
        self._refs: dict[int, str] = {}
        for pid in sorted(objects):
            self._refs.setdefault(id(objects[pid]), pid)
        self._buffer = io.BytesIO()
        self._pickler = _Pickler(self._buffer, self._refs, objects.values())
        # The fixed parts, as every process starts: what an absent row stands for.
        self._initial = {key: self._dump_fixed(key) for key in (_CLOCK, *self._rest)}
        self._parts: dict[str, _Part] = {
            key: _Part(key, "", None, 0, data) for key, data in self._initial.items()
        }
        # A request touches the clock, and the rest of each service it looks up in
        # ``core.services`` (all of them if it iterates them): handlers reach a backend only
        # there, so a create on compute neither pickles nor checks identity's rest.
        self._service_parts = {name: self._parts[f"rest:{name}"] for name in core.services}
        core.services = _Tracked(core.services)
        # A clock started at "now" (--clock-start now) starts at each process's own time:
        # the first request stores this process's, unless another process's came first.
        self._parts[_CLOCK].saved = None
        self._members: dict[str, dict[Any, _Part]] = {coll: {} for coll in self._colls}
        # Parts whose change is being committed: key -> (its commit, the bytes committed).
        self._pending: dict[str, tuple[asyncio.Future[None], bytes | None]] = {}
        for coll in self._colls:
            for member in dict.keys(self._tracked(coll)):  # state made before attach
                self._part(coll, member).saved = self._dump_member(coll, member)

    def attach(self, store: object) -> None:
        if not hasattr(store, "sync_cloud"):
            raise ValueError("--shared-cloud needs the PostgreSQL store (--store postgresql://...)")
        self.store = store
        # Requests that changed something wait for a commit (a disk flush); the others
        # only for a read: separate batches, so a read never waits for a flush.
        self._writes = _Batcher(store.sync_cloud, WRITE_SLOTS)
        self._reads = _Batcher(store.sync_cloud, READ_SLOTS)

    # The parts ---------------------------------------------------------------------

    def _tracked(self, coll: str) -> _Tracked:
        backend, attr = self._colls[coll]
        value = getattr(backend, attr)
        if type(value) is not _Tracked:  # replaced by the handler (a reset): track the new one
            old = self._members[coll]
            value = _Tracked(value)
            value.whole = True
            value.touched.update(old)
            setattr(backend, attr, value)
        return value

    def _part(self, coll: str, member: Any) -> _Part:
        part = self._members[coll].get(member)
        if part is None:
            key = f"{coll}:{member!r}"
            part = self._members[coll][member] = self._parts[key] = _Part(
                key, coll, member, 0, None
            )
        return part

    def _pickle(self, value: object) -> bytes:
        buffer = self._buffer  # one pickler, reused: a request pickles several parts
        buffer.seek(0)
        buffer.truncate()
        self._pickler.clear_memo()
        self._pickler.dump(value)
        return buffer.getvalue()

    def _dump_fixed(self, key: str) -> bytes:
        if key == _CLOCK:
            return self._pickle(dict(vars(self.core.clock)))
        backend, colls = self._rest[key]
        refs = self._refs  # wiring (the clock, a generator): this process's, never stored
        return self._pickle(
            {
                k: v
                for k, v in vars(backend).items()
                if k not in colls and id(v) not in refs and not isinstance(v, _CALLABLES)
            }
        )

    def _dump_member(self, coll: str, member: Any) -> bytes | None:
        values = self._tracked(coll)
        if not dict.__contains__(values, member):
            return None
        return self._pickle((member, dict.__getitem__(values, member)))

    def _dump(self, part: _Part) -> bytes | None:
        return (
            self._dump_fixed(part.key)
            if not part.coll
            else self._dump_member(part.coll, part.member)
        )

    def _load(self, part: _Part | None, key: str, data: bytes | None) -> _Part | None:
        """Put ``data`` (None: absent) into memory as ``key``'s state; return its part."""
        try:
            loaded = None if data is None else restricted_loads(data, self._objects)
        except Exception as exc:
            raise RuntimeError(
                f"cannot load the shared cloud state's part {key} (written by another"
                f" Simulacra version?): {exc}; docs/scaling.md says how to reset it"
            ) from exc
        if part is None and loaded is None:
            return None  # absent, and this process never held it: nothing to forget
        if key in self._initial:
            state = (
                restricted_loads(self._initial[key], self._objects) if loaded is None else loaded
            )
            owner = self.core.clock if key == _CLOCK else self._rest[key][0]
            vars(owner).update(state)
            return self._parts[key]
        if part is None:
            coll = key.split(":", 1)[0]
            if coll not in self._colls or loaded is None:
                return None  # a collection this version no longer has
            part = self._part(coll, loaded[0])
        values = self._tracked(part.coll)
        if loaded is None:
            dict.pop(values, part.member, None)
        else:
            dict.__setitem__(values, part.member, loaded[1])
        return part

    def _refresh(self, stale: list[tuple[str, int, bytes | None]]) -> None:
        """Load the parts found moved (but those this process is committing: wait for them)."""
        for key, version, data in stale:
            part = self._parts.get(key)
            if key in self._pending or (part is not None and part.version == version):
                continue
            try:
                part = self._load(part, key, data)
            except Exception:
                if part is not None:
                    part.version = _ABSENT
                raise
            if part is not None:
                # Pickled again rather than ``data``: sets pickle in their iteration order,
                # which follows string hashes, which differ between processes.
                part.saved, part.version = self._dump(part), version
                if key == _CLOCK and data is None:
                    part.saved = None  # reset: store this process's start (see __init__)

    def _collect(self) -> _Touched:
        """What the handler just run touched and changed; resets the tracking."""
        touched = _Touched()
        services = self.core.services
        if type(services) is not _Tracked:  # replaced: track the new one, as read whole
            services = self.core.services = _Tracked(services)
            services.whole = True
        parts: list[_Part] = [self._parts[_CLOCK]]
        if services.whole:
            parts += self._service_parts.values()
        else:
            parts += [self._service_parts[n] for n in services.touched if n in self._service_parts]
        services.touched = set()
        services.whole = False
        for coll in self._colls:
            values = self._tracked(coll)
            members = values.touched
            if values.whole:
                touched.colls.append(coll)
                members = members | set(dict.keys(values)) | set(self._members[coll])
            elif not members:
                continue  # most collections, in most requests
            parts += [self._part(coll, member) for member in members]
            values.touched = set()
            values.whole = False
        for part in parts:
            pending = self._pending.get(part.key)
            if pending is not None:
                touched.waits.append(pending[0])
            data = self._dump(part)
            if data != (pending[1] if pending is not None else part.saved):
                touched.changes.append((part, part.version, data))
            else:
                touched.reads.append((part, part.version))
        return touched

    # Requests ----------------------------------------------------------------------

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` on the stored state, its changes committed before its result returns.

        ``work`` may run several times (when its parts moved meanwhile): only the last
        run's result is returned. Unavailable (the store out of reach) is raised before or
        instead of the result; the caller answers it (``flat_error``: a 503). ``work``
        renders its own domain errors: one raised here puts its changes back.
        """
        lost = 0  # runs answered stale: another process had changed a part first
        changed: list[str] = []  # the parts the last of them changed
        waited = 0
        while lost < MAX_RUNS and waited < MAX_WAITS:
            if lost < LOCK_AFTER or not changed:
                run = await self._attempt(work, None)
            else:
                # Lost again and again (another process changes these parts faster than
                # this one reloads them): this run holds them locked in the store, so no
                # other process moves them before it commits.
                async with self.store.cloud_locked(changed) as lock:
                    async with self._lock:
                        self._refresh(lock.parts)
                    run = await self._attempt(work, lock.sync)
            if run.waits:  # built on changes not committed yet: wait for them, run again
                # (outside the store's lock: the commits waited for may need those rows)
                await asyncio.wait(run.waits)
                waited += 1
                continue
            if run.stands:
                if run.failed is not None:
                    raise run.failed
                return cast(T, run.result)
            lost += 1
            changed = run.changed
        raise Unavailable("the shared cloud state kept changing under this request; retry")

    async def _attempt(
        self, work: Callable[[], Awaitable[Any]], submit: Callable[[Any], Awaitable[Any]] | None
    ) -> _Run:
        """One run of ``work`` and its check (and commit), through ``submit`` or the batches."""
        commit: asyncio.Future[None] | None = None
        run = _Run()
        async with self._lock:
            try:
                run.result = await work()
            except Exception as exc:
                # Perhaps only because memory was behind (a token loaded, not its user):
                # answered only once what it ran on is found current.
                run.failed = exc
            except BaseException:
                self._put_back(self._collect().changes, stale=True)
                raise
            touched = self._collect()
            if touched.waits or run.failed is not None:
                self._put_back(touched.changes, stale=False)
                touched.unchange()
            elif touched.changes:
                commit = asyncio.get_running_loop().create_future()
                for part, _version, data in touched.changes:
                    self._pending[part.key] = (commit, data)
        if touched.waits:
            run.waits = touched.waits
            return run
        run.changed = [part.key for part, _version, _data in touched.changes]
        run.stands = await self._sync(touched, commit, submit)
        return run

    async def _sync(
        self,
        touched: _Touched,
        commit: asyncio.Future[None] | None,
        submit: Callable[[Any], Awaitable[Any]] | None,
    ) -> bool:
        """Check (and commit) one run, through ``submit`` or else with the concurrent runs'
        (the batches); True if its answer stands, else memory is refreshed. (``submit``
        answers None where it wrote nothing and found nothing: a locked run that would
        have waited too long for a row beyond its lock runs again.)"""
        changes = touched.changes
        group = (
            [(p.key, p.coll, version, data) for p, version, data in changes],
            [(p.key, version) for p, version in touched.reads],
            touched.colls,
        )
        try:
            if submit is None:
                submit = (self._writes if changes else self._reads).submit
            found = await submit(group)
        except BaseException:
            async with self._lock:  # stored or not, nobody knows: reload them when touched
                self._release(changes, commit)
                self._put_back(changes, stale=True)
            raise
        if found is not None and (found.written is not None or not found.stale):
            written = found.written or {}
            for part, _version, data in changes:
                part.saved, part.version = data, written[part.key]
            self._release(changes, commit)
            return True
        async with self._lock:
            self._release(changes, commit)
            self._put_back(changes, stale=False)
            if found is not None:
                self._refresh(found.stale)
        return False

    def _release(
        self, changes: list[tuple[_Part, int, bytes | None]], commit: asyncio.Future[None] | None
    ) -> None:
        for part, _version, _data in changes:
            self._pending.pop(part.key, None)
        if commit is not None:
            commit.set_result(None)

    def _put_back(self, changes: list[tuple[_Part, int, bytes | None]], stale: bool) -> None:
        """Undo a run's changes in memory (to the committed bytes, or those being committed);
        ``stale``: also have the parts reloaded when next touched."""
        for part, _version, _data in changes:
            pending = self._pending.get(part.key)
            try:
                self._load(part, part.key, pending[1] if pending is not None else part.saved)
            except Exception:
                log.exception("cannot put back the shared cloud state's part %s", part.key)
                stale = True
            if stale:
                part.version = _ABSENT


async def _buffered(receive: Receive, limit: int) -> Callable[[], Receive]:
    """Read the request body now (up to ``limit`` + 1 bytes); each call of the result is a
    ``receive`` replaying it to the app from the start (a handler may run more than once)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False) or size > limit:
            break  # the rest, if any, is left to the handler, which answers 413

    def replay() -> Receive:
        replayed = iter(messages)

        async def replaying() -> Message:
            message = next(replayed, None)
            return message if message is not None else await receive()

        return replaying

    return replay


def _events() -> dict[str, object]:
    """The behavior events (module constants), each under a name all processes agree on."""
    found: dict[str, object] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("simulacra.cloud"):
            continue
        for attribute, value in vars(module).items():
            if isinstance(value, Event):
                found[f"event:{module_name}:{attribute}"] = value
    return found


def is_cloud_request(scope: Scope) -> bool:
    """Everything but the virtualization APIs, the welcome page, the probes' and
    scrapers' routes (which read no cloud state, and must answer while the store does not)
    and the console's other sections than its cloud one is a cloud route."""
    path: str = scope["path"]
    if path.startswith(("/api/", "/stubo/api/")) or path in ("/health", "/metrics"):
        return False
    if path.startswith("/console") and not path.startswith("/console/cloud"):
        return False
    return not (path == "/" and scope["method"] in ("GET", "HEAD"))


class SharedCloudMiddleware:
    """Runs every cloud request the Starlette app answers in ``SharedCloud.run``; the rest
    passes by. ``max_body_bytes``: how much of a body is read before the transaction."""

    def __init__(self, app: ASGIApp, shared: SharedCloud, max_body_bytes: int) -> None:
        self.app = app
        self.shared = shared
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_cloud_request(scope):
            await self.app(scope, receive, send)
            return
        # Read the body first: no lock is held while a slow client uploads.
        replay = await _buffered(receive, self.max_body_bytes)
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        async def work() -> None:
            messages.clear()  # an earlier run's answer, built on parts that have moved since
            await self.app(scope, replay(), capture)

        try:
            await self.shared.run(work)
        except Unavailable as exc:
            await starlette_response(flat_error(exc))(scope, replay(), send)
            return
        for message in messages:  # committed: now the client may learn of it
            await send(message)
