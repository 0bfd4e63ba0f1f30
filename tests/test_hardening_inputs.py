"""Issue 14: inputs a fuzzer answered with a 500, over a real server.

Each is now a 4xx in its API's envelope that quotes at most a short prefix of the value, and
leaves what is stored (and the clock) as it was: huge numbers in the tracker's paging and
query (on SQLite, memory:// and PostgreSQL), a tick past what the clock can show, JSON nested
1,000 deep where a message quoted it, a response body nested deeper than JSON is written,
and response headers that cannot go on the wire.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
import requests

from tests.mirage_helpers import (
    action_url,
    assert_error,
    begin_ok,
    create_scenario,
    list_stubs,
    put_stub,
    stubs_url,
)
from tests.server import RunningServer

RECORDS = "/api/v2/tracker/records"
TICK = "/mimic/v1.1/tick"
TOKENS = "/identity/v2.0/tokens"
CLB = "/mimicking/LoadBalancerApi-f27b1e/ORD/v2/t1/loadbalancers"
BEHAVIOR_PATHS = [
    "/mimicking/NovaControlApi-8fb4c5/ORD/v2/t1/behaviors/creation",
    "/mimicking/LoadBalancerControlApi-58a5fc/ORD/v2/t1/behaviors/creation",
    "/mimic/v1.1/IdentityControlAPI/behaviors/auth",
]
DEEP = "[" * 1000 + "]" * 1000  # parses (orjson reads up to 1,024 deep); its repr recursed
RAW = "@@raw@@"
MAX_QUOTE = 200  # a message may quote a value's prefix, never the value


def raw(document: object, value: str) -> str:
    """``document`` as JSON with ``value`` (JSON text) where it holds ``RAW``."""
    return json.dumps(document).replace(json.dumps(RAW), value)


def assert_short_error(response: requests.Response, status: int, *fragments: str) -> str:
    message = assert_error(response, status, *fragments)
    assert len(message) < MAX_QUOTE + 200, message
    return message


@pytest.fixture(scope="module")
def memory_server() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


def assert_flat_400(response: requests.Response, *fragments: str) -> str:
    """The control plane's flat error: ``{"message", "code"}``."""
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"message", "code"} and body["code"] == 400, body
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body)
    return body["message"]


# the tracker: huge numbers --------------------------------------------------

HUGE_PAGING = [
    {"skip": "99999999999999999999"},
    {"skip": "9223372036854775808"},  # 2**63: one past the largest 64-bit integer
    {"limit": "99999999999999999999999"},
    {"skip": "9" * 5000},  # more digits than int() reads
    {"skip": "\u0661\u0662"},  # Arabic-Indic digits: not an integer here
]
HUGE_QUERIES = [
    "sc:9999999999999999999999",
    "rt:>9999999999999999999999",
    "d:<=-9223372036854775809",
    "sc:" + "9" * 5000,
]


def check_tracker_refuses_huge_numbers(base_url: str) -> None:
    with requests.Session() as http:
        for params in HUGE_PAGING:
            name = next(iter(params))
            reply = http.get(base_url + RECORDS, params=params)
            assert_short_error(reply, 400, name, "64 bits")
        for q in HUGE_QUERIES:
            assert_short_error(http.get(base_url + RECORDS, params={"q": q}), 400, "64 bits")
        # The largest that fit are fine: an empty page past the end, an empty match.
        edge = http.get(base_url + RECORDS, params={"skip": str(2**63 - 1), "limit": "5"})
        assert edge.status_code == 200, edge.text
        assert edge.json()["data"] == []
        for q in ("sc:9223372036854775807", "rt:<-9223372036854775808", "d:>=0"):
            reply = http.get(base_url + RECORDS, params={"q": q, "skip": str(2**63 - 1)})
            assert reply.status_code == 200, (q, reply.text)
            assert reply.json()["data"] == []


def test_tracker_huge_numbers_sqlite(server: RunningServer, http, name) -> None:
    http.get(server.url + f"/stubo/api/get/stubcount?scenario={name}")  # one record at least
    check_tracker_refuses_huge_numbers(server.url)


def test_tracker_huge_numbers_memory(memory_server: RunningServer) -> None:
    requests.get(memory_server.url + "/stubo/api/get/version")
    check_tracker_refuses_huge_numbers(memory_server.url)


