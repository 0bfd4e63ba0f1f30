"""The built-in HTTP/1.1 server (simulacra/server.py), over real sockets, with small ASGI apps.

The whole API suite also runs on it (tests/server.py starts ``simulacra serve``, whose
default it is); these tests cover the protocol's edges that the API tests do not reach.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from simulacra import server as http_server
from simulacra.dataplane.request import Answer, Request, text_answer
from simulacra.errors import DomainError
from tests.server import free_port

LIFESPAN: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes what it was asked; a few paths misbehave on purpose."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            LIFESPAN.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/early":  # answers without reading the body, as a 413 does
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too large"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/boom-late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom after the start")
    if path == "/silent":
        return
    if path == "/slow":
        await asyncio.sleep(0.3)
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"%s %s %d %s" % (
        scope["method"].encode(),
        scope["raw_path"],
        len(body),
        scope["query_string"],
    )
    headers = [(b"content-type", b"text/plain"), (b"x-path", path.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


class DataPlaneRoute:
    """A route of the test data plane: /now answers at once, /later after a wait, and
    /fault/{name} and /dribble answer with what the connection must do."""

    def answer(self, request: Request) -> Any:
        if request.path == "/later":

            async def later() -> Answer:
                await asyncio.sleep(0.05)
                return Answer(202, [], b"later")

            return later()
        if request.path.startswith("/fault/"):
            return Answer(200, [], b"never sent", fault=request.path.rpartition("/")[2])
        if request.path == "/dribble":
            return Answer(200, [], b"0123456789", dribble=(5, 0.5))
        return Answer(201, [(b"x-dataplane", b"yes")], b"now " + request.body)

    def refuse(self, request: Request, error: DomainError) -> Answer:
        return text_answer(413, error.message)


class DataPlane:
    """What the server asks of a data plane: which requests it claims, and the body limit."""

    limit = 1000
    ports = types.SimpleNamespace(listener=None)

    def claim(self, request: Request) -> DataPlaneRoute | None:
        claimed = request.path in ("/now", "/later", "/dribble") or request.path.startswith(
            "/fault/"
        )
        return DataPlaneRoute() if claimed else None


app.dataplane = DataPlane()  # type: ignore[attr-defined]


def _loop_factories() -> list[Any]:
    """Plain asyncio, and uvloop (what ``simulacra serve`` runs on) where it is installed."""
    factories = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return factories
    return [*factories, pytest.param(uvloop.new_event_loop, id="uvloop")]


LOOPS = _loop_factories()


class Running:
    def __init__(
        self,
        served: Any = app,
        new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.app = served
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = new_loop()
        self.stop = asyncio.Event()
        self.server: http_server.Server | None = None  # once it runs: its connections
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the server did not start")

    def _run(self) -> None:
        async def main() -> None:
            sock = http_server.bind("127.0.0.1", self.port)
            self.server = http_server.Server(self.app)
            await self.server.serve(sock, self.stop)

        self.loop.run_until_complete(main())

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def running() -> Iterator[Running]:
    LIFESPAN.clear()
    server = Running()
    yield server
    server.shutdown()
    assert LIFESPAN == ["lifespan.startup", "lifespan.shutdown"]


def exchange(port: int, data: bytes, wait: float = 1.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet for ``wait`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_keep_alive_and_the_basics(running: Running) -> None:
    with requests.Session() as http:
        first = http.post(running.url + "/a%20b?x=1", data=b"hello")
        second = http.get(running.url + "/c")
    assert first.text == "POST /a%20b 5 x=1" and first.headers["x-path"] == "/a b"
    assert second.text == "GET /c 0 "
    assert "date" in first.headers and first.headers["content-length"] == "17"


def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    raw = exchange(
        running.port,
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert raw.count(b"HTTP/1.1 ") == 3
    first, second, third = (raw.index(x) for x in (b"GET /slow 0", b"POST /b 3", b"now hi"))
    assert first < second < third
    assert raw.endswith(b"now hi")  # closed after the last, as it asked


def test_chunked_request_body(running: Running) -> None:
    raw = exchange(
        running.port,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"POST /c 7 ")


def test_a_large_body_is_streamed_to_the_app(running: Running) -> None:
    body = b"x" * (5 * 1024 * 1024)
    assert requests.post(running.url + "/big", data=body).text == f"POST /big {len(body)} "


def test_expect_100_continue(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert sock.recv(1000).endswith(b"POST /e 4 ")


def test_an_answer_before_100_continue_closes(running: Running) -> None:
    """The client was never asked for its body: the connection cannot be reused."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n"
        )
        raw = b""
        while chunk := sock.recv(65536):  # to the end: a timeout here means it stayed open
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 413 ") and raw.endswith(b"too large")


