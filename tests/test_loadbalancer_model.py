"""Unit tests of the pure CLB model, on a virtual clock."""

from __future__ import annotations

import ipaddress
import random

import pytest

from simulacra.clock import VirtualClock
from simulacra.cloud.loadbalancer.faults import ClbError, compile_presets
from simulacra.cloud.loadbalancer.model import (
    BATCH_DELETE_LIMIT,
    DELETED_SECONDS,
    NODE_LIMIT,
    LoadBalancer,
    LoadBalancerBackend,
    RegionLoadBalancers,
    canonical_address,
    parse_node_update,
)
from simulacra.errors import Invalid


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1000.0)


@pytest.fixture
def backend(clock: VirtualClock) -> LoadBalancerBackend:
    return LoadBalancerBackend(clock)


@pytest.fixture
def ord_(backend: LoadBalancerBackend) -> RegionLoadBalancers:
    return backend.region("t1", "ORD")


def body(name: str = "web", **extra: object) -> dict[str, object]:
    return {
        "loadBalancer": {
            "name": name,
            "protocol": "HTTP",
            "virtualIps": [{"type": "PUBLIC"}],
            **extra,
        }
    }


def meta(**presets: object) -> list[dict[str, object]]:
    return [{"key": key, "value": value} for key, value in presets.items()]


def create(region: RegionLoadBalancers, name: str = "web", **extra: object) -> LoadBalancer:
    return region.create(body(name, **extra))


def node(address: str = "10.0.0.1", port: int = 80, **extra: object) -> dict[str, object]:
    return {"address": address, "port": port, "condition": "ENABLED", **extra}


def status(region: RegionLoadBalancers, lb: LoadBalancer) -> str:
    return region.get(str(lb.id)).status


def code_of(call, *args) -> int:
    with pytest.raises(ClbError) as caught:
        call(*args)
    return caught.value.code


# Creation --------------------------------------------------------------------------


def test_a_plain_load_balancer_is_active_with_mimics_defaults(ord_, clock):
    lb = create(ord_)
    assert (lb.status, lb.port, lb.algorithm, lb.timeout) == ("ACTIVE", 80, "RANDOM", 30)
    assert lb.created == lb.updated == 1000.0
    assert [(v.type, v.ip_version) for v in lb.virtual_ips] == [
        ("PUBLIC", "IPV4"),
        ("PUBLIC", "IPV6"),
    ]
    assert lb.options["connectionLogging"] == {"enabled": False}


def test_the_default_port_follows_the_protocol(ord_):
    assert ord_.create(body(protocol="HTTPS")).port == 443  # type: ignore[arg-type]
    assert create(ord_, protocol="TCP").port == 80
    assert create(ord_, port="8080").port == 8080


def test_ids_and_virtual_ips_are_unique_across_tenants_and_regions(backend):
    lbs = [
        backend.region(tenant, region).create(body())
        for tenant in ("a", "b")
        for region in ("ORD", "DFW")
        for _ in range(50)
    ]
    assert len({lb.id for lb in lbs}) == len(lbs)
    addresses = [vip.address for lb in lbs for vip in lb.virtual_ips]
    assert len(set(addresses)) == len(addresses)


def test_servicenet_and_single_version_virtual_ips(ord_):
    lb = create(ord_, virtualIps=[{"type": "SERVICENET"}])
    assert [(v.type, v.ip_version) for v in lb.virtual_ips] == [("SERVICENET", "IPV4")]
    assert lb.virtual_ips[0].address.startswith("10.")
    lb6 = create(ord_, virtualIps=[{"type": "PUBLIC", "ipVersion": "IPV6"}])
    assert [v.ip_version for v in lb6.virtual_ips] == ["IPV6"]


def test_a_shared_virtual_ip_is_the_same_address(ord_, backend):
    first = create(ord_)
    shared = create(ord_, port=8080, virtualIps=[{"id": first.virtual_ips[0].id}])
    assert shared.virtual_ips[0].address == first.virtual_ips[0].address
    other_tenant = backend.region("t2", "ORD")
    assert code_of(other_tenant.create, body(virtualIps=[{"id": first.virtual_ips[0].id}])) == 400