def test_tracker_huge_numbers_postgres(pg_url: str) -> None:
    running = RunningServer(store=pg_url).start()
    try:
        requests.get(running.url + "/stubo/api/get/version")
        check_tracker_refuses_huge_numbers(running.url)
    finally:
        running.stop()


def test_tracker_skip_past_the_end_of_memory_records(memory_server: RunningServer) -> None:
    url = memory_server.url
    for _ in range(3):
        requests.get(url + "/stubo/api/get/version")
    everything = requests.get(url + RECORDS).json()["paging"]["totalItems"]
    assert everything >= 3
    for skip in (everything, 2**62, 2**63 - 1001, 2**63 - 1):
        page = requests.get(url + RECORDS, params={"skip": str(skip), "limit": "1000"})
        assert page.status_code == 200, (skip, page.text)
        assert page.json()["data"] == []
        assert page.json()["paging"]["totalItems"] >= everything


# the clock --------------------------------------------------------------------


@pytest.fixture
def clock_server() -> Iterator[RunningServer]:
    """A server of its own: these tests tick its clock to the end of time."""
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


def clock_now(url: str) -> str:
    reply = requests.post(url + TICK, json={"amount": 0})
    assert reply.status_code == 200, reply.text
    return reply.json()["now"]


def assert_cloud_works(url: str) -> None:
    """What a clock ticked past datetime's end broke: token requests, load balancer creates."""
    auth = {"auth": {"passwordCredentials": {"username": "u", "password": "p"}}}
    token = requests.post(url + TOKENS, json=auth)
    assert token.status_code == 200, token.text
    lb = {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": [{"type": "PUBLIC"}]}}
    created = requests.post(url + CLB, json=lb)
    assert created.status_code == 202, created.text
    listed = requests.get(url + CLB)
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    "amount",
    ["3e11", "1e308", "-1e308", "253402300800", "18446744073709551615", "-0.5"],
)
def test_a_tick_the_clock_cannot_show_is_refused(clock_server: RunningServer, amount: str):
    url = clock_server.url
    before = clock_now(url)
    reply = requests.post(url + TICK, data=raw({"amount": RAW}, amount))
    assert_flat_400(reply, "amount")
    assert clock_now(url) == before  # nothing half-advanced
    assert_cloud_works(url)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_tick_that_is_no_finite_number_is_refused(clock_server: RunningServer, amount: str):
    # orjson reads none of these: the body is not JSON, a 400 all the same
    url = clock_server.url
    before = clock_now(url)
    assert_flat_400(requests.post(url + TICK, data=raw({"amount": RAW}, amount)))
    assert clock_now(url) == before


def test_the_clock_ticks_to_its_last_moment_and_no_further(clock_server: RunningServer):
    url = clock_server.url
    refused = assert_flat_400(requests.post(url + TICK, json={"amount": 3e11}), "9998-12-31")
    # The message names the largest amount still accepted: tick exactly that far.
    most = float(refused.rsplit("at most ", 1)[1].split()[0])
    reply = requests.post(url + TICK, json={"amount": most})
    assert reply.status_code == 200, reply.text
    assert reply.json()["now"].startswith("9998-12-31T00:00:00")
    assert_cloud_works(url)
    assert_flat_400(requests.post(url + TICK, json={"amount": 1}), "9998-12-31")
    assert clock_now(url).startswith("9998-12-31T00:00:00")
    assert_cloud_works(url)


def test_impersonation_lasting_past_the_end_of_time_is_refused(clock_server: RunningServer):
    url = clock_server.url + "/identity/v2.0/RAX-AUTH/impersonation-tokens"
    for seconds in (18446744073709551615, "\u00b2", "9" * 5000, 10**12):
        body = {"RAX-AUTH:impersonation": {"user": {"username": "u"}, "expire-in-seconds": seconds}}
        reply = requests.post(url, json=body)
        assert reply.status_code == 400, (seconds, reply.text)
        assert "expire-in-seconds" in reply.text
    body = {"RAX-AUTH:impersonation": {"user": {"username": "u"}, "expire-in-seconds": 3600}}
    assert requests.post(url, json=body).status_code == 200


