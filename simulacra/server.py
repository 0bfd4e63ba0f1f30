"""Simulacra's own HTTP/1.1 server: one asyncio loop (uvloop where installed), httptools, ASGI 3.

Why its own: on the 2-core bench machine granian's ASGI bridge cost more CPU per request
than the playback it served (an app answering ``{}`` to a 600-byte POST: ~14,000 req/s under
granian, ~30,000 here; bench/README.md). Here a request is parsed, handed to the app and
answered on one thread, with no handoff between threads.

What it does: HTTP/1.1 and 1.0 over TCP; keep-alive and pipelining (answers in request
order); request bodies streamed to the app with back-pressure; ``Expect: 100-continue``;
responses framed by Content-Length, or chunked when the app streams; the ASGI lifespan
protocol; every queued connection accepted at each wakeup (``Listener``); idle keep-alive
connections closed after ``KEEP_ALIVE_S``; a graceful stop on SIGTERM or SIGINT; several
worker processes forked onto one listening socket, a dead one replaced. Not: TLS, HTTP/2,
WebSocket (an upgrade is answered as a plain request, then the connection closes).

No client may hurt another: a head is bounded as it arrives (``MAX_HEAD_BYTES``,
``MAX_HEADERS``), slow heads and bodies are timed out (``HEAD_TIMEOUT_S``, ``BODY_WINDOW_S``,
``BODY_MIN_RATE``) by a once-a-second scan, and a closed connection drops what it held at
once. Response headers are checked before they are written (``bad_header``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import email.utils
import http
import logging
import os
import re
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import httptools

from simulacra.dataplane import Route
from simulacra.dataplane.request import (
    CONNECTION_RESET_BY_PEER,
    EMPTY_RESPONSE,
    MALFORMED_RESPONSE_CHUNK,
    Answer,
    Later,
    Request,
    check_declared,
    check_size,
    dribble_pieces,
    text_answer,
)
from simulacra.errors import DomainError
from simulacra.metrics import METRICS_PATH
from simulacra.ops import ACCESS_LOGGER, HEALTH_PATH, error_cause, request_labels

if TYPE_CHECKING:
    from simulacra.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger("simulacra.server")
# One line per answered request at info, answers of 400 and above at warning (with why).
access_log = logging.getLogger(ACCESS_LOGGER)
# Polled by probes and scrapers: their lines at info would drown the others (a bound
# port's plays); a failing one is still logged.
POLLED_PATHS = frozenset({HEALTH_PATH, METRICS_PATH})
NOT_LOGGED = 1000  # Server.log_from when the access log is off: no status reaches it
MAX_LOGGED_PATH = 2000  # a path may be up to 64 KiB (MAX_HEAD_BYTES): not all of it per line

ASGIApp = Callable[..., Any]
# What a fault writes where a response should be (WireMock's bytes are its own; any
# garbage that is neither a status line nor a chunk size does).
GARBAGE = b"lskdu018973t09sylgasjkfg1][]'./.sdlv"

# What a client may make the server hold or wait for; each limit holds while the bytes
# arrive, so no request grows memory or holds its connection without bound.
MAX_HEAD_BYTES = 64 * 1024  # request line, header and trailer lines; more: 431, then closed
MAX_HEADERS = 100  # header and trailer lines of a request (Apache's limit); more: 431
HEAD_TIMEOUT_S = 10.0  # a head must be whole this long after its first byte; else 408, closed
# A body must arrive at BODY_MIN_RATE bytes/s or more, measured over each BODY_WINDOW_S
# (so also: no byte for BODY_WINDOW_S); else 408 when nothing is answered yet, and closed.
# Not counted: while the server pauses reading, or the client awaits its 100 Continue.
BODY_WINDOW_S = 30.0
BODY_MIN_RATE = 1024
# After a refusal (400, 408, 431) the answer goes out with a FIN and what the client still
# sends is read and dropped this long before the close: closed with unread bytes, a socket
# sends a reset, which can destroy the answer before the client reads it (nginx's
# lingering close).
REFUSAL_LINGER_S = 2.0
KEEP_ALIVE_S = 75.0  # an idle keep-alive connection is closed after this long (nginx's default)
# A client that reads nothing of its answers (the transport's buffer stays over its high
# water mark) this long is disconnected (nginx's send_timeout). Meanwhile no further answer
# is started for it.
SEND_TIMEOUT_S = 60.0
WHOLE_BODY_MAX = 64 * 1024  # a body up to this size is read whole before the app is called
BODY_HIGH_WATER = 256 * 1024  # body bytes buffered for the app before reading pauses
MAX_PIPELINED = 16  # requests parsed ahead of the one being answered before reading pauses
# Connections the kernel holds, handshake done, until the server accepts them (the kernel
# caps it at net.core.somaxconn); the server accepts up to this many at each wakeup.
LISTEN_BACKLOG = 2048
ACCEPT_RETRY_S = 1.0  # accepting failed (out of descriptors): paused this long
STOP_GRACE_S = 10.0  # on stop, how long requests in progress get to finish
# On stop, how long a worker process gets before SIGKILL: its grace, and time to stop the app.
SHUTDOWN_TIMEOUT_S = 10.0  # then the app's own shutdown (flushes, store close) gets this long
WORKERS_KILL_TIMEOUT_S = STOP_GRACE_S + SHUTDOWN_TIMEOUT_S + 5.0
# A dead worker is replaced; a worker dying once more than --workers have been replaced
# within this window stops the server instead (a broken config must not loop for ever).
WORKER_RESTART_WINDOW_S = 60.0

_STATUS_LINES = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in http.HTTPStatus
}
_NO_BODY_STATUSES = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The usual methods as one str object each: no decode per request, and the str's hash and
# equality checks downstream (routing, the tracker's memo) are the cheap ones.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_ASGI = {"version": "3.0", "spec_version": "2.3"}

# A response header the server writes: a name of RFC 9110 token characters, a value
# without CR, LF or NUL (a CRLF would end the line, and what follows would be a header, or
# a body, of the value's choosing).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_VALUE = re.compile(rb"[\r\n\x00]")
_GOOD_NAMES: set[bytes] = set()  # names seen valid: most answers repeat a few
_GOOD_NAMES_MAX = 1024
# The data plane's header lists seen valid, by identity and held (so that the id is not
# reused): an Answer is never changed, and a stub's is written for every playback.
_CHECKED: dict[int, list[tuple[bytes, bytes]]] = {}
_CHECKED_MAX = 4096


def bad_header(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """The first header in ``headers`` that must not be written, or None."""
    for header in headers:
        name, value = header
        if name not in _GOOD_NAMES:
            if _TOKEN.fullmatch(name) is None:
                return header
            if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                _GOOD_NAMES.add(name)
        if _NOT_IN_VALUE.search(value) is not None:
            return header
    return None


def _bad_answer_header(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """``bad_header`` for the data plane's lists, each checked once."""
    if _CHECKED.get(id(headers)) is headers:
        return None
    bad = bad_header(headers)
    if bad is None:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[id(headers)] = headers
    return bad


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head or trailers over the limits."""


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def _plain_response(status: int, text: str) -> bytes:
    """A whole plain-text answer (``text_answer``'s) after which the connection closes."""
    answer = text_answer(status, text)
    head = b"".join(b"%s: %s\r\n" % header for header in answer.headers)
    return _status_line(status) + head + b"connection: close\r\n\r\n" + answer.body


def asgi_scope(request: Request, state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of a request the data plane left to the app."""
    scope = {
        "type": "http",
        "asgi": _ASGI,
        "http_version": request.http_version,
        "server": request.local,
        "client": request.client,
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.query,
        "headers": request.headers,
    }
    if state:
        scope["state"] = state.copy()
    return scope


class Exchange:
    """One request and its response on a connection: the data plane's answer written, or
    the ASGI ``receive`` and ``send`` of the app."""

    __slots__ = (
        "bodiless",
        "body_given",
        "buffered",
        "cause",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "dispatched",
        "done",
        "error_body",
        "expect_continue",
        "head_written",
        "keep_alive",
        "refusal",
        "request",
        "response_headers",
        "route",
        "started",
        "status",
        "streamed",
        "superseded",
        "waiter",
    )

    def __init__(
        self,
        conn: HttpConnection,
        request: Request,
        keep_alive: bool,
        expect: bool,
        route: Route | None,
    ) -> None:
        self.conn = conn
        self.request = request
        self.route = route  # the data plane's, or None: the app answers
        self.refusal: DomainError | None = None  # why the route refuses it (a body too large)
        self.keep_alive = keep_alive
        self.expect_continue = expect
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole request body has been parsed
        self.body_given = False  # the app has had the last body message
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.head_written = False
        self.chunked = False
        self.bodiless = request.method == "HEAD"
        self.done = False  # the whole response has been handed to the transport
        self.dispatched = False  # handed to the data plane or the app
        # For the app: its body is too large to wait for (declared or arrived past
        # WHOLE_BODY_MAX), so the app is called at once and reads it streamed.
        self.streamed = False
        self.superseded = False  # the server answered in the app's place: its sends are dropped
        # For the access log: the body of an error answer (its cause is read from it only if
        # the line is written), or what the server did instead of the answer.
        self.error_body = b""
        self.cause: str | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.chunks or (self.complete and not self.body_given):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                self.conn.body_taken()
                more = not self.complete
                self.body_given = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if self.done or self.conn.closed:
                return {"type": "http.disconnect"}
            if self.expect_continue:
                self.expect_continue = False
                self.conn.write(_CONTINUE)
            self.waiter = self.conn.loop.create_future()
            await self.waiter
            self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        if self.superseded:
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            headers = message.get("headers") or []
            if not isinstance(headers, list):
                headers = list(headers)  # any iterable (ASGI): read twice here
            bad = bad_header(headers)
            if bad is not None:
                self._refuse_headers(bad)
                return
            self.started = True
            self.status = message["status"]
            self.response_headers = headers
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.done:
            raise RuntimeError("http.response.body sent before start or after the end")
        more: bool = message.get("more_body", False)
        self._write(message.get("body", b""), more)
        if more and self.conn.write_paused:
            await self.conn.drained()

    def answer(self, answer: Answer) -> None:
        """Write the data plane's answer: whole, as a fault, or dribbled."""
        if self.done:
            return
        bad = _bad_answer_header(answer.headers)
        if bad is not None:
            self._refuse_headers(bad)
            return
        self.started = True
        self.status = answer.status
        self.response_headers = answer.headers
        if answer.fault is not None:
            self._fault(answer.fault)
        elif answer.dribble is not None:
            if all(k.lower() != b"content-length" for k, _ in answer.headers):
                self.response_headers = [
                    *answer.headers,
                    (b"content-length", b"%d" % len(answer.body)),
                ]
            self.conn.run(self._dribble(answer.body, *answer.dribble))
        else:
            self._write(answer.body, False)

    def _fault(self, fault: str) -> None:
        """What the connection does instead of answering; it is closed either way."""
        self.done = True
        self.keep_alive = False
        self.cause = f"fault {fault}"
        conn = self.conn
        if fault == CONNECTION_RESET_BY_PEER:
            conn.reset()
            conn.exchange_done(self)  # closed: logged and counted, nothing more
            return
        if fault == MALFORMED_RESPONSE_CHUNK:
            self.response_headers = [
                (k, v) for k, v in self.response_headers if k.lower() != b"content-length"
            ]
            self.response_headers.append((b"transfer-encoding", b"chunked"))
            conn.write(self._head(b"", True) + GARBAGE)
        elif fault != EMPTY_RESPONSE:  # RANDOM_DATA_THEN_CLOSE
            conn.write(GARBAGE)
        conn.exchange_done(self)

    async def _dribble(self, body: bytes, chunks: int, seconds: float) -> None:
        """The body in ``chunks`` pieces spread over ``seconds`` (a slow upstream)."""
        pieces = dribble_pieces(body, chunks)
        pause = seconds / len(pieces)
        try:
            for i, piece in enumerate(pieces):
                if self.conn.closed:
                    return
                last = i == len(pieces) - 1
                if not self.head_written:
                    self.conn.write(self._head(body, True))
                if piece and not self.bodiless:
                    self.conn.write(piece)
                if last:
                    self.done = True
                    self.conn.exchange_done(self)
                else:
                    await asyncio.sleep(pause)
        except BaseException:
            self.conn.abort()
            raise

    def _write(self, body: bytes, more: bool) -> None:
        conn = self.conn
        if not self.head_written:
            if self.status >= 400:
                self.error_body = body  # the access log's cause, if it is written
            data = self._head(body, more)
            if body and not self.bodiless:
                data += b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body
        elif self.bodiless or not body:
            data = b""
        else:
            data = b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body
        if not more:
            if self.chunked:
                data += b"0\r\n\r\n"
            self.done = True
        if data and not conn.closed:
            conn.write(data)
        if not more:
            conn.exchange_done(self)

    def _head(self, body: bytes, more: bool) -> bytes:
        self.head_written = True
        status = self.status
        head = [_status_line(status), self.conn.server.date_header]
        has_length = False
        chunked = False
        for name, value in self.response_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                has_length = True
            elif lowered == b"transfer-encoding":
                chunked = True
            elif lowered == b"connection" and value.lower() == b"close":
                self.keep_alive = False
                continue  # written once, below
            head += (name, b": ", value, b"\r\n")
        if status < 200 or status in _NO_BODY_STATUSES:
            self.bodiless = True
        elif not has_length and not chunked:
            if not more:
                head.append(b"content-length: %d\r\n" % len(body))
            elif self.request.http_version == "1.1":
                head.append(b"transfer-encoding: chunked\r\n")
                self.chunked = not self.bodiless
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the close
        if not self.keep_alive or self.conn.server.stopping:
            self.keep_alive = False
            head.append(b"connection: close\r\n")
        elif self.request.http_version == "1.0":
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    async def run(self, app: ASGIApp) -> None:
        scope = asgi_scope(self.request, self.conn.server.state)
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            if not self.done:  # else the app answered its error itself (and logged it)
                log.exception(
                    "the app failed on %s %s", self.request.method, self.request.path[:200]
                )
                self._fail("the app raised an exception (logged above)")
            return
        except BaseException:  # cancelled: the server is stopping
            self.conn.abort()
            raise
        if not self.done and not self.conn.closed:  # closed: the client left (a stream's)
            log.error(
                "the app returned without a whole response to %s %s",
                self.request.method,
                self.request.path[:200],
            )
            self._fail("the app returned without a whole response")

    def answer_when_done(self, answer: asyncio.Future[Answer]) -> None:
        """A data-plane answer that had to wait (the store, a delay policy), as it is done."""
        if answer.cancelled():  # the server is stopping
            self.conn.abort()
        elif (exc := answer.exception()) is not None:
            log.error(
                "the data plane failed on %s %s",
                self.request.method,
                self.request.path,
                exc_info=exc,
            )
            self._fail("the data plane raised an exception (logged above)")
        else:
            self.answer(answer.result())

    def _refuse_headers(self, bad: tuple[bytes, bytes]) -> None:
        """A 500 instead of an answer with a header that must not be written."""
        log.error(
            "invalid response header %.200r to %s %s: answered 500 instead",
            tuple(bad),
            self.request.method,
            self.request.path[:200],
        )
        self.superseded = True
        self._fail(f"invalid response header {bytes(bad[0])[:100]!r}")

    def _fail(self, cause: str) -> None:
        if self.done:
            return
        self.cause = cause
        if self.started:  # part of a response is out: only closing tells the client
            self.done = True
            self.conn.abort()
            self.conn.count(self.request, self.route, self.status)
            if self.conn.server.log_from < NOT_LOGGED:
                self.cause = f"{cause}; closed after part of the answer"
                log_access(self, logging.WARNING)
            return
        self.done = True
        self.status = 500
        self.keep_alive = False
        self.conn.write(_plain_response(500, "Internal Server Error"))
        self.conn.exchange_done(self)


def log_access(exchange: Exchange, level: int | None = None) -> None:
    """The access-log line of an answered request: info, or warning for an answer of 400
    and above, with its cause. Called only when the logger takes the status (``log_from``)."""
    request = exchange.request
    status = exchange.status
    if status < 400 and exchange.route is None and request.path in POLLED_PATHS:
        return
    duration_ms = round((time.perf_counter() - request.started) * 1000.0, 2)
    session, tenant = request_labels(request)
    cause = exchange.cause
    if cause is None and status >= 400:
        cause = error_cause(exchange.error_body)
    client = request.client[0] if request.client else "-"
    path = request.path[:MAX_LOGGED_PATH]
    line = f"{client} {request.method} {path} {status} {duration_ms:.2f}ms"
    if session is not None:
        line += f" session={session}"
    if tenant is not None:
        line += f" tenant={tenant}"
    if cause:
        line += f" ({cause})"
    if not line.isprintable():  # a decoded %0A (path, session, tenant) must not forge a line
        line = line.encode("unicode_escape").decode("ascii")
    if level is None:
        level = logging.WARNING if status >= 400 else logging.INFO
    fields = {
        "method": request.method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "session": session,
        "tenant": tenant,
        "cause": cause or None,
        "client": client,
    }
    access_log.log(level, line, extra=fields)


class _Pipe(asyncio.Protocol):
    """One end of a CONNECT tunnel: what arrives goes out at the other end. Each end stops
    reading while the other's write buffer is full."""

    def __init__(self, server: Server, peer: _Pipe | None = None) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.pending: list[bytes] = []  # what arrived before the other end was there
        if peer is not None:
            peer.peer = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        if self.peer is not None and self.peer.pending:
            for data in self.peer.pending:
                transport.write(data)  # type: ignore[attr-defined]
            self.peer.pending.clear()

    def data_received(self, data: bytes) -> None:
        other = self.peer.transport if self.peer is not None else None
        if other is None:
            self.pending.append(data)
        else:
            other.write(data)

    def eof_received(self) -> bool:
        other = self.peer.transport if self.peer is not None else None
        if other is not None and other.can_write_eof():
            other.write_eof()
            return True  # half-closed: the other way may still be talking
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.tunnels.discard(self)
        self.transport = None
        other = self.peer.transport if self.peer is not None else None
        if other is not None:
            other.close()

    def pause_writing(self) -> None:
        other = self.peer.transport if self.peer is not None else None
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self.peer.transport if self.peer is not None else None
        if other is not None:
            other.resume_reading()

    def close(self) -> None:
        for end in (self, self.peer):
            if end is not None and end.transport is not None:
                end.transport.close()


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests and runs one Exchange at a time, in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0  # of the request's head and trailers so far
        self.header_count = 0  # its header and trailer lines so far
        self.in_head = False  # between a request's first byte and the end of its head
        # Bytes received since the parser last gave a piece (URL, header line, body): it
        # keeps a header line in progress to itself until the line ends, so this bounds it.
        self.stalled = 0
        self.too_large = False  # the head or trailers went over the limits
        self.expect = False  # the request being parsed asks for 100 Continue
        self.reading: Exchange | None = None  # the request being parsed
        self.active: Exchange | None = None  # the request being answered
        self.waiting: deque[Exchange] = deque()  # pipelined requests parsed ahead
        self.idle_since = self.loop.time()
        # Slow heads and bodies, checked by Server._tick: when a tick first saw the head in
        # progress; when the body's current window began, and its bytes then.
        self.head_mark: float | None = None
        self.body_mark: float | None = None
        self.body_mark_bytes = 0
        self.body_bytes = 0  # body bytes parsed on this connection
        self.linger_until: float | None = None  # after a refusal: when the socket closes
        self.read_paused = False
        self.write_paused = False
        self.write_paused_at: float | None = None  # when the client last stopped reading
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.closed = False  # nothing more is written
        self.refused = False  # nothing more is read (a refusal, an upgrade, a port closing)
        self.tunnel_to: tuple[str, int] | None = None  # a CONNECT let through: host, port

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.sockname = (local[0], local[1]) if isinstance(local, tuple) else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        exchanges = [self.active, self.reading]
        # Everything the connection holds goes now: its parser (with the head it was
        # buffering), its requests and their bodies. They are in cycles with the
        # connection, which only a full collection would free, and the server's GC tuning
        # (app.py tune_gc) makes those rare. An exchange still running keeps its own.
        self.parser = None
        self.transport = None
        self.active = self.reading = None
        self.waiting.clear()
        self.url = b""
        self.headers = []
        for exchange in exchanges:
            if exchange is not None:
                exchange.wake()
        self._release_drain_waiters()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if self.refused or parser is None:
            return  # dropped: the connection closes once its answers are out
        self.stalled += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.tunnel_to is not None:
                self._tunnel(self.tunnel_to, data[upgrade.args[0] :])
                return
            # No WebSocket or h2c: the request is answered as it is, then the connection
            # closes (what follows its head is not HTTP/1.1).
            self.refused = True
            reading, self.reading = self.reading, None
            if reading is not None and not reading.complete:
                reading.complete = True
                if reading.dispatched:
                    reading.wake()
                elif reading is self.active:
                    self._dispatch(reading)
            if self.active is None and not self.waiting:
                self.close()  # answered already
        except httptools.HttpParserError as exc:
            if self.too_large:
                self._refuse(431, "Request Header Fields Too Large")
            else:
                self._refuse(400, f"Bad Request: {exc}")
        else:
            if self.stalled > MAX_HEAD_BYTES and not self.refused:
                self._refuse(431, "Request Header Fields Too Large")
        if self.refused:  # the parser and what it buffered go at once
            self.parser = None
            self.url = b""
            self.headers = []

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_at = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_paused_at = None
        self._release_drain_waiters()
        if self.active is None and not self.closed:
            self._answer_next()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.header_count = 0
        self.in_head = True
        self.stalled = 0
        self.expect = False

    def _too_large(self) -> None:
        self.too_large = True
        raise _HeadTooLarge  # stops the parser: nothing more of this head is buffered

    def on_url(self, url: bytes) -> None:
        self.stalled = 0
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.stalled = 0
        self.head_bytes += len(name) + len(value) + 4
        self.header_count += 1
        if self.head_bytes > MAX_HEAD_BYTES or self.header_count > MAX_HEADERS:
            self._too_large()
        if not self.in_head:
            return  # a trailer field: counted, never a request header
        name = name.lower()
        if name == b"expect":
            self.expect = value.lower() == b"100-continue"
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_mark = self.body_mark = None
        if self.refused:
            return
        parser = self.parser
        assert parser is not None  # called by it
        method = parser.get_method()
        url = self.url
        origin = None
        if method == b"CONNECT":
            self._connect(url)
            return
        if url[:1] == b"/" and b"#" not in url:  # origin form, as clients send it
            raw_path, _, query = url.partition(b"?")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._refuse(400, "Bad Request: invalid URL")
                return
            raw_path, query = parsed.path or b"/", parsed.query or b""
            if parsed.schema in (b"http", b"https") and parsed.host:
                # Absolute form, as a client sends it to a proxy: where it wants to go.
                port = b":%d" % parsed.port if parsed.port else b""
                origin = (parsed.schema + b"://" + parsed.host + port).decode("latin-1")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        version = parser.get_http_version()
        request = Request(
            _METHODS.get(method) or method.decode("ascii"),
            path,
            query,
            self.headers,
            b"",
            self.client,
            self.sockname,
            raw_path,
            "http",
            version,
            origin=origin,
        )
        keep_alive = parser.should_keep_alive()
        if keep_alive and version == "1.0" and request.header(b"transfer-encoding") is not None:
            # RFC 9112 section 6.1: its framing is faulty; closed after the answer.
            keep_alive = False
        dataplane = self.server.dataplane
        route = dataplane.claim(request) if dataplane is not None else None
        expect = self.expect
        exchange = Exchange(self, request, keep_alive, expect, route)
        if route is not None:
            try:
                check_declared(request.header(b"content-length"), self.server.limit)
            except DomainError as exc:
                exchange.refusal = exc
        else:
            declared = request.header(b"content-length")  # digits: the parser checks
            # Too large to wait for: the app is called at once, so that its own limit can
            # refuse a body that may never come.
            exchange.streamed = declared is not None and int(declared) > WHOLE_BODY_MAX
        self.reading = exchange
        if self.active is None and not self.write_paused:
            self.active = exchange
            if exchange.refusal is not None or (route is None and (expect or exchange.streamed)):
                self._dispatch(exchange)  # refused at once, or the app reads the body
            elif expect:
                self.write(_CONTINUE)  # the data plane reads the whole body first
                exchange.expect_continue = False
        else:
            self.waiting.append(exchange)
            if len(self.waiting) >= MAX_PIPELINED:
                self._pause_reading()

    def on_body(self, body: bytes) -> None:
        self.stalled = 0
        self.body_bytes += len(body)
        exchange = self.reading
        if exchange is None or exchange.done:
            return  # the answer is out already: the rest of the body is dropped
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.route is not None:
            # The data plane answers from the whole body, which the limit bounds.
            if exchange.buffered > self.server.limit and exchange.refusal is None:
                exchange.chunks = []
                try:
                    check_size(exchange.buffered, self.server.limit)
                except DomainError as exc:
                    exchange.refusal = exc
                if exchange is self.active:
                    self._dispatch(exchange)  # refused now, not when the body ends
            elif exchange is not self.active and exchange.buffered > BODY_HIGH_WATER:
                self._pause_reading()  # pipelined behind another: wait for its turn
            return
        if exchange.buffered > BODY_HIGH_WATER:
            self._pause_reading()
        if not exchange.dispatched:
            if exchange.buffered > WHOLE_BODY_MAX:
                exchange.streamed = True
                if exchange is self.active:
                    self._dispatch(exchange)  # too big to wait for: the app streams it
        else:
            exchange.wake()

    def on_message_complete(self) -> None:
        self.stalled = 0
        exchange = self.reading
        if exchange is not None:
            exchange.complete = True
            self.reading = None
            if exchange.dispatched:
                exchange.wake()
            elif exchange is self.active:
                self._dispatch(exchange)

    # exchanges

    def _dispatch(self, exchange: Exchange) -> None:
        """Answer the active request: through the data plane, or the app."""
        exchange.dispatched = True
        route = exchange.route
        if route is None:
            self.run(exchange.run(self.server.app))
            return
        request = exchange.request
        answer: Answer | Later
        try:
            if exchange.refusal is not None:
                answer = route.refuse(request, exchange.refusal)
            else:
                chunks = exchange.chunks
                request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                exchange.chunks = []
                answer = route.answer(request)
        except Exception:
            log.exception("the data plane failed on %s %s", request.method, request.path[:200])
            exchange._fail("the data plane raised an exception (logged above)")
            return
        if isinstance(answer, Answer):
            exchange.answer(answer)
            return
        if not isinstance(answer, asyncio.Future):  # a coroutine: its task (a future needs none)
            answer = self.server.run(answer)
        answer.add_done_callback(exchange.answer_when_done)

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        self.server.run(work)

    def exchange_done(self, exchange: Exchange) -> None:
        """The response is out: logged, counted; close, or answer the next request."""
        if exchange.status >= self.server.log_from:  # one compare when nothing is logged
            log_access(exchange)
        self.count(exchange.request, exchange.route, exchange.status)
        if self.active is exchange:
            self.active = None
        if self.closed:
            return
        self.idle_since = self.loop.time()
        if not exchange.keep_alive or self.server.stopping:
            self.close()
            return
        if self.refused and not self.waiting:
            self._linger()  # after an upgrade or a refusal: nothing more is read
            return
        if exchange.expect_continue and not exchange.complete:
            # Answered before the body was asked for: the client may never send it, and
            # whatever it sends next could not be told from that body. Close.
            self.close()
            return
        if not exchange.complete:
            exchange.chunks = []  # the rest of its body is parsed and dropped
        if not self.write_paused:
            self._answer_next()
        # else resume_writing does (and on_headers_complete queues the requests that come):
        # a client that does not read its answers gets no more of them buffered, and its
        # pipelined requests pause reading at MAX_PIPELINED.

    def count(self, request: Request | None, route: Route | None, status: int) -> None:
        """An answer written, for /metrics: once per request (its exchange done, cut short,
        or refused; a refusal may come before its request is known)."""
        metrics = self.server.metrics
        if metrics is not None:
            if request is None:
                metrics.count("", None, status, 0.0)
            else:
                metrics.count(request.path, route, status, request.started)

    def _answer_next(self) -> None:
        if self.waiting:
            following = self.active = self.waiting.popleft()
            if following.route is not None:
                if following.refusal is not None or following.complete:
                    self._dispatch(following)
                elif following.expect_continue:
                    following.expect_continue = False
                    self.write(_CONTINUE)
            elif following.complete or following.expect_continue or following.streamed:
                self._dispatch(following)
        if self.read_paused and len(self.waiting) < MAX_PIPELINED:
            self._resume_reading()

    def body_taken(self) -> None:
        if self.read_paused and len(self.waiting) < MAX_PIPELINED:
            self._resume_reading()

    def check(self, now: float) -> None:
        """Once a second (Server._tick): close what has waited too long, a keep-alive
        connection idle, a lingering refusal, a head or a body arriving too slowly, a client
        not reading its answers."""
        paused_at = self.write_paused_at
        if paused_at is not None and now - paused_at >= SEND_TIMEOUT_S:
            self.abort()  # what it has not read is dropped: no answer can reach it
            return
        if self.closed:
            if self.linger_until is not None and now >= self.linger_until:
                self.close()
            return
        if self.refused:
            return  # closes once the answers in progress are out
        if self.read_paused:  # the server's pause, not the client's: the clocks restart
            self.head_mark = self.body_mark = None
            return
        if self.in_head:
            if self.head_mark is None:
                self.head_mark = now
            elif now - self.head_mark >= HEAD_TIMEOUT_S:
                self._refuse(408, "Request Timeout: the request head came too slowly")
            return
        reading = self.reading
        if reading is not None:
            if reading.expect_continue:
                return  # the client awaits the 100 Continue the app has not asked for
            if self.body_mark is None or now - self.body_mark >= BODY_WINDOW_S:
                if self.body_mark is not None and (
                    self.body_bytes - self.body_mark_bytes < BODY_MIN_RATE * BODY_WINDOW_S
                ):
                    self._refuse(408, "Request Timeout: the request body came too slowly")
                    return
                self.body_mark = now
                self.body_mark_bytes = self.body_bytes
        elif self.idle() and self.idle_since < now - KEEP_ALIVE_S:
            self.close()

    # transport

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drained(self) -> None:
        if self.closed or not self.write_paused:
            return
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter

    def _release_drain_waiters(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, reason: str) -> None:
        """The request being read cannot be read to its end (unparsable, too large, too
        slow): nothing more is read. It is answered ``status`` unless an answer before it
        is still going out or its own has begun; the connection closes after the answers
        before it (the requests parsed whole are run, so they are answered)."""
        self.refused = True
        exchange, self.reading = self.reading, None
        if status >= self.server.log_from:
            client = self.client[0] if self.client else "-"
            what = f"{exchange.request.method} {exchange.request.path}" if exchange else "-"
            access_log.warning(
                f"{client} {what} {status} (refused: {reason})",
                extra={"status": status, "cause": reason, "client": client},
            )
        if exchange is not None:
            if exchange.done:  # answered already; the rest of its body was being dropped
                self._linger()
                return
            if exchange.dispatched:  # the app is reading a body that will not come
                if exchange.started:
                    self.abort()  # part of its answer is out: only a close can tell
                    return
                exchange.superseded = True
                exchange.done = True
                exchange.wake()
                self.active = None
            elif exchange is self.active:
                self.active = None
            else:
                self.waiting.remove(exchange)
        if self.active is None and not self.waiting:
            self.write(_plain_response(status, reason))
            self._linger()
            if exchange is None:
                self.count(None, None, status)
            else:
                self.count(exchange.request, exchange.route, status)

    def _linger(self) -> None:
        """Close after a refusal: a FIN after the answer, then what the client still sends
        is dropped until REFUSAL_LINGER_S (or its own FIN) before the socket closes."""
        transport = self.transport
        if self.closed or transport is None:
            return
        if not transport.can_write_eof():
            self.close()
            return
        self.closed = True
        transport.write_eof()
        self.linger_until = self.loop.time() + REFUSAL_LINGER_S
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()  # drop what comes, rather than leave it unread

    # CONNECT: an HTTPS tunnel through a session recording an upstream, not recorded

    def _connect(self, authority: bytes) -> None:
        """A CONNECT request: let it through (``data_received`` opens the tunnel once its
        head is parsed) when the data plane says so, else refuse it."""
        host, colon, port = authority.decode("latin-1").rpartition(":")
        dataplane = self.server.dataplane
        request = Request("CONNECT", "", b"", self.headers, b"", self.client, self.sockname)
        if not colon or not port.isdigit() or not host:
            self._refuse(400, "Bad Request: CONNECT needs host:port")
        elif dataplane is None or not dataplane.tunnels(request):
            self._refuse(405, "Method Not Allowed: CONNECT passes only through a session recording")
        else:
            self.tunnel_to = (host.strip("[]"), int(port))

    def _tunnel(self, target: tuple[str, int], early: bytes) -> None:
        """Hand the socket to a tunnel to ``target``: bytes both ways, nothing parsed or
        kept, no HTTP timeouts (the server closes it when it stops)."""
        transport = self.transport
        assert transport is not None
        self.parser = None
        self.server.connections.discard(self)
        transport.pause_reading()
        client = _Pipe(self.server)
        transport.set_protocol(client)
        client.connection_made(transport)

        async def open() -> None:
            try:
                upstream, _ = await self.loop.create_connection(
                    lambda: _Pipe(self.server, client), *target
                )
            except OSError as exc:
                reason = f"cannot reach {target[0]}:{target[1]}: {exc.strerror or exc}"
                transport.write(_plain_response(502, reason))
                transport.close()
                return
            if transport.is_closing():  # the client left meanwhile
                upstream.close()
                return
            transport.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if early:
                client.data_received(early)
            transport.resume_reading()

        self.server.tunnels.add(client)
        self.run(open())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # after what is buffered is written; idempotent

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Close with a TCP reset, as a crashed peer would (SO_LINGER 0, then close)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    def close_when_idle(self) -> None:
        """Close now if idle, else once the request in progress is answered."""
        if self.idle():
            self.close()
        else:
            self.refused = True  # nothing more is read; exchange_done closes

    def idle(self) -> bool:
        return self.active is None and not self.waiting and self.reading is None


class Lifespan:
    """The ASGI lifespan protocol: the app's startup before serving, its shutdown after."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self.outbox.put)
        except Exception as exc:
            await self.outbox.put({"type": "lifespan.failed", "message": repr(exc)})

    async def _step(self, event: str) -> None:
        assert self.task is not None
        await self.inbox.put({"type": f"lifespan.{event}"})
        answer = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait({answer, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            if self.outbox.empty():  # returned without a word: an app without lifespan
                answer.cancel()
                return
            await answer
        message = answer.result()
        if message["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(message.get("message") or f"the app's {event} failed")

    async def startup(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self._step("startup")

    async def shutdown(self) -> None:
        assert self.task is not None
        if not self.task.done():
            await self._step("shutdown")
        await self.task


class Listener:
    """A listening socket whose pending connections are all accepted at each wakeup.

    Not the loop's ``create_server``: uvloop's libuv (1.45 and later) accepts one connection
    per loop iteration, and an iteration that serves 1,000 busy connections takes ~60 ms,
    so a burst of new connections waited in the kernel's queue for seconds, their first
    requests already sent (at 1,000 connections, requests answered after 9 s;
    bench/connections.py). asyncio's own server accepts up to its backlog per wakeup, as
    this does, on either loop.
    """

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.retry: asyncio.TimerHandle | None = None  # accepting paused after an error
        self.closed = False
        self.protocol = lambda: HttpConnection(server)
        sock.listen(LISTEN_BACKLOG)
        self.loop.add_reader(sock, self.accept_all)

    def accept_all(self) -> None:
        """Accept every queued connection (at most LISTEN_BACKLOG): the socket's reader."""
        for _ in range(LISTEN_BACKLOG):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # all taken
            except ConnectionAbortedError:
                continue  # the client left before its turn
            except OSError as exc:
                # Out of descriptors or memory: the kernel keeps the rest queued. Retry in
                # a second rather than spin on the error at every wakeup.
                log.error("cannot accept connections (%s): retrying in %g s", exc, ACCEPT_RETRY_S)
                self.loop.remove_reader(self.sock)
                self.retry = self.loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            conn.setblocking(False)
            self.server.run(self._connect(conn))

    def _resume(self) -> None:
        self.retry = None
        if not self.closed:
            self.loop.add_reader(self.sock, self.accept_all)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn)
        except OSError:
            conn.close()  # reset before it was served: nothing to answer

    def close(self) -> None:
        """Stop accepting and close the socket (connections already accepted stay)."""
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        self.loop.remove_reader(self.sock)
        self.sock.close()


class Server:
    """Serves an ASGI app on a listening socket until ``stop`` is set."""

    def __init__(self, app: ASGIApp) -> None:
        self.state: dict[str, Any] = {}
        self.connections: set[HttpConnection] = set()
        self.tunnels: set[_Pipe] = set()  # CONNECT tunnels, closed when the server stops
        self.stopping = False
        self.date_header = b""
        self.loop = asyncio.get_running_loop()
        # The data plane answers what it claims before any ASGI message (dataplane/asgi.py);
        # the rest goes straight to the app behind its adapter, if any (which would claim
        # it again, and count it again).
        self.dataplane = getattr(app, "dataplane", None)
        self.app: ASGIApp = app if self.dataplane is None else getattr(app, "app", app)
        # Where the app counts its answers for /metrics (simulacra/metrics.py), if it does.
        self.metrics: Metrics | None = getattr(app, "metrics", None)
        self.limit: int = self.dataplane.limit if self.dataplane is not None else 0
        # Every exchange's and accepted connection's, until it ends; cancelled on stop.
        self.tasks: set[asyncio.Task[Any]] = set()
        # The lowest status the access log writes, decided once: per request the server
        # only compares (no logger call when the line would be dropped).
        self.log_from = (
            0
            if access_log.isEnabledFor(logging.INFO)
            else 400
            if access_log.isEnabledFor(logging.WARNING)
            else NOT_LOGGED
        )

    def run(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = self.loop.create_task(work)
        tasks = self.tasks  # a strong reference while it runs
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def _tick(self) -> None:
        """Once a second: the Date header; connections idle too long, or too slow, closed
        (one scan, rather than a timer per request)."""
        self.date_header = b"date: %s\r\n" % email.utils.formatdate(usegmt=True).encode()
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check(now)

    async def _ticker(self) -> None:
        while True:
            self._tick()
            await asyncio.sleep(1.0 - time.time() % 1.0)

    async def listen(self, host: str, port: int) -> tuple[int, Callable[[], None]]:
        """Serve on one more port (a bound session's): the port, and what closes it.

        OSError when the port cannot be bound (in use, privileged).
        """
        sock = bind(host, port)
        try:
            listener = Listener(self, sock)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()[1]

        def close() -> None:
            listener.close()
            for conn in list(self.connections):  # keep-alive clients of the port go too
                if conn.sockname is not None and conn.sockname[1] == bound:
                    conn.close_when_idle()

        return bound, close

    async def serve(self, sock: socket.socket, stop: asyncio.Event) -> None:
        if self.dataplane is not None:
            host = sock.getsockname()[0]
            self.dataplane.ports.listener = lambda port: self.listen(host, port)
        lifespan = Lifespan(self.app, self.state)
        await lifespan.startup()
        ticker = asyncio.create_task(self._ticker())
        listener = Listener(self, sock)
        try:
            await stop.wait()
        finally:
            listener.close()
            await self._drain()
            ticker.cancel()
            try:
                await asyncio.wait_for(lifespan.shutdown(), SHUTDOWN_TIMEOUT_S)
            except TimeoutError:
                # Seen once under test load: a worker whose store connection the database had
                # closed never finished its shutdown, and outlived its supervisor.
                log.error(
                    "the app did not finish its shutdown in %g s: stopping", SHUTDOWN_TIMEOUT_S
                )

    async def _drain(self) -> None:
        """Stop: idle connections close now, busy ones after their answer or the grace."""
        self.stopping = True
        deadline = self.loop.time() + STOP_GRACE_S
        while self.connections and self.loop.time() < deadline:
            for conn in list(self.connections):
                if conn.idle():
                    conn.close()
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        for tunnel in list(self.tunnels):
            tunnel.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, shared by every worker process: bound, so that a port in use
    is reported at once, but not listening until the app has started (a client connecting
    earlier is refused, not left waiting on a server that may fail to start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _run_loop(main: Callable[[], Any]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(main())
    else:
        uvloop.run(main())


def serve_worker(app_factory: Callable[[], ASGIApp], sock: socket.socket) -> int:
    """Run one worker on ``sock`` until SIGTERM or SIGINT: 0 when stopped, 1 on failure."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Server(app_factory()).serve(sock, stop)

    try:
        _run_loop(main)
    except Exception as exc:
        log.exception("the server failed")
        print(f"simulacra: the server failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def serve(
    app_factory: Callable[[], ASGIApp],
    host: str,
    port: int,
    workers: int = 1,
    announce: Callable[[], None] | None = None,
) -> int:
    """Serve on host:port, in this process or in ``workers`` forked processes. ``announce``
    runs once the port is bound (the banner: never printed for a port that fails); a port
    that cannot be bound is one line on stderr and exit code 2, as for a bad option."""
    try:
        sock = bind(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"simulacra: cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
        return 2
    if announce is not None:
        announce()
    if workers == 1:
        return serve_worker(app_factory, sock)
    return _supervise(app_factory, sock, workers)


def _die_with_parent() -> None:
    """A worker gets SIGKILL when its supervisor dies (Linux), so that killing the supervisor
    never leaves workers holding the port (best effort: elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _supervise(app_factory: Callable[[], ASGIApp], sock: socket.socket, workers: int) -> int:
    """Fork the workers, replace one that dies, pass SIGTERM/SIGINT on.

    A worker dying once more than ``workers`` have been replaced within
    WORKER_RESTART_WINDOW_S stops them all, with its exit code (or 1): workers that keep
    dying (at startup: a broken config, a store that refuses them) are not restarted for ever.
    """
    stopping = False
    children: list[int] = []
    stops = {signal.SIGTERM, signal.SIGINT}

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def spawn() -> None:
        # Held back while forking, so that no worker runs ``forward`` before it has reset it.
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pid = os.fork()
            if pid == 0:  # the worker: its own loop, its own app
                code = 1
                try:
                    _die_with_parent()
                    for sig in stops:
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
                    code = serve_worker(app_factory, sock)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children.append(pid)
            if stopping:  # the stop came while it was forked: it gets the stop too
                os.kill(pid, signal.SIGTERM)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)

    for sig in stops:
        signal.signal(sig, forward)
    for _ in range(workers):
        spawn()
    restarts: deque[float] = deque()  # when workers were replaced, within the window
    status = 0
    deadline: float | None = None
    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + WORKERS_KILL_TIMEOUT_S
        if deadline is not None and time.monotonic() > deadline:
            for pid in children:  # a worker that missed the stop (none seen; bounded anyway)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
            continue
        if pid not in children:
            continue
        children.remove(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                status = status or code
            continue
        now = time.monotonic()
        while restarts and now - restarts[0] > WORKER_RESTART_WINDOW_S:
            restarts.popleft()
        if len(restarts) >= workers:
            print(
                f"simulacra: worker {pid} exited with {code}; workers keep exiting"
                f" ({len(restarts)} replaced within {WORKER_RESTART_WINDOW_S:g} s): stopping",
                file=sys.stderr,
                flush=True,
            )
            status = code if code > 0 else 1  # a signal's negative code is no exit status
            forward(signal.SIGTERM, None)
            continue
        restarts.append(now)
        print(
            f"simulacra: worker {pid} exited with {code}; starting another",
            file=sys.stderr,
            flush=True,
        )
        spawn()
    sock.close()
    return status
