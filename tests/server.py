"""Start a real ``simulacra serve`` process on a free port, for tests and benches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_serve(*args: str) -> str:
    """Run ``simulacra serve <args>``, which must refuse to start (exit code 2): its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "simulacra", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    return result.stderr


@dataclass
class RunningServer:
    store: str
    server: str = "simulacra"
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    # The server's output goes to a file, never to a pipe nobody reads (a full pipe would
    # stall the server); ``output`` reads it.
    log: IO[bytes] = field(default_factory=tempfile.TemporaryFile)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> RunningServer:
        cmd = [
            sys.executable,
            "-m",
            "simulacra",
            "serve",
            "--port",
            str(self.port),
            "--store",
            self.store,
            "--server",
            self.server,
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{output}")
            try:
                if requests.get(self.url + "/", timeout=0.5).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server on {self.url} did not answer within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                tail = self.output()[-4000:]
                print(f"server killed after {timeout} s; its output:\n{tail}", file=sys.stderr)
        code = self.process.returncode
        self.process = None
        return code

    def output(self) -> str:
        """All the server has printed so far."""
        with open(self.log.fileno(), "rb", closefd=False) as log:
            log.seek(0)
            return log.read().decode("utf-8", "replace")
