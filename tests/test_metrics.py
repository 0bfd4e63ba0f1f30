"""``GET /metrics``: the family of each request (a pure function, against the data plane's
own claims), the counts and the histogram, and scrapes of real servers over real sockets:
the built-in server, uvicorn through the ASGI adapter, a PostgreSQL store that goes away."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from simulacra.app import create_app
from simulacra.cloud.compute.routes import NOVA
from simulacra.dataplane.request import Request
from simulacra.metrics import Metrics, family
from tests.mirage_helpers import (
    action_url,
    assert_data,
    begin_ok,
    create_scenario,
    end_ok,
    put_stub_ok,
    stubs_url,
)
from tests.pg import drop_schema, require_postgres
from tests.server import RunningServer
from tests.test_operations import Relay, wait_for_output

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TOKENS = {"auth": {"passwordCredentials": {"username": "metrics", "password": "secret"}}}


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for metric in text_string_to_metric_families(text)
        for sample in metric.samples
    }


def scrape(url: str) -> Samples:
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled counter not counted yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples: Samples, family: str, status: int) -> float:
    return value(samples, "simulacra_requests_total", family=family, status=str(status))


def playbacks(samples: Samples) -> float:
    return value(samples, "simulacra_playback_seconds_count")


def playing(http: requests.Session, base_url: str, name: str, port: int | None = None) -> dict:
    """A scenario ``name`` with one stub (POST, body contains ``<order>``), in playback as
    session ``name``; the begin action's data."""
    create_scenario(http, base_url, name)
    recording = "rec-" + name  # a session name is the host's: one per scenario
    begin_ok(http, base_url, name, recording, "record")
    stub = {
        "request": {"method": "POST", "bodyPatterns": {"contains": ["<order>"]}},
        "response": {"status": 200, "body": "<ok/>"},
    }
    put_stub_ok(http, base_url, name, recording, stub)
    end_ok(http, base_url, name, recording)
    begin: dict = {"begin": None, "session": name, "mode": "playback"}
    if port is not None:
        begin["port"] = port
    return assert_data(http.post(action_url(base_url, name), json=begin))


# The family of a request ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataplane():  # type: ignore[no-untyped-def]
    return create_app().dataplane


NOVA_SERVERS = NOVA.mount_path.format(region="ORD", tenant="tenant1") + "/servers"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v2/scenarios/objects/orders/stubs", "playback"),
        ("POST", "/api/v2/matcher", "playback"),
        ("GET", "/api/v2/matcher", "playback"),  # the data plane's 405
        ("POST", "/stubo/api/get/response", "playback"),
        ("GET", "/virtual/orders/play/users/1", "playback"),
        ("GET", "/api/v2/scenarios/objects/orders/stubs", "mirage_v2"),
        ("GET", "/api/v2", "mirage_v2"),
        ("GET", "/api/v2/openapi.json", "mirage_v2"),
        ("GET", "/stubo/api/get/scenarios", "mirage_v1"),
        ("POST", "/mimic/v1.1/tick", "control"),
        ("POST", "/identity/v2.0/tokens", "cloud"),
        ("POST", NOVA_SERVERS, "cloud"),  # the data plane's bulk POST
        ("GET", NOVA_SERVERS, "cloud"),  # the app's
        ("GET", "/fastly/service", "cloud"),
        ("GET", "/health", "ops"),
        ("GET", "/metrics", "ops"),
        ("GET", "/console/tracker/events", "console"),
        ("GET", "/", "other"),
        ("GET", "/mimicry", "other"),  # a first segment, not a prefix of one
        ("GET", "/api/v2x", "other"),
        ("GET", "", "other"),  # a refusal before its request was known
    ],
)
def test_family_of_a_request(dataplane, method, path, expected):
    route = dataplane.claim(Request(method, path))
    assert family(path, route) == expected
    if (method, path) == ("POST", NOVA_SERVERS):
        assert route is not None  # the data plane's indeed


