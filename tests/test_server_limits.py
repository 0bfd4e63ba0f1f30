"""What a client can make the built-in server hold (simulacra/server.py): a request head is
bounded while it arrives, answers a client does not read are not piled up, a closed
connection is freed at once, not by the collector, and 1,000 connections opened at once
are each answered.

The memory tests measure a real ``simulacra serve`` (its GC tuning on, as in production)
through /proc/<pid>/status, and stop sending as soon as the server's memory grows past the
bound (the old server buffered all it was sent).
"""

from __future__ import annotations

import asyncio
import gc
import re
import resource
import socket
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simulacra import server as http_server
from tests.probes import wait_for
from tests.server import RunningServer
from tests.test_server import LIFESPAN, LOOPS, Running

BATCH = 1024 * 1024
SENT_MAX = 48 * BATCH  # what a test sends at most
GROWTH_MAX = 16 * BATCH  # the server's RSS may grow this much while refusing it


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    # Tracking off: the tracker's records (capped, its own matter) are not the server's.
    running = RunningServer(store="memory://", extra_args=["--no-tracking"]).start()
    yield running
    assert running.stop() == 0


def header_lines() -> Iterator[bytes]:
    i = 0
    while True:
        yield b"".join(b"x-h-%07d: %s\r\n" % (i + n, b"v" * 80) for n in range(BATCH // 96))
        i += BATCH // 96


def one_value() -> Iterator[bytes]:
    while True:
        yield b"a" * BATCH


HEADS: dict[str, tuple[bytes, Callable[[], Iterator[bytes]]]] = {
    # many header lines, each small
    "lines": (b"GET / HTTP/1.1\r\nHost: x\r\n", header_lines),
    # one header value that never ends
    "value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", one_value),
    # a chunked body whose trailer section never ends, on a data-plane route
    "trailers": (
        b"POST /api/v2/matcher HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n",
        header_lines,
    ),
}


@pytest.mark.parametrize("shape", sorted(HEADS))
def test_a_head_that_never_ends_is_refused_as_it_arrives(served: RunningServer, shape: str) -> None:
    assert served.process is not None
    pid = served.process.pid
    start, batches = HEADS[shape]
    before = rss(pid)
    peak = before
    sent = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(start)
        try:
            for batch in batches():
                sock.sendall(batch)
                sent += len(batch)
                peak = max(peak, rss(pid))
                if sent >= SENT_MAX or peak - before > GROWTH_MAX:
                    break
        except OSError:
            pass  # closed by the server: what it took is bounded
        time.sleep(0.2)  # the server's last read
        peak = max(peak, rss(pid))
        assert peak - before <= GROWTH_MAX, f"+{(peak - before) >> 20} MB for {sent >> 20} MB"
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer


def test_a_client_that_does_not_read_its_answers_is_not_buffered_for(
    served: RunningServer,
) -> None:
    """Requests pipelined without end, no answer read: the server stops answering (and so
    reading) once the client's answers back up, rather than buffer them all (the old one
    did: +113 MB in 10 s)."""
    assert served.process is not None
    pid = served.process.pid
    # answered by the data plane at once, whole (a 400: no session named)
    request = b"POST /api/v2/matcher HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n"
    request += b"p" * 200
    before = rss(pid)
    peak = before
    with socket.create_connection(("127.0.0.1", served.port), timeout=3) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        try:
            while time.monotonic() - started < 8 and peak - before <= GROWTH_MAX:
                sock.sendall(request * 1000)
                peak = max(peak, rss(pid))
        except TimeoutError:
            pass  # the server stopped reading (for 3 s: not a pause)
        time.sleep(0.5)
        peak = max(peak, rss(pid))
    assert peak - before <= GROWTH_MAX, f"+{(peak - before) >> 20} MB"


def test_header_lines_are_counted(served: RunningServer) -> None:
    """Many short lines stay under the byte limit but not under the line limit."""
    lines = b"".join(b"x-%d: 1\r\n" % i for i in range(http_server.MAX_HEADERS))
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # ...and a request with as many as the limit is served
    lines = b"".join(b"x-%d: 1\r\n" % i for i in range(http_server.MAX_HEADERS - 1))
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.fixture
def running() -> Iterator[Running]:
    LIFESPAN.clear()
    server = Running()
    yield server
    server.shutdown()


def test_a_closed_connection_is_freed_without_the_collector(running: Running) -> None:
    """With the collector off, only reference counts free memory: a connection closed in
    the middle of a head or of a body must leave no cycle behind (the old one left its
    parser, buffers and request until a full collection, which the server's GC tuning
    postpones)."""
    server = running.server
    assert server is not None
    gc.collect()
    gc.disable()
    try:
        mid_head = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        mid_head.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
        mid_body = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        mid_body.sendall(
            b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n" + b"b" * 500
        )
        app_body = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        app_body.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n")
        app_body.sendall(b"c" * 70_000)  # past WHOLE_BODY_MAX: the app is reading it
        wait_for(lambda: len(server.connections) == 3, "three connections")
        time.sleep(0.2)  # what they sent is read
        refs = [weakref.ref(conn) for conn in server.connections]
        for sock in (mid_head, mid_body, app_body):
            sock.close()
        wait_for(lambda: not server.connections, "the connections closed")
        wait_for(lambda: all(ref() is None for ref in refs), "the connections freed", 3.0)
    finally:
        gc.enable()


CONNECTIONS = 1000


@pytest.fixture
def descriptors() -> Iterator[None]:
    """Room for both ends of CONNECTIONS connections in this process (soft limit raised
    up to the hard one for the test)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * CONNECTIONS + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_thousand_connections_at_once_are_each_answered(
    descriptors: None, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """As wrk starts: 1,000 connections opened at once, each sending its request before the
    server has accepted it; each is answered, and again on the same connection."""
    LIFESPAN.clear()
    served = Running(new_loop=new_loop)

    async def one(i: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        bodies = []
        try:
            for n in range(2):
                writer.write(b"GET /c%d-%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, n))
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                length = re.search(rb"content-length: (\d+)", head)
                assert length is not None, head
                bodies.append(await reader.readexactly(int(length[1])))
        finally:
            writer.close()
        return bodies

    async def clients() -> list[list[bytes]]:
        # A guard against a hang, not a time limit on the answers.
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CONNECTIONS))), 120)

    try:
        answers = asyncio.run(clients())
    finally:
        served.shutdown()
    assert answers == [[b"GET /c%d-%d 0 " % (i, n) for n in range(2)] for i in range(CONNECTIONS)]
