"""A scenario as a virtual service an unmodified client talks to: a session bound to a port
of its own, the same session through the /virtual/ path prefix, near misses, faults and slow
bodies, and ``serve --load/--bind``. Real server, real sockets, real clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from simulacra.cloud.compute.routes import NOVA
from tests.mirage_helpers import (
    action_url,
    assert_data,
    assert_error,
    create_scenario,
    end_ok,
    put_stub_ok,
    stubs_url,
)
from tests.server import RunningServer, free_port

USERS = {
    "request": {"method": "GET", "urlPath": "/users/1"},
    "response": {"status": 200, "headers": {"Content-Type": "application/json"}, "body": {"id": 1}},
}
ORDER = {
    "request": {"method": "POST", "urlPath": "/orders", "bodyPatterns": {"contains": ['"sku"']}},
    "response": {"status": 201, "body": {"order": 7}},
}


def record_stubs(http: requests.Session, base_url: str, scenario: str, *stubs: Any) -> None:
    create_scenario(http, base_url, scenario)
    begin = {"begin": None, "session": scenario + "-rec", "mode": "record"}
    assert_data(http.post(action_url(base_url, scenario), json=begin))
    for stub in stubs:
        put_stub_ok(http, base_url, scenario, scenario + "-rec", stub)
    end_ok(http, base_url, scenario, scenario + "-rec")


def sn(scenario: str, short: str) -> str:
    """A session name of its own: names are per host, as scenarios are, and tests share one."""
    return f"{scenario}-{short}"


def stop(http: requests.Session, base_url: str, scenario: str, short: str) -> None:
    end_ok(http, base_url, scenario, sn(scenario, short))


def play(
    http: requests.Session, base_url: str, scenario: str, session: str, **extra: Any
) -> requests.Response:
    """Begin session ``sn(scenario, session)`` in playback."""
    body = {"begin": None, "session": sn(scenario, session), "mode": "playback", **extra}
    return http.post(action_url(base_url, scenario), json=body)


@pytest.fixture
def bound(http: requests.Session, base_url: str, name: str) -> Iterator[tuple[str, int]]:
    """A scenario with two stubs, played by session ``play`` on a free port."""
    record_stubs(http, base_url, name, USERS, ORDER)
    data = assert_data(play(http, base_url, name, "play", port=0))
    port = data["port"]
    assert isinstance(port, int) and port > 1024
    yield name, port
    http.post(action_url(base_url, name), json={"end": None, "session": sn(name, "play")})


class TestBoundPort:
    def test_real_paths_answered_from_stubs_with_no_simulacra_header(self, bound):
        _, port = bound
        reply = requests.get(f"http://127.0.0.1:{port}/users/1")
        assert (reply.status_code, reply.json()) == (200, {"id": 1})
        assert reply.headers["content-type"] == "application/json"
        reply = requests.post(f"http://127.0.0.1:{port}/orders", json={"sku": "a-1", "n": 2})
        assert (reply.status_code, reply.json()) == (201, {"order": 7})

    def test_any_path_is_the_service_s_even_the_admin_api_s(self, bound):
        _, port = bound
        reply = requests.get(f"http://127.0.0.1:{port}/api/v2/scenarios")
        assert reply.status_code == 404 and "nearMisses" in reply.json()["error"]

    def test_a_miss_names_the_closest_stubs_and_is_tracked(self, http, base_url, bound):
        name, port = bound
        reply = requests.get(f"http://127.0.0.1:{port}/users/2")
        assert_error(reply, 404, "GET /users/2")
        misses = reply.json()["error"]["nearMisses"]
        assert misses[0]["request"] == USERS["request"]
        assert misses[0]["failed"] == ["urlPath"]
        query = f"/api/v2/tracker/records?q=session:{sn(name, 'play')}"
        records = http.get(base_url + query).json()["data"]
        miss = next(r for r in records if r["function"] == "/users/2")
        assert (miss["return_code"], miss["scenario"]) == (404, f"127.0.0.1:{name}")
        assert "nearMisses" in miss["stubo_response"]

    def test_ending_the_session_closes_the_port(self, http, base_url, bound):
        name, port = bound
        assert requests.get(f"http://127.0.0.1:{port}/users/1").ok
        stop(http, base_url, name, "play")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/users/1", timeout=5)
        # Begun again, on the same port: served again.
        assert_data(play(http, base_url, name, "play", port=port))
        assert requests.get(f"http://127.0.0.1:{port}/users/1").ok

    def test_the_session_shows_its_port(self, http, base_url, bound):
        name, port = bound
        detail = http.get(base_url + f"/api/v2/scenarios/objects/{name}").json()
        assert {"name": sn(name, "play"), "port": port}.items() <= detail["sessions"][0].items()


class TestRefusedBindings:
    def test_a_port_in_use(self, http, base_url, name):
        record_stubs(http, base_url, name, USERS)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            assert_error(play(http, base_url, name, "s", port=port), 409, f"port {port}")
        # Nothing was half-created: the same session begins on a free port.
        assert assert_data(play(http, base_url, name, "s", port=0))["port"] != port
        stop(http, base_url, name, "s")

    def test_a_port_bound_already(self, http, base_url, bound, name):
        _, port = bound
        other = name + "b"
        record_stubs(http, base_url, other, USERS)
        assert_error(play(http, base_url, other, "s", port=port), 409, "bound already")

    @pytest.mark.parametrize("port", [80, 70000, -1, "9001", True])
    def test_bad_ports(self, http, base_url, name, port):
        record_stubs(http, base_url, name, USERS)
        assert_error(play(http, base_url, name, "s", port=port), 400, "port")

    def test_the_server_s_own_port(self, http, base_url, server, name):
        record_stubs(http, base_url, name, USERS)
        assert_error(play(http, base_url, name, "s", port=server.port), 409, "own port")

    def test_a_session_that_cannot_begin_releases_its_port(self, http, base_url, name):
        create_scenario(http, base_url, name)  # no stubs: playback cannot begin
        port = free_port()
        assert_error(play(http, base_url, name, "s", port=port), 412)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)

    def test_record_mode_is_not_bound(self, http, base_url, name):
        create_scenario(http, base_url, name)
        body = {"begin": None, "session": sn(name, "r"), "mode": "record", "port": 0}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "playback")


class TestPathPrefix:
    def test_the_prefix_plays_the_rest_of_the_path(self, http, base_url, name):
        record_stubs(http, base_url, name, USERS, ORDER)
        assert_data(play(http, base_url, name, "p"))
        reply = requests.get(f"{base_url}/virtual/{name}/{name}-p/users/1")
        assert (reply.status_code, reply.json()) == (200, {"id": 1})
        reply = requests.post(f"{base_url}/virtual/{name}/{name}-p/orders", json={"sku": "x"})
        assert reply.status_code == 201
        miss = requests.get(f"{base_url}/virtual/{name}/{name}-p/users/9")
        assert_error(miss, 404, "GET /users/9")
        assert miss.json()["error"]["nearMisses"][0]["failed"] == ["urlPath"]
        stop(http, base_url, name, "p")

    def test_unknown_sessions_and_bad_prefixes(self, http, base_url, name):
        assert_error(requests.get(f"{base_url}/virtual/{name}/nope/x"), 404, "nope")
        assert_error(requests.get(f"{base_url}/virtual/{name}"), 400, "/virtual/")
        assert_error(requests.get(f"{base_url}/virtual/{name}/bad name/x"), 400)


class TestFaults:
    def test_a_sequence_answers_twice_then_resets(self, http, base_url, name):
        stub = {
            "request": {"method": "GET", "urlPath": "/flaky"},
            "responses": [{"body": "one"}, {"body": "two"}, {"fault": "CONNECTION_RESET_BY_PEER"}],
        }
        record_stubs(http, base_url, name, stub)
        port = assert_data(play(http, base_url, name, "f", port=0))["port"]
        url = f"http://127.0.0.1:{port}/flaky"
        assert [requests.get(url).text for _ in range(2)] == ["one", "two"]
        with pytest.raises(requests.ConnectionError):
            requests.get(url)
        stop(http, base_url, name, "f")

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ("CONNECTION_RESET_BY_PEER", requests.ConnectionError),
            ("EMPTY_RESPONSE", requests.ConnectionError),
            ("MALFORMED_RESPONSE_CHUNK", requests.exceptions.ChunkedEncodingError),
            ("RANDOM_DATA_THEN_CLOSE", requests.ConnectionError),
        ],
    )
    def test_each_fault_as_requests_sees_it(self, http, base_url, name, fault, error):
        stub = {"request": {"method": "GET"}, "response": {"fault": fault}}
        record_stubs(http, base_url, name, stub)
        assert_data(play(http, base_url, name, "f"))
        with pytest.raises(error):
            requests.get(f"{base_url}/virtual/{name}/{name}-f/anything")
        assert requests.get(base_url + "/").ok
        stop(http, base_url, name, "f")

    def test_a_dribbled_body_arrives_over_the_stated_time(self, http, base_url, name):
        body = "x" * 40
        dribble = {"numberOfChunks": 4, "totalDuration": 600}
        stub = {
            "request": {"method": "GET"},
            "response": {"body": body, "chunkedDribbleDelay": dribble},
        }
        record_stubs(http, base_url, name, stub)
        assert_data(play(http, base_url, name, "d"))
        started = time.monotonic()
        with requests.get(f"{base_url}/virtual/{name}/{name}-d/slow", stream=True) as reply:
            got = b"".join(reply.iter_content(1))
        elapsed = time.monotonic() - started
        assert got.decode() == body
        assert 0.4 <= elapsed < 5, elapsed
        stop(http, base_url, name, "d")

    def test_unknown_response_keys_are_refused(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_data(
            http.post(
                action_url(base_url, name),
                json={"begin": None, "session": sn(name, "r"), "mode": "record"},
            )
        )
        stub = {
            "request": {"method": "GET"},
            "response": {"status": 200, "faults": "EMPTY_RESPONSE"},
        }
        reply = http.put(stubs_url(base_url, name), json=stub, headers={"session": sn(name, "r")})
        assert_error(reply, 400, "'faults'", "fault", "chunkedDribbleDelay")
        bad = {"request": {"method": "GET"}, "response": {"fault": "NOT_A_FAULT"}}
        assert_error(
            http.put(stubs_url(base_url, name), json=bad, headers={"session": sn(name, "r")}), 400
        )


class TestAppendRecording:
    def test_recording_into_a_scenario_with_stubs_needs_append(self, http, base_url, name):
        record_stubs(http, base_url, name, USERS)
        body = {"begin": None, "session": sn(name, "more"), "mode": "record"}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "existing stubs")
        assert_data(http.post(action_url(base_url, name), json={**body, "append": True}))
        put_stub_ok(http, base_url, name, sn(name, "more"), ORDER)
        stop(http, base_url, name, "more")
        assert_data(play(http, base_url, name, "p"))
        assert requests.get(f"{base_url}/virtual/{name}/{name}-p/users/1").ok
        assert (
            requests.post(f"{base_url}/virtual/{name}/{name}-p/orders", json={"sku": 1}).status_code
            == 201
        )
        stop(http, base_url, name, "p")


def test_a_restart_on_sqlite_serves_the_bound_port_again(tmp_path: Path) -> None:
    running = RunningServer(store=f"sqlite:///{tmp_path / 'restart.db'}").start()
    port = free_port()
    try:
        with requests.Session() as http:
            record_stubs(http, running.url, "svc", USERS)
            assert assert_data(play(http, running.url, "svc", "s", port=port))["port"] == port
        assert requests.get(f"http://127.0.0.1:{port}/users/1").json() == {"id": 1}
        running.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/users/1", timeout=2)
        running.start()
        assert requests.get(f"http://127.0.0.1:{port}/users/1").json() == {"id": 1}
    finally:
        running.stop()


def test_serve_loads_an_archive_and_binds_its_session(tmp_path: Path, http, base_url, name) -> None:
    # An export of a scenario made here is what a CI service would be given.
    record_stubs(http, base_url, name, USERS)
    reply = http.get(base_url + f"/api/v2/scenarios/objects/{name}/export?session={name}-ci")
    if reply.headers.get("content-type", "").startswith("application/json"):
        pytest.fail(f"no zip from export: {reply.text[:300]}")
    archive = tmp_path / "svc.zip"
    archive.write_bytes(reply.content)
    port = free_port()
    running = RunningServer(
        store="memory://", extra_args=["--load", str(archive), "--bind", f"{name}/{name}-ci={port}"]
    ).start()
    try:
        assert requests.get(f"http://127.0.0.1:{port}/users/1").json() == {"id": 1}
        # --load puts scenarios in the "localhost" namespace (unless the archive names a host).
        prefixed = f"{running.url}/virtual/localhost:{name}/{name}-ci/users/1"
        assert requests.get(prefixed).json() == {"id": 1}
    finally:
        running.stop()


def test_novaclient_through_keystoneauth_against_a_bound_port(http, base_url, name):
    """An unmodified client stack (keystoneauth1 + python-novaclient) pointed at a bound port:
    Identity's token answer, whose catalog points at the same port, then Nova's list."""
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v2
    from novaclient import client as nova_client

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v2/{name}"
    access = {
        "access": {
            "token": {
                "id": "stub-token",
                "expires": "2099-01-01T00:00:00Z",
                "tenant": {"id": name, "name": name},
            },
            "serviceCatalog": [
                {
                    "type": "compute",
                    "name": "nova",
                    "endpoints": [{"region": "ORD", "tenantId": name, "publicURL": endpoint}],
                }
            ],
            "user": {"id": "u1", "name": "alice", "roles": []},
        }
    }
    servers = {"servers": [{"id": "s-1", "name": "virtual-web", "links": []}]}
    token = {
        "request": {"method": "POST", "urlPath": "/v2.0/tokens"},
        "response": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": access,
        },
    }
    listing = {
        "request": {
            "method": "GET",
            "urlPath": f"/v2/{name}/servers/detail",
            "headers": {"X-Auth-Token": "stub-token"},
        },
        "response": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": servers,
        },
    }
    record_stubs(http, base_url, name, token, listing)
    assert assert_data(play(http, base_url, name, "os", port=port))["port"] == port

    auth = v2.Password(
        auth_url=f"http://127.0.0.1:{port}/v2.0", username="alice", password="x", tenant_id=name
    )
    nova = nova_client.Client("2", session=ks_session.Session(auth=auth), region_name="ORD")
    assert [s.name for s in nova.servers.list()] == ["virtual-web"]

    # The live cloud mock saw none of it: its compute for this tenant has no servers.
    live = http.get(f"{base_url}/mimicking/{NOVA.service_id}/ORD/v2/{name}/servers")
    assert live.status_code == 200 and live.json()["servers"] == []
    records = http.get(base_url + f"/api/v2/tracker/records?q=session:{sn(name, 'os')}").json()
    assert {"/v2.0/tokens", f"/v2/{name}/servers/detail"} <= {
        r["function"] for r in records["data"]
    }
    stop(http, base_url, name, "os")