# JSON nested 1,000 deep, quoted in a message ------------------------------------


def test_deep_delay_policy_values(http, base_url, name):
    probes = [
        (400, {"name": name, "delay_type": RAW}),
        (409, {"name": name, "delay_type": "fixed", "milliseconds": RAW}),
        (409, {"name": name, "delay_type": "normalvariate", "mean": 1, "stddev": RAW}),
    ]
    for status, doc in probes:
        reply = http.put(base_url + "/api/v2/delay-policy", data=raw(doc, DEEP))
        assert_short_error(reply, status)
    missing = http.get(base_url + f"/api/v2/delay-policy/objects/{name}")
    assert_error(missing, 404)


def test_long_delay_policy_values_are_quoted_short(http, base_url, name):
    long = "x" * 100_000
    probes = [
        {"name": name, "delay_type": long},
        {"name": name, "delay_type": "fixed", "milliseconds": long},
        {"name": name, "delay_type": "weighted", "delays": f"fixed,1,1:{long}"},
        {"name": name, "delay_type": "weighted", "delays": f"fixed,1,{long}"},
        {"name": name, long: 1, "delay_type": "fixed", "milliseconds": 1},
        {"name": f"{long}!:{name}", "delay_type": "fixed", "milliseconds": 1},
        {"name": f"{long}!", "delay_type": "fixed", "milliseconds": 1},
    ]
    for doc in probes:
        reply = http.put(base_url + "/api/v2/delay-policy", json=doc)
        assert 400 <= reply.status_code < 500, reply.text[:300]
        assert_short_error(reply, reply.status_code)


@pytest.mark.parametrize("weight", ["\u00b2", "9" * 5000, "10000000001"])
def test_weighted_delay_with_an_odd_weight(http, base_url, name, weight):
    doc = {"name": name, "delay_type": "weighted", "delays": f"fixed,1,{weight}"}
    reply = http.put(base_url + "/api/v2/delay-policy", json=doc)
    assert_short_error(reply, 409, "weight")


def test_deep_action_mode(http, base_url, name):
    create_scenario(http, base_url, name)
    body = raw({"begin": None, "session": name, "mode": RAW}, DEEP)
    assert_short_error(http.post(action_url(base_url, name), data=body), 400, "mode")
    long = {"begin": None, "session": name, "mode": "p" * 100_000}
    assert_short_error(http.post(action_url(base_url, name), json=long), 400, "mode")
    scenario = http.get(base_url + f"/api/v2/scenarios/objects/{name}")
    assert scenario.json()["sessions"] == []


@pytest.fixture
def recording(http, base_url, name) -> str:
    create_scenario(http, base_url, name)
    begin_ok(http, base_url, name, name, "record")
    return name


def raw_put_stub(http, base_url, scenario, body: str) -> requests.Response:
    return http.put(stubs_url(base_url, scenario), data=body, headers={"session": scenario})


def test_deep_stub_args_and_recorded(http, base_url, recording):
    stub = {"request": {"method": "GET"}, "response": {"body": "x"}}
    for doc in ({**stub, "args": {"a": RAW}}, {**stub, "recorded": RAW}):
        assert_short_error(raw_put_stub(http, base_url, recording, raw(doc, DEEP)), 400)
    assert list_stubs(http, base_url, recording) == []


def test_deep_or_long_names_are_quoted_short(http, base_url, recording):
    for scenario in ("s" * 100_000 + "!", "h" * 100_000 + "!:name"):
        reply = http.put(base_url + "/api/v2/scenarios", json={"scenario": scenario})
        assert_short_error(reply, 400)
    stub = {"request": {"method": "GET"}, "response": {"body": "x", "status": "9" * 100_000}}
    assert_short_error(put_stub(http, base_url, recording, recording, stub), 400, "status")
    assert list_stubs(http, base_url, recording) == []


@pytest.mark.parametrize("status", ["\u00b2\u00b2\u00b2", "9" * 5000, " 200 "])
def test_odd_status_strings(http, base_url, recording, status):
    stub = {"request": {"method": "GET"}, "response": {"body": "x", "status": status}}
    reply = put_stub(http, base_url, recording, recording, stub)
    if status.strip() == "200":
        assert reply.status_code == 201, reply.text
    else:
        assert_short_error(reply, 400, "status")