def test_nodes_at_creation_get_ids_and_a_created_feed_entry(ord_):
    lb = create(ord_, nodes=[node("10.0.0.1"), node("10.0.0.2", weight=3, type="SECONDARY")])
    nodes = list(lb.nodes.values())
    assert [n.address for n in nodes] == ["10.0.0.1", "10.0.0.2"]
    assert (nodes[1].weight, nodes[1].type, nodes[1].status) == (3, "SECONDARY", "ONLINE")
    assert nodes[0].feed[0][0].startswith("Node successfully created with address: '10.0.0.1'")


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"loadBalancer": []},
        {"loadBalancer": {"protocol": "HTTP"}},
        {"loadBalancer": {"name": "a"}},
        {"loadBalancer": {"name": 7, "protocol": "HTTP"}},
        {"loadBalancer": {"name": "a", "protocol": "GOPHER"}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "port": 0}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "port": "eighty"}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "port": "²"}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "algorithm": "FASTEST"}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "timeout": 500}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": []}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "virtualIps": [{"type": "X"}]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": {}}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [{"address": "1.2.3.4"}]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node("not-an-ip")]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node(status="ONLINE")]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "nodes": [node(weight=0)]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": {"k": "v"}}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "metadata": [{"key": "k"}]}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "halfClosed": "yes"}},
        {"loadBalancer": {"name": "a", "protocol": "HTTP", "healthMonitor": {"delay": 1}}},
    ],
)
def test_bad_creates_are_400(ord_, bad):
    assert code_of(ord_.create, bad) == 400
    assert ord_.list_load_balancers() == []


def test_duplicate_or_too_many_nodes_at_creation_are_413(ord_):
    assert code_of(ord_.create, body(nodes=[node(), node()])) == 413
    too_many = [node(f"10.0.1.{i}") for i in range(NODE_LIMIT + 1)]
    assert code_of(ord_.create, body(nodes=too_many)) == 413


# Presets on the clock --------------------------------------------------------------


def test_lb_building_stays_build_until_its_seconds_have_passed(ord_, clock):
    lb = create(ord_, metadata=meta(lb_building=30))
    assert status(ord_, lb) == "BUILD"
    clock.advance(29.5)
    assert status(ord_, lb) == "BUILD"
    clock.advance(0.5)
    assert status(ord_, lb) == "ACTIVE"
    assert lb.updated == 1030.0  # the time the build ended, not the time it was read


@pytest.mark.parametrize("value", [0, ""])
def test_a_falsy_lb_building_means_ten_seconds_as_in_mimic(ord_, clock, value):
    lb = create(ord_, metadata=meta(lb_building=value))
    clock.advance(9)
    assert status(ord_, lb) == "BUILD"
    clock.advance(1)
    assert status(ord_, lb) == "ACTIVE"


def test_preset_values_may_be_numeric_strings_and_are_not_truncated(ord_, clock):
    lb = create(ord_, metadata=meta(lb_building="2.5"))
    clock.advance(2)
    assert status(ord_, lb) == "BUILD"  # Mimic's int() made this 2 s
    clock.advance(0.5)
    assert status(ord_, lb) == "ACTIVE"


@pytest.mark.parametrize("key", ["lb_building", "lb_pending_update", "lb_pending_delete"])
def test_preset_values_that_are_no_time_are_400(ord_, key):
    with pytest.raises(Invalid):
        create(ord_, metadata=meta(**{key: "soon"}))
    with pytest.raises(Invalid):
        create(ord_, metadata=meta(**{key: -1}))


def test_build_refuses_changes_with_422(ord_, clock):
    lb = create(ord_, metadata=meta(lb_building=10))
    with pytest.raises(ClbError) as caught:
        ord_.add_nodes(str(lb.id), {"nodes": [node()]})
    assert caught.value.code == 422
    assert caught.value.message == (
        f"Load Balancer '{lb.id}' has a status of 'BUILD' and is considered immutable."
    )
    assert code_of(ord_.delete, str(lb.id)) == 422
    clock.advance(10)
    assert len(ord_.add_nodes(str(lb.id), {"nodes": [node()]})) == 1


def test_lb_pending_update_after_each_change(ord_, clock):
    lb = create(ord_, metadata=meta(lb_pending_update=20))
    lb_id = str(lb.id)
    [added] = ord_.add_nodes(lb_id, {"nodes": [node()]})
    assert status(ord_, lb) == "PENDING-UPDATE"
    assert code_of(ord_.add_nodes, lb_id, {"nodes": [node("10.0.0.2")]}) == 422
    clock.advance(20)
    assert status(ord_, lb) == "ACTIVE"
    ord_.update_node(lb_id, str(added.id), {"node": {"weight": 5}})
    assert status(ord_, lb) == "PENDING-UPDATE"
    clock.advance(20)
    ord_.delete_node(lb_id, str(added.id))
    assert status(ord_, lb) == "PENDING-UPDATE"
    clock.advance(20)
    ord_.set_health_monitor(lb_id, {"healthMonitor": {"type": "CONNECT"}})
    assert status(ord_, lb) == "PENDING-UPDATE"