def test_every_request_on_a_bound_port_is_playback_whatever_its_path(dataplane):
    dataplane.playback.bind(9123, "localhost", "svc")
    try:
        for path in (NOVA_SERVERS, "/identity/v2.0/tokens", "/api/v2/scenarios", "/metrics"):
            request = Request("POST", path, local=("127.0.0.1", 9123))
            assert family(path, dataplane.claim(request)) == "playback", path
    finally:
        dataplane.playback.unbind(9123)


def test_counts_and_playback_buckets(dataplane):
    metrics: Metrics = create_app().state.metrics
    played = dataplane.claim(Request("POST", "/api/v2/matcher"))
    now = time.perf_counter()
    metrics.count("/api/v2/matcher", played, 200, now - 0.003)  # in the 5 ms bucket
    metrics.count("/api/v2/matcher", played, 404, now - 20.0)  # over the last bound: +Inf
    metrics.count("/api/v2/scenarios", None, 200, now - 1.0)  # not playback: no time kept
    metrics.count("/api/v2/scenarios", None, 200, now)
    samples = parse(metrics.render().decode())
    assert requests_total(samples, "playback", 200) == 1
    assert requests_total(samples, "playback", 404) == 1
    assert requests_total(samples, "mirage_v2", 200) == 2
    bucket = "simulacra_playback_seconds_bucket"
    assert value(samples, bucket, le="0.0025") == 0
    assert value(samples, bucket, le="0.005") == 1
    assert value(samples, bucket, le="10.0") == 1
    assert value(samples, bucket, le="+Inf") == playbacks(samples) == 2
    assert 20.003 <= value(samples, "simulacra_playback_seconds_sum") < 21


def test_each_app_has_its_own_registry():
    first, second = create_app().state.metrics, create_app().state.metrics
    first.count("/", None, 200, 0.0)
    assert requests_total(parse(first.render().decode()), "other", 200) == 1
    assert requests_total(parse(second.render().decode()), "other", 200) == 0


# A real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    """One worker of its own: a scrape reaches the process that counted (not so with the
    session's server under SIMULACRA_TEST_SHARED_CLOUD, two workers)."""
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


@pytest.fixture
def base_url(served: RunningServer) -> str:
    return served.url


def test_a_playback_is_counted_and_timed(base_url, http, name):
    playing(http, base_url, name)
    before = scrape(base_url)
    order = "<order>1</order>"
    played = http.post(stubs_url(base_url, name), data=order, headers={"session": name})
    assert played.text == "<ok/>"
    after = scrape(base_url)
    assert requests_total(after, "playback", 200) == requests_total(before, "playback", 200) + 1
    assert playbacks(after) == playbacks(before) + 1
    assert value(after, "simulacra_playback_seconds_sum") > value(
        before, "simulacra_playback_seconds_sum"
    )
    # The scrape before is counted by the one after it.
    assert requests_total(after, "ops", 200) >= requests_total(before, "ops", 200) + 1


def test_answers_are_counted_by_family_and_status(base_url, http):
    before = scrape(base_url)
    assert http.get(base_url + "/api/v2/no/such/thing").status_code == 404
    assert http.post(base_url + "/identity/v2.0/tokens", json=TOKENS).status_code == 200
    assert http.post(base_url + "/mimic/v1.1/tick", json={"amount": 0}).status_code == 200
    assert http.get(base_url + "/stubo/api/get/scenarios").status_code == 200
    after = scrape(base_url)
    for family_name, status in [
        ("mirage_v2", 404),
        ("cloud", 200),
        ("control", 200),
        ("mirage_v1", 200),
    ]:
        was = requests_total(before, family_name, status)
        assert requests_total(after, family_name, status) == was + 1, (family_name, status)
    assert playbacks(after) == playbacks(before)  # none of them is a playback


