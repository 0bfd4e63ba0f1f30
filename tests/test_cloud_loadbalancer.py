"""Cloud Load Balancers (CLB v1.0) over a real socket, driven the way its clients call it.

There is no maintained Python CLB client that runs on Python 3.11 (pyrax, the Rackspace SDK,
is dead), so ``requests`` sends exactly the requests of the Rackspace CLB v1.0 developer
guide: authenticate against Identity v2.0 (``POST /identity/v2.0/tokens`` with API key
credentials), read the ``cloudLoadBalancers`` endpoint of the region from the service
catalog, then send JSON with ``X-Auth-Token``. The control plane (``cloudLoadBalancerControl``)
and the clock are driven the same way.

Every test signs in as its own user, so it has its own tenant; the virtual clock is shared
by the whole session, so times are asserted relative to ticks made here.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from simulacra.cloud.loadbalancer import CLB, CLB_CONTROL

README_EXAMPLE = {
    "loadBalancer": {
        "name": "a-new-loadbalancer2",
        "protocol": "HTTP",
        "virtualIps": [{"type": "PUBLIC"}],
        "metadata": [{"key": "lb_pending_update", "value": 20}],
        "nodes": [],
    }
}


class Clb:
    """A CLB v1.0 client as the developer guide's requests look, on one tenant and region."""

    def __init__(self, base_url: str, username: str, region: str = "ORD") -> None:
        self.base_url = base_url
        self.http = requests.Session()
        credentials = {"RAX-KSKEY:apiKeyCredentials": {"username": username, "apiKey": "k"}}
        auth = self.http.post(base_url + "/identity/v2.0/tokens", json={"auth": credentials})
        assert auth.status_code == 200, auth.text
        access = auth.json()["access"]
        self.tenant = access["token"]["tenant"]["id"]
        catalog = {entry["name"]: entry for entry in access["serviceCatalog"]}
        self.entries = catalog

        def endpoint(name: str) -> str:
            return next(e["publicURL"] for e in catalog[name]["endpoints"] if e["region"] == region)

        self.url = endpoint("cloudLoadBalancers")
        self.control = endpoint("cloudLoadBalancerControl")
        self.http.headers.update(
            {"X-Auth-Token": access["token"]["id"], "Accept": "application/json"}
        )

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.url + path, **kwargs)

    def create(self, name: str = "lb", expect: int = 202, **fields: Any) -> dict[str, Any]:
        body = {
            "loadBalancer": {
                "name": name,
                "protocol": "HTTP",
                "port": 80,
                "virtualIps": [{"type": "PUBLIC"}],
                **fields,
            }
        }
        response = self.call("POST", "/loadbalancers", json=body)
        assert response.status_code == expect, response.text
        return response.json().get("loadBalancer", response.json())

    def get(self, lb_id: int) -> dict[str, Any]:
        response = self.call("GET", f"/loadbalancers/{lb_id}")
        assert response.status_code == 200, response.text
        return response.json()["loadBalancer"]

    def status(self, lb_id: int) -> str:
        return self.get(lb_id)["status"]

    def add_nodes(self, lb_id: int, *nodes: dict[str, Any]) -> requests.Response:
        return self.call("POST", f"/loadbalancers/{lb_id}/nodes", json={"nodes": list(nodes)})

    def tick(self, seconds: float) -> None:
        response = self.http.post(self.base_url + "/mimic/v1.1/tick", json={"amount": seconds})
        assert response.status_code == 200, response.text


def node(address: str = "10.1.0.1", port: int = 80, **extra: Any) -> dict[str, Any]:
    return {"address": address, "port": port, "condition": "ENABLED", **extra}


def preset(key: str, value: Any) -> list[dict[str, Any]]:
    return [{"key": key, "value": value}]


@pytest.fixture
def clb(base_url: str, name: str) -> Clb:
    return Clb(base_url, "user-" + name)


# The README and the catalog -------------------------------------------------------------


