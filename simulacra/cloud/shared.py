"""``--shared-cloud``: the cloud mocks' state and virtual clock live in the shared store.

Without it every process keeps its own cloud state in memory, as Mimic did. With it (only
on the PostgreSQL store) each cloud request, on any instance or worker, runs as one
transaction over one row (``cloud_state``, migration 0002):

1. lock the row (``SELECT version ... FOR UPDATE``): cloud requests of every instance
   now run one at a time;
2. if another process changed the state since this one last saw it (the version moved),
   load the stored state into this process's objects;
3. run the handler against them, holding its answer back;
4. if the state changed (its serialized bytes differ), write it back as version + 1;
5. commit, and only then send the answer: a 2xx means the change is durable.

``SharedCloud.run`` is that transaction, around any unit of work: the data plane's cloud
routes (simulacra/dataplane/cloud.py) call it with their answer's work, and
``SharedCloudMiddleware`` with the Starlette app's, for every other cloud route.

Within a process an ``asyncio.Lock`` serializes cloud requests, so the process holds at
most one connection waiting on the row. A failure anywhere (the database gone, a handler
raising) rolls back and marks the memory stale: the next request reloads it.

The state is pickled, and read back through ``RestrictedUnpickler``, which builds only
Simulacra's cloud classes and a short list of standard types: loading the state never runs
anything else. Long-lived objects that are wiring rather than state (the clock object, the
service backends themselves, behavior events) are pickled as references to this process's
own objects, and the state is loaded *into* the existing backends, so every route's
``request.app.state.cloud.services[...]`` lookup sees it.
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import pickle
import re
import sys
import types
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

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


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only allowed classes; persistent ids resolve to this process's objects."""

    def __init__(self, file: io.BytesIO, objects: dict[str, object] | None = None) -> None:
        super().__init__(file)
        self._objects = objects or {}

    def find_class(self, module: str, name: str) -> Any:
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
    def __init__(self, file: io.BytesIO, refs: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._refs = refs

    def persistent_id(self, obj: Any) -> str | None:
        return self._refs.get(id(obj))

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is itertools.count:
            # Python 3.14 no longer pickles counters: rebuild one from its repr, count(n[, s]).
            match = _COUNT.match(repr(obj))
            if match is None:
                raise pickle.PicklingError(f"cannot pickle {obj!r}")
            start, step = match.groups()
            args = (_number(start),) if step is None else (_number(start), _number(step))
            return itertools.count, args
        if isinstance(obj, _CALLABLES):
            raise pickle.PicklingError(
                f"the cloud state holds a function ({obj!r}); --shared-cloud cannot store it"
            )
        return NotImplemented


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".en") else int(text)


class SharedCloud:
    """One process's view of the shared cloud state: what it holds and which version."""

    def __init__(self, core: CloudCore) -> None:
        self.core = core
        self.store: Any = None  # the PostgreSQL store, set by the app's lifespan
        self._lock = asyncio.Lock()
        self._version: int | None = None  # the stored version memory holds; None: reload
        self._saved = b""  # memory's state as last loaded or written
        # Persistent references: objects every process has, never copied into the state.
        objects: dict[str, object] = {
            "core": core,
            "clock": core.clock,
            "catalog": core.catalog,
            **{f"service:{name}": backend for name, backend in core.services.items()},
            **_events(),
        }
        self._objects = objects
        # An object known by several names (an event re-exported) is written by its first.
        self._refs: dict[int, str] = {}
        for pid in sorted(objects):
            self._refs.setdefault(id(objects[pid]), pid)
        # What an empty row stands for: the state every process starts with.
        self._initial = self.dump()

    def attach(self, store: object) -> None:
        if not hasattr(store, "locked_cloud_state"):
            raise ValueError("--shared-cloud needs the PostgreSQL store (--store postgresql://...)")
        self.store = store

    # The state ---------------------------------------------------------------------

    def dump(self) -> bytes:
        """The clock and every backend's state, pickled."""
        state = {
            "clock": dict(vars(self.core.clock)),
            "services": {
                name: {k: v for k, v in vars(backend).items() if not isinstance(v, _CALLABLES)}
                for name, backend in self.core.services.items()
            },
        }
        buffer = io.BytesIO()
        _Pickler(buffer, self._refs).dump(state)
        return buffer.getvalue()

    def load(self, data: bytes) -> None:
        """Replace memory's state by ``data``'s, in the existing objects."""
        try:
            state = restricted_loads(data, self._objects)
        except Exception as exc:
            raise RuntimeError(
                "cannot load the shared cloud state (written by another Simulacra version?):"
                f" {exc}; docs/scaling.md says how to reset it"
            ) from exc
        vars(self.core.clock).update(state["clock"])
        for name, values in state["services"].items():
            backend = self.core.services.get(name)
            if backend is not None:  # a service this version no longer has is dropped
                vars(backend).update(values)

    # Requests ----------------------------------------------------------------------

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` on the stored state, its changes committed before its result returns.

        Unavailable (the store out of reach) is raised before or instead of the result; the
        caller answers it (``flat_error``: a 503). ``work`` renders its own domain errors:
        one raised here rolls its changes back.
        """
        async with self._lock:
            try:
                return await self._transaction(work)
            except BaseException:
                # Memory may hold changes that were not committed: reload it next time.
                self._version = None
                raise

    async def _transaction(self, work: Callable[[], Awaitable[T]]) -> T:
        written: tuple[int, bytes] | None = None
        async with self.store.locked_cloud_state(self._version) as row:
            if row.version != self._version:
                self.load(row.data if row.data is not None else self._initial)
                # Pickled again rather than ``row.data``: sets pickle in their iteration order,
                # which follows string hashes, which differ between processes.
                self._saved, self._version = self.dump(), row.version
            result = await work()
            data = self.dump()
            if data != self._saved:
                written = (await row.write(data), data)
        if written is not None:  # committed
            self._version, self._saved = written
        return result


async def _buffered(receive: Receive, limit: int) -> Receive:
    """Read the request body now (up to ``limit`` + 1 bytes); replay it to the app."""
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
    replay = iter(messages)

    async def replayed() -> Message:
        message = next(replay, None)
        return message if message is not None else await receive()

    return replayed


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
        # Read the body first: neither lock is held while a slow client uploads.
        receive = await _buffered(receive, self.max_body_bytes)
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        try:
            await self.shared.run(lambda: self.app(scope, receive, capture))
        except Unavailable as exc:
            await starlette_response(flat_error(exc))(scope, receive, send)
            return
        for message in messages:  # committed: now the client may learn of it
            await send(message)