def test_deep_load_balancer_fields(http, base_url):
    for field in ("protocol", "algorithm"):
        lb = {"name": "a", "protocol": "HTTP", "virtualIps": [{"type": "PUBLIC"}], field: RAW}
        reply = http.post(base_url + CLB, data=raw({"loadBalancer": lb}, DEEP))
        assert reply.status_code == 400, (field, reply.text)
        assert len(reply.text) < 1000 and field in reply.text
    for port in ("9" * 5000, "\u00b2"):
        body = {"loadBalancer": {"name": "a", "protocol": "HTTP", "port": port}}
        body["loadBalancer"]["virtualIps"] = [{"type": "PUBLIC"}]
        reply = http.post(base_url + CLB, json=body)
        assert reply.status_code == 400, (port, reply.text)
        assert len(reply.text) < 1000


def test_fastly_odd_integers_and_choices(http, base_url):
    service = http.post(base_url + "/fastly/service", data={"name": "hardening"}).json()
    version = f"/fastly/service/{service['id']}/version/1"
    ttl = "general.default_ttl"
    for body in ({ttl: "9" * 5000}, {ttl: [[[1]]]}, {ttl: "\u00b2"}, {ttl: "x" * 100_000}):
        reply = http.put(base_url + version + "/settings", json=body)
        assert reply.status_code == 400, (body, reply.text)
        assert len(reply.text) < 1000


@pytest.mark.parametrize("path", BEHAVIOR_PATHS)
def test_deep_behavior_names(http, base_url, path):
    body = raw({"name": RAW, "parameters": {}, "criteria": []}, DEEP)
    assert_flat_400(http.post(base_url + path, data=body))


# response bodies and headers a stub stores ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 300 + "1" + "]" * 300,
        '{"a":' * 300 + "1" + "}" * 300,
        "[" + "[" * 300 + "]" * 300 + "]",  # a sequence whose one body is too deep
    ],
)
def test_a_body_nested_deeper_than_json_is_written(http, base_url, recording, body):
    doc = raw({"request": {"method": "GET"}, "response": {"body": RAW}}, body)
    assert_short_error(raw_put_stub(http, base_url, recording, doc), 400, "254 deep")
    assert list_stubs(http, base_url, recording) == []


def test_a_body_nested_254_deep_is_stored(http, base_url, recording):
    body = "[" * 253 + "1" + "]" * 253  # in a "body" list: its one element, 253 deep
    doc = raw({"request": {"method": "GET"}, "response": {"body": RAW}}, body)
    reply = raw_put_stub(http, base_url, recording, doc)
    assert reply.status_code == 201, reply.text


BAD_HEADERS = [
    ({"a\r\nSet-Cookie: injected=1": "v"}, "header name"),
    ({"X-A": "b\r\nSet-Cookie: injected=1"}, "CR, LF or NUL"),
    ({"X-A": "b\nc"}, "CR, LF or NUL"),
    ({"X-A": "b\x00c"}, "CR, LF or NUL"),
    ({"X-A": "\u0100"}, "latin-1"),
    ({"X-A": "\U0001f600"}, "latin-1"),
    ({"a b": "c"}, "header name"),
    ({"": "c"}, "header name"),
    ({"X:Y": "c"}, "header name"),
    ({"caf\xe9": "c"}, "header name"),
]


@pytest.mark.parametrize(("headers", "fragment"), BAD_HEADERS)
def test_a_header_that_cannot_go_on_the_wire_is_refused(
    http, base_url, recording, headers, fragment
):
    for response in (
        {"body": "x", "headers": headers},
        {"body": ["x", "y"], "headers": headers},  # a sequence shares its headers
    ):
        stub = {"request": {"method": "GET"}, "response": response}
        reply = put_stub(http, base_url, recording, recording, stub)
        assert_short_error(reply, 400, fragment)
    stub = {"request": {"method": "GET"}, "responses": [{"body": "x", "headers": headers}]}
    assert_short_error(put_stub(http, base_url, recording, recording, stub), 400, fragment)
    assert list_stubs(http, base_url, recording) == []