def test_readme_example_is_pending_update_for_20_seconds_after_a_node_change(clb):
    created = clb.call("POST", "/loadbalancers", json=README_EXAMPLE)
    assert created.status_code == 202, created.text
    lb = created.json()["loadBalancer"]
    assert lb["status"] == "ACTIVE"
    assert lb["metadata"] == [{"id": 1, "key": "lb_pending_update", "value": 20}]
    assert clb.add_nodes(lb["id"], node()).status_code == 202
    assert clb.status(lb["id"]) == "PENDING-UPDATE"
    refused = clb.add_nodes(lb["id"], node("10.1.0.2"))
    assert refused.status_code == 422
    clb.tick(19)
    assert clb.status(lb["id"]) == "PENDING-UPDATE"
    clb.tick(1)
    assert clb.status(lb["id"]) == "ACTIVE"
    assert clb.add_nodes(lb["id"], node("10.1.0.2")).status_code == 202


def test_catalog_lists_the_load_balancer_and_its_control_endpoints(clb, base_url):
    lbs = clb.entries["cloudLoadBalancers"]
    control = clb.entries["cloudLoadBalancerControl"]
    assert lbs["type"] == control["type"] == "rax:load-balancer"
    assert [e["region"] for e in lbs["endpoints"]] == ["ORD", "DFW", "IAD"]
    assert clb.url == f"{base_url}/mimicking/{CLB.service_id}/ORD/v2/{clb.tenant}"
    assert clb.control == f"{base_url}/mimicking/{CLB_CONTROL.service_id}/ORD/v2/{clb.tenant}"


# The lifecycle -----------------------------------------------------------------------------


