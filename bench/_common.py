"""Helpers shared by the benches: server processes, a setup client, wrk, CPU time, tables.

Nothing here is specific to one bench. ``bench/playback.py`` and ``bench/cloud.py`` import
from it; a new bench should too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "BENCH_RESULT"


class BenchError(RuntimeError):
    """A setup step failed; the message says which and why."""


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so the servers are stopped either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# server processes ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def any_status(status: int) -> bool:
    return True


def ok_status(status: int) -> bool:
    return status == 200


@dataclass
class ServerProcess:
    """A server started in the background, its output in a log file, stopped with SIGTERM.

    Output goes to a log file, never to a pipe nobody reads (a full pipe would stall the
    server mid-run), and the server runs in its own session, so a Ctrl-C reaches the bench,
    which then stops the server with SIGTERM. ``start`` polls ``GET ready_path`` until the
    answer's status satisfies ``ready``.
    """

    name: str
    argv: list[str]
    log_path: Path
    port: int
    cwd: Path = REPO_ROOT
    ready_path: str = "/"
    ready: Callable[[int], bool] = ok_status
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise BenchError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
                try:
                    conn.request("GET", self.ready_path)
                    if self.ready(conn.getresponse().status):
                        return self
                finally:
                    conn.close()
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} on {self.url} did not answer within {timeout}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no {self.name} log)"
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's live processes (its session), from /proc."""
        return session_cpu_seconds(self.pid)

    def memory(self) -> Memory:
        """Resident memory of the server's live processes (its session), from /proc."""
        return session_memory(self.pid)


# What ``simulacra serve --server`` takes; the benches run the first, its default.
SERVERS = ("simulacra", "granian", "uvicorn")


def simulacra_process(
    store: str, server: str, log_path: Path, port: int | None = None
) -> ServerProcess:
    """``python -m simulacra serve`` on a free port (the logic of tests/server.py)."""
    port = free_port() if port is None else port
    argv = [
        sys.executable,
        "-m",
        "simulacra",
        "serve",
        "--port",
        str(port),
        "--store",
        store,
        "--server",
        server,
    ]
    return ServerProcess("simulacra", argv, log_path, port)


# CPU time --------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its last ")".
    return text[text.rindex(")") + 2 :].split()


