"""The pytest plugin: one Simulacra server per test session, a client per test, reset after.

- ``simulacra_server`` (session): the base URL of a server started for the session, a
  ``simulacra serve --store memory:// --clock-start now`` subprocess on a free port, stopped
  at the end. A
  subprocess, not a thread: the server tunes the garbage collector and owns an event loop
  and signal handlers, which a test process must not share, and its crashes stay its own.
  ``--simulacra-url URL`` (or ``SIMULACRA_URL``) uses a server already running instead (a
  CI service), started by nobody here.
- ``simulacra`` (function): a ``simulacra.client.Simulacra`` on that server; after the test,
  everything is reset (``POST /api/v2/reset``: scenarios, sessions, stubs, delay policies,
  the tracker, the cloud mocks), so tests never see each other.
- ``@pytest.mark.simulacra_load("path/orders.zip" | "path/site.har")``: loads a scenario
  archive (uploaded, its session begun in playback) or a HAR file (into a scenario named
  after the file, begun in playback as ``har``) from the test's folder before the test.
- When a test fails, its report gets a section with the requests that no stub matched
  during it (from the tracker), and the stubs that came closest when the server said.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulacra.client import Simulacra, SimulacraError

START_TIMEOUT_S = 30.0
UNMATCHED = ("no stub matches", "E017")  # the 404 of real paths, Mirage's 400


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simulacra")
    group.addoption(
        "--simulacra-url",
        default=os.environ.get("SIMULACRA_URL"),
        help="use the Simulacra server at this URL instead of starting one (SIMULACRA_URL)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "simulacra_load(*paths): load scenario archives (.zip) or HAR files (.har) from the"
        " test's folder into Simulacra before the test",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"simulacra serve exited with {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(url + "/", timeout=0.5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"simulacra serve did not answer on {url} in {START_TIMEOUT_S:g} s")


@pytest.fixture(scope="session")
def simulacra_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The base URL of the session's Simulacra server (started here unless given)."""
    given = request.config.getoption("--simulacra-url")
    if given:
        yield str(given).rstrip("/")
        return
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="simulacra-pytest-"))
    log = folder / "server.log"
    command = [sys.executable, "-m", "simulacra", "serve", "--port", str(port)]
    # In the present: tokens issued at the epoch have expired, so real SDKs (keystoneauth)
    # would authenticate again before every call.
    command += ["--store", "memory://", "--clock-start", "now"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def simulacra(simulacra_server: str, request: pytest.FixtureRequest) -> Iterator[Simulacra]:
    """A client of the session's server; everything is reset after the test."""
    with Simulacra(simulacra_server) as sim:
        sim.reset()  # whatever ran before (another suite on a shared server) is gone
        marker = request.node.get_closest_marker("simulacra_load")
        if marker is not None:
            folder = Path(str(request.node.fspath)).parent
            for name in marker.args:
                _load(sim, folder / name)
        request.node._simulacra = sim  # for the failure report
        try:
            yield sim
        finally:
            # A server gone meanwhile: the next test's reset says so.
            with contextlib.suppress(SimulacraError, httpx.HTTPError):
                sim.reset()


def _load(sim: Simulacra, path: Path) -> None:
    if path.suffix == ".har":
        scenario = path.stem
        try:
            sim.create_scenario(scenario)
        except SimulacraError as exc:
            if exc.status != 422:
                raise
        sim.import_har(scenario, path)
        sim.playing(scenario, "har")
    else:
        sim.upload(path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    sim: Simulacra | None = getattr(item, "_simulacra", None)
    if sim is not None and report.when == "call" and report.failed:
        try:
            lines = _unmatched(sim)
        except (SimulacraError, httpx.HTTPError) as exc:
            lines = [f"(the tracker could not be read: {exc})"]
        if lines:
            report.sections.append(("requests no stub matched (Simulacra)", "\n".join(lines)))
    return report


def _unmatched(sim: Simulacra, most: int = 20) -> list[str]:
    """The test's requests that no stub matched, newest first (the tracker's records)."""
    lines = []
    for record in sim.tracked(page=200):
        preview = str(record.get("stubo_response") or "")
        if record.get("return_code") in (400, 404) and any(m in preview for m in UNMATCHED):
            where = f"session {record.get('session')}" if record.get("session") else ""
            lines.append(f"{record['function']} -> {record['return_code']} {where}: {preview}")
            if len(lines) >= most:
                break
    return lines