def test_head_has_no_body(running: Running) -> None:
    raw = exchange(running.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"content-length: 10" in head and rest == b""


def test_http_1_0_closes_after_the_answer(running: Running) -> None:
    raw = exchange(running.port, b"GET /old HTTP/1.0\r\n\r\n", wait=5)
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in raw


def test_streamed_response_is_chunked(running: Running) -> None:
    reply = requests.get(running.url + "/stream")
    assert reply.headers["transfer-encoding"] == "chunked" and reply.text == "one,two,three"


def test_bad_requests(running: Running) -> None:
    assert exchange(running.port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert exchange(running.port, huge).startswith(b"HTTP/1.1 431 ")
    assert requests.get(running.url + "/still-up").ok


def test_an_upgrade_is_answered_then_closed(running: Running) -> None:
    for path in (b"/ws", b"/now"):  # through the app, and through the data plane
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(
                b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                % path
            )
            raw = b""
            while chunk := sock.recv(65536):  # to the end: a timeout means it stayed open
                raw += chunk
        assert raw.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 201 ")), raw


def test_app_failures(running: Running) -> None:
    reply = requests.get(running.url + "/boom")
    assert reply.status_code == 500 and reply.headers["connection"] == "close"
    reply = requests.get(running.url + "/silent")
    assert reply.status_code == 500
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(running.url + "/boom-late")  # the connection is cut mid-answer
    assert requests.get(running.url + "/ok").ok


def test_the_data_plane_answers_what_it_claims(running: Running) -> None:
    with requests.Session() as http:
        now = http.post(running.url + "/now", data=b"x")
        later = http.post(running.url + "/later", data=b"x")
        usual = http.post(running.url + "/usual", data=b"x")
        big = http.post(running.url + "/now", data=b"x" * 70_000)  # read whole, then answered
    assert (now.status_code, now.text, now.headers["x-dataplane"]) == (201, "now x", "yes")
    assert (later.status_code, later.text) == (202, "later")
    assert usual.text == "POST /usual 1 "
    assert big.status_code == 413  # over the data plane's limit (1000 bytes)


def test_a_declared_length_over_the_limit_is_refused_at_once(running: Running) -> None:
    # Only the head is sent: the 413 must not wait for a body that never comes.
    reply = exchange(
        running.port, b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 413 "), reply


def test_a_data_plane_request_expecting_100_continue(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(
            b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ab")
        assert b"now ab" in sock.recv(1000)


def test_faults_as_a_client_sees_them(running: Running) -> None:
    with pytest.raises(requests.ConnectionError) as reset:
        requests.get(running.url + "/fault/CONNECTION_RESET_BY_PEER")
    assert "reset" in str(reset.value).lower()
    with pytest.raises(requests.ConnectionError):
        requests.get(running.url + "/fault/EMPTY_RESPONSE")
    assert exchange(running.port, b"GET /fault/EMPTY_RESPONSE HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(running.url + "/fault/MALFORMED_RESPONSE_CHUNK")
    with pytest.raises(requests.ConnectionError):
        requests.get(running.url + "/fault/RANDOM_DATA_THEN_CLOSE")
    assert requests.get(running.url + "/ok").ok  # the server itself is fine


def test_a_dribbled_body_arrives_over_its_time(running: Running) -> None:
    started = time.monotonic()
    with requests.get(running.url + "/dribble", stream=True) as reply:
        pieces = [(chunk, time.monotonic() - started) for chunk in reply.iter_content(1)]
    assert b"".join(chunk for chunk, _ in pieces) == b"0123456789"
    assert len(pieces) >= 3  # it came in several pieces...
    assert pieces[-1][1] >= 0.35  # ...spread over the stated 0.5 s (4 pauses of 0.1 s)


def test_an_app_without_lifespan_is_served() -> None:
    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # ignores the lifespan messages, as some apps do
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    served = Running(plain)
    try:
        assert requests.get(served.url + "/").status_code == 204
    finally:
        served.shutdown()


def test_a_failing_startup_stops_the_server() -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no store"})

    async def main() -> None:
        stop = asyncio.Event()
        sock = http_server.bind("127.0.0.1", free_port())
        try:
            with pytest.raises(RuntimeError, match="no store"):
                await http_server.Server(failing).serve(sock, stop)
        finally:
            sock.close()

    asyncio.run(main())


def test_stop_lets_a_request_in_progress_finish() -> None:
    LIFESPAN.clear()
    server = Running()
    result: list[requests.Response] = []
    worker = threading.Thread(target=lambda: result.append(requests.get(server.url + "/slow")))
    worker.start()
    time.sleep(0.1)
    server.shutdown()
    worker.join(5)
    assert result and result[0].text == "GET /slow 0 "
    assert result[0].headers["connection"] == "close"
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=2)


async def read_answer(sock: socket.socket, ending: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    received = b""
    while not received.endswith(ending):
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            break
        received += chunk
    return received


def serve_unstarted(new_loop: Callable[[], asyncio.AbstractEventLoop], test: Any) -> None:
    """Run ``test(server, listener)`` on a loop of ``new_loop``: a Server listening on a
    free port (no lifespan, no ticker), everything closed after."""

    async def main() -> None:
        server = http_server.Server(app)
        sock = http_server.bind("127.0.0.1", 0)
        listener = http_server.Listener(server, sock)
        try:
            await test(server, listener)
        finally:
            listener.close()
            for conn in list(server.connections):
                conn.abort()
            for task in list(server.tasks):
                task.cancel()
            await asyncio.gather(*server.tasks, return_exceptions=True)

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("new_loop", LOOPS)
def test_one_wakeup_accepts_every_queued_connection(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """uvloop's libuv accepts one connection per loop iteration: under load a burst of
    connections waited in the kernel's queue for seconds (issue 18). The listener takes
    them all at once."""

    async def test(server: http_server.Server, listener: http_server.Listener) -> None:
        port = listener.sock.getsockname()[1]
        # Connected by the kernel, not yet accepted: the loop does not run until the await.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        try:
            listener.accept_all()  # one wakeup
            with pytest.raises(BlockingIOError):
                listener.sock.accept()  # none left queued
            for i, client in enumerate(clients):
                client.sendall(b"GET /c%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                client.setblocking(False)
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(read_answer(c, b"GET /c%d 0 " % i) for i, c in enumerate(clients))
                ),
                30,
            )
            assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
            assert all(a.endswith(b"GET /c%d 0 " % i) for i, a in enumerate(answers))
            assert len(server.connections) == 50
        finally:
            for client in clients:
                client.close()

    serve_unstarted(new_loop, test)


class _OutOfDescriptors:
    """A listening socket whose accept fails as when the process has no descriptor left."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        raise OSError(24, "Too many open files")


@pytest.mark.parametrize("new_loop", LOOPS)
def test_accepting_pauses_when_out_of_descriptors(
    new_loop: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing accept is not retried at every wakeup (the socket stays readable, so the
    loop would spin): accepting pauses for ACCEPT_RETRY_S, and then resumes."""

    async def test(server: http_server.Server, listener: http_server.Listener) -> None:
        real = listener.sock
        port = real.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            listener.sock = _OutOfDescriptors(real)  # type: ignore[assignment]
            listener.accept_all()
            assert listener.retry is not None
            assert "cannot accept connections" in caplog.text
            listener.sock = real
            assert not server.connections
            listener.retry.cancel()
            listener.retry = None
            listener._resume()  # what the timer does
            client.sendall(b"GET /back HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setblocking(False)
            answer = await asyncio.wait_for(read_answer(client, b"GET /back 0 "), 30)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")

    serve_unstarted(new_loop, test)