def test_load_balancer_and_node_lifecycle(clb):
    lb = clb.create(
        "web",
        algorithm="ROUND_ROBIN",
        timeout=60,
        nodes=[node("10.1.0.1"), node("10.1.0.2", weight=2)],
        metadata=[{"key": "team", "value": "blue"}],
        connectionLogging={"enabled": True},
    )
    lb_id = lb["id"]
    assert (lb["name"], lb["protocol"], lb["port"], lb["status"]) == ("web", "HTTP", 80, "ACTIVE")
    assert (lb["algorithm"], lb["timeout"], lb["connectionLogging"]) == (
        "ROUND_ROBIN",
        60,
        {"enabled": True},
    )
    assert lb["created"] == lb["updated"] and lb["created"]["time"].endswith("Z")
    assert [v["ipVersion"] for v in lb["virtualIps"]] == ["IPV4", "IPV6"]
    assert [n["status"] for n in lb["nodes"]] == ["ONLINE", "ONLINE"]
    assert lb["metadata"] == [{"id": 1, "key": "team", "value": "blue"}]

    listed = clb.call("GET", "/loadbalancers").json()["loadBalancers"]
    assert [(x["id"], x["nodeCount"]) for x in listed] == [(lb_id, 2)]
    assert "nodes" not in listed[0]

    added = clb.add_nodes(lb_id, node("10.1.0.3"), node("10.1.0.4", type="SECONDARY"))
    assert added.status_code == 202
    new_ids = [n["id"] for n in added.json()["nodes"]]
    nodes = clb.call("GET", f"/loadbalancers/{lb_id}/nodes").json()["nodes"]
    assert [n["address"] for n in nodes] == ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
    one = clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}").json()["node"]
    assert (one["type"], one["weight"], one["condition"]) == ("SECONDARY", 1, "ENABLED")

    change = {"node": {"condition": "DRAINING", "weight": 7, "type": "PRIMARY"}}
    updated = clb.call("PUT", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}", json=change)
    assert (updated.status_code, updated.text) == (202, "")
    one = clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}").json()["node"]
    assert (one["type"], one["weight"], one["condition"]) == ("PRIMARY", 7, "DRAINING")

    feed = clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}.atom")
    assert feed.status_code == 200
    assert feed.headers["content-type"].startswith("application/atom+xml")
    assert feed.text.startswith('<feed xmlns="http://www.w3.org/2005/Atom"><entry><summary>')
    assert "Node successfully created with address: &apos;" not in feed.text
    assert "Node successfully created with address: '10.1.0.4', port: '80'" in feed.text
    assert "weight: '7', condition: 'DRAINING'</summary>" in feed.text

    deleted = clb.call("DELETE", f"/loadbalancers/{lb_id}/nodes/{new_ids[0]}")
    assert (deleted.status_code, deleted.text) == (202, "null")  # Mimic's body, kept
    assert clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[0]}").status_code == 404
    first_two = [n["id"] for n in nodes[:2]]
    bulk = clb.call("DELETE", f"/loadbalancers/{lb_id}/nodes", params={"id": first_two})
    assert bulk.status_code == 202
    remaining = clb.call("GET", f"/loadbalancers/{lb_id}/nodes").json()["nodes"]
    assert [n["id"] for n in remaining] == [new_ids[1]]

    monitor = {"type": "HTTP", "delay": 10, "timeout": 5, "attemptsBeforeDeactivation": 2}
    monitor["path"] = "/health"
    put = clb.call("PUT", f"/loadbalancers/{lb_id}/healthmonitor", json={"healthMonitor": monitor})
    assert put.status_code == 202
    got = clb.call("GET", f"/loadbalancers/{lb_id}/healthmonitor").json()
    assert got == {"healthMonitor": monitor}
    assert clb.get(lb_id)["healthMonitor"] == monitor
    offline = clb.add_nodes(lb_id, node("10.1.0.9")).json()["nodes"][0]
    assert offline["status"] == "OFFLINE"  # not yet checked by the monitor
    assert clb.call("DELETE", f"/loadbalancers/{lb_id}/healthmonitor").status_code == 202
    assert clb.call("GET", f"/loadbalancers/{lb_id}/healthmonitor").json() == {"healthMonitor": {}}

    assert clb.call("DELETE", f"/loadbalancers/{lb_id}").status_code == 202
    assert clb.status(lb_id) == "DELETED"
    gone = clb.call("GET", f"/loadbalancers/{lb_id}/nodes")
    assert (gone.status_code, gone.json()) == (
        410,
        {"message": "The loadbalancer is marked as deleted.", "code": 410},
    )
    assert clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}").status_code == 410
    feed = clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{new_ids[1]}.atom")
    assert feed.status_code == 410 and "marked as deleted" in feed.text
    again = clb.call("DELETE", f"/loadbalancers/{lb_id}")
    assert again.json() == {
        "message": f"Must provide valid load balancers: {lb_id} could not be found.",
        "code": 400,
    }
    clb.tick(3600)
    assert clb.call("GET", f"/loadbalancers/{lb_id}").status_code == 404
    assert clb.call("GET", "/loadbalancers").json() == {"loadBalancers": []}


def test_ids_are_unique_and_never_random(clb):
    ids = [clb.create(f"lb{i}", nodes=[node()])["id"] for i in range(30)]
    assert len(set(ids)) == 30
    assert ids == sorted(ids)
    addresses = [v["address"] for i in ids for v in clb.get(i)["virtualIps"]]
    assert len(set(addresses)) == len(addresses)


def test_shared_virtual_ip(clb):
    first = clb.create("a")
    vip = first["virtualIps"][0]
    second = clb.create("b", port=8080, virtualIps=[{"id": vip["id"]}])
    assert second["virtualIps"] == [vip]


def test_protocols_and_algorithms(clb):
    protocols = clb.call("GET", "/loadbalancers/protocols").json()["protocols"]
    assert {"name": "HTTPS", "port": 443} in protocols
    algorithms = clb.call("GET", "/loadbalancers/algorithms").json()["algorithms"]
    assert {"name": "ROUND_ROBIN"} in algorithms


def test_list_filters(clb):
    a = clb.create("a", nodes=[node("10.1.2.3")])
    clb.create("b", metadata=preset("lb_building", 5))
    by_status = clb.call("GET", "/loadbalancers", params={"status": "BUILD"}).json()
    assert [x["name"] for x in by_status["loadBalancers"]] == ["b"]
    by_node = clb.call("GET", "/loadbalancers", params={"nodeaddress": "10.1.2.3"}).json()
    assert [x["id"] for x in by_node["loadBalancers"]] == [a["id"]]


