"""The built-in server (simulacra/server.py) at the protocol's edges a client can abuse:
headers it must not send, bodies and heads that never end, a client that does not read,
what follows a last request, HTTP/1.0 framing and trailers. Raw sockets against a real
server (timeouts shortened to seconds)."""

from __future__ import annotations

import asyncio
import select
import socket
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from simulacra import server as http_server
from simulacra.dataplane.request import Answer, Request, text_answer
from simulacra.errors import DomainError
from tests.probes import wait_for
from tests.server import RunningServer
from tests.test_server import Running

BAD_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "crlf": [(b"x-a", b"a\r\nSet-Cookie: injected=1")],
    "lf": [(b"x-a", b"a\nSet-Cookie: injected=1")],
    "cr": [(b"x-a", b"a\rSet-Cookie: injected=1")],
    "nul": [(b"x-a", b"a\x00b")],
    "name-crlf": [(b"x-a\r\nSet-Cookie", b"injected=1")],
    "name-space": [(b"x a", b"1")],
    "name-colon": [(b"x:a", b"1")],
    "name-empty": [(b"", b"1")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the data plane: answers what it read, or headers it is told to."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    if path == "/limited":  # the app's own body limit, as Starlette's routes check it
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if int(declared) > 1000:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"too large"})
            return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if message["type"] == "http.disconnect":
        return
    if path == "/slow":
        await asyncio.sleep(0.3)
    if path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # Over any send buffer the kernel may give the socket (tcp_wmem max: 4 MiB here).
        await send({"type": "http.response.body", "body": b"b" * 16_000_000})
        return
    headers = [(b"x-body", b"%d" % len(body))]
    if path.startswith("/bad/"):
        headers = BAD_HEADERS[path[5:]]
    names = b",".join(name for name, _ in scope["headers"])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"app %s %s" % (path.encode(), names)})


class Route:
    def answer(self, request: Request) -> Answer:
        if request.path.startswith("/dp/bad/"):
            return Answer(200, BAD_HEADERS[request.path[8:]], b"never sent")
        names = b",".join(name for name, _ in request.headers)
        return Answer(201, [], b"dp %s %s" % (request.body, names))

    def refuse(self, request: Request, error: DomainError) -> Answer:
        return text_answer(413, error.message)


class DataPlane:
    limit = 100_000
    ports = types.SimpleNamespace(listener=None)

    def claim(self, request: Request) -> Route | None:
        return Route() if request.path.startswith("/dp/") else None


app.dataplane = DataPlane()  # type: ignore[attr-defined]


@pytest.fixture
def running() -> Iterator[Running]:
    server = Running(app)
    yield server
    server.shutdown()


