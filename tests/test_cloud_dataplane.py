"""The cloud's bulk POSTs on the data plane (simulacra/dataplane/cloud.py), and the base URL.

``CloudRoutes`` is called with ``Request`` values, as a server calls it; what it creates is
read back through the Starlette routes of the same ``CloudCore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest

from simulacra.clock import VirtualClock
from simulacra.cloud import build_cloud
from simulacra.cloud.compute import NOVA
from simulacra.cloud.compute.routes import create_server
from simulacra.cloud.http import base_url, request_base_url
from simulacra.cloud.loadbalancer import CLB
from simulacra.cloud.loadbalancer.routes import add_nodes, create_load_balancer
from simulacra.cloud.shared import SharedCloud
from simulacra.dataplane.cloud import CloudRoutes
from simulacra.dataplane.request import Answer, Request
from simulacra.errors import TooLarge, Unavailable
from tests.asgi import http_scope

HOST = b"localhost:8900"
SERVER = orjson.dumps({"server": {"name": "s", "imageRef": "i", "flavorRef": "2"}})
LB = orjson.dumps(
    {
        "loadBalancer": {
            "name": "lb",
            "port": 80,
            "protocol": "HTTP",
            "virtualIps": [{"type": "PUBLIC"}],
        }
    }
)
NODES = orjson.dumps({"nodes": [{"address": "10.0.0.1", "port": 80, "condition": "ENABLED"}]})
JSON_HEADERS = [(b"content-type", b"application/json")]


def nova(region: str = "ORD", tenant: str = "t1") -> str:
    return NOVA.mount_path.format(region=region, tenant=tenant)


def clb(region: str = "ORD", tenant: str = "t1") -> str:
    return CLB.mount_path.format(region=region, tenant=tenant)


def post(path: str, body: bytes = b"", host: bytes | None = HOST) -> Request:
    headers = [] if host is None else [(b"host", host)]
    return Request("POST", path, headers=headers, body=body, local=("127.0.0.1", 8900))


@pytest.fixture
def cloud() -> tuple[Any, Starlette]:
    core, routes = build_cloud(VirtualClock(), ("ORD", "DFW", "IAD"))
    app = Starlette(routes=routes)
    app.state.cloud = core
    app.state.settings = SimpleNamespace(max_body_bytes=1024)
    return core, app


def answer(routes: CloudRoutes, request: Request) -> Answer:
    route = routes.claim(request)
    assert route is not None, request.path
    result = route.answer(request)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def starlette_get(app: Starlette, path: str) -> tuple[int, bytes]:
    """Status and body of a GET answered by the Starlette routes."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(http_scope("GET", path, [(b"host", HOST)]), receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def assert_json(result: Answer, status: int) -> Any:
    assert result.status == status
    assert result.headers == [
        (b"content-length", b"%d" % len(result.body)),
        (b"content-type", b"application/json"),
    ]
    return orjson.loads(result.body)


# What is claimed -------------------------------------------------------------------------


def test_claims_exactly_the_three_bulk_posts(cloud):
    core, _ = cloud
    routes = CloudRoutes(core)
    for path in (nova() + "/servers", clb() + "/loadbalancers", clb() + "/loadbalancers/7/nodes"):
        assert routes.claim(post(path)) is not None, path
        assert routes.claim(Request("GET", path)) is None
        assert routes.claim(Request("PUT", path)) is None
    for path in (
        nova() + "/servers/",  # Starlette redirects it to the claimed path
        nova() + "/servers/detail",
        nova() + "/os-keypairs",
        nova() + "/servers/abc/metadata",
        "/mimicking/NovaApi-nothing/ORD/v2/t1/servers",
        nova().replace("/v2/", "/v3/") + "/servers",
        clb() + "/loadbalancers//nodes",  # an empty id
        clb() + "/loadbalancers/7/nodes/8",
        clb() + "/loadbalancers/7/healthmonitor",
        "/identity/v2.0/tokens",
        "/servers",
    ):
        assert routes.claim(post(path)) is None, path