def test_lb_pending_delete_then_deleted_then_gone(ord_, clock):
    lb = create(ord_, metadata=meta(lb_pending_delete=5), nodes=[node()])
    lb_id = str(lb.id)
    ord_.delete(lb_id)
    assert status(ord_, lb) == "PENDING-DELETE"
    with pytest.raises(ClbError) as caught:
        ord_.delete(lb_id)
    assert (caught.value.code, caught.value.message) == (
        400,
        f"Must provide valid load balancers: {lb.id} are immutable and could not be processed.",
    )
    clock.advance(5)
    assert status(ord_, lb) == "DELETED"
    assert code_of(ord_.list_nodes, lb_id) == 410
    assert code_of(ord_.get_health_monitor, lb_id) == 410
    assert code_of(ord_.add_nodes, lb_id, {"nodes": [node("10.0.0.9")]}) == 422
    assert code_of(ord_.delete, lb_id) == 400
    assert [x.status for x in ord_.list_load_balancers()] == ["DELETED"]
    clock.advance(DELETED_SECONDS)
    assert code_of(ord_.get, lb_id) == 404
    assert ord_.list_load_balancers() == []


def test_a_plain_delete_is_deleted_at_once_then_gone_after_an_hour(ord_, clock):
    lb = create(ord_)
    ord_.delete(str(lb.id))
    assert status(ord_, lb) == "DELETED"
    clock.advance(DELETED_SECONDS - 1)
    assert status(ord_, lb) == "DELETED"
    clock.advance(1)
    assert code_of(ord_.get, str(lb.id)) == 404


def test_lb_error_state_after_the_first_change_then_only_delete(ord_, clock):
    lb = create(ord_, metadata=meta(lb_error_state="yes", lb_pending_update=10))
    lb_id = str(lb.id)
    assert status(ord_, lb) == "ACTIVE"
    ord_.add_nodes(lb_id, {"nodes": [node()]})
    assert status(ord_, lb) == "ERROR"  # lb_error_state wins over lb_pending_update
    clock.advance(100)
    assert code_of(ord_.add_nodes, lb_id, {"nodes": [node("10.0.0.2")]}) == 422
    ord_.delete(lb_id)
    assert status(ord_, lb) == "DELETED"


def test_lb_pending_delete_is_not_applied_on_node_changes(ord_):
    # Mimic's last-wins checks put such a load balancer in PENDING-DELETE on a node add.
    lb = create(ord_, metadata=meta(lb_pending_delete=10))
    ord_.add_nodes(str(lb.id), {"nodes": [node()]})
    assert status(ord_, lb) == "ACTIVE"


def test_compile_presets():
    presets = compile_presets({"lb_building": 3, "lb_pending_update": "4", "lb_pending_delete": 0})
    assert presets.creation is not None and presets.creation.parameters == {"duration": 3.0}
    assert presets.change is not None and presets.change.name == "pending-update"
    assert presets.deletion is not None and presets.deletion.parameters == {"duration": 10.0}
    assert compile_presets({}) == compile_presets({"unrelated": "x"})


# Behaviors ---------------------------------------------------------------------------


def test_fail_building_error_and_false_negative_behaviors(ord_, clock):
    ord_.registry.add(
        {"name": "fail", "parameters": {"code": 503}, "criteria": [{"loadbalancer_name": "f"}]}
    )
    ord_.registry.add(
        {
            "name": "building",
            "parameters": {"duration": 15},
            "criteria": [{"loadbalancer_name": "slow.*"}],
        }
    )
    ord_.registry.add({"name": "error", "criteria": [{"metadata": {"env": "broken"}}]})
    ord_.registry.add({"name": "false-negative", "criteria": [{"loadbalancer_name": "liar"}]})
    with pytest.raises(ClbError) as caught:
        create(ord_, "fail-me")
    assert caught.value.code == 503
    assert ord_.list_load_balancers() == []
    slow = create(ord_, "slow-1")
    assert status(ord_, slow) == "BUILD"
    clock.advance(15)
    assert status(ord_, slow) == "ACTIVE"
    broken = create(ord_, "x", metadata=[{"key": "env", "value": "broken"}])
    assert broken.status == "ERROR"
    assert code_of(create, ord_, "liar") == 500
    assert [lb.name for lb in ord_.list_load_balancers()] == ["slow-1", "x", "liar"]


