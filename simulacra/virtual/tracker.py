"""The tracker's pure parts: the record, the ``q`` query language, paging, the pending queue.

The edge (``tracking.py``) queues a ``capture`` of each tracked call (a tuple of plain
values); ``build_record`` turns one into a TrackerRecord when the queue is flushed.
A record keeps the few fields queries filter on as columns and packs the rest (header
blocks and query string as they came in, the start of the body) into one binary value
(``pack_detail``), so writing one is cheap and the store holds it in few bytes; only the
records a client reads are unpacked (``summary``, ``full``). Nothing here does I/O.
"""

from __future__ import annotations

import functools
import operator
import re
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode

import orjson

from simulacra.background import Steps, drain
from simulacra.dataplane.request import Request
from simulacra.errors import Invalid, shown
from simulacra.virtual.model import normalize_host

RECORDS_PATH = "/api/v2/tracker/records"
SCENARIO_PREFIX = "/api/v2/scenarios/objects/"
MATCHER_PATH = "/api/v2/matcher"
V1_PREFIX = "/stubo/api/"
RESPONSE_PREVIEW_CHARS = 120  # Mirage's stubo_response is cut to 120 characters
BODY_CAPTURE_BYTES = 1024  # enough for the preview and most error messages
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Captures carry perf_counter readings (cheap); this turns one into wall-clock time.
_EPOCH_OFFSET = time.time() - time.perf_counter()


def is_tracked(path: str) -> bool:
    """Playback, stub and session calls: ``.../stubs``, ``.../action``, the matcher, and all of
    API v1 (Mirage tracked every v1 call)."""
    if path.startswith(SCENARIO_PREFIX):
        return path.endswith("/stubs") or path.endswith("/action")
    return path == MATCHER_PATH or path.startswith(V1_PREFIX)


# the record ------------------------------------------------------------------


class TrackerRecord(NamedTuple):
    """One tracked call as stored: the fields queries filter on, and the rest packed.

    A tuple in column order, so a store writes it as it is; ``detail`` is the JSON of a
    CallDetail, packed once when the record is built and unpacked only when it is shown.
    """

    id: int | None = None  # assigned by the store
    function: str = ""  # the request path
    scenario: str | None = None  # "host:name"
    session: str | None = None
    host: str = ""  # Host header minus port, lowercased
    return_code: int = 0
    duration_ms: int = 0  # from the handler's start to its response, the delay included
    delay: int = 0  # ms of delay policy applied
    detail: bytes = b"[]"
    recorded: int = 0  # 1: a recording session forwarded it upstream (``recorded:true``)
    stub_id: str | None = None  # the stub that answered a playback; None: no stub did

    @property
    def href(self) -> str:
        return f"{RECORDS_PATH}/objects/{self.id}"

    def details(self) -> CallDetail:
        return unpack_detail(self.detail)

    def summary(self) -> dict[str, Any]:
        """The list view (Mirage's projection, plus ``session``)."""
        call = self.details()
        params = call.request_params
        return {
            "id": str(self.id),
            "href": self.href,
            "start_time": call.start_time,
            "function": self.function,
            "scenario": self.scenario,
            "session": self.session,
            "request_params": {"session": params["session"]} if "session" in params else {},
            "return_code": self.return_code,
            "duration_ms": self.duration_ms,
            "delay": self.delay,
            "stubo_response": call.stubo_response,
        }

    def full(self) -> dict[str, Any]:
        """The whole record."""
        call = self.details()
        full = {
            "id": str(self.id),
            "start_time": call.start_time,
            "function": self.function,
            "scenario": self.scenario,
            "session": self.session,
            "host": self.host,
            "port": str(call.port),
            "remote_ip": call.remote_ip,
            "server": call.server,
            "request_method": call.request_method,
            "request_params": call.request_params,
            "request_headers": display_headers(call.request_headers),
            "request_size": call.request_size,
            "return_code": self.return_code,
            "response_headers": display_headers(call.response_headers),
            "response_size": call.response_size,
            "stubo_response": call.stubo_response,
            "duration_ms": self.duration_ms,
            "delay": self.delay,
            "error": call.error(self.return_code),
            "tracking_level": "normal",
            "stub_id": self.stub_id,
        }
        if self.recorded:  # only then: Mirage's records keep their shape
            full["recorded"] = True
        return full