def sessions_cpu_seconds(session_ids: set[int]) -> float:
    """utime + stime of every live process in any of ``session_ids``, in one /proc scan."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(entry.name)
        if fields is None or int(fields[3]) not in session_ids:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


def session_cpu_seconds(session_id: int) -> float:
    """utime + stime of every live process in session ``session_id`` (Linux /proc).

    The servers run in their own session (``start_new_session``), so this covers worker
    processes a server forks (granian serves from a forked worker) without psutil.
    Returns 0.0 where /proc is missing.
    """
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(entry.name)
        # fields[0] is field 3 (state): session is field 6, utime 14, stime 15.
        if fields is None or int(fields[3]) != session_id:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    """Resident memory of a server's live processes (its session), from /proc, in KiB.

    ``peak`` sums each process's VmHWM (its own high-water mark), ``current`` each VmRSS.
    A sum counts pages that processes share (the interpreter, shared libraries, pages a
    forked worker inherited) once per process: it can only overstate. ``per_process`` maps
    each pid to ``(command, VmHWM, VmRSS)``.
    """

    peak_kib: int
    current_kib: int
    per_process: dict[int, tuple[str, int, int]]

    @property
    def peak_mb(self) -> float:
        return self.peak_kib / 1024

    @property
    def current_mb(self) -> float:
        return self.current_kib / 1024

    def largest_peak_mb(self) -> float:
        """VmHWM of the largest process alone (granian's worker, for Simulacra)."""
        return max((hwm for _, hwm, _ in self.per_process.values()), default=0) / 1024


def _status_kib(pid: str, *keys: str) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            values[key] = int(rest.split()[0])
    return values


def session_memory(session_id: int) -> Memory:
    """VmHWM and VmRSS of every live process in session ``session_id`` (Linux /proc)."""
    per_process: dict[int, tuple[str, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(entry.name)
        if fields is None or int(fields[3]) != session_id:
            continue
        values = _status_kib(entry.name, "VmHWM", "VmRSS")
        if not values:  # a kernel thread or a process that just exited
            continue
        try:
            command = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            command = "?"
        per_process[int(entry.name)] = (command, values.get("VmHWM", 0), values.get("VmRSS", 0))
    return Memory(
        peak_kib=sum(hwm for _, hwm, _ in per_process.values()),
        current_kib=sum(rss for _, _, rss in per_process.values()),
        per_process=per_process,
    )


# HTTP client for setup -------------------------------------------------------


class Client:
    """Keep-alive HTTP/1.1, one connection per thread (stdlib only)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        data = body.encode() if isinstance(body, str) else body
        for attempt in (1, 2):  # a keep-alive connection the server closed: retry once
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=dict(headers or {}))
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(
        self,
        method: str,
        path: str,
        document: object,
        expect: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        body = json.dumps(document)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        status, data = self.request(method, path, body, all_headers)
        if status != expect:
            raise BenchError(
                f"{method} {path} answered {status}, expected {expect}: {data[:500]!r}"
            )
        return data


# wrk -------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int


def run_bench(prefix: str, work: Callable[[Path], int]) -> int:
    """``work(a temporary folder)`` as a bench's main runs it: SIGTERM and Ctrl-C stop it
    (130; the servers are stopped on the way out), a setup failure is 1 with its reason."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, sigterm_as_interrupt():
        try:
            return work(Path(tmp))
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except BenchError as exc:
            log(f"error: {exc}")
            return 1


def lua_string(text: str) -> str:
    """A double-quoted Lua string literal for ``text`` (escaped byte by byte)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


LUA_TEMPLATE = """\
-- generated by bench/_common.py: cycle through prepared requests
local method = {method}
local path = {path}
local headers = {{{headers}}}
local bodies = {{{bodies}}}
local prepared = {{}}
local counter = 0

function init(args)
  for k, body in ipairs(bodies) do
    if body == "" then body = nil end
    prepared[k] = wrk.format(method, path, headers, body)
  end
end

function request()
  counter = counter % #prepared + 1
  return prepared[counter]
end

{done}"""

# What every generated script prints when wrk is done (``parse_wrk`` reads it).
LUA_DONE = """\
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "{marker} requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d socket=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def write_lua(
    label: str,
    method: str,
    path: str,
    headers: Mapping[str, str],
    bodies: Sequence[str],
    directory: Path,
) -> Path:
    """A wrk script sending ``method path`` with ``headers``, cycling through ``bodies``.

    An empty body means none. The script prints one ``BENCH_RESULT`` line (see
    ``parse_wrk``) with the request count, p50/p99 and the error counts.
    """
    header_items = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
    body_items = ",\n  ".join(lua_string(b) for b in bodies or [""])
    script = LUA_TEMPLATE.format(
        method=lua_string(method),
        path=lua_string(path),
        headers=header_items,
        bodies="\n  " + body_items + "\n",
        done=LUA_DONE.format(marker=RESULT_MARKER),
    )
    name = "".join(c if c.isalnum() else "_" for c in label)
    script_path = directory / f"{name}.lua"
    script_path.write_text(script)
    return script_path


def parse_wrk(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            fields = dict(item.split("=", 1) for item in line.split()[1:])
            values = {k: int(float(v)) for k, v in fields.items()}
            duration_s = values["duration_us"] / 1e6
            return WrkResult(
                rps=values["requests"] / duration_s if duration_s else 0.0,
                p50_ms=values["p50_us"] / 1000,
                p99_ms=values["p99_us"] / 1000,
                requests=values["requests"],
                duration_s=duration_s,
                non_2xx=values["status"],
                socket_errors=values["socket"],
            )
    raise BenchError(f"wrk printed no {RESULT_MARKER} line:\n{output}")


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    duration: int,
    connections: int,
    threads: int,
) -> WrkResult:
    cmd = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        "--latency",
        f"--script={script}",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


# report ----------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Plain-text columns: the first ``left`` columns left-aligned, the rest right-aligned.

    ``rows[0]`` is the header; a dashed rule follows it.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class Stopwatch:
    """Wall time and a server's CPU time over a block (``with Stopwatch(server) as sw``)."""

    server: ServerProcess
    wall_s: float = 0.0
    cpu_s: float = 0.0
    _start: tuple[float, float] = field(default=(0.0, 0.0), repr=False)

    def __enter__(self) -> Stopwatch:
        self._start = (time.perf_counter(), self.server.cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, cpu0 = self._start
        self.wall_s = time.perf_counter() - wall0
        self.cpu_s = self.server.cpu_seconds() - cpu0
