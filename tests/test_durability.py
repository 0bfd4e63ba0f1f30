"""Scenarios, stubs and sessions survive a restart on the SQLite store; stops are clean."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from tests.server import RunningServer, refused_serve

STUB = {
    "request": {"method": "POST", "bodyPatterns": {"contains": ["<ping/>"]}},
    "response": {"status": 202, "body": ["first", "second"], "headers": {"X-A": "1"}},
}


def record_and_play(url: str) -> None:
    api = url + "/api/v2/scenarios"
    assert requests.put(api, json={"scenario": "durable"}).status_code == 201
    action = api + "/objects/durable/action"
    begin = {"begin": None, "session": "rec", "mode": "record"}
    assert requests.post(action, json=begin).status_code == 200
    put = requests.put(api + "/objects/durable/stubs", json=STUB, headers={"session": "rec"})
    assert put.status_code == 201
    assert requests.post(action, json={"end": None, "session": "rec"}).status_code == 200
    begin = {"begin": None, "session": "play", "mode": "playback"}
    assert requests.post(action, json=begin).status_code == 200


def play(url: str) -> requests.Response:
    return requests.post(
        url + "/api/v2/scenarios/objects/durable/stubs",
        data="<ping/>",
        headers={"session": "play"},
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_state_survives_restart(tmp_path, stop_signal):
    store = f"sqlite:///{tmp_path / 'state.db'}"
    first = RunningServer(store=store).start()
    try:
        record_and_play(first.url)
        assert play(first.url).text == "first"
    finally:
        assert first.stop(stop_signal) == 0, "a signal must stop the server cleanly"

    second = RunningServer(store=store).start()
    try:
        detail = requests.get(second.url + "/api/v2/scenarios/objects/durable").json()
        assert detail["stub_count"] == 1
        sessions = {s["name"]: s for s in detail["sessions"]}
        assert sessions["rec"]["status"] == "dormant"
        assert sessions["play"]["status"] == "playback"
        # last_used is bookkeeping flushed on shutdown: the acknowledged playback left a trace.
        assert sessions["play"]["last_used"] != "-"
        # Documented: a playing session's sequence restarts at its first response.
        response = play(second.url)
        assert (response.status_code, response.text) == (202, "first")
        assert response.headers["X-A"] == "1"
        assert play(second.url).text == "second"
        assert play(second.url).text == "second"
    finally:
        second.stop()


def test_memory_store_starts_empty_every_time():
    first = RunningServer(store="memory://").start()
    try:
        record_and_play(first.url)
    finally:
        first.stop()
    second = RunningServer(store="memory://").start()
    try:
        assert requests.get(second.url + "/api/v2/scenarios").json()["data"] == []
    finally:
        second.stop()


def test_uvicorn_serves_the_same_app(tmp_path):
    server = RunningServer(store="memory://", server="uvicorn").start()
    try:
        record_and_play(server.url)
        assert play(server.url).text == "first"
        missing = requests.get(server.url + "/api/v2/scenarios/objects/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == 404
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.stop() in (0, -signal.SIGTERM)


def test_bad_store_url_is_refused_before_serving(tmp_path):
    assert "unsupported store URL" in refused_serve("--store", "mongodb://x")


def test_serve_checks_settings_without_loading_the_app():
    """granian's parent process lives beside the workers: its checks must stay light.

    Before this, checking ``--store`` imported the stores, the virtualization model and the
    cloud package into the parent (about 16 MB of its RSS, bench/profile_playback.md).
    """
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from simulacra import cli\n"
        "for argv in (['--store', 'mongodb://x'], ['--store', 'postgresql://h/db?schema=a-b'],"
        " ['--regions', ' , '], ['--store', 'sqlite:///'], ['--shared-cloud']):\n"
        "    assert cli.main(['serve', *argv]) == 2, argv\n"
        "heavy = [m for m in ('simulacra.app', 'simulacra.store', 'simulacra.cloud',"
        " 'simulacra.virtual', 'starlette', 'psycopg') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for message in ("unsupported store URL", "illegal schema name", "--regions", "names no file"):
        assert message in result.stderr
    assert "--shared-cloud keeps the cloud state" in result.stderr


def test_memory_store_pages_out_to_a_file_nothing_outlives(tmp_path, monkeypatch):
    """memory:// holds its rows in SQLite's private temporary database: past SQLite's page
    cache they go to a file in the temporary directory that SQLite unlinked as it opened it,
    so the process does not hold them all (bench.memory) and even a kill -9 leaves nothing."""
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
    server = RunningServer(store="memory://").start()
    try:
        record_and_play(server.url)
        base = server.url + "/api/v2/scenarios"
        assert requests.put(base, json={"scenario": "big"}).status_code == 201
        stubs = [  # ~6 MB of rows: more than SQLite's 2 MB page cache
            {
                "request": {"method": "POST", "bodyPatterns": {"contains": [f"<id>{i}</id>"]}},
                "response": {"status": 200, "body": f"{i:06d}" + "x" * 1000},
            }
            for i in range(6000)
        ]
        imported = requests.post(base + "/objects/big/stubs/import", json=stubs)
        assert imported.status_code == 201, imported.text
        assert server.process is not None
        fds = Path(f"/proc/{server.process.pid}/fd")
        held = [os.readlink(fd) for fd in fds.iterdir()]
        assert any(link.startswith(str(tmp_path)) and link.endswith("(deleted)") for link in held)
        assert list(tmp_path.iterdir()) == []  # never a name in the directory
        assert play(server.url).text == "first"
        page = requests.get(base + "/objects/big/stubs", params={"offset": 5999, "limit": 1})
        assert page.json()["data"][0]["stub"]["response"]["body"].startswith("005999")
    finally:
        server.stop(signal.SIGKILL)
    assert list(tmp_path.iterdir()) == []