def test_headers_that_can_go_on_the_wire_are_kept(http, base_url, recording):
    headers = {"X-Latin": "caf\xe9", "X-Tab": "a\tb", "!#$%&'*+-.^_`|~": "odd but a token"}
    stub = {"request": {"method": "GET"}, "response": {"body": "x", "headers": headers}}
    assert put_stub(http, base_url, recording, recording, stub).status_code == 201
    [listed] = list_stubs(http, base_url, recording)
    assert listed["stub"]["response"]["headers"] == headers


@pytest.mark.parametrize("status", [100, 101, 199, "150"])
def test_an_informational_status_is_refused(http, base_url, recording, status):
    # A 1xx is never a final answer: the client waited on for one that never came.
    for response in ({"status": status, "body": "x"}, {"status": status, "body": ["x", "y"]}):
        stub = {"request": {"method": "GET"}, "response": response}
        assert_short_error(put_stub(http, base_url, recording, recording, stub), 400, "1xx")
    assert list_stubs(http, base_url, recording) == []


def test_a_stored_stub_the_checks_refuse_still_loads(tmp_path):
    """The wire checks run when a stub is stored, not when a store loads one: a stub stored
    before them (here, written into the file) is still listed and played."""
    db = tmp_path / "store.db"
    running = RunningServer(store=f"sqlite:///{db}").start()
    try:
        url = running.url
        requests.put(url + "/api/v2/scenarios", json={"scenario": "old"})
        begin = {"begin": None, "session": "rec", "mode": "record"}
        requests.post(url + "/api/v2/scenarios/objects/old/action", json=begin)
        stub = {"request": {"method": "GET"}, "response": {"status": 200, "body": "x"}}
        assert put_stub(requests, url, "old", "rec", stub).status_code == 201
        requests.post(url + "/api/v2/scenarios/objects/old/action", json={"end": "sessions"})
    finally:
        running.stop()
    responses = [{"status": 150, "body": "x", "headers": {"X-A": "\u0100", "a b": "c"}}]
    with sqlite3.connect(db) as conn:
        assert conn.execute("UPDATE stub SET responses = ?", (json.dumps(responses),)).rowcount
    running = RunningServer(store=f"sqlite:///{db}").start()
    try:
        [listed] = list_stubs(requests, running.url, "old")
        assert listed["stub"]["response"]["headers"] == responses[0]["headers"]
        assert listed["stub"]["response"]["status"] == 150
    finally:
        running.stop()


def test_deep_session_port(http, base_url, name):
    create_scenario(http, base_url, name)
    body = raw({"begin": None, "session": name, "mode": "playback", "port": RAW}, DEEP)
    assert_short_error(http.post(action_url(base_url, name), data=body), 400, "port")


def test_ids_of_5000_digits_are_not_found(http, base_url):
    # int() refuses over 4,300 digits: these path segments were 500s
    digits = "9" * 5000
    lb = f"{CLB}/{digits}"
    for method, url in (("GET", lb), ("GET", lb + "/nodes"), ("DELETE", lb + "/nodes?id=1")):
        assert http.request(method, base_url + url).status_code == 404, url
    nodes = {"nodes": [{"address": "10.0.0.1", "port": 80, "condition": "ENABLED"}]}
    assert http.post(base_url + lb + "/nodes", json=nodes).status_code == 404
    created = {
        "loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": [{"type": "PUBLIC"}]}
    }
    lb_id = http.post(base_url + CLB, json=created).json()["loadBalancer"]["id"]
    http.post(base_url + f"{CLB}/{lb_id}/nodes", json=nodes)
    unknown = http.delete(base_url + f"{CLB}/{lb_id}/nodes", params={"id": digits})
    assert unknown.status_code == 400, unknown.text[:300]
    assert len(unknown.text) < 1000
    service = http.post(base_url + "/fastly/service", data={"name": "digits"}).json()["id"]
    version = http.get(base_url + f"/fastly/service/{service}/version/{digits}")
    assert version.status_code == 404, version.text[:300]
    assert len(version.text) < 1000


def test_deep_export_runnable(http, base_url, name):
    create_scenario(http, base_url, name)
    body = raw({"export": None, "runnable": RAW}, DEEP)
    assert_short_error(http.post(action_url(base_url, name), data=body), 400)


def test_the_server_still_answers(http, base_url):
    assert http.get(base_url + "/").status_code == 200