class CallDetail(NamedTuple):
    """The part of a record nobody filters on, kept as it came in (``pack_detail``)."""

    started: float = 0.0  # epoch seconds
    request_method: str = ""
    remote_ip: str = ""
    port: int = 0  # the server's
    server: str = ""  # the server's host name
    query: str = ""  # the raw query string
    request_headers: str = ""  # encode_headers() of the headers as received
    request_size: int = 0
    response_headers: str = ""
    response_size: int = 0
    body_start: str = ""  # the first BODY_CAPTURE_BYTES of the response body, decoded

    @property
    def start_time(self) -> str:
        """Mirage's "YYYY-MM-DD HH:MM:SS" (UTC)."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started))

    @property
    def stubo_response(self) -> str:
        """The start of the response body (Mirage's name for it)."""
        return self.body_start[:RESPONSE_PREVIEW_CHARS]

    @property
    def request_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def error(self, status: int) -> str | None:
        """For an error status: the v2 envelope's message, else the start of the body."""
        if status < 400:
            return None
        try:
            document = orjson.loads(self.body_start)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            error = document.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return error["message"]
        return self.body_start[:RESPONSE_PREVIEW_CHARS]


# The packed detail ----------------------------------------------------------
#
# A record's detail is most of its size, and the store keeps up to ``tracker_cap`` of them
# (in memory with ``memory://``). Packed as binary, not JSON: no escaping (JSON spelled each
# header separator as \u0000), headers and body kept as the bytes they came as, and the
# commonest header names as one byte each. Records packed as JSON (older stores) still read.

DETAIL_BINARY = 1  # first byte of a binary detail (a JSON one starts with "[")
# version, started, port (+1; 0: none), response size, then the lengths of: method,
# remote ip, server, content-length digits, body start, query, request headers, response
# headers; the fields follow in that order.
_DETAIL = struct.Struct("<BdIIHHHHHIII")
# Header names HTTP forbids control bytes in, so a lone byte below 0x20 never was one.
COMMON_HEADERS = (
    "host",
    "content-length",
    "content-type",
    "session",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "stubo-request-session",
    "x-stubo-version",
    "target_host",
    "priority",
    "stateful",
    "authorization",
    "date",
    "server",
)
_NAME_CODE = {name.encode(): bytes([i + 1]) for i, name in enumerate(COMMON_HEADERS)}
_CODE_NAME = {chr(i + 1): name for i, name in enumerate(COMMON_HEADERS)}


_compact: dict[bytes, bytes] = {}
MEMO_BYTES = 2048  # header blocks up to this size are memoized (1,000 of them at most)


def compact_headers(block: bytes) -> bytes:
    """A header block with each part that is a common header name as its one-byte code."""
    compact = _compact.get(block)
    if compact is None:  # memoized: most calls repeat the headers of earlier ones
        codes = _NAME_CODE
        compact = b"\0".join([codes.get(part, part) for part in block.split(b"\0")])
        if len(block) <= MEMO_BYTES:
            if len(_compact) >= 1000:
                _compact.clear()
            _compact[block] = compact
    return compact


def expand_headers(block: str) -> str:
    """``compact_headers`` undone (on the latin-1 text of the block)."""
    if not block:
        return block
    names = _CODE_NAME
    return "\0".join([names.get(part, part) for part in block.split("\0")])


def pack_detail(
    started: float,
    method: str,
    remote_ip: str,
    port: int | str | None,
    server: str,
    query: bytes,
    request_headers: bytes,
    length: bytes,
    response_headers: bytes,
    size: int,
    body_start: bytes,
) -> bytes:
    """A CallDetail as bytes (``unpack_detail`` reads it back); headers as captured."""
    request_headers = compact_headers(request_headers)
    response_headers = compact_headers(response_headers)
    if isinstance(port, str) and port.isdigit():
        port = int(port)  # granian gives it as text; records show it as text either way
    try:
        texts = (method.encode(), remote_ip.encode(), server.encode())
        head = _DETAIL.pack(
            DETAIL_BINARY,
            started,
            0 if port is None else int(port) + 1,
            size,
            *map(len, texts),
            len(length),
            len(body_start),
            len(query),
            len(request_headers),
            len(response_headers),
        )
    except (struct.error, TypeError, AttributeError, UnicodeError):  # odd values: JSON
        detail = _call_detail(
            started,
            method,
            remote_ip,
            port,
            server,
            query,
            request_headers,
            length,
            response_headers,
            size,
            body_start,
        )
        return orjson.dumps(tuple(detail))  # orjson writes no NamedTuple
    return b"".join((head, *texts, length, body_start, query, request_headers, response_headers))


def started_of(detail: bytes) -> float:
    """A packed detail's start time (epoch seconds), without unpacking the rest (analytics
    reads it from every record it counts)."""
    if detail[:1] == b"\x01":
        return float(_STARTED.unpack_from(detail, 1)[0])
    return unpack_detail(detail).started


def unpack_detail(detail: bytes) -> CallDetail:
    if detail[:1] != b"\x01":
        return CallDetail(*orjson.loads(detail))
    (_, started, port, size, *lengths) = _DETAIL.unpack_from(detail)
    fields = []
    at = _DETAIL.size
    for n in lengths:
        fields.append(detail[at : at + n])
        at += n
    method, remote_ip, server, length, body_start, query, request_headers, response_headers = fields
    return _call_detail(
        started,
        method.decode(),
        remote_ip.decode(),
        port - 1 if port else None,
        server.decode(),
        query,
        request_headers,
        length,
        response_headers,
        size,
        body_start,
    )


def _call_detail(
    started: float,
    method: Any,
    remote_ip: Any,
    port: Any,
    server: Any,
    query: bytes,
    request_headers: bytes,
    length: bytes,
    response_headers: bytes,
    size: Any,
    body_start: bytes,
) -> CallDetail:
    """A call's fields as ``pack_detail`` keeps them (bytes; header blocks compacted) -> its
    CallDetail: the one decoding both of its forms share (the binary one and, for values
    it cannot pack, JSON)."""
    return CallDetail(
        started,
        method,
        remote_ip,
        port,
        server,
        query.decode("latin-1"),
        expand_headers(request_headers.decode("latin-1")),
        int(length) if length else 0,
        expand_headers(response_headers.decode("latin-1")),
        size,
        body_start.decode("utf-8", errors="replace"),
    )


def decode_headers(block: str) -> dict[str, str]:
    """A header block as ``capture`` joins it (name NUL value NUL ...) -> a dict."""
    if not block:
        return {}
    parts = block.split("\0")
    return dict(zip(parts[::2], parts[1::2], strict=False))


@functools.lru_cache(maxsize=1024)
def header_name(name: str) -> str:
    """Tornado's spelling of a header name (``content-type`` -> ``Content-Type``).

    ASGI servers hand over lower-cased names; Mirage's records showed Tornado's, and
    clients read ``record["request_headers"]["Host"]``.
    """
    return "-".join(word.capitalize() for word in name.split("-"))


def display_headers(block: str) -> dict[str, str]:
    """A header block for a record's detail, with the names spelled as Mirage showed them."""
    return {header_name(name): value for name, value in decode_headers(block).items()}


_hosts: dict[bytes, str] = {}  # Host header -> host; a handful of distinct values


def host_of(header: bytes) -> str:
    """The Host header minus port, lowercased (memoized: every record needs it)."""
    host = _hosts.get(header)
    if host is None:
        if len(_hosts) > 1000:  # a client inventing Host headers must not grow this forever
            _hosts.clear()
        host = _hosts[header] = normalize_host(header.decode("latin-1") or "localhost")
    return host


def locate(
    path: str, host: str, session: str | None, target_host: str | None
) -> tuple[str | None, str | None]:
    """(scenario, session) of a tracked call, from its path and headers.

    The scenario is the path's (``host:name``, or the Host's namespace, or
    ``target_host``'s); the matcher's ``session`` header is ``scenario:session``.
    """
    if path.startswith(SCENARIO_PREFIX):
        name = path[len(SCENARIO_PREFIX) :].split("/", 1)[0]
        if ":" in name:
            given, _, short = name.rpartition(":")
            return f"{given.lower()}:{short}", session
        return f"{(target_host or host).lower()}:{name}", session
    if path == MATCHER_PATH and session:
        *scenario_part, last = session.split(":")
        if scenario_part and all(scenario_part) and last:
            name = ":".join(scenario_part)
            if ":" in name:
                given, _, short = name.rpartition(":")
                return f"{given.lower()}:{short}", last
            return f"{host}:{name}", last
    return None, session


def join_headers(raw: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name NUL value NUL ...: one bytes object (HTTP forbids NUL in headers)."""
    return b"\0".join(chain.from_iterable(raw))


def capture(
    request: Request,
    status: int,
    response_headers: bytes,
    size: int,
    body_start: bytes,
    t0: float,
    delay: int = 0,
    session: object = None,
    scenario: str | None = None,
    t1: float | None = None,
    recorded: int = 0,
    stub_id: str | None = None,
) -> tuple[Any, ...]:
    """What the request path keeps of a tracked call: a tuple of plain values only.

    ``response_headers`` is ``join_headers`` of the headers sent, ``size`` the body's
    length and ``body_start`` its first BODY_CAPTURE_BYTES. The notes are what only the
    handler knows: the delay it applied (ms), the session named in a body or argument, and
    the scenario and session a bound port or path prefix plays (else they are read from the
    path and headers when the record is built, ``locate``), and the id of the stub that
    answered a playback (None for a miss, an error, a proxied or recorded call). The
    request headers are kept as a tuple of their (immutable) pairs, so the tuple holds no
    mutable container: the garbage collector soon stops visiting it, and the request dies
    with its exchange.
    """
    client, local = request.client, request.local
    return (
        t0,
        time.perf_counter() if t1 is None else t1,
        request.path,
        request.method,
        request.query,
        # A shallow copy (its pairs are immutable): joining them waits for the flush, and
        # most flushes need not (``build_record``'s memo); ~3,000 instructions a call saved.
        tuple(request.headers),
        client[0] if client else "",
        local[1] if local else 0,
        delay,
        session if isinstance(session, str) else None,
        scenario,
        status,
        response_headers,
        size,
        body_start,
        recorded,
        stub_id,
    )


FAILED = (500, b"", 0, b"internal error")  # what a capture keeps of a call that failed


_located: dict[tuple[Any, ...], tuple[str, str | None, str | None]] = {}
RequestFacts = tuple[bytes, bytes | None, bytes | None, bytes | None]
_facts: dict[bytes, RequestFacts] = {}


def _request_facts(block: bytes) -> RequestFacts:
    """(host, session, target_host, content-length) of a request's header block; memoized,
    as a client repeats the same headers (the last of a repeated name counts)."""
    facts = _facts.get(block)
    if facts is not None:
        return facts
    parts = block.split(b"\0")
    host = b""
    session = fallback_session = target_host = length = None
    for i in range(0, len(parts) - 1, 2):  # ASGI header names are lowercase
        name = parts[i]
        if name == b"host":
            host = parts[i + 1]
        elif name == b"content-length":
            length = parts[i + 1]
        elif name == b"session":
            session = parts[i + 1]
        elif name == b"stubo-request-session":
            fallback_session = parts[i + 1]
        elif name == b"target_host":
            target_host = parts[i + 1]
    if len(_facts) >= 1000:  # bounded: headers that change on every call would fill it
        _facts.clear()
    facts = _facts[block] = (host, session or fallback_session, target_host, length)
    return facts


# A capture minus its two clock readings -> the record's fields that follow from it, and
# its packed detail minus the start time. A playback run repeats a few of these, so most
# records are built from here with a slice, a dict probe and one struct pack (a third of
# the full build's CPU; the full build is kept for the rest).
_Built = tuple[str, str | None, str | None, str, int, int, bytes, int, str | None]
# One memo per server name (a tracker has one), so that the key is the capture's own slice.
_built_for: dict[str, dict[tuple[Any, ...], _Built]] = {}
_STARTED = struct.Struct("<d")  # the detail's start time, right after its version byte
_V1_STARTED = struct.Struct("<Bd")  # the version byte (1) and the start time, at once
MEMO_RECORDS = 1000
# The same, but for captures that differ only in the answer's body (its size and start): a
# sequence's responses, a template's renders. Its detail is packed around the body: the
# record's fields, the detail's port and lengths but the body's, and its bytes before and
# after the body's.
_Shaped = tuple[
    str, str | None, str | None, str, int, int, int, str | None,  # the record's fields
    int, tuple[int, ...], tuple[int, ...], bytes, bytes,  # the detail's parts
]  # fmt: skip
_shaped_for: dict[str, dict[tuple[Any, ...], _Shaped]] = {}
# TrackerRecord(*fields) without the Python-level __new__ NamedTuple generates.
_new_record = functools.partial(tuple.__new__, TrackerRecord)


def build_record(captured: tuple[Any, ...], server: str = "") -> TrackerRecord:
    """A ``capture`` -> a TrackerRecord: find host, scenario and session; pack the rest."""
    return build_records((captured,), server)[0]


def build_records(batch: Sequence[tuple[Any, ...]], server: str = "") -> list[TrackerRecord]:
    """``build_record`` of each capture, in order: the flush's loop, its lookups hoisted."""
    memo = _built_for.get(server)
    if memo is None:
        memo = _built_for[server] = {}
    shapes = _shaped_for.get(server)
    if shapes is None:
        shapes = _shaped_for[server] = {}
    known_for = memo.get
    started = _V1_STARTED.pack
    new = tuple.__new__
    records: list[TrackerRecord] = []
    for captured in batch:
        key = captured[2:]
        try:
            known = known_for(key)
        except TypeError:  # an unhashable value a handler noted: build it in full
            records.append(_build_record(captured, server))
            continue
        t0 = captured[0]
        if known is not None:
            path, scenario, session, host, status, delay, rest, recorded, stub_id = known
            detail = started(1, _EPOCH_OFFSET + t0) + rest
        else:
            shape = key[:11] + key[13:]  # without the answer's size and body start
            shaped = shapes.get(shape)
            packed = None if shaped is None else _detail_around(shaped, captured)
            if shaped is None or packed is None:
                record = _build_record(captured, server)
                if record.detail[:1] == b"\x01":  # a JSON detail holds the time in its text
                    if len(memo) >= MEMO_RECORDS:  # bounded: calls that all differ would fill it
                        memo.clear()
                    memo[key] = (
                        *record[1:5],
                        record.return_code,
                        record.delay,
                        record.detail[9:],
                        record.recorded,
                        record.stub_id,
                    )
                    if len(shapes) >= MEMO_RECORDS:
                        shapes.clear()
                    shapes[shape] = _shape(record)
                records.append(record)
                continue
            path, scenario, session, host, status, delay, recorded, stub_id = shaped[:8]
            detail = packed
        fields = (
            None,
            path,
            scenario,
            session,
            host,
            status,
            round((captured[1] - t0) * 1000),
            delay,
            detail,
            recorded,
            stub_id,
        )
        records.append(new(TrackerRecord, fields))
    return records


def _shape(record: TrackerRecord) -> _Shaped:
    """What ``_detail_around`` needs of a (binary) record to build another that differs from it
    only in the answer's size and body start."""
    detail = record.detail
    _, _, port, _, *lengths = _DETAIL.unpack_from(detail)
    start = _DETAIL.size + sum(lengths[:4])  # method, remote ip, server, content-length
    end = start + lengths[4]  # the body start's
    return (
        record.function,
        record.scenario,
        record.session,
        record.host,
        record.return_code,
        record.delay,
        record.recorded,
        record.stub_id,
        port,
        tuple(lengths[:4]),
        tuple(lengths[5:]),
        detail[_DETAIL.size : start],
        detail[end:],
    )


def _detail_around(shaped: _Shaped, captured: tuple[Any, ...]) -> bytes | None:
    """``captured``'s packed detail, from the shape of a record that differed only in its
    answer's body; None where its size cannot be packed (``pack_detail`` then writes JSON)."""
    port, before, after, head, tail = shaped[8:]
    body_start = captured[14]
    try:
        packed = _DETAIL.pack(
            DETAIL_BINARY,
            _EPOCH_OFFSET + captured[0],
            port,
            captured[13],
            *before,
            len(body_start),
            *after,
        )
    except struct.error:
        return None
    return b"".join((packed, head, body_start, tail))


def _build_record(captured: tuple[Any, ...], server: str) -> TrackerRecord:
    (
        t0,
        t1,
        path,
        method,
        query,
        request_headers,
        remote_ip,
        port,
        delay,
        noted,
        noted_scenario,
        status,
        response_headers,
        size,
        body_start,
        recorded,
        stub_id,
    ) = captured
    request_headers = join_headers(request_headers)  # captured as the (name, value) pairs
    host, session, target_host, length = _request_facts(request_headers)
    key = (path, host, session, target_host)
    located = _located.get(key)
    if located is None:  # a playback run repeats a few of these: remember them
        if len(_located) > 10_000:
            _located.clear()
        where = host_of(host)
        located = _located[key] = (
            where,
            *locate(
                path,
                where,
                session.decode("latin-1") if session else None,
                target_host.decode("latin-1") if target_host else None,
            ),
        )
    where, scenario, session_name = located
    if noted:
        session_name = noted
    if noted_scenario:
        scenario = noted_scenario
    detail = pack_detail(
        _EPOCH_OFFSET + t0,
        method,
        remote_ip,
        port,
        server,
        query,
        request_headers,
        length if length and length.isdigit() else b"",
        response_headers,
        size,
        body_start,
    )
    return TrackerRecord(
        None,
        path,
        scenario,
        session_name,
        where,
        status,
        round((t1 - t0) * 1000),
        delay,
        detail,
        recorded,
        stub_id,
    )


# the pending queue -----------------------------------------------------------


class TrackerQueue:
    """Captures waiting to be written; bounded, so memory stays flat under load.

    When the store falls behind, the oldest pending captures are dropped (and counted)
    rather than letting the queue grow without limit.
    """

    def __init__(self, max_pending: int = 50_000) -> None:
        self.max_pending = max_pending
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=max_pending)
        self.dropped = 0

    def add(self, captured: tuple[Any, ...]) -> None:
        pending = self._pending
        if len(pending) == self.max_pending:
            self.dropped += 1
        pending.append(captured)

    def drain(self) -> deque[tuple[Any, ...]]:
        """Everything pending, oldest first; the queue starts empty again."""
        pending, self._pending = self._pending, deque(maxlen=self.max_pending)
        return pending

    def __len__(self) -> int:
        return len(self._pending)


class TrackerJournal:
    """The newest ``cap`` records, held as Python objects: the tracker of the in-memory store.

    Ids are implied by position: they are contiguous and only the oldest records are
    evicted, so the record at index i (0: the oldest held) has id ``first_id + i``. (An
    in-memory SQLite table cost about 3.5 us more per record to insert and evict, the larger
    part of what tracking cost playback.) Reads scan with TrackerQuery.

    Records are held in blocks of ``_BLOCK``: appended to the newest block, evicted from the
    oldest, whose first ``_skip`` records are gone (a block is dropped once all of its are).
    A scan reads a snapshot: the list of blocks and how many records they hold. Blocks only
    grow at their end and an evicted block stays whole for the scan that holds it, so the
    snapshot is ~100 references where a copy of 100,000 records held the loop 1-2 ms, and
    each step of the scan filters one block.
    """

    def __init__(self) -> None:
        self._blocks: list[list[tuple[Any, ...]]] = []
        self._skip = 0  # records of the oldest block already evicted
        self._held = 0
        self._next_id = 1

    @property
    def first_id(self) -> int:
        return self._next_id - self._held

    def clear(self) -> None:
        """Forget every record; ids keep growing from where they were."""
        self._blocks, self._skip, self._held = [], 0, 0

    def add(self, records: Sequence[TrackerRecord], cap: int) -> None:
        """Append ``records`` (ids ignored: they are assigned here), keep the newest ``cap``."""
        # As plain tuples: the garbage collector untracks a tuple of strings, numbers and
        # bytes (not a NamedTuple), so a full journal does not slow every collection.
        rows = list(map(tuple, records))
        blocks = self._blocks
        taken = 0
        while taken < len(rows):
            if not blocks or len(blocks[-1]) == _BLOCK:
                blocks.append([])
            newest = blocks[-1]
            room = _BLOCK - len(newest)
            newest += rows[taken : taken + room]
            taken += room
        self._held += len(rows)
        self._next_id += len(rows)
        excess = self._held - max(cap, 0)
        if excess > 0:
            self._evict(excess)

    def _evict(self, count: int) -> None:
        self._held -= count
        if not self._held:
            self.clear()
            return
        # Every block but the newest is full, so the oldest held record is at block
        # skip // _BLOCK (it is never past the newest: some record is held).
        skip = self._skip + count
        gone = skip // _BLOCK
        del self._blocks[:gone]
        self._skip = skip - gone * _BLOCK

    def _window(self, query: TrackerQuery) -> tuple[int, int, TrackerQuery]:
        """(start, stop, the rest of the query): the query's id range as indexes."""
        low, high, rest = query.id_window()
        first, held = self.first_id, self._held
        start = min(max(low - first, 0), held)
        return start, max(min(high - first + 1, held), start), rest

    def _at(self, index: int) -> tuple[Any, ...]:
        return _held_at(self._blocks, self._skip, index)

    def page(self, query: TrackerQuery, skip: int, limit: int) -> tuple[int, list[TrackerRecord]]:
        """(how many match, the ``limit`` matches after ``skip``), newest first."""
        start, stop, rest = self._window(query)
        if not rest.selects_all:
            return drain(self.page_steps(query, skip, limit))
        # The ids asked for are indexes start..stop-1: counted and sliced without a scan.
        # Past the end, nothing (skip < 2**63).
        newest = stop - 1 - min(skip, stop - start)
        oldest = max(stop - skip - limit, start)
        first = self.first_id
        return stop - start, [
            _with_id(self._at(i), first + i) for i in range(newest, oldest - 1, -1)
        ]

    def page_steps(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> Steps[tuple[int, list[TrackerRecord]]]:
        """``page``, as steps of one block each (background.py): filtering 100,000 records
        takes 15-70 ms. It reads the records held at its first step."""
        start, stop, rest = self._window(query)
        if rest.selects_all:
            return self.page(query, skip, limit)  # no scan: counted and sliced at once
        blocks, offset, first = list(self._blocks), self._skip, self.first_id
        picked: list[int] = []  # indexes, newest first
        if start < stop:
            low, high = offset + start, offset + stop  # positions in the blocks
            for b in range((high - 1) // _BLOCK, low // _BLOCK - 1, -1):
                base = b * _BLOCK
                begin, end = max(low - base, 0), min(high - base, _BLOCK)
                shift = base + begin - offset
                picked += [shift + j for j in _matching(rest, blocks[b][begin:end])]
                yield
        page = picked[skip : skip + limit]
        return len(picked), [_with_id(_held_at(blocks, offset, i), first + i) for i in page]

    def get(self, record_id: int) -> TrackerRecord | None:
        index = record_id - self.first_id
        if 0 <= index < self._held:
            return _with_id(self._at(index), record_id)
        return None

    def __len__(self) -> int:
        return self._held


def _held_at(blocks: list[list[tuple[Any, ...]]], skip: int, index: int) -> tuple[Any, ...]:
    """The record at ``index`` (0: the oldest held) of blocks whose first ``skip`` are gone."""
    position = skip + index
    return blocks[position // _BLOCK][position % _BLOCK]


def _with_id(record: tuple[Any, ...], record_id: int) -> TrackerRecord:
    return _new_record((record_id, *record[1:]))


# Records per block of a TrackerJournal, which is what a step of its scan filters (~0.2-0.5
# ms; background.py runs steps for up to a 1 ms slice). A block's evicted records stay held
# until all of its are evicted: at most this many more than the cap.
_BLOCK = 1024
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_INDEX = {name: i for i, name in enumerate(TrackerRecord._fields)}


def _matching(query: TrackerQuery, rows: list[tuple[Any, ...]]) -> list[int]:
    """Indexes of the ``rows`` (TrackerRecord tuples) that ``query.matches``, newest first.

    The same test as ``matches``, one part at a time over the survivors of the last: a
    comprehension per part costs about 60 ns a row, where ``matches`` on a record costs
    several microseconds (a filtered read of 100,000 records: 170-570 -> 15-70 ms).
    """
    picked = list(range(len(rows) - 1, -1, -1))
    if query.host is not None:
        host = query.host
        column = _INDEX["host"]
        picked = [i for i in picked if rows[i][column] == host]
    for session in query.sessions:
        column = _INDEX["session"]
        picked = [i for i in picked if rows[i][column] == session]
    for c in query.comparisons:
        column, value = _INDEX[c.field], c.value
        if c.op == "=":
            picked = [i for i in picked if rows[i][column] == value]
        else:
            compare = _COMPARE[c.op]
            picked = [i for i in picked if compare(rows[i][column], value)]
    if query.words:
        # Decided once per distinct (path, scenario): a journal repeats a few of them.
        words, path, scenario_at = query.words, _INDEX["function"], _INDEX["scenario"]
        good = {
            (function, scenario)
            for function, scenario in {(rows[i][path], rows[i][scenario_at]) for i in picked}
            if all(w in ascii_lower(function) or w in ascii_lower(scenario or "") for w in words)
        }
        picked = [i for i in picked if (rows[i][path], rows[i][scenario_at]) in good]
    return picked


# the q query -----------------------------------------------------------------

OPERATORS = ("<=", ">=", "<", ">", "=")
FIELDS = {"sc": "return_code", "rt": "duration_ms", "d": "delay"}
# ``recorded:true``: forwarded upstream by a recording session; ``recorded:false``: the rest.
RECORDED_VALUES = {"true": 1, "false": 0}
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits; at most 19 of them, as in a 64-bit int
# Numbers go to the store as they are: SQLite and PostgreSQL bind at most a signed 64-bit
# integer (a larger one was an OverflowError, a 500), so a query's numbers must fit in one.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int64(text: str) -> int | None:
    """``text`` as an integer that fits in 64 bits, or None (not one, or out of range)."""
    if not _INTEGER.fullmatch(text):
        return None
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lowercase A-Z only: the same case folding as SQLite's lower() and LIKE."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Comparison:
    field: str  # return_code | duration_ms | delay | recorded | id (``newer_than``)
    op: str  # one of OPERATORS
    value: int

    def holds(self, actual: int) -> bool:
        op, value = self.op, self.value
        if op == "<":
            return actual < value
        if op == "<=":
            return actual <= value
        if op == ">":
            return actual > value
        if op == ">=":
            return actual >= value
        return actual == value


@dataclass(frozen=True)
class TrackerQuery:
    """Every part must hold (AND). ``words`` match the path or scenario, case-insensitively."""

    words: tuple[str, ...] = ()  # ascii-lowered
    comparisons: tuple[Comparison, ...] = ()
    sessions: tuple[str, ...] = ()
    host: str | None = None  # only this host (``all-hosts=false``)

    @property
    def selects_all(self) -> bool:
        return not (self.words or self.comparisons or self.sessions) and self.host is None

    def newer_than(self, record_id: int) -> TrackerQuery:
        """This query, and only records with an id above ``record_id`` (the console's tail
        asks for what came since the last record it sent). Not part of the ``q`` language:
        the admin API's queries read as they did."""
        return self._bounded(Comparison("id", ">", record_id))

    def older_than(self, record_id: int) -> TrackerQuery:
        """This query, and only records with an id below ``record_id`` (paging backwards by
        id: a store finds the page with its index, where a large ``skip`` is a scan)."""
        return self._bounded(Comparison("id", "<", record_id))

    def _bounded(self, bound: Comparison) -> TrackerQuery:
        return TrackerQuery(self.words, (*self.comparisons, bound), self.sessions, self.host)

    def id_window(self) -> tuple[int, int, TrackerQuery]:
        """(lowest id, highest id, the rest of the query): the id comparisons as one range
        (the in-memory journal turns it into a slice of its records)."""
        low, high = INT64_MIN, INT64_MAX
        rest: list[Comparison] = []
        for c in self.comparisons:
            if c.field != "id":
                rest.append(c)
                continue
            if c.op in (">", ">=", "="):
                low = max(low, c.value + (c.op == ">"))
            if c.op in ("<", "<=", "="):
                high = min(high, c.value - (c.op == "<"))
        return low, high, TrackerQuery(self.words, tuple(rest), self.sessions, self.host)

    def matches(self, record: TrackerRecord) -> bool:
        if self.host is not None and record.host != self.host:
            return False
        if any(record.session != s for s in self.sessions):
            return False
        for c in self.comparisons:
            if not c.holds(getattr(record, c.field)):
                return False
        function = ascii_lower(record.function)
        scenario = ascii_lower(record.scenario or "")
        return all(w in function or w in scenario for w in self.words)


def parse_query(q: str | None, host: str | None = None) -> TrackerQuery:
    """``"my_suite sc:>=200 sc:<=201 rt:>200 d:>0 session:s1"`` -> a TrackerQuery.

    Space-separated parts, all of which must hold: ``sc:`` (status), ``rt:`` (duration ms)
    and ``d:`` (delay ms) take ``<``, ``<=``, ``>``, ``>=``, ``=`` or nothing (equal) and an
    integer; ``session:`` an exact session name; ``recorded:true`` the calls a recording
    session forwarded upstream, ``recorded:false`` the others; any other word is a
    case-insensitive substring of the path or the scenario. A malformed filter is
    ``Invalid`` (Mirage silently ignored it, which showed unfiltered results).
    """
    words: list[str] = []
    comparisons: list[Comparison] = []
    sessions: list[str] = []
    for token in (q or "").split():
        prefix, colon, rest = token.partition(":")
        key = prefix.lower()
        if colon and key in FIELDS:
            comparisons.append(_comparison(FIELDS[key], rest, token))
        elif colon and key == "session":
            if not rest:
                raise Invalid(f"query part {shown(token)} needs a session name after 'session:'")
            sessions.append(rest)
        elif colon and key == "recorded":
            flag = RECORDED_VALUES.get(rest.lower())
            if flag is None:
                raise Invalid(
                    f"query part {shown(token)} must be 'recorded:true' or 'recorded:false'"
                )
            comparisons.append(Comparison("recorded", "=", flag))
        else:
            words.append(ascii_lower(token))
    return TrackerQuery(tuple(words), tuple(comparisons), tuple(sessions), host)


def _comparison(field_name: str, text: str, token: str) -> Comparison:
    op = next((o for o in OPERATORS if text.startswith(o)), "=")
    number = text[len(op) :] if text.startswith(op) else text
    value = int64(number)
    if value is None:
        raise Invalid(
            f"query part {shown(token)} must be like 'sc:200', 'rt:>=100' or 'd:<50'"
            " (an operator <, <=, >, >=, = and an integer that fits in 64 bits)"
        )
    return Comparison(field_name, op, value)


# paging ----------------------------------------------------------------------


def parse_paging(skip: str | None, limit: str | None) -> tuple[int, int]:
    """``skip`` 0..2**63-1 (default 0); ``limit`` >= 1 (default 100), above MAX_LIMIT
    clamped; each an integer that fits in 64 bits (the stores bind no larger one)."""

    def integer(text: str | None, name: str, default: int) -> int:
        if text is None or text == "":
            return default
        number = int64(text.strip())
        if number is None:
            raise Invalid(f"{name} must be an integer that fits in 64 bits, got {shown(text)}")
        return number

    skip_n, limit_n = integer(skip, "skip", 0), integer(limit, "limit", DEFAULT_LIMIT)
    if skip_n < 0:
        raise Invalid(f"skip must be 0 or more, got {skip_n}")
    if limit_n < 1:
        raise Invalid(f"limit must be 1 or more, got {limit_n}")
    return skip_n, min(limit_n, MAX_LIMIT)


def paging(
    skip: int, limit: int, total: int, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """Links for the pages around ``skip``, keeping the query (``q``, ``all-hosts``).

    Fixes Mirage's off-by-one bugs: ``next`` exists while anything lies past this page
    (Mirage hid the last partial page), ``last`` is the start of the final page counting
    from 0 in steps of ``limit`` (Mirage's ``total - limit`` went negative), and
    ``previous`` from beyond the end goes to the last page.
    """
    suffix = "&" + urlencode(extra) if extra else ""

    def link(at: int) -> str:
        return f"{RECORDS_PATH}?skip={at}&limit={limit}{suffix}"

    last = (total - 1) // limit * limit if total > 0 else 0
    return {
        "first": link(0),
        "previous": link(max(0, min(skip - limit, last))) if skip > 0 else None,
        "next": link(skip + limit) if skip + limit < total else None,
        "last": link(last),
        "currentLimit": limit,
        "totalItems": total,
    }