# Every metadata preset, with ticks of the clock ---------------------------------------------


@pytest.mark.parametrize("value", [30, "30", 30.0])
def test_lb_building_preset(clb, value):
    lb = clb.create(metadata=preset("lb_building", value))
    assert lb["status"] == "BUILD"
    immutable = clb.add_nodes(lb["id"], node())
    assert immutable.json() == {
        "message": f"Load Balancer '{lb['id']}' has a status of 'BUILD' and is considered "
        "immutable.",
        "code": 422,
    }
    clb.tick(29)
    assert clb.status(lb["id"]) == "BUILD"
    clb.tick(1)
    shown = clb.get(lb["id"])
    assert shown["status"] == "ACTIVE"
    assert shown["updated"] != shown["created"]
    assert clb.add_nodes(lb["id"], node()).status_code == 202


def test_lb_building_zero_means_ten_seconds_as_in_mimic(clb):
    lb = clb.create(metadata=preset("lb_building", 0))
    clb.tick(9)
    assert clb.status(lb["id"]) == "BUILD"
    clb.tick(1)
    assert clb.status(lb["id"]) == "ACTIVE"


def test_lb_pending_update_preset_on_every_change(clb):
    lb = clb.create(metadata=preset("lb_pending_update", "5"), nodes=[node()])
    lb_id = lb["id"]
    node_id = lb["nodes"][0]["id"]
    changes = [
        ("POST", f"/loadbalancers/{lb_id}/nodes", {"nodes": [node("10.1.0.5")]}),
        ("PUT", f"/loadbalancers/{lb_id}/nodes/{node_id}", {"node": {"weight": 3}}),
        ("PUT", f"/loadbalancers/{lb_id}/healthmonitor", {"healthMonitor": {"type": "CONNECT"}}),
        ("DELETE", f"/loadbalancers/{lb_id}/healthmonitor", None),
        ("DELETE", f"/loadbalancers/{lb_id}/nodes/{node_id}", None),
    ]
    for method, path, body in changes:
        assert clb.call(method, path, json=body).status_code == 202, (method, path)
        assert clb.status(lb_id) == "PENDING-UPDATE"
        refused = clb.call(method, path, json=body)
        assert refused.status_code == 422
        assert "'PENDING-UPDATE' and is considered immutable" in refused.json()["message"]
        clb.tick(5)
        assert clb.status(lb_id) == "ACTIVE"


def test_lb_pending_delete_preset_then_deleted_then_gone(clb):
    lb = clb.create(metadata=preset("lb_pending_delete", 15), nodes=[node()])
    lb_id = lb["id"]
    assert clb.call("DELETE", f"/loadbalancers/{lb_id}").status_code == 202
    assert clb.status(lb_id) == "PENDING-DELETE"
    assert clb.call("DELETE", f"/loadbalancers/{lb_id}").json() == {
        "message": f"Must provide valid load balancers: {lb_id} are immutable and could not be "
        "processed.",
        "code": 400,
    }
    assert clb.add_nodes(lb_id, node("10.1.0.7")).status_code == 422
    assert clb.call("GET", f"/loadbalancers/{lb_id}/nodes").status_code == 200
    clb.tick(14)
    assert clb.status(lb_id) == "PENDING-DELETE"
    clb.tick(1)
    assert clb.status(lb_id) == "DELETED"
    assert clb.call("GET", f"/loadbalancers/{lb_id}/nodes").status_code == 410
    changed = clb.add_nodes(lb_id, node("10.1.0.7"))
    assert changed.json() == {
        "message": "The load balancer is deleted and considered immutable.",
        "code": 422,
    }
    clb.tick(3599)
    assert clb.status(lb_id) == "DELETED"
    clb.tick(1)
    missing = clb.call("GET", f"/loadbalancers/{lb_id}")
    assert (missing.status_code, missing.json()) == (
        404,
        {"message": "Load balancer not found", "code": 404},
    )