def test_metadata_presets_win_over_behaviors(ord_):
    ord_.registry.add({"name": "fail", "criteria": [{"loadbalancer_name": ".*"}]})
    lb = create(ord_, metadata=meta(lb_building=5))
    assert lb.status == "BUILD"


# Nodes -------------------------------------------------------------------------------


def test_add_nodes_413_for_duplicates_and_the_limit(ord_):
    lb = create(ord_, nodes=[node()])
    lb_id = str(lb.id)
    with pytest.raises(ClbError) as caught:
        ord_.add_nodes(lb_id, {"nodes": [node()]})
    assert caught.value.code == 413
    assert caught.value.message.startswith("Duplicate nodes detected.")
    assert code_of(ord_.add_nodes, lb_id, {"nodes": [node("10.0.0.5"), node("10.0.0.5")]}) == 413
    more = [node(f"10.0.2.{i}") for i in range(NODE_LIMIT)]
    with pytest.raises(ClbError) as caught:
        ord_.add_nodes(lb_id, {"nodes": more})
    assert caught.value.message == "Nodes must not exceed 25 per load balancer."
    ord_.add_nodes(lb_id, {"nodes": more[: NODE_LIMIT - 1]})
    assert len(ord_.list_nodes(lb_id)) == NODE_LIMIT


def test_nodes_start_offline_under_a_health_monitor(ord_):
    lb = create(ord_)
    ord_.set_health_monitor(str(lb.id), {"healthMonitor": {"type": "HTTP", "path": "/"}})
    [added] = ord_.add_nodes(str(lb.id), {"nodes": [node()]})
    assert added.status == "OFFLINE"
    assert ord_.get_health_monitor(str(lb.id)) == {"type": "HTTP", "path": "/"}
    ord_.delete_health_monitor(str(lb.id))
    assert ord_.get_health_monitor(str(lb.id)) == {}


def test_update_node_and_its_feed(ord_, clock):
    lb = create(ord_, nodes=[node()])
    node_id = str(next(iter(lb.nodes)))
    clock.advance(3)
    updated = ord_.update_node(str(lb.id), node_id, {"node": {"condition": "DRAINING"}})
    assert updated.condition == "DRAINING"
    summary, at = updated.feed[-1]
    assert summary == (
        "Node successfully updated with address: '10.0.0.1', port: '80', weight: '1', "
        "condition: 'DRAINING'"
    )
    assert at == 1003.0


@pytest.mark.parametrize(
    ("change", "kind", "messages"),
    [
        ({"status": "ONLINE"}, "schema", None),
        ({"bogus": 1}, "schema", None),
        ({"condition": "SLEEPY"}, "schema", None),
        ({"weight": "heavy"}, "schema", None),
        (
            {"weight": 500},
            "validation",
            ["Node weight is invalid. Range is 1-100. Please specify a valid weight."],
        ),
        (
            {"address": "1.1.1.1", "port": 1, "id": 3},
            "validation",
            [
                "Node ip field cannot be modified.",
                "Port field cannot be modified.",
                "Node id field cannot be modified.",
            ],
        ),
    ],
)
def test_node_update_errors_are_clbs(change, kind, messages):
    with pytest.raises(ClbError) as caught:
        parse_node_update({"node": change})
    assert (caught.value.code, caught.value.kind) == (400, kind)
    if messages is not None:
        assert caught.value.messages == messages


def test_bulk_delete_rules(ord_):
    lb = create(ord_, nodes=[node(f"10.0.3.{i}") for i in range(12)])
    lb_id = str(lb.id)
    ids = [str(i) for i in lb.nodes]
    assert code_of(ord_.delete_nodes, lb_id, []) == 400
    with pytest.raises(ClbError) as caught:
        ord_.delete_nodes(lb_id, [ids[0], "x", "7", "²"])
    assert caught.value.messages == ["Node ids 7,x,² are not a part of your loadbalancer"]
    with pytest.raises(ClbError) as caught:
        ord_.delete_nodes(lb_id, ids[: BATCH_DELETE_LIMIT + 1])
    assert "BATCH_DELETE_LIMIT of 10" in caught.value.messages[0]
    ord_.delete_nodes(lb_id, ids[:2])
    assert len(ord_.list_nodes(lb_id)) == 10


def test_bulk_delete_while_not_active_is_422_not_active(ord_):
    lb = create(ord_, metadata=meta(lb_building=1), nodes=[node()])
    with pytest.raises(ClbError) as caught:
        ord_.delete_nodes(str(lb.id), [str(next(iter(lb.nodes)))])
    assert (caught.value.code, caught.value.message) == (422, "LoadBalancer is not ACTIVE")