def test_declares_the_three_routes_with_their_handlers(cloud):
    core, app = cloud
    declared = CloudRoutes(core).declared
    assert [(d.methods, d.path, d.endpoint) for d in declared] == [
        ("POST", NOVA.mount_path + "/servers", create_server),
        ("POST", CLB.mount_path + "/loadbalancers", create_load_balancer),
        ("POST", CLB.mount_path + "/loadbalancers/{lb_id}/nodes", add_nodes),
    ]
    # Starlette routes none of them: the data plane, in front of it, answers them.
    starlette = {(m, r.path) for r in app.routes for m in getattr(r, "methods", None) or ()}
    assert not {("POST", d.path) for d in declared} & starlette


# Answers ---------------------------------------------------------------------------------


def test_server_create_is_202_and_reads_back_through_starlette(cloud):
    core, app = cloud
    created = assert_json(answer(CloudRoutes(core), post(nova() + "/servers", SERVER)), 202)
    server = created["server"]
    self_link = f"http://localhost:8900{nova()}/servers/{server['id']}"
    assert server["links"][0] == {"href": self_link, "rel": "self"}
    status, body = starlette_get(app, f"{nova()}/servers/{server['id']}")
    assert status == 200
    assert orjson.loads(body)["server"]["links"] == server["links"]


def test_links_follow_the_host_header_or_the_server_address(cloud):
    core, _ = cloud
    routes = CloudRoutes(core)
    for host, base in ((b"example.com", "http://example.com"), (None, "http://127.0.0.1:8900")):
        created = answer(routes, post(nova() + "/servers", SERVER, host=host))
        href = orjson.loads(created.body)["server"]["links"][0]["href"]
        assert href.startswith(base + nova() + "/servers/"), href


def test_load_balancer_create_and_node_add(cloud):
    core, app = cloud
    routes = CloudRoutes(core)
    lb = assert_json(answer(routes, post(clb() + "/loadbalancers", LB)), 202)["loadBalancer"]
    nodes_path = f"{clb()}/loadbalancers/{lb['id']}/nodes"
    added = assert_json(answer(routes, post(nodes_path, NODES)), 202)["nodes"]
    assert [n["address"] for n in added] == ["10.0.0.1"]
    status, body = starlette_get(app, nodes_path)
    assert status == 200 and orjson.loads(body)["nodes"] == added
    # The same node again: CLB's 413, in its flat shape.
    duplicate = assert_json(answer(routes, post(nodes_path, NODES)), 413)
    assert duplicate["code"] == 413 and duplicate["message"]


# Errors, in each service's envelope --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON request body"),
        (b"", "request body is empty; a JSON object is expected"),
        (b"[1, 2]", "request body must be a JSON object"),
    ],
)
def test_bad_bodies_are_400_in_each_envelope(cloud, body, message):
    core, _ = cloud
    routes = CloudRoutes(core)
    result = answer(routes, post(nova() + "/servers", body))
    assert result.body == orjson.dumps({"badRequest": {"message": message, "code": 400}})
    assert_json(result, 400)
    for path in (clb() + "/loadbalancers", clb() + "/loadbalancers/1/nodes"):
        result = answer(routes, post(path, body))
        assert result.body == orjson.dumps({"message": message, "code": 400})
        assert_json(result, 400)


def test_a_bad_region_wins_over_a_bad_body(cloud):
    core, _ = cloud
    routes = CloudRoutes(core)
    expected = {
        nova("MARS") + "/servers": {
            "itemNotFound": {
                "message": "region MARS is not served by cloudServersOpenStack",
                "code": 404,
            }
        },
        clb("MARS") + "/loadbalancers": {
            "message": "region MARS is not served by cloudLoadBalancers",
            "code": 404,
        },
        clb("MARS") + "/loadbalancers/1/nodes": {
            "message": "region MARS is not served by cloudLoadBalancers",
            "code": 404,
        },
    }
    too_large = TooLarge("request body is over the 1024 byte limit")
    for path, body in expected.items():
        assert assert_json(answer(routes, post(path, b"{not json")), 404) == body
        # A body refused before it was read (over the limit): the region still wins.
        route = routes.claim(post(path))
        assert route is not None
        assert assert_json(route.refuse(post(path), too_large), 404) == body


def test_a_body_over_the_limit_is_413_in_each_envelope(cloud):
    core, _ = cloud
    routes = CloudRoutes(core)
    error = TooLarge("request body is over the 1024 byte limit")
    route = routes.claim(post(nova() + "/servers"))
    assert route is not None
    assert assert_json(route.refuse(post(nova() + "/servers"), error), 413) == {
        "overLimit": {"message": error.message, "code": 413}
    }
    route = routes.claim(post(clb() + "/loadbalancers"))
    assert route is not None
    assert assert_json(route.refuse(post(clb() + "/loadbalancers"), error), 413) == {
        "message": error.message,
        "code": 413,
    }