def test_lb_error_state_preset(clb):
    lb = clb.create(metadata=preset("lb_error_state", "any"))
    lb_id = lb["id"]
    assert lb["status"] == "ACTIVE"
    assert clb.add_nodes(lb_id, node()).status_code == 202
    assert clb.status(lb_id) == "ERROR"
    clb.tick(1000)
    refused = clb.add_nodes(lb_id, node("10.1.0.8"))
    assert refused.json()["message"].endswith(
        "has a status of 'ERROR' and is considered immutable."
    )
    assert clb.call("DELETE", f"/loadbalancers/{lb_id}").status_code == 202
    assert clb.status(lb_id) == "DELETED"


def test_presets_are_listed(http, base_url):
    presets = http.get(base_url + "/mimic/v1.0/presets").json()["loadbalancers"]
    assert set(presets) == {
        "lb_building",
        "lb_error_state",
        "lb_pending_update",
        "lb_pending_delete",
    }


# Limits and errors ---------------------------------------------------------------------------


def test_duplicate_nodes_and_more_than_25_are_413(clb):
    lb = clb.create(nodes=[node()])
    duplicate = clb.add_nodes(lb["id"], node())
    assert duplicate.status_code == 413
    assert duplicate.json() == {
        "message": "Duplicate nodes detected. One or more nodes already configured on load "
        "balancer.",
        "code": 413,
    }
    batch = [node(f"10.2.0.{i}") for i in range(25)]
    over = clb.add_nodes(lb["id"], *batch)
    assert over.json() == {"message": "Nodes must not exceed 25 per load balancer.", "code": 413}
    assert clb.add_nodes(lb["id"], *batch[:24]).status_code == 202
    assert clb.add_nodes(lb["id"], node("10.3.0.1")).status_code == 413
    assert len(clb.call("GET", f"/loadbalancers/{lb['id']}/nodes").json()["nodes"]) == 25


def test_bulk_delete_errors_are_clbs(clb):
    lb = clb.create(nodes=[node(f"10.4.0.{i}") for i in range(11)])
    path = f"/loadbalancers/{lb['id']}/nodes"
    ids = [n["id"] for n in lb["nodes"]]
    none = clb.call("DELETE", path)
    assert none.json() == {
        "message": "Must supply one or more id's to process this request.",
        "code": 400,
    }
    unknown = clb.call("DELETE", path, params={"id": [ids[0], 5, "x"]})
    assert unknown.status_code == 400
    assert unknown.json()["validationErrors"]["messages"] == [
        "Node ids 5,x are not a part of your loadbalancer"
    ]
    too_many = clb.call("DELETE", path, params={"id": ids})
    assert too_many.status_code == 400
    assert "BATCH_DELETE_LIMIT of 10" in too_many.json()["validationErrors"]["messages"][0]
    assert len(clb.call("GET", path).json()["nodes"]) == 11


def test_node_update_errors_match_clbs(clb):
    lb = clb.create(nodes=[node()])
    path = f"/loadbalancers/{lb['id']}/nodes/{lb['nodes'][0]['id']}"
    schema = clb.call("PUT", path, json={"node": {"status": "OFFLINE"}})
    assert schema.status_code == 400
    assert schema.json()["message"] == ["JSON does not match the expected schema"]
    validation = clb.call("PUT", path, json={"node": {"address": "1.1.1.1", "weight": 500}})
    assert validation.json() == {
        "validationErrors": {
            "messages": [
                "Node ip field cannot be modified.",
                "Node weight is invalid. Range is 1-100. Please specify a valid weight.",
            ]
        },
        "message": "Validation Failure",
        "code": 400,
        "details": "The object is not valid",
    }
    # Schema checks come first, as CLB does them, even for an unknown load balancer.
    assert clb.call("PUT", "/loadbalancers/1/nodes/1", json={"x": 1}).status_code == 400
    missing = clb.call("PUT", f"/loadbalancers/{lb['id']}/nodes/1", json={"node": {"weight": 2}})
    assert missing.json() == {"message": "Node not found", "code": 404}