def test_unknown_ids_are_404(ord_, backend):
    lb = create(ord_, nodes=[node()])
    for lb_id in ("999999", "abc", "", "²", "-1"):
        assert code_of(ord_.get, lb_id) == 404
    assert code_of(ord_.get_node, str(lb.id), "12") == 404
    # Another tenant or region does not see it.
    assert code_of(backend.region("t2", "ORD").get, str(lb.id)) == 404
    assert code_of(backend.region("t1", "DFW").get, str(lb.id)) == 404


# Control plane -----------------------------------------------------------------------


def test_control_statuses_stay_until_changed(ord_, clock):
    lb = create(ord_, metadata=meta(lb_building=10))
    ord_.set_attributes(str(lb.id), {"status": "PENDING_UPDATE"})
    clock.advance(100)
    assert status(ord_, lb) == "PENDING_UPDATE"  # the build's timer was dropped
    assert code_of(ord_.add_nodes, str(lb.id), {"nodes": [node()]}) == 422
    ord_.set_attributes(str(lb.id), {"status": "ACTIVE"})
    assert status(ord_, lb) == "ACTIVE"
    ord_.set_attributes(str(lb.id), {"status": "PENDING_DELETE"})
    assert code_of(ord_.delete, str(lb.id)) == 400


def test_control_errors(ord_):
    lb = create(ord_, nodes=[node()])
    lb_id = str(lb.id)
    with pytest.raises(ClbError) as caught:
        ord_.set_attributes(lb_id, {"status": "BOGUS"})
    assert caught.value.message == (
        "Unsupported status BOGUS not one of "
        "['ACTIVE', 'ERROR', 'PENDING_DELETE', 'PENDING_UPDATE']"
    )
    with pytest.raises(ClbError) as caught:
        ord_.set_attributes(lb_id, {"name": "x"})
    assert caught.value.message == "Attempt to alter a bad attribute"
    with pytest.raises(ClbError) as caught:
        ord_.require("424242")
    assert caught.value.message == "Tenant t1 doesn't own load balancer 424242"
    with pytest.raises(ClbError) as caught:
        ord_.require(lb_id, "5")
    assert caught.value.message == f"Load balancer {lb_id} on tenant t1 does not have node 5"
    node_id = str(next(iter(lb.nodes)))
    assert code_of(ord_.set_node_status, lb_id, node_id, {"status": "MAYBE"}) == 400
    ord_.set_node_status(lb_id, node_id, {"status": "OFFLINE"})
    assert ord_.get_node(lb_id, node_id).status == "OFFLINE"


def test_reset_forgets_everything(backend, ord_):
    create(ord_)
    backend.reset()
    assert backend.region("t1", "ORD").list_load_balancers() == []


@pytest.mark.parametrize(
    "network", ["198.18.0.0/15", "10.190.0.0/16", "2001:db8:1b::/64", "2001:db8:0:1::/64"]
)
def test_address_pool_text_is_ipaddress_text(network):
    import ipaddress

    from simulacra.cloud.loadbalancer.model import AddressPool

    pool = AddressPool(network, "test")
    net = ipaddress.ip_network(network)
    indexes = [*range(1, 70_000, 7), 65_535, 65_536, 65_537, 131_072, 131_073, 2**16 * 5 + 1]
    for index in indexes:
        if index < net.num_addresses - 1:
            assert pool.text(int(net.network_address) + index) == str(net[index]), index
    # take() hands out the network's addresses in order, each once.
    fresh = AddressPool(network, "test")
    assert [fresh.take() for _ in range(3)] == [str(net[1]), str(net[2]), str(net[3])]


def test_canonical_address_is_what_ipaddress_writes():
    rng = random.Random(11)
    texts = [
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4\n",
        "\u0661.2.3.4",  # an Arabic-Indic digit one: a digit, but not ASCII
        "1.2.3.+4",
        "::1",
        "2001:DB8::1",
        "2001:db8:0:0:0:0:0:1",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
        "",
        "host",
    ]
    texts += [".".join(str(rng.randrange(300)) for _ in range(4)) for _ in range(3000)]
    octets = ["0", "00", "7", "010", "99", "199", "249", "255"]
    texts += [".".join(rng.choice(octets) for _ in "abcd") for _ in range(500)]
    for text in texts:
        try:
            expected: str | type = str(ipaddress.ip_address(text))
        except ValueError:
            expected = ValueError
        try:
            got: str | type = canonical_address(text)
        except ValueError:
            got = ValueError
        assert got == expected, text