def test_a_string_fault_is_plain_text(cloud):
    core, _ = cloud
    metadata = {"create_server_failure": '{"message": "raw", "code": 418, "type": "string"}'}
    body = orjson.dumps(
        {"server": {"name": "s", "imageRef": "i", "flavorRef": "2", "metadata": metadata}}
    )
    result = answer(CloudRoutes(core), post(nova() + "/servers", body))
    assert (result.status, result.body) == (418, b"raw")
    assert result.headers == [
        (b"content-length", b"3"),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]


# --shared-cloud ---------------------------------------------------------------------------


class FakeStore:
    """The PostgreSQL store's cloud parts, in memory; ``down`` makes it unreachable."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[int, bytes | None]] = {}  # key -> (version, data)
        self.versions = 0
        self.down = False

    async def sync_cloud(self, batch: list[Any]) -> list[Any]:
        if self.down:
            raise Unavailable("the store is unavailable")
        found = []
        for writes, reads, _colls in batch:
            given = [(key, version) for key, _, version, _ in writes] + list(reads)
            stale = [
                (key, *self.parts[key])
                for key, version in given
                if self.parts.get(key, (0, None))[0] != version
            ]
            written = None
            if not stale and writes:
                written = {}
                for key, _, _, data in writes:
                    self.versions += 1
                    self.parts[key] = (self.versions, data)
                    written[key] = self.versions
            found.append(SimpleNamespace(written=written, stale=stale))
        return found


def test_shared_cloud_runs_each_answer_in_the_transaction(cloud):
    core, _ = cloud
    shared = SharedCloud(core)
    store = FakeStore()
    shared.attach(store)
    routes = CloudRoutes(core, shared)
    created = answer(routes, post(nova() + "/servers", SERVER))
    assert_json(created, 202)
    server_id = orjson.loads(created.body)["server"]["id"]
    # The tenant's part, its page of server ids and its server's are written before the
    # answer (and the clock, by a first request).
    assert sorted(store.parts) == [
        "clock",
        f"compute.servers:('t1', '{server_id}')",
        "compute.tenants:'t1'",
        "compute.tenants_server_id_pages:('t1', 'ORD', 0)",
    ]
    # An error answer is rendered inside the transaction, which commits what it changed.
    assert_json(answer(routes, post(nova() + "/servers", b"{")), 400)
    store.down = True
    refused = answer(routes, post(nova() + "/servers", SERVER))
    assert refused.body == b'{"message":"the store is unavailable","code":503}'
    assert_json(refused, 503)


FIRST_PAGE = "compute.tenants_server_id_pages:('t1', 'ORD', 0)"


class RivalStore(FakeStore):
    """Another process changes a part just before each of this one's checks, until this one
    locks it."""

    def __init__(self, rival_key: str) -> None:
        super().__init__()
        self.rival_key = rival_key
        self.rival_wins = 0
        self.locked: list[list[str]] = []
        self.holding = False

    async def sync_cloud(self, batch: list[Any]) -> list[Any]:
        if not self.holding and self.rival_key in self.parts:
            data = self.parts[self.rival_key][1]
            self.versions += 1
            self.parts[self.rival_key] = (self.versions, data)  # moved, as another wrote it
            self.rival_wins += 1
        return await super().sync_cloud(batch)

    @contextlib.asynccontextmanager
    async def cloud_locked(self, keys: list[str]) -> AsyncIterator[Any]:
        self.locked.append(sorted(keys))
        self.holding = True
        try:

            async def sync(group: Any) -> Any:
                return (await FakeStore.sync_cloud(self, [group]))[0]

            parts = [(key, *self.parts[key]) for key in sorted(keys) if key in self.parts]
            yield SimpleNamespace(parts=parts, sync=sync)
        finally:
            self.holding = False


def test_a_request_that_keeps_losing_its_parts_runs_with_them_locked(cloud):
    from simulacra.cloud.shared import LOCK_AFTER

    core, _ = cloud
    shared = SharedCloud(core)
    store = RivalStore(FIRST_PAGE)
    shared.attach(store)
    routes = CloudRoutes(core, shared)
    store.holding = True  # the first create writes its page of ids unopposed
    assert_json(answer(routes, post(nova() + "/servers", SERVER)), 202)
    store.holding = False
    created = assert_json(answer(routes, post(nova() + "/servers", SERVER)), 202)
    # It lost LOCK_AFTER runs, then ran with what it changes locked, and its answer stood.
    assert store.rival_wins == LOCK_AFTER
    server = f"compute.servers:('t1', '{created['server']['id']}')"
    assert len(store.locked) == 1
    # What its last run changed: its page of ids and a server (drawn anew each run); not the
    # tenant's part, which a create reads.
    assert FIRST_PAGE in store.locked[0] and len(store.locked[0]) == 2
    assert server in store.parts
    page = store.parts[FIRST_PAGE][1]
    assert page is not None and created["server"]["id"].encode() in page


def test_a_locked_run_that_would_wait_beyond_its_lock_runs_again(cloud):
    """``cloud_locked``'s sync answers None where a row beyond the lock stayed held: nothing
    was written, and the request runs again (locked again) rather than failing."""
    core, _ = cloud
    shared = SharedCloud(core)
    store = RivalStore(FIRST_PAGE)
    gave_up: list[int] = []
    locked = store.cloud_locked

    @contextlib.asynccontextmanager
    async def once_held(keys: list[str]) -> AsyncIterator[Any]:
        async with locked(keys) as lock:
            if gave_up:
                yield lock
                return

            async def held(group: Any) -> None:
                gave_up.append(len(group[0]))
                return None

            yield SimpleNamespace(parts=lock.parts, sync=held)

    store.cloud_locked = once_held  # type: ignore[method-assign]
    shared.attach(store)
    routes = CloudRoutes(core, shared)
    store.holding = True
    assert_json(answer(routes, post(nova() + "/servers", SERVER)), 202)
    store.holding = False
    created = assert_json(answer(routes, post(nova() + "/servers", SERVER)), 202)
    assert gave_up == [2]  # its page and server, not written
    assert len(store.locked) == 2  # locked again, and that run stood
    assert f"compute.servers:('t1', '{created['server']['id']}')" in store.parts


# The base URL ------------------------------------------------------------------------------


BASE_URL_CASES = [
    # (scheme, Host header, server address, root path) -> base URL
    (("http", b"example.com:8900", ("127.0.0.1", 8900), ""), "http://example.com:8900"),
    (("http", b"example.com", ("127.0.0.1", 8900), ""), "http://example.com"),
    (("https", b"example.com:443", None, ""), "https://example.com:443"),
    (("http", None, ("127.0.0.1", 8900), ""), "http://127.0.0.1:8900"),
    (("http", None, ("127.0.0.1", 80), ""), "http://127.0.0.1"),  # the default port: omitted
    (("https", None, ("10.0.0.1", 443), ""), "https://10.0.0.1"),
    (("https", None, ("10.0.0.1", 80), ""), "https://10.0.0.1:80"),
    (("http", None, ("::1", 8900), ""), "http://[::1]:8900"),
    (("http", b"[::1]:8900", None, ""), "http://[::1]:8900"),
    (("http", b"bad host!", ("127.0.0.1", 8900), ""), "http://127.0.0.1:8900"),  # invalid: ignored
    (("http", b"example.com:99999", ("127.0.0.1", 8900), ""), "http://127.0.0.1:8900"),
    (("http", b"example.com", None, "/mounted"), "http://example.com/mounted"),
    (("http", b"example.com", None, "/mounted/"), "http://example.com/mounted"),
    (("http", None, None, ""), ""),
]


@pytest.mark.parametrize(("given", "expected"), BASE_URL_CASES)
def test_base_url(given, expected):
    assert base_url(*given) == expected


@pytest.mark.parametrize(("given", "expected"), BASE_URL_CASES)
def test_base_url_is_starlettes(given, expected):
    scheme, host, server, root_path = given
    headers = [] if host is None else [(b"host", host)]
    scope = http_scope("GET", root_path + "/x", headers, root_path=root_path)
    scope.update(scheme=scheme, server=server)
    if server is None:
        del scope["server"]
    request = StarletteRequest(scope)
    assert str(request.base_url).rstrip("/") == expected
    assert request_base_url(request) == expected
    scope["server"] = list(server) if server else None  # granian's address is a list
    assert request_base_url(StarletteRequest(scope)) == expected