def test_unknown_ids_are_404_in_clbs_shapes(clb):
    lb = clb.create(nodes=[node()])
    for path in (
        "/loadbalancers/424242",
        "/loadbalancers/not-a-number",
        "/loadbalancers/424242/nodes",
        "/loadbalancers/424242/healthmonitor",
        f"/loadbalancers/{lb['id']}/nodes/1",
    ):
        response = clb.call("GET", path)
        assert response.status_code == 404, path
        assert response.json()["code"] == 404
    for method in ("DELETE", "PUT"):
        assert (
            clb.call(method, "/loadbalancers/424242/nodes/1", json={"node": {}}).status_code == 404
        )
    feed = clb.call("GET", "/loadbalancers/424242/nodes/1.atom")
    assert feed.status_code == 404
    assert "<itemNotFound" in feed.text and "Load balancer not found" in feed.text
    feed = clb.call("GET", f"/loadbalancers/{lb['id']}/nodes/1.atom")
    assert feed.status_code == 404 and "Node not found" in feed.text


BAD_CREATES = [
    "not json",
    "[]",
    {},
    {"loadBalancer": None},
    {"loadBalancer": {"protocol": "HTTP", "virtualIps": [{"type": "PUBLIC"}]}},
    {"loadBalancer": {"name": "a", "virtualIps": [{"type": "PUBLIC"}]}},
    {"loadBalancer": {"name": ["a"], "protocol": "HTTP"}},
    {"loadBalancer": {"name": "a", "protocol": "GOPHER"}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "port": 70000}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "timeout": "long"}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": "PUBLIC"}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": [{"id": "x"}]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": [{"id": 1}]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [{"port": 80}]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node(port="http")]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node("example.com")]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node(condition="ON")]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": ["10.0.0.1:80"]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": [{"value": "v"}]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": [{"key": "k", "value": {}}]}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": preset("lb_building", "x")}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": preset("lb_building", -5)}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "connectionLogging": True}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "healthMonitor": {"type": "PING"}}},
    {"loadBalancer": {"name": "a", "protocol": "HTTP", "sessionPersistence": {}}},
]


@pytest.mark.parametrize("body", BAD_CREATES)
def test_bad_creates_are_400_never_500(clb, body):
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    response = clb.call("POST", "/loadbalancers", **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["message"]
    assert clb.call("GET", "/loadbalancers").json() == {"loadBalancers": []}


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "/nodes", "{"),
        ("POST", "/nodes", {}),
        ("POST", "/nodes", {"nodes": []}),
        ("POST", "/nodes", {"nodes": {"address": "10.0.0.1"}}),
        ("POST", "/nodes", {"nodes": [node(weight=101)]}),
        ("POST", "/nodes", {"nodes": [node(type="TERTIARY")]}),
        ("POST", "/nodes", {"nodes": [node(id=5)]}),
        ("PUT", "/nodes/{node}", "[]"),
        ("PUT", "/nodes/{node}", {"node": []}),
        ("PUT", "/nodes/{node}", {"node": {"weight": True}}),
        ("PUT", "/nodes/{node}", {"node": {"weight": 1}, "extra": 1}),
        ("PUT", "/healthmonitor", {}),
        ("PUT", "/healthmonitor", {"healthMonitor": "CONNECT"}),
        ("PUT", "/healthmonitor", {"healthMonitor": {"type": "HTTP", "delay": "often"}}),
        ("PUT", "/healthmonitor", {"healthMonitor": {"type": "HTTP", "path": 3}}),
    ],
)
def test_bad_node_and_monitor_requests_are_400(clb, method, suffix, body):
    lb = clb.create(nodes=[node()])
    path = f"/loadbalancers/{lb['id']}" + suffix.format(node=lb["nodes"][0]["id"])
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    response = clb.call(method, path, **kwargs)
    assert response.status_code == 400, response.text
    assert clb.status(lb["id"]) == "ACTIVE"
    assert len(clb.call("GET", f"/loadbalancers/{lb['id']}/nodes").json()["nodes"]) == 1


