"""Every data-plane case through each server: the built-in one (which calls the data plane
directly), and granian and uvicorn (which reach it through dataplane/asgi.py).

The answers must be the same everywhere, but for faults: they need the connection itself,
which only the built-in server has; through ASGI they are a 500 that says so
(docs/compatibility.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulacra.cloud.compute.routes import NOVA
from simulacra.cloud.loadbalancer.routes import CLB
from tests.mirage_helpers import (
    action_url,
    assert_data,
    assert_error,
    create_scenario,
    put_stub_ok,
    stubs_url,
)
from tests.server import RunningServer

SERVERS = ("simulacra", "granian", "uvicorn")
LIMIT = 64 * 1024


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = RunningServer(
        store="memory://", server=request.param, extra_args=["--max-body-bytes", str(LIMIT)]
    ).start()
    yield running
    running.stop()


STUBS: list[dict[str, Any]] = [
    {
        "request": {"method": "GET", "urlPath": "/users/1"},
        "response": {"status": 200, "headers": {"X-Kind": "user"}, "body": {"id": 1}},
    },
    {
        "request": {"method": "POST", "bodyPatterns": {"contains": ["<order>"]}},
        "response": {"status": 201, "body": "<ok/>", "delayPolicy": "slow"},
    },
    {
        "request": {"method": "GET", "urlPath": "/slow-body"},
        "response": {
            "body": "abcdefgh",
            "chunkedDribbleDelay": {"numberOfChunks": 4, "totalDuration": 400},
        },
    },
    {
        "request": {"method": "GET", "urlPath": "/reset"},
        "response": {"fault": "CONNECTION_RESET_BY_PEER"},
    },
]


@pytest.fixture(scope="module")
def scenario(served: RunningServer) -> Iterator[dict[str, Any]]:
    """A scenario played by session ``p`` (Mirage's way) and ``b`` (on a port of its own)."""
    url = served.url
    with requests.Session() as http:
        create_scenario(http, url, "adapters")
        policy = {"name": "slow", "delay_type": "fixed", "milliseconds": 100}
        assert http.put(url + "/api/v2/delay-policy", json=policy).status_code in (200, 201)
        rec = {"begin": None, "session": "rec", "mode": "record"}
        assert_data(http.post(action_url(url, "adapters"), json=rec))
        for stub in STUBS:
            put_stub_ok(http, url, "adapters", "rec", stub)
        http.post(action_url(url, "adapters"), json={"end": None, "session": "rec"})
        play = {"begin": None, "session": "p", "mode": "playback"}
        assert_data(http.post(action_url(url, "adapters"), json=play))
        bound = {"begin": None, "session": "b", "mode": "playback", "port": 0}
        port = assert_data(http.post(action_url(url, "adapters"), json=bound))["port"]
    yield {"url": url, "port": port}


def test_mirage_playback(scenario: dict[str, Any]) -> None:
    headers = {"session": "p", "Stubo-Request-Method": "GET", "Stubo-Request-Path": "/users/1"}
    reply = requests.post(stubs_url(scenario["url"], "adapters"), headers=headers)
    assert (reply.status_code, reply.json(), reply.headers["x-kind"]) == (200, {"id": 1}, "user")
    miss = requests.post(stubs_url(scenario["url"], "adapters"), headers={"session": "p"})
    assert_error(miss, 400, "E017")


def test_the_matcher(scenario: dict[str, Any]) -> None:
    headers = {"session": "adapters:p", "Stubo-Request-Method": "GET"}
    headers["Stubo-Request-Path"] = "/users/1"
    reply = requests.post(scenario["url"] + "/api/v2/matcher", headers=headers)
    assert reply.json() == {"body": '{"id":1}', "headers": {"X-Kind": "user"}, "statusCode": 200}


def test_api_v1(scenario: dict[str, Any]) -> None:
    reply = requests.post(
        scenario["url"] + "/stubo/api/get/response?session=p", data="<order>1</order>"
    )
    assert (reply.status_code, reply.text) == (201, "<ok/>")


def test_the_path_prefix_and_a_near_miss(scenario: dict[str, Any]) -> None:
    base = scenario["url"] + "/virtual/adapters/p"
    assert requests.get(base + "/users/1").json() == {"id": 1}
    miss = requests.get(base + "/users/2")
    assert_error(miss, 404, "/users/2")
    assert miss.json()["error"]["nearMisses"][0]["failed"] == ["urlPath"]


def test_a_bound_port(scenario: dict[str, Any]) -> None:
    reply = requests.get(f"http://127.0.0.1:{scenario['port']}/users/1")
    assert (reply.status_code, reply.json()) == (200, {"id": 1})


def test_a_delay_policy_holds_the_answer(scenario: dict[str, Any]) -> None:
    started = time.monotonic()
    reply = requests.post(f"{scenario['url']}/virtual/adapters/p/x", data="<order>2</order>")
    assert reply.status_code == 201 and time.monotonic() - started >= 0.09


def test_a_body_over_the_limit(scenario: dict[str, Any]) -> None:
    reply = requests.post(f"{scenario['url']}/virtual/adapters/p/x", data=b"x" * (LIMIT + 1))
    assert_error(reply, 413, "limit")


def test_a_dribbled_body(scenario: dict[str, Any]) -> None:
    started = time.monotonic()
    with requests.get(f"{scenario['url']}/virtual/adapters/p/slow-body", stream=True) as reply:
        assert b"".join(reply.iter_content(1)) == b"abcdefgh"
    assert time.monotonic() - started >= 0.25


def test_a_fault(served: RunningServer, scenario: dict[str, Any]) -> None:
    url = f"{scenario['url']}/virtual/adapters/p/reset"
    if served.server == "simulacra":
        with pytest.raises(requests.ConnectionError):
            requests.get(url)
    else:
        assert_error(requests.get(url), 500, "CONNECTION_RESET_BY_PEER", "built-in server")


def test_the_cloud_s_hot_routes(served: RunningServer) -> None:
    base = served.url
    servers = f"{base}/mimicking/{NOVA.service_id}/ORD/v2/adapters/servers"
    created = requests.post(
        servers, json={"server": {"name": "a", "imageRef": "i", "flavorRef": "2"}}
    )
    assert created.status_code == 202 and created.json()["server"]["id"]
    bad = requests.post(servers, data=b"{not json")
    assert bad.status_code == 400 and "badRequest" in bad.json()
    lbs = f"{base}/mimicking/{CLB.service_id}/ORD/v2/adapters/loadbalancers"
    body = {"loadBalancer": {"name": "lb", "protocol": "HTTP", "virtualIps": [{"type": "PUBLIC"}]}}
    assert requests.post(lbs, json=body).status_code == 202