def talk(port: int, data: bytes, patience: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes; read until the server closes: what came, and whether it closed
    (False: still open after ``patience`` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
    return received, True


# Response splitting ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_HEADERS))
@pytest.mark.parametrize("where", ["/dp/bad/", "/bad/"])
def test_a_header_the_server_must_not_send_is_a_500(
    running: Running, where: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stub's or the app's header with CR, LF or NUL in its value, or a name that is not
    a token: never written (a CRLF would split the answer in two), a 500 instead."""
    raw, closed = talk(
        running.port, b"GET %s%s HTTP/1.1\r\nHost: x\r\n\r\n" % (where.encode(), kind.encode())
    )
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    assert b"injected" not in raw and b"never sent" not in raw and b"x a:" not in raw
    assert closed
    assert "invalid response header" in caplog.text
    # the server is fine, and good headers still go out
    raw, _ = talk(
        running.port,
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert raw.startswith(b"HTTP/1.1 200 ") and b"x-body: 2\r\n" in raw


# A body that is announced and never comes ----------------------------------------------


def first_answer(port: int, data: bytes) -> tuple[bytes, float]:
    """Send raw bytes: the first bytes of the answer, and how long they took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        try:
            received = sock.recv(65536)
        except TimeoutError:
            received = b""
    return received, time.monotonic() - started


def test_an_app_request_declaring_a_large_body_is_dispatched_at_once(running: Running) -> None:
    """Over WHOLE_BODY_MAX the app streams the body: it gets the request at once, and its
    own limit check can answer before the body comes (the old server waited for 64 KiB)."""
    raw, elapsed = first_answer(
        running.port, b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 413 ") and elapsed < 2, raw


def test_the_apps_413_for_a_declared_length_comes_at_once() -> None:
    """The same with the real app: a Starlette route refuses 100 MB it was never sent."""
    served = RunningServer(store="memory://").start()
    try:
        raw, elapsed = first_answer(
            served.port,
            b"PUT /api/v2/scenarios HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n",
        )
        assert raw.startswith(b"HTTP/1.1 413 ") and elapsed < 2, raw
    finally:
        assert served.stop() == 0


# Slow heads and bodies -----------------------------------------------------------------


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeouts of a second or two, so that the tests are quick (the tick is per second)."""
    monkeypatch.setattr(http_server, "HEAD_TIMEOUT_S", 2.0)
    monkeypatch.setattr(http_server, "BODY_WINDOW_S", 2.0)


def dribble(port: int, head: bytes, piece: bytes, pause: float = 0.5) -> tuple[bytes, float]:
    """Send ``head``, then ``piece`` every ``pause`` seconds until the server answers or
    closes (at most 20 pieces): what it sent, and after how long."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(20):
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
        elapsed = time.monotonic() - started
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received, elapsed


def test_a_slow_head_is_timed_out(quick: None, running: Running) -> None:
    """A byte every half second, the head never ending: 408 after HEAD_TIMEOUT_S (2 s
    here, and the tick's second), then closed (the old server waited for ever)."""
    received, elapsed = dribble(running.port, b"GET / HTTP/1.1\r\n", b"X")
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert 1.9 < elapsed < 4.5


@pytest.mark.parametrize(
    ("path", "length"),
    [
        (b"/dp/slow", 100),  # the data plane reads it whole
        (b"/slow", 100),  # the app has it whole
        (b"/slow", 100_000),  # the app streams it: it is reading it when the time is up
    ],
)
def test_a_slow_body_is_timed_out(quick: None, running: Running, path: bytes, length: int) -> None:
    """A byte every half second: under the minimum rate, so answered 408 and closed after
    a window or two (the old server waited for as long as the bytes kept coming)."""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, length)
    received, elapsed = dribble(running.port, head, b"x")
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert elapsed < 6.5


def test_a_body_that_stops_is_timed_out(quick: None, running: Running) -> None:
    raw, closed = talk(
        running.port,
        b"POST /dp/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        patience=6,
    )
    assert closed and raw.startswith(b"HTTP/1.1 408 "), raw


def test_a_prompt_body_and_an_idle_wait_are_not_timed_out(quick: None, running: Running) -> None:
    """The limits are on a head or body in progress, not on a client that is between
    requests, nor on one waiting for its answer."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"POST /dp/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert b"dp hi" in sock.recv(65536)
        time.sleep(3.5)  # idle: the keep-alive timeout applies, not the head's
        sock.sendall(b"POST /dp/b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nho")
        assert b"dp ho" in sock.recv(65536)


def test_a_client_that_does_not_read_is_disconnected(
    monkeypatch: pytest.MonkeyPatch, running: Running
) -> None:
    """Its answer backs up in the server (the transport's buffer over its high water mark)
    for SEND_TIMEOUT_S: disconnected, the buffer dropped (the old server kept both for as
    long as the client kept the connection)."""
    monkeypatch.setattr(http_server, "SEND_TIMEOUT_S", 2.0)
    server = running.server
    assert server is not None
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: any(c.write_paused for c in server.connections), "the answer backed up")
        wait_for(lambda: not server.connections, "the client disconnected", 4)


# What follows a last request -------------------------------------------------------------


@pytest.mark.parametrize(
    "after",
    [
        b"GARBAGE\r\n\r\n",  # not HTTP
        b"\x00\x01\x02",
    ],
)
def test_a_request_followed_by_garbage_is_answered(running: Running, after: bytes) -> None:
    """The request is run, so it is answered; then the connection closes, ignoring the
    rest (the old server aborted the connection: the request ran unanswered)."""
    raw, closed = talk(running.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + after)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"app /slow host"), raw
    assert raw.count(b"HTTP/1.1") == 1 and closed


def test_what_follows_connection_close_is_ignored(running: Running) -> None:
    raw, closed = talk(
        running.port,
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"app /slow host,connection"), raw
    assert raw.count(b"HTTP/1.1") == 1 and b"connection: close" in raw and closed


def test_pipelined_requests_before_garbage_are_all_answered(running: Running) -> None:
    raw, closed = talk(
        running.port,
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /dp/b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb"
        b"NOT HTTP\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 ") == 2 and raw.endswith(b"dp b host,content-length"), raw
    assert closed


# HTTP/1.0 framing ------------------------------------------------------------------------


def test_http_1_0_with_transfer_encoding_closes(running: Running) -> None:
    """RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
    the connection closes after the answer, whatever Connection says."""
    for path in (b"/dp/x", b"/x"):
        raw, closed = talk(
            running.port,
            b"POST %s HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
            b"GET /second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path,
        )
        assert raw.count(b"HTTP/1.1 ") == 1 and b"connection: close" in raw, raw
        assert b"/second" not in raw and closed


# Trailers ----------------------------------------------------------------------------------


def test_trailers_are_not_request_headers(running: Running) -> None:
    """A trailer field must not join the headers (a ``session`` trailer would choose the
    session a playback plays): read, counted, dropped."""
    for path, start in ((b"/dp/t", b"dp abc "), (b"/t", b"app /t ")):
        raw, _ = talk(
            running.port,
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close"
            b"\r\n\r\n3\r\nabc\r\n0\r\nsession: other\r\nx-trailer: 1\r\n\r\n" % path,
        )
        body = raw.partition(b"\r\n\r\n")[2]
        assert body.startswith(start), raw
        assert body.endswith(b"host,transfer-encoding,connection"), raw