def test_unknown_region_is_404(base_url, clb):
    url = clb.url.replace("/ORD/", "/MARS/")
    response = clb.http.get(url + "/loadbalancers")
    assert response.status_code == 404 and response.json()["code"] == 404
    behaviors = clb.http.get(clb.control.replace("/ORD/", "/MARS/") + "/behaviors/creation")
    assert behaviors.status_code == 404 and behaviors.json()["code"] == 404


def test_create_and_node_add_errors_are_clbs_exact_bodies(clb):
    invalid = clb.call("POST", "/loadbalancers", data=b"{not json")
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == "application/json"
    assert invalid.content == b'{"message":"Invalid JSON request body","code":400}'
    lb = clb.create()
    mars = clb.url.replace("/ORD/", "/MARS/")
    # A bad region wins over a bad body.
    for path in ("/loadbalancers", f"/loadbalancers/{lb['id']}/nodes"):
        for body in (b"{not json", b" " * (11 * 1024 * 1024)):
            response = clb.http.post(mars + path, data=body)
            assert response.status_code == 404
            assert response.json() == {
                "message": "region MARS is not served by cloudLoadBalancers",
                "code": 404,
            }


def test_bodies_over_the_limit_are_413_in_clbs_shape(clb):
    lb = clb.create()
    huge = b" " * (11 * 1024 * 1024)
    for path in ("/loadbalancers", f"/loadbalancers/{lb['id']}/nodes"):
        response = clb.call("POST", path, data=huge)
        assert response.status_code == 413
        assert response.json()["code"] == 413 and "limit" in response.json()["message"]
    assert len(clb.call("GET", "/loadbalancers").json()["loadBalancers"]) == 1


# Behaviors and the control plane --------------------------------------------------------------


def add_behavior(clb: Clb, name: str, parameters=None, criteria=None) -> str:
    document = {"name": name, "parameters": parameters or {}, "criteria": criteria or []}
    response = clb.http.post(clb.control + "/behaviors/creation", json=document)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_fail_behavior_then_removed(clb):
    behavior = add_behavior(
        clb, "fail", {"code": 503, "message": "Out of capacity"}, [{"loadbalancer_name": "doomed"}]
    )
    failed = clb.create("doomed-1", expect=503)
    assert failed == {"message": "Out of capacity", "code": 503}
    assert clb.create("fine")["status"] == "ACTIVE"
    listed = clb.http.get(clb.control + "/behaviors/creation").json()["behaviors"]
    assert [b["id"] for b in listed] == [behavior]
    assert clb.http.delete(clb.control + f"/behaviors/creation/{behavior}").status_code == 204
    assert clb.create("doomed-2")["status"] == "ACTIVE"
    assert [lb["name"] for lb in clb.call("GET", "/loadbalancers").json()["loadBalancers"]] == [
        "fine",
        "doomed-2",
    ]


def test_building_error_and_false_negative_behaviors(clb):
    add_behavior(clb, "building", {"duration": 40}, [{"loadbalancer_name": "slow"}])
    add_behavior(clb, "error", {}, [{"metadata": {"env": "^broken$"}}])
    add_behavior(clb, "false-negative", {"code": 500}, [{"loadbalancer_name": "liar"}])
    slow = clb.create("slow")
    assert slow["status"] == "BUILD"
    clb.tick(39)
    assert clb.status(slow["id"]) == "BUILD"
    clb.tick(1)
    assert clb.status(slow["id"]) == "ACTIVE"
    broken = clb.create("x", metadata=[{"key": "env", "value": "broken"}])
    assert broken["status"] == "ERROR"
    clb.create("liar", expect=500)
    names = [lb["name"] for lb in clb.call("GET", "/loadbalancers").json()["loadBalancers"]]
    assert names == ["slow", "x", "liar"]  # a false negative creates the load balancer anyway


def test_sequence_behavior_cycles(clb):
    add_behavior(
        clb,
        "sequence",
        {"behaviors": [{"name": "fail", "parameters": {"code": 500}}, {"name": "default"}]},
    )
    clb.create("a", expect=500)
    assert clb.create("b")["status"] == "ACTIVE"
    clb.create("c", expect=500)