def test_a_refused_request_is_counted(base_url):
    before = scrape(base_url)
    port = urlsplit(base_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
    after = scrape(base_url)
    assert requests_total(after, "other", 400) == requests_total(before, "other", 400) + 1


def test_bound_ports_and_their_playbacks(base_url, http, name):
    ports_before = value(scrape(base_url), "simulacra_bound_ports")
    port = playing(http, base_url, name, port=0)["port"]
    during = scrape(base_url)
    assert value(during, "simulacra_bound_ports") == ports_before + 1
    # On its own port any path plays, /metrics too.
    played = http.post(f"http://127.0.0.1:{port}/metrics", data="<order>2</order>")
    assert played.text == "<ok/>"
    after = scrape(base_url)
    assert requests_total(after, "playback", 200) == requests_total(during, "playback", 200) + 1
    # The scrape "during" is the only /metrics counted between the two: not the bound one's.
    assert requests_total(after, "ops", 200) == requests_total(during, "ops", 200) + 1
    end_ok(http, base_url, name, name)
    assert value(scrape(base_url), "simulacra_bound_ports") == ports_before


def test_tracker_queue_depth_is_reported(base_url):
    samples = scrape(base_url)
    assert ("simulacra_tracker_queue_depth", frozenset()) in samples
    assert value(samples, "simulacra_tracker_queue_depth") >= 0
    assert value(samples, "simulacra_store_errors_total") == 0  # memory://: never fails
    assert value(samples, "process_resident_memory_bytes") > 0


@pytest.fixture
def server_at_info() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://", extra_args=["--log-level", "info"]).start()
    yield running
    running.stop()


def test_a_scrape_writes_no_access_line(server_at_info):
    scrape(server_at_info.url)
    after = server_at_info.url + "/after-the-scrape"  # its line comes after the scrape's would
    assert requests.get(after, timeout=5).status_code == 404
    output = wait_for_output(server_at_info, lambda out: "/after-the-scrape" in out)
    assert " GET /after-the-scrape 404 " in output
    assert "/metrics" not in output


@pytest.fixture
def uvicorn_server() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://", server="uvicorn").start()
    yield running
    running.stop()


def test_the_asgi_adapter_counts_too(uvicorn_server):
    url = uvicorn_server.url
    with requests.Session() as http:
        name = "m" + uuid.uuid4().hex[:8]
        playing(http, url, name)
        before = scrape(url)
        played = http.post(stubs_url(url, name), data="<order>3</order>", headers={"session": name})
        assert played.text == "<ok/>"
        assert http.get(url + "/api/v2/no/such/thing").status_code == 404
        after = scrape(url)
        bound = playing(http, url, name + "b", port=0)["port"]
        assert http.post(f"http://127.0.0.1:{bound}/", data="<order>4</order>").text == "<ok/>"
        last = scrape(url)
    assert requests_total(after, "playback", 200) == requests_total(before, "playback", 200) + 1
    assert playbacks(after) == playbacks(before) + 1
    assert requests_total(after, "mirage_v2", 404) == requests_total(before, "mirage_v2", 404) + 1
    assert requests_total(after, "ops", 200) == requests_total(before, "ops", 200) + 1
    # A bound port under uvicorn is the built-in server's, on the same loop and counts.
    assert value(last, "simulacra_bound_ports") == 1
    assert requests_total(last, "playback", 200) == requests_total(after, "playback", 200) + 1


def test_store_errors_are_counted_and_a_scrape_needs_no_store():
    """PostgreSQL goes away under a --shared-cloud server: a cloud call fails with 503 after
    the pool's timeout and is counted as a store error; /metrics answers at once all along
    (it passes the shared cloud by)."""
    base = urlsplit(require_postgres())
    relay = Relay((base.hostname or "127.0.0.1", base.port or 5432)).start()
    schema = "t_" + uuid.uuid4().hex[:16]
    store = f"postgresql://{base.username}@127.0.0.1:{relay.port}{base.path}?schema={schema}"
    server = RunningServer(store=store, extra_args=["--shared-cloud"])
    try:
        server.start()
        tokens = server.url + "/identity/v2.0/tokens"
        assert requests.post(tokens, json=TOKENS, timeout=10).status_code == 200
        assert value(scrape(server.url), "simulacra_store_errors_total") == 0
        relay.cut()
        started = time.monotonic()
        scrape(server.url)
        assert time.monotonic() - started < 1.0
        assert requests.post(tokens, json=TOKENS, timeout=30).status_code == 503
        after = scrape(server.url)
        assert value(after, "simulacra_store_errors_total") >= 1
        assert requests_total(after, "cloud", 503) == 1
    finally:
        server.stop()
        relay.cut()
        drop_schema(schema)
