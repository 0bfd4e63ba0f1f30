"""Issue 16: one call resets everything a test may have left, and one per side.

A server of its own per test (the suite's shared server holds other tests' state).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from simulacra.client import Simulacra
from simulacra.cloud.compute import NOVA
from tests.server import RunningServer

SERVERS = f"/mimicking/{NOVA.service_id}/ORD/v2/tenant-r/servers"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def sim(request: pytest.FixtureRequest, tmp_path) -> Iterator[Simulacra]:
    if request.param == "postgres":
        store = request.getfixturevalue("pg_url")
        extra = ["--shared-cloud"]
    else:
        store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'r.db'}"
        extra = []
    server = RunningServer(store=store, extra_args=extra).start()
    try:
        with Simulacra(server.url) as client:
            yield client
    finally:
        server.stop()


def leave_state_behind(sim: Simulacra) -> int:
    """A scenario playing on a port of its own, a delay policy, tracker records, a cloud
    server and a tick: the port."""
    with sim.recording("orders") as rec:
        rec.stub({"method": "GET", "urlPath": "/o"}, {"status": 200, "body": "o"})
    port = sim.playing("orders", port=0).port
    assert port is not None
    assert httpx.get(f"http://127.0.0.1:{port}/o").text == "o"
    sim.delay_policy({"name": "slow", "delay_type": "fixed", "milliseconds": 5})
    server = {"server": {"name": "web", "imageRef": "img", "flavorRef": "2"}}
    assert sim.http.post(SERVERS, json=server).status_code == 202
    sim.tick(1000)
    return port


def virtual_state(sim: Simulacra) -> tuple[int, int, int]:
    policies = sim.call("GET", "/api/v2/delay-policy/detail")
    return len(sim.scenarios()), len(policies), len(list(sim.tracked()))


def cloud_state(sim: Simulacra) -> tuple[int, str]:
    servers = sim.http.get(SERVERS).json()["servers"]
    return len(servers), sim.tick(0)


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_reset_forgets_everything(sim: Simulacra) -> None:
    port = leave_state_behind(sim)
    assert virtual_state(sim)[0:2] == (1, 1)
    sim.reset()
    assert virtual_state(sim) == (0, 0, 0)
    assert cloud_state(sim) == (0, "1970-01-01T00:00:00.000000Z")  # the clock's start
    assert refused(port)  # the playing session's port is closed
    # And it all works again from scratch, the same names included.
    assert leave_state_behind(sim)


def test_each_side_alone(sim: Simulacra) -> None:
    leave_state_behind(sim)
    sim.reset("cloud")
    assert virtual_state(sim)[0:2] == (1, 1)
    assert cloud_state(sim)[0] == 0
    server = {"server": {"name": "web", "imageRef": "img", "flavorRef": "2"}}
    assert sim.http.post(SERVERS, json=server).status_code == 202
    sim.reset("virtual")
    assert virtual_state(sim) == (0, 0, 0)
    assert cloud_state(sim)[0] == 1