def test_metadata_presets_win_over_behaviors(clb):
    add_behavior(clb, "fail", {"code": 500})
    assert clb.create(metadata=preset("lb_building", 5))["status"] == "BUILD"


def test_behaviors_are_scoped_to_tenant_and_region(clb, base_url, name):
    add_behavior(clb, "fail", {"code": 500})
    assert Clb(base_url, "other-" + name).create()["status"] == "ACTIVE"
    assert Clb(base_url, "user-" + name, region="DFW").create()["status"] == "ACTIVE"


@pytest.mark.parametrize(
    "document",
    [
        {"name": "explode", "criteria": []},
        {"name": "fail", "criteria": [{"server_name": "x"}]},
        {"name": "building", "parameters": {"duration": "soon"}},
        {"name": "fail", "parameters": {"code": 200}},
    ],
)
def test_bad_behaviors_are_400(clb, document):
    response = clb.http.post(clb.control + "/behaviors/creation", json=document)
    assert response.status_code == 400
    assert response.json()["code"] == 400


def test_control_plane_sets_statuses(clb):
    lb = clb.create(nodes=[node()])
    lb_id, node_id = lb["id"], lb["nodes"][0]["id"]
    attributes = f"{clb.control}/loadbalancer/{lb_id}/attributes"
    patched = clb.http.patch(attributes, json={"status": "PENDING_UPDATE"})
    assert (patched.status_code, patched.text) == (204, "")
    assert clb.status(lb_id) == "PENDING_UPDATE"
    refused = clb.add_nodes(lb_id, node("10.5.0.1"))
    assert refused.json()["message"] == (
        f"Load Balancer '{lb_id}' has a status of 'PENDING_UPDATE' and is considered immutable."
    )
    clb.tick(3600)
    assert clb.status(lb_id) == "PENDING_UPDATE"  # a status set here has no timer
    clb.http.patch(attributes, json={"status": "ACTIVE"})
    assert clb.add_nodes(lb_id, node("10.5.0.1")).status_code == 202

    status_url = f"{clb.control}/loadbalancers/{lb_id}/nodes/{node_id}/status"
    put = clb.http.put(status_url, json={"status": "OFFLINE"})
    assert (put.status_code, put.text) == (200, "")
    shown = clb.call("GET", f"/loadbalancers/{lb_id}/nodes/{node_id}").json()["node"]
    assert shown["status"] == "OFFLINE"


def test_control_plane_errors_are_mimics(clb):
    lb = clb.create(nodes=[node()])
    lb_id = lb["id"]
    attributes = f"{clb.control}/loadbalancer/{lb_id}/attributes"
    cases = [
        (
            clb.http.patch(attributes, json={"status": "BOGUS"}),
            400,
            "Unsupported status BOGUS not one of "
            "['ACTIVE', 'ERROR', 'PENDING_DELETE', 'PENDING_UPDATE']",
        ),
        (
            clb.http.patch(attributes, json={"name": "x"}),
            400,
            "Attempt to alter a bad attribute",
        ),
        (clb.http.patch(attributes, data="{"), 400, "Invalid JSON request body"),
        (
            clb.http.patch(f"{clb.control}/loadbalancer/424242/attributes", json={}),
            404,
            f"Tenant {clb.tenant} doesn't own load balancer 424242",
        ),
        (
            clb.http.put(f"{clb.control}/loadbalancers/{lb_id}/nodes/7/status", json={}),
            404,
            f"Load balancer {lb_id} on tenant {clb.tenant} does not have node 7",
        ),
        (
            clb.http.put(
                f"{clb.control}/loadbalancers/{lb_id}/nodes/{lb['nodes'][0]['id']}/status",
                json={"status": "SLEEPING"},
            ),
            400,
            "status key not found or it must have ONLINE or OFFLINE value",
        ),
    ]
    for response, code, message in cases:
        assert (response.status_code, response.json()) == (
            code,
            {"message": message, "code": code},
        )
