"""``simulacra serve --workers N`` on the built-in server: a worker that dies is replaced
(as uvicorn's and gunicorn's supervisors do), and workers that keep dying stop the server.

Against the machine's PostgreSQL (more than one worker needs a shared store), each test on
a schema of its own (tests/pg.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from tests.probes import wait_for
from tests.server import RunningServer, free_port


def eventually(check: Callable[[], bool], what: str) -> None:
    wait_for(check, what, patience=30.0, every=0.05)


def serves(url: str, times: int = 20) -> bool:
    """``times`` requests on new connections (the kernel spreads them over the workers)."""
    return all(requests.get(url + "/", timeout=5).status_code == 200 for _ in range(times))


def answered_by(port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` answers a request on a new connection (the one holding it open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        mine = sock.getsockname()[1]
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == mine and conn.laddr.port == port:
                        return pid
    return None


def test_a_dead_worker_is_replaced(pg_url: str) -> None:
    server = RunningServer(store=pg_url, extra_args=["--workers", "2"]).start()
    try:
        assert server.process is not None
        supervisor = psutil.Process(server.process.pid)

        def workers() -> set[int]:
            return {child.pid for child in supervisor.children()}

        eventually(lambda: len(workers()) == 2, "two workers")
        first = workers()
        victim, other = sorted(first)
        os.kill(victim, signal.SIGKILL)
        assert serves(server.url)  # the other worker answers meanwhile
        # Each check reads the children once: two reads could see {victim, other} and
        # then {other} (the victim reaped, its replacement not yet started).
        replaced: set[int] = set()

        def victim_replaced() -> bool:
            replaced.clear()
            replaced.update(workers() - first)
            return len(replaced) == 1

        eventually(victim_replaced, "a new worker")
        (new,) = replaced
        eventually(lambda: answered_by(server.port, {new}) == new, "the new worker answering")
        # The new worker serves alone once the other original is gone too.
        os.kill(other, signal.SIGKILL)
        assert serves(server.url)
        eventually(lambda: len(workers() - {new, other}) == 1, "another")
        assert serves(server.url)
    finally:
        assert server.stop() == 0  # a clean stop after the replacements


def test_workers_that_keep_dying_stop_the_server(pg_url: str, tmp_path: Path) -> None:
    """Workers that fail at startup (an archive they cannot load) are replaced up to
    --workers times within the window; then the server stops, saying why."""
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip")
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulacra",
            "serve",
            "--port",
            str(free_port()),
            "--store",
            pg_url,
            "--workers",
            "2",
            "--load",
            str(archive),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.count("; starting another") == 2, result.stderr[-2000:]
    assert "workers keep exiting (2 replaced within 60 s): stopping" in result.stderr
    assert time.monotonic() - started < 60
