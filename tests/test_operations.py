"""Operations over real server processes: ``GET /health``, the access log, startup failures
(one line, exit code 2, no traceback, at once) and where the virtual clock starts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v2
from novaclient import client as nova_client

from simulacra import __version__
from simulacra.config import DEFAULT_LOG_LEVEL
from tests.pg import drop_schema, require_postgres
from tests.server import RunningServer, free_port

TOKENS = "/identity/v2.0/tokens"
TICK = "/mimic/v1.1/tick"
STARTUP_FAILURE_S = 5.0  # "within a few seconds"


@pytest.fixture
def servers() -> Iterator[Callable[..., RunningServer]]:
    """Start servers (``start(store, *args)``); all stopped at the end."""
    started: list[RunningServer] = []

    def start(store: str = "memory://", *args: str) -> RunningServer:
        running = RunningServer(store=store, extra_args=list(args)).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def wait_for_output(server: RunningServer, found: Callable[[str], bool], timeout: float = 5.0):
    """The server's output once ``found(output)`` (the access line is written just after
    the answer, so a client can read the answer first)."""
    deadline = time.monotonic() + timeout
    while True:
        output = server.output()
        if found(output) or time.monotonic() > deadline:
            return output
        time.sleep(0.05)


def access_records(output: str) -> list[dict]:
    """The JSON lines of ``simulacra.access`` (the banner, on stdout, is text)."""
    lines = (line for line in output.splitlines() if line.startswith("{"))
    return [r for r in map(json.loads, lines) if r["logger"] == "simulacra.access"]


def clock_now(url: str) -> float:
    stamp = requests.post(url + TICK, json={"amount": 0}, timeout=5).json()["now"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def login(url: str, username: str) -> dict:
    body = {"auth": {"passwordCredentials": {"username": username, "password": "secret"}}}
    response = requests.post(url + TOKENS, json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access"]


# GET /health ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_health_is_ok_and_says_what_it_runs_on(servers, tmp_path, kind):
    store = f"sqlite:///{tmp_path / 'h.db'}" if kind == "sqlite" else "memory://"
    server = servers(store)
    response = requests.get(server.url + "/health", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "version", "uptime_s", "store"}
    assert (body["status"], body["version"]) == ("ok", __version__)
    assert body["store"] == {"reachable": True, "kind": kind}
    assert 0 <= body["uptime_s"] < 120
    later = requests.get(server.url + "/health", timeout=5).json()
    assert later["uptime_s"] >= body["uptime_s"]


def test_health_is_not_tracked(servers):
    server = servers("memory://")
    for _ in range(3):
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
    time.sleep(0.3)  # the tracker writes its records every 50 ms
    records = requests.get(server.url + "/api/v2/tracker/records", timeout=5).json()
    assert records["paging"]["totalItems"] == 0, records


def test_health_is_503_when_the_sqlite_file_is_gone(servers, tmp_path):
    db = tmp_path / "gone.db"
    server = servers(f"sqlite:///{db}")
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    # The server still holds the file open, but what it writes now would not survive a
    # restart: the store is not there for the next start.
    db.unlink()
    response = requests.get(server.url + "/health", timeout=5)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["store"]["reachable"] is False and body["store"]["kind"] == "sqlite"
    assert body["store"]["error"]
    # Not answered at info, as probes poll it; but a failing one is a warning, with why.
    output = wait_for_output(server, lambda out: "/health 503" in out)
    [line] = [line for line in output.splitlines() if "/health" in line]
    assert "WARNING simulacra.access" in line and "(unable to open database file)" in line


class Relay:
    """A TCP relay in front of PostgreSQL, which the test can cut (the database "goes away")
    and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> Relay:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shut(sock)

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self.listener is not None:
            # shutdown first: on Linux a close leaves the socket listening while the accept
            # thread is blocked on it
            _shut(self.listener)
            self.listener.close()
            self.listener = None
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            _shut(sock)
            sock.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def test_health_is_503_while_postgresql_is_away_and_ok_when_it_is_back(servers):
    base = urlsplit(require_postgres())
    relay = Relay((base.hostname or "127.0.0.1", base.port or 5432)).start()
    schema = "t_" + uuid.uuid4().hex[:16]
    netloc = f"{base.username}@127.0.0.1:{relay.port}"
    try:
        server = servers(f"postgresql://{netloc}{base.path}?schema={schema}")
        ok = requests.get(server.url + "/health", timeout=5)
        assert ok.status_code == 200, ok.text
        assert ok.json()["store"] == {"reachable": True, "kind": "postgresql"}
        relay.cut()
        started = time.monotonic()
        away = requests.get(server.url + "/health", timeout=10)
        assert time.monotonic() - started < 3.0  # bounded by the ping's timeout
        assert away.status_code == 503, away.text
        assert away.json()["status"] == "degraded"
        assert away.json()["store"]["reachable"] is False
        relay.start()  # the database is back: the pool connects again
        deadline = time.monotonic() + 15
        while (back := requests.get(server.url + "/health", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
        assert back.json()["status"] == "ok"
    finally:
        relay.cut()
        drop_schema(schema)


# The access log -------------------------------------------------------------------------


def test_access_log_in_json_at_info(servers):
    server = servers("memory://", "--log-level", "info", "--log-format", "json")
    http = requests.Session()
    assert http.get(server.url + "/", timeout=5).status_code == 200
    assert http.get(server.url + "/health", timeout=5).status_code == 200
    miss = http.post(
        server.url + "/api/v2/scenarios/objects/nothing/stubs",
        data="<order/>",
        headers={"session": "play"},
        timeout=5,
    )
    assert miss.status_code == 404
    nova = "/mimicking/NovaApi-8ebf5f/ORD/v2/tenant42/servers/nope"
    assert http.get(server.url + nova, timeout=5).status_code == 404
    output = wait_for_output(server, lambda out: "tenant42" in out)
    records = access_records(output)
    assert all(r["path"] != "/health" for r in records)  # polled by probes: never at info
    records = records[-3:]  # before them: RunningServer.start's GET / until it answers
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("GET", "/", 200),
        ("POST", "/api/v2/scenarios/objects/nothing/stubs", 404),
        ("GET", nova, 404),
    ]
    welcome, played, cloud = records
    assert welcome["level"] == "info" and "cause" not in welcome
    assert welcome["client"] == "127.0.0.1"
    assert all(isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0 for r in records)
    assert played["level"] == "warning" and played["session"] == "play"
    assert played["cause"] == "session not found - 127.0.0.1:play"  # the Host namespace
    assert cloud["level"] == "warning" and cloud["tenant"] == "tenant42"
    assert cloud["cause"]
    for record in records:
        datetime.fromisoformat(record["time"])
        assert record["message"].startswith(f"127.0.0.1 {record['method']} {record['path']} ")


def test_access_log_in_text_at_info_and_quiet_at_warning(servers):
    loud = servers("memory://", "--log-level", "info")
    quiet = servers("memory://", "--log-level", "warning")
    for server in (loud, quiet):
        assert requests.get(server.url + "/", timeout=5).status_code == 200
        assert requests.get(server.url + "/no/such/page", timeout=5).status_code == 404
    output = wait_for_output(loud, lambda out: "/no/such/page" in out)
    lines = [line for line in output.splitlines() if "simulacra.access" in line][-2:]
    assert lines[0].split(" ", 2)[2].startswith("INFO simulacra.access: 127.0.0.1 GET / 200 ")
    assert lines[0].endswith("ms")
    assert " WARNING simulacra.access: 127.0.0.1 GET /no/such/page 404 " in lines[1]
    assert lines[1].endswith("ms (Not Found)")
    output = wait_for_output(quiet, lambda out: "/no/such/page" in out)
    assert [line for line in output.splitlines() if "simulacra.access" in line] == [
        line for line in output.splitlines() if "WARNING simulacra.access" in line
    ]
    assert "GET / 200" not in output and "GET /no/such/page 404" in output


def test_the_default_log_level(servers):
    server = servers("memory://")
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    assert requests.get(server.url + "/no/such/page", timeout=5).status_code == 404
    output = wait_for_output(server, lambda out: "/no/such/page" in out)
    assert "GET /no/such/page 404" in output  # errors always, with their cause
    assert ("GET / 200" in output) == (DEFAULT_LOG_LEVEL in ("debug", "info"))


# Startup failures -----------------------------------------------------------------------


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """``simulacra serve <args>``, which must fail at once: exit code 2, one line on stderr,
    no banner and no traceback. Its stderr."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "simulacra", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    took = time.monotonic() - started
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert took < STARTUP_FAILURE_S, took
    assert result.stdout == "", result.stdout  # the banner only once the start can succeed
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("simulacra: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("server", ["simulacra", "uvicorn", "granian"])
def test_a_port_in_use(server):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = refused("--port", str(port), "--store", "memory://", "--server", server)
    assert line == f"simulacra: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_uvicorn_not_installed(tmp_path: Path):
    # A uvicorn that cannot be imported, first on the path, as where the extra is missing.
    (tmp_path / "uvicorn").mkdir()
    (tmp_path / "uvicorn" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    line = refused("--server", "uvicorn", "--store", "memory://", "--port", "0", env=env)
    assert line == (
        "simulacra: --server uvicorn needs uvicorn, which is not installed:"
        " pip install 'simulacra[uvicorn]'"
    )


def test_an_unreachable_postgresql():
    line = refused("--store", "postgresql://postgres@127.0.0.1:1/test", "--port", "0")
    assert line.startswith(
        "simulacra: cannot reach the store postgresql://postgres@127.0.0.1:1/test:"
    )
    assert "Connection refused" in line


def test_an_unreachable_postgresql_password_is_not_shown():
    line = refused("--store", "postgresql://u:sekrit@127.0.0.1:1/test", "--port", "0")
    assert "sekrit" not in line and "u:***@127.0.0.1:1" in line


# Where the virtual clock starts -----------------------------------------------------------


def test_the_clock_starts_at_the_epoch_by_default_and_ticks_to_the_present(servers):
    server = servers("memory://")
    assert clock_now(server.url) == 0.0
    expires = login(server.url, "epoch" + uuid.uuid4().hex[:8])["token"]["expires"]
    assert expires.startswith("1970-01-02T")
    # Mimic's README: tick $(date +%s) to reach the present.
    requests.post(server.url + TICK, json={"amount": int(time.time())}, timeout=5)
    assert abs(clock_now(server.url) - time.time()) < 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("epoch", 0.0),
        ("2024-05-01", 1714521600.0),
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("1700000000", 1700000000.0),
    ],
)
def test_clock_start_values(servers, value, expected):
    server = servers("memory://", "--clock-start", value)
    assert clock_now(server.url) == expected


def test_clock_start_from_the_environment(servers, monkeypatch):
    monkeypatch.setenv("SIMULACRA_CLOCK_START", "2030-01-01")
    server = servers("memory://")
    assert clock_now(server.url) == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("value", ["yesterday", "-5", "1969-12-31", "10000000000000", "nan"])
def test_a_bad_clock_start(value):
    line = refused("--clock-start", value, "--store", "memory://")
    assert line.startswith(f"simulacra: --clock-start {value!r}: ")


def test_clock_start_with_realtime_is_refused():
    line = refused("--clock-start", "now", "--realtime", "--store", "memory://")
    assert "--realtime" in line


def token_posts(server: RunningServer) -> int:
    return server.output().count(f"POST {TOKENS} 200")


def nova_twice(url: str) -> None:
    auth = v2.Password(
        auth_url=url + "/identity/v2.0",
        username="sdk" + uuid.uuid4().hex[:8],
        password="secret",
        tenant_name=None,
    )
    nova = nova_client.Client("2", session=ks_session.Session(auth=auth), region_name="ORD")
    assert nova.servers.list() == []
    assert nova.flavors.list()


def test_keystoneauth_reuses_its_token_when_the_clock_starts_now(servers):
    present = servers("memory://", "--clock-start", "now", "--log-level", "info")
    access = login(present.url, "now" + uuid.uuid4().hex[:8])
    expires = datetime.strptime(access["token"]["expires"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert expires.replace(tzinfo=UTC).timestamp() > time.time() + 3600
    # The access line is written just after the answer: wait for it, or it counts below.
    wait_for_output(present, lambda out: out.count(f"POST {TOKENS} 200") == 1)
    before = token_posts(present)
    nova_twice(present.url)
    time.sleep(0.2)  # the last access lines
    assert token_posts(present) - before == 1  # one login, its token used for both calls
    # At the epoch (the default) every token looks expired to keystoneauth: it logs in
    # again before each call.
    epoch = servers("memory://", "--log-level", "info")
    nova_twice(epoch.url)
    time.sleep(0.2)
    assert token_posts(epoch) >= 2


def test_a_path_cannot_forge_a_log_line(servers):
    server = servers("memory://")
    forged = "/x%0A2026-12-06 INFO simulacra.access: 10.0.0.1 GET /admin 200"
    assert requests.get(server.url + forged, timeout=5).status_code == 404
    # The same through a session named in the query (Mirage's v1 argument).
    v1 = server.url + "/stubo/api/get/response?session=s%0A2026-12-06 INFO simulacra.access: 10"
    assert requests.post(v1, timeout=5).status_code >= 400
    output = wait_for_output(server, lambda out: "/x" in out and "get/response" in out)
    assert not any(
        line.startswith("2026-12-06 INFO simulacra.access: 10") for line in output.splitlines()
    )
    assert "/x\\n2026-12-06" in output  # shown escaped, on the request's own line
    assert "session=s\\n2026-12-06" in output
