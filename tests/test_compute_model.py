"""Unit tests of the pure compute model, on a virtual clock."""

from __future__ import annotations

import ipaddress
import itertools
import random
from typing import Any

import pytest

from simulacra.clock import VirtualClock
from simulacra.cloud.compute import catalog_data
from simulacra.cloud.compute.faults import Fault, creation_preset, deletion_preset
from simulacra.cloud.compute.model import ComputeBackend, RegionCompute, Server
from simulacra.errors import AlreadyExists, Conflict, Invalid, NotFound


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1000.0)


@pytest.fixture
def backend(clock: VirtualClock) -> ComputeBackend:
    return ComputeBackend(clock, random.Random(7))


@pytest.fixture
def ord_(backend: ComputeBackend) -> RegionCompute:
    return backend.region("t1", "ORD")


def body(name: str = "web", **extra: object) -> dict[str, object]:
    return {"server": {"name": name, "imageRef": "img", "flavorRef": "2", **extra}}


def create(region: RegionCompute, name: str = "web", **extra: object) -> Server:
    return region.create_server(body(name, **extra))


# Creation and presets -----------------------------------------------------------------


def test_a_plain_server_is_active_at_once_with_clock_timestamps(ord_, clock):
    server = create(ord_)
    assert server.status == "ACTIVE"
    assert server.created == server.updated == 1000.0
    assert server.disk_config == "AUTO"
    assert len(server.admin_pass) == 12
    assert ord_.get_server(server.id) is server


def test_server_building_stays_build_until_its_seconds_have_passed(ord_, clock):
    # The README's example gives the seconds as a number; Mimic refused it.
    server = create(ord_, metadata={"server_building": 120})
    assert server.metadata == {"server_building": "120"}
    assert ord_.get_server(server.id).status == "BUILD"
    clock.advance(60)
    assert ord_.get_server(server.id).progress(clock.seconds()) == 50
    clock.advance(59.5)
    assert ord_.get_server(server.id).status == "BUILD"
    clock.advance(0.5)
    server = ord_.get_server(server.id)
    assert server.status == "ACTIVE"
    assert server.progress(clock.seconds()) == 100


def test_a_transition_is_dated_when_it_fell_due_not_when_it_was_read(ord_, clock):
    server = create(ord_, metadata={"server_building": "30"})
    clock.advance(500)
    assert ord_.get_server(server.id).updated == 1030.0
    page = ord_.list_servers(changes_since="1970-01-01T00:17:10Z")  # 1030 s
    assert [s.id for s in page.servers] == [server.id]
    assert ord_.list_servers(changes_since="1970-01-01T00:17:11Z").servers == []


def test_create_server_failure_fails_without_creating(ord_):
    failure = '{"message": "no capacity", "code": 503}'
    with pytest.raises(Fault) as caught:
        create(ord_, metadata={"create_server_failure": failure})
    assert (caught.value.code, caught.value.kind, caught.value.message) == (
        503,
        "computeFault",
        "no capacity",
    )
    assert ord_.list_servers().servers == []


def test_create_server_failure_accepts_an_object_and_a_string_type(ord_):
    with pytest.raises(Fault) as caught:
        create(
            ord_,
            metadata={"create_server_failure": {"message": "raw", "code": 418, "type": "string"}},
        )
    assert (caught.value.code, caught.value.kind) == (418, "string")


def test_server_error_preset_creates_the_server_in_error(ord_):
    assert create(ord_, metadata={"server_error": "1"}).status == "ERROR"


@pytest.mark.parametrize(
    "metadata",
    [
        {"server_building": "soon"},
        {"server_building": -1},
        {"create_server_failure": "not json"},
        {"create_server_failure": '{"code": 200}'},
        {"delete_server_failure": '{"code": 500, "times": -1}'},
        {"delete_server_failure": "[]"},
    ],
)
def test_bad_preset_values_are_refused_before_anything_happens(ord_, metadata):
    with pytest.raises(Invalid):
        create(ord_, metadata=metadata)
    assert ord_.list_servers().servers == []


def test_presets_compile_to_the_same_outcomes_as_behaviors():
    assert creation_preset({"server_building": "2.5"}).name == "build"
    assert creation_preset({"server_building": "2.5"}).parameters == {"duration": 2.5}
    assert creation_preset({"server_error": "x"}).name == "error"
    both = {"server_error": "x", "create_server_failure": '{"code": 500, "message": "m"}'}
    assert creation_preset(both).name == "fail"  # create_server_failure is checked first
    assert creation_preset({"other": "x"}) is None
    outcome, times = deletion_preset({"delete_server_failure": '{"code": 409, "times": 2}'})
    assert (outcome.name, outcome.parameters["code"], times) == ("fail", 409, 2)


def test_metadata_presets_take_precedence_over_behaviors(ord_):
    ord_.registry.add({"name": "error", "criteria": []})
    server = create(ord_, metadata={"server_building": "10"})
    assert server.status == "BUILD"
    assert create(ord_).status == "ERROR"


# Behaviors ------------------------------------------------------------------------------


def test_fail_behavior_matches_on_name_and_uses_default_fault(ord_):
    ord_.registry.add({"name": "fail", "criteria": [{"server_name": "doomed-.*"}]})
    with pytest.raises(Fault) as caught:
        create(ord_, "doomed-1")
    assert (caught.value.code, caught.value.kind) == (500, "computeFault")
    assert "erred" in caught.value.message
    assert create(ord_, "fine").status == "ACTIVE"
    assert [s.name for s in ord_.list_servers().servers] == ["fine"]


def test_false_negative_reports_failure_but_creates(ord_):
    ord_.registry.add(
        {"name": "false-negative", "parameters": {"code": 502}, "criteria": [{"server_name": "fn"}]}
    )
    with pytest.raises(Fault) as caught:
        create(ord_, "fn")
    assert caught.value.code == 502
    assert [(s.name, s.status) for s in ord_.list_servers().servers] == [("fn", "ACTIVE")]


def test_build_error_and_active_then_error_behaviors(ord_, clock):
    ord_.registry.add(
        {"name": "build", "parameters": {"duration": 5}, "criteria": [{"server_name": "b"}]}
    )
    ord_.registry.add({"name": "error", "criteria": [{"metadata": {"role": "db"}}]})
    ord_.registry.add(
        {
            "name": "active-then-error",
            "parameters": {"duration": 8},
            "criteria": [{"server_name": "ate"}],
        }
    )
    built, errored, later = (
        create(ord_, "b"),
        create(ord_, "x", metadata={"role": "db"}),
        create(ord_, "ate"),
    )
    assert (built.status, errored.status, later.status) == ("BUILD", "ERROR", "ACTIVE")
    clock.advance(5)
    assert ord_.get_server(built.id).status == "ACTIVE"
    assert ord_.get_server(later.id).status == "ACTIVE"
    clock.advance(3)
    assert ord_.get_server(later.id).status == "ERROR"


def test_sequence_cycles_through_its_steps(ord_):
    ord_.registry.add(
        {
            "name": "sequence",
            "parameters": {
                "behaviors": [
                    {"name": "fail", "parameters": {"code": 503}},
                    {"name": "default"},
                    {"name": "error"},
                ]
            },
            "criteria": [],
        }
    )
    with pytest.raises(Fault):
        create(ord_, "a")
    assert create(ord_, "b").status == "ACTIVE"
    assert create(ord_, "c").status == "ERROR"
    with pytest.raises(Fault):
        create(ord_, "d")


def test_behaviors_are_per_tenant_and_region(backend):
    backend.region("t1", "ORD").registry.add({"name": "error", "criteria": []})
    assert create(backend.region("t1", "ORD")).status == "ERROR"
    assert create(backend.region("t1", "DFW")).status == "ACTIVE"
    assert create(backend.region("t2", "ORD")).status == "ACTIVE"


def test_build_behavior_needs_a_duration(ord_):
    with pytest.raises(Invalid):
        ord_.registry.add({"name": "build", "criteria": []})


# Deletion -------------------------------------------------------------------------------


def test_delete_server_failure_honours_its_code_for_n_deletes(ord_):
    server = create(ord_, metadata={"delete_server_failure": '{"code": 503, "times": 2}'})
    for _ in range(2):
        with pytest.raises(Fault) as caught:
            ord_.delete_server(server.id)
        assert caught.value.code == 503
    ord_.delete_server(server.id)
    with pytest.raises(NotFound):
        ord_.get_server(server.id)
    with pytest.raises(NotFound):
        ord_.delete_server(server.id)


def test_a_new_delete_server_failure_value_starts_a_new_count(ord_):
    server = create(ord_, metadata={"delete_server_failure": '{"code": 500, "times": 1}'})
    with pytest.raises(Fault):
        ord_.delete_server(server.id)
    ord_.set_metadata_item(
        server.id, "delete_server_failure", {"meta": {"delete_server_failure": '{"times": 1}'}}
    )
    with pytest.raises(Fault) as caught:
        ord_.delete_server(server.id)
    assert caught.value.code == 500  # the default code
    ord_.delete_server(server.id)


def test_deleted_servers_show_only_with_changes_since(ord_, clock):
    kept, gone = create(ord_, "kept"), create(ord_, "gone")
    clock.advance(10)
    ord_.delete_server(gone.id)
    assert [s.id for s in ord_.list_servers().servers] == [kept.id]
    changed = ord_.list_servers(changes_since="1970-01-01T00:16:50Z").servers  # 1010 s
    assert [(s.id, s.status) for s in changed] == [(gone.id, "DELETED")]


def test_a_deleted_building_server_does_not_come_back(ord_, clock):
    server = create(ord_, metadata={"server_building": "5"})
    ord_.delete_server(server.id)
    clock.advance(10)
    with pytest.raises(NotFound):
        ord_.get_server(server.id)


# Actions and the state machine --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "seconds"), [("HARD", "HARD_REBOOT", 6), ("soft", "REBOOT", 3)]
)
def test_reboot_then_active(ord_, clock, kind, status, seconds):
    server = create(ord_)
    ord_.perform_action(server.id, {"reboot": {"type": kind}})
    clock.advance(seconds - 0.5)
    assert ord_.get_server(server.id).status == status
    clock.advance(0.5)
    assert ord_.get_server(server.id).status == "ACTIVE"


def test_rebuild_changes_image_and_takes_five_seconds(ord_, clock):
    server = create(ord_)
    result = ord_.perform_action(
        server.id, {"rebuild": {"imageRef": "img2", "name": "renamed", "adminPass": "pw"}}
    )
    assert (result.server.status, result.admin_pass) == ("REBUILD", "pw")
    assert (server.image_ref, server.name) == ("img2", "renamed")
    clock.advance(5)
    assert ord_.get_server(server.id).status == "ACTIVE"


def test_resize_confirm_and_revert(ord_):
    server = create(ord_)
    ord_.perform_action(server.id, {"resize": {"flavorRef": "3"}})
    assert (server.status, server.flavor_ref) == ("VERIFY_RESIZE", "3")
    ord_.perform_action(server.id, {"revertResize": None})
    assert (server.status, server.flavor_ref) == ("ACTIVE", "2")
    ord_.perform_action(server.id, {"resize": {"flavorRef": 4}})
    ord_.perform_action(server.id, {"confirmResize": None})
    assert (server.status, server.flavor_ref) == ("ACTIVE", "4")
    with pytest.raises(Conflict, match="confirmResize"):
        ord_.perform_action(server.id, {"confirmResize": None})


def test_an_explicit_change_cancels_a_pending_timer(ord_, clock):
    # Mimic's reboot timer fired anyway and turned a VERIFY_RESIZE server ACTIVE.
    server = create(ord_)
    ord_.perform_action(server.id, {"reboot": {"type": "HARD"}})
    ord_.set_statuses({"status": {server.id: "ACTIVE"}})
    ord_.perform_action(server.id, {"resize": {"flavorRef": "3"}})
    clock.advance(60)
    assert ord_.get_server(server.id).status == "VERIFY_RESIZE"


def test_rescue_unrescue_password_stop_start(ord_):
    server = create(ord_)
    assert ord_.perform_action(server.id, {"rescue": None}).admin_pass
    assert server.status == "RESCUE"
    with pytest.raises(Conflict):
        ord_.perform_action(server.id, {"rescue": {"adminPass": "x"}})
    with pytest.raises(Conflict):
        ord_.perform_action(server.id, {"changePassword": {"adminPass": "new"}})
    ord_.perform_action(server.id, {"unrescue": None})
    ord_.perform_action(server.id, {"changePassword": {"adminPass": "new"}})
    assert server.admin_pass == "new"
    ord_.perform_action(server.id, {"os-stop": None})
    assert server.status == "SHUTOFF"
    ord_.perform_action(server.id, {"os-start": None})
    assert server.status == "ACTIVE"


def test_actions_on_a_building_server_conflict(ord_):
    server = create(ord_, metadata={"server_building": "100"})
    for action in (
        {"reboot": {"type": "SOFT"}},
        {"rebuild": {"imageRef": "img"}},
        {"resize": {"flavorRef": "3"}},
        {"rescue": None},
        {"createImage": {"name": "snap"}},
    ):
        with pytest.raises(Conflict, match="building"):
            ord_.perform_action(server.id, action)


@pytest.mark.parametrize(
    "action",
    [
        {},
        {"fly": {}},
        {"reboot": None},
        {"reboot": {"type": "GENTLE"}},
        {"reboot": "HARD"},
        {"resize": {}},
        {"resize": {"flavorRef": "8888"}},
        {"rebuild": {}},
        {"rebuild": {"imageRef": "INVALID-IMAGE-ID"}},
        {"rebuild": {"imageRef": "img", "metadata": {"a": 1}}},
        {"changePassword": {}},
        {"changePassword": {"adminPass": 5}},
        {"createImage": {}},
    ],
)
def test_malformed_actions_are_invalid(ord_, action):
    server = create(ord_)
    with pytest.raises(Invalid):
        ord_.perform_action(server.id, action)
    assert server.status == "ACTIVE"


def test_create_image_makes_a_snapshot_of_the_server_image(ord_):
    base = catalog_data.images_in("ORD")[0]
    server = create(ord_)
    server.image_ref = base.id
    snapshot = ord_.perform_action(
        server.id, {"createImage": {"name": "snap", "metadata": {"k": "v"}}}
    ).image
    assert snapshot is not None
    assert ord_.get_image(snapshot.id) is snapshot
    assert snapshot.metadata["image_type"] == "snapshot"
    assert snapshot.metadata["os_type"] == base.metadata["os_type"]
    assert snapshot.metadata["k"] == "v"
    assert snapshot in ord_.list_images()


def test_status_override_is_all_or_nothing(ord_):
    a, b = create(ord_, "a"), create(ord_, "b")
    with pytest.raises(Invalid):
        ord_.set_statuses({"status": {a.id: "ERROR", "nope": "ERROR"}})
    assert (a.status, b.status) == ("ACTIVE", "ACTIVE")
    ord_.set_statuses({"status": {a.id: "ERROR", b.id: "SHUTOFF"}})
    assert (a.status, b.status) == ("ERROR", "SHUTOFF")
    for bad in ({}, {"status": []}, {"status": {a.id: 3}}, {"status": {}, "name": {}}):
        with pytest.raises(Invalid):
            ord_.set_statuses(bad)


# Listing ------------------------------------------------------------------------------------


def test_list_filters_and_pages_like_mimic(ord_):
    servers = [create(ord_, name) for name in ("web-1", "db-1", "web-2", "web-3")]
    ids = [s.id for s in servers]
    assert [s.name for s in ord_.list_servers(name="web").servers] == ["web-1", "web-2", "web-3"]
    page = ord_.list_servers(limit="2")
    assert [s.id for s in page.servers] == ids[:2]
    assert page.next_marker == ids[1]
    page = ord_.list_servers(limit="2", marker=ids[1])
    assert [s.id for s in page.servers] == ids[2:]
    assert page.next_marker == ids[3]
    assert ord_.list_servers(marker=ids[3]).servers == []
    assert ord_.list_servers(limit="0").next_marker is None
    # A marker need not match the name filter (Mimic, verified against Rackspace).
    assert [s.name for s in ord_.list_servers(name="web", marker=ids[1]).servers] == [
        "web-2",
        "web-3",
    ]
    assert ord_.list_servers(marker=ids[1], limit="5").next_marker is None


@pytest.mark.parametrize(
    "query",
    [{"limit": "x"}, {"limit": "-1"}, {"marker": "nope"}, {"changes_since": "yesterday"}],
)
def test_bad_list_queries_are_invalid(ord_, query):
    create(ord_)
    with pytest.raises(Invalid):
        ord_.list_servers(**query)


def test_list_filters_by_status(ord_):
    create(ord_, "ok")
    create(ord_, "bad", metadata={"server_error": "1"})
    assert [s.name for s in ord_.list_servers(status="error").servers] == ["bad"]


# Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"server": None},
        {"server": []},
        {"server": {"imageRef": "i", "flavorRef": "2"}},
        {"server": {"name": "", "imageRef": "i", "flavorRef": "2"}},
        {"server": {"name": 5, "imageRef": "i", "flavorRef": "2"}},
        {"server": {"name": "n", "imageRef": "i"}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": True}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": {}}},
        {"server": {"name": "n", "flavorRef": "2"}},
        {"server": {"name": "n", "imageRef": ["i"], "flavorRef": "2"}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "metadata": []}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "metadata": {"a": 1}}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "key_name": 3}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "OS-DCF:diskConfig": "X"}},
        {"server": {"name": "n", "imageRef": "INVALID-IMAGE-ID", "flavorRef": "2"}},
        {"server": {"name": "n", "imageRef": "my-imageZ", "flavorRef": "2"}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": "INVALID-FLAVOR-ID"}},
        {"server": {"name": "n", "imageRef": "i", "flavorRef": -4}},
    ],
)
def test_bad_create_bodies_are_invalid(ord_, document):
    with pytest.raises(Invalid):
        ord_.create_server(document)
    assert ord_.list_servers().servers == []


def test_boot_from_volume_needs_no_image(ord_):
    server = ord_.create_server(
        {"server": {"name": "vol", "flavorRef": "2", "block_device_mapping_v2": [{}]}}
    )
    assert server.image_ref == ""
    assert ord_.create_server({"server": {"name": "v2", "imageRef": "", "flavorRef": "2"}})


def test_too_many_metadata_items_are_forbidden(ord_):
    with pytest.raises(Fault) as caught:
        create(ord_, metadata={f"k{i}": "v" for i in range(41)})
    assert (caught.value.code, caught.value.kind) == (403, "forbidden")
    server = create(ord_, metadata={f"k{i}": "v" for i in range(40)})
    with pytest.raises(Fault):
        ord_.set_metadata_item(server.id, "k40", {"meta": {"k40": "v"}})
    ord_.set_metadata_item(server.id, "k0", {"meta": {"k0": "changed"}})  # replacing is fine
    with pytest.raises(Fault):
        ord_.update_metadata(server.id, {"metadata": {"new": "v"}})


def test_metadata_items_and_replacement(ord_, clock):
    server = create(ord_, metadata={"a": "1"})
    clock.advance(3)
    assert ord_.set_metadata_item(server.id, "b", {"meta": {"b": "2"}}) == "2"
    assert server.updated == 1003.0
    assert ord_.get_metadata_item(server.id, "b") == "2"
    assert ord_.update_metadata(server.id, {"metadata": {"c": "3"}}) == {
        "a": "1",
        "b": "2",
        "c": "3",
    }
    ord_.delete_metadata_item(server.id, "a")
    with pytest.raises(NotFound):
        ord_.get_metadata_item(server.id, "a")
    assert ord_.replace_metadata(server.id, {"metadata": {"z": "9"}}) == {"z": "9"}
    for bad in ({}, {"meta": "x"}, {"meta": {"b": "1", "c": "2"}}, {"meta": {"other": "1"}}):
        with pytest.raises(Invalid):
            ord_.set_metadata_item(server.id, "b", bad)
    for bad in ({}, {"metadata": None}, {"metadata": {"a": None}}):
        with pytest.raises(Invalid):
            ord_.replace_metadata(server.id, bad)
    with pytest.raises(NotFound, match="Server does not exist"):
        ord_.get_metadata("nope")


# Uniqueness, regions, catalog --------------------------------------------------------------


def test_ids_and_addresses_are_unique_per_tenant_even_when_the_rng_repeats(backend):
    ord_, dfw = backend.region("t1", "ORD"), backend.region("t1", "DFW")
    backend.rng.seed(42)
    first = create(ord_)
    backend.rng.seed(42)  # the very same draws again
    second = create(dfw)
    assert first.id != second.id
    addresses = [a for s in (first, second) for a in (s.private_ipv4, s.public_ipv4, s.public_ipv6)]
    assert len(set(addresses)) == 6
    assert ipaddress.ip_address(second.public_ipv6).version == 6


def test_many_servers_have_distinct_ipv6(ord_):
    servers = [create(ord_, f"s{i}") for i in range(200)]
    assert len({s.public_ipv6 for s in servers}) == 200
    assert len({s.public_ipv4 for s in servers}) == 200
    assert len({s.id for s in servers}) == 200


def test_a_region_lists_its_servers_in_creation_order_across_id_pages(backend):
    """The ids are kept SERVER_ID_PAGE to a page, in creation order, a deleted server in its
    place; a region lists only its own."""
    from simulacra.cloud.compute.model import SERVER_ID_PAGE

    ord_, dfw = backend.region("t1", "ORD"), backend.region("t1", "DFW")
    count = 2 * SERVER_ID_PAGE + 6
    made = [create(ord_, f"s{i}").id for i in range(count)]
    elsewhere = create(dfw, "d").id
    assert [s.id for s in ord_.list_servers().servers] == made
    assert [s.id for s in dfw.list_servers().servers] == [elsewhere]
    pages = {k: v for k, v in backend.tenants_server_id_pages.items() if k[:2] == ("t1", "ORD")}
    assert [len(pages[("t1", "ORD", n)]) for n in range(3)] == [SERVER_ID_PAGE] * 2 + [6]
    ord_.delete_server(made[0])  # a deleted server keeps its place (changes-since shows it)
    assert [s.id for s in ord_.list_servers().servers] == made[1:]
    shown = ord_.list_servers(changes_since="1970-01-01T00:00:00Z").servers
    assert [s.id for s in shown] == made
    assert ord_.limits()["totalInstancesUsed"] == count - 1


def test_a_page_of_server_ids_numbers_its_servers_addresses_from_a_block_of_its_own(backend):
    """A create changes its server and its page of ids, and its tenant's state only when it
    starts a page, which takes the tenant's next block of SERVER_ID_PAGE address numbers:
    the k-th server of a page has number block * SERVER_ID_PAGE + k, so servers of two
    regions never share an address, however their creates interleave. A tenant pickled with
    the counts an earlier version kept (--shared-cloud state) loads with its numbers left
    behind, and goes on with new addresses (and keypair ids)."""
    import pickle

    from simulacra.cloud.compute.model import SERVER_ID_PAGE, TenantCompute

    ord_, dfw = backend.region("t1", "ORD"), backend.region("t1", "DFW")
    tenant = backend.tenants["t1"]
    assert ord_.create_keypair({"keypair": {"name": "k1"}}).id == 1
    made = []
    for i in range(SERVER_ID_PAGE + 3):
        before = pickle.dumps((sorted(vars(ord_)), ord_.page_blocks, tenant.address_blocks))
        made.append(create(ord_, f"s{i}"))
        after = pickle.dumps((sorted(vars(ord_)), ord_.page_blocks, tenant.address_blocks))
        assert (before != after) is (i % SERVER_ID_PAGE == 0)  # a new page, or nothing
        if i == 5:
            made.append(create(dfw, "d"))  # a block of DFW's own between two of ORD's
    assert (ord_.page_blocks, dfw.page_blocks, tenant.address_blocks) == ([0, 2], [1], 3)
    numbers = [*range(SERVER_ID_PAGE), 2 * SERVER_ID_PAGE, 2 * SERVER_ID_PAGE + 1]
    numbers += [2 * SERVER_ID_PAGE + 2]
    numbers.insert(6, SERVER_ID_PAGE)  # DFW's server, the first of block 1
    assert [(s.private_ipv4, s.public_ipv6) for s in made] == [
        tenant.addresses(n)[::2] for n in numbers
    ]
    assert len({s.public_ipv4 for s in made}) == len(made)

    # As an earlier version pickled them: counts of servers, numbered across the tenant.
    created = len(made)  # 36: ORD 35 (a full page and 3), DFW 1
    old_tenant = {**vars(tenant), "servers_created": created, "regions": {}}
    del old_tenant["address_blocks"]
    loaded = object.__new__(TenantCompute)
    for name, regional in tenant.regions.items():
        old_region = {**vars(regional), "tenant": loaded}
        old_region["server_count"] = len(regional._servers())
        old_region["_keypair_ids"] = itertools.count(regional.keypairs_created + 1)
        del old_region["page_blocks"], old_region["keypairs_created"]
        old_tenant["regions"][name] = object.__new__(RegionCompute)
        old_tenant["regions"][name].__setstate__(old_region)
    loaded.__setstate__(old_tenant)
    assert "servers_created" not in vars(loaded)
    assert not any("server_count" in vars(r) for r in loaded.regions.values())
    # Numbers 0-35 were given: both last pages have room, each gets a new block (2 and 3).
    assert [r.page_blocks for r in loaded.regions.values()] == [[-1, 2], [3]]
    assert loaded.address_blocks == 4
    keypair = loaded.regions["ORD"].create_keypair({"keypair": {"name": "k2"}})
    assert keypair.id == 2  # after the first

    # As the version after it pickled them: a count of pages per region, none per tenant.
    old_tenant = {**vars(tenant), "regions": {}}
    del old_tenant["address_blocks"]
    loaded = object.__new__(TenantCompute)
    for name, regional in tenant.regions.items():
        old_region = {**vars(regional), "tenant": loaded, "id_pages": len(regional.page_blocks)}
        del old_region["page_blocks"]
        old_tenant["regions"][name] = object.__new__(RegionCompute)
        old_tenant["regions"][name].__setstate__(old_region)
    loaded.__setstate__(old_tenant)
    assert not any("id_pages" in vars(r) for r in loaded.regions.values())
    # Its 3 pages' numbers (0-95) left behind; each last page gets a new block (3 and 4).
    assert [r.page_blocks for r in loaded.regions.values()] == [[-1, 3], [4]]
    assert loaded.address_blocks == 5
    more = [create(loaded.regions["ORD"], "o"), create(loaded.regions["DFW"], "d2")]
    assert [s.private_ipv4 for s in more] == [
        loaded.addresses(3 * SERVER_ID_PAGE + 3)[0],  # ORD's last page held 3
        loaded.addresses(4 * SERVER_ID_PAGE + 1)[0],  # DFW's held 1
    ]
    assert len({s.public_ipv4 for s in made + more}) == len(made) + 2


def test_onmetal_images_and_flavors_only_in_iad(backend):
    ord_, iad = backend.region("t", "ORD"), backend.region("t", "IAD")
    assert len(ord_.list_images()) == 38
    assert len(iad.list_images()) == 52
    assert len(ord_.list_flavors()) == 35
    assert len(iad.list_flavors()) == 38
    with pytest.raises(NotFound):
        ord_.get_flavor("onmetal-io1")
    assert iad.get_flavor("onmetal-io1").ram == 131072
    onmetal = next(i for i in iad.list_images() if i.name.startswith("OnMetal"))
    with pytest.raises(NotFound):
        ord_.get_image(onmetal.id)


def test_image_ids_are_stable_and_invalid_refs_are_not_found(ord_):
    ubuntu = next(
        i for i in catalog_data.IMAGES if i.name == "Ubuntu 14.04 LTS (Trusty Tahr) (PVHVM)"
    )
    # Derived from the name, so the same in every process (Mimic drew them at random, #513).
    assert ubuntu.id == "15c711b4-df10-5d8a-af3f-eb884a4e26e8"
    assert ord_.get_image(ubuntu.id) is ubuntu
    for invalid in ("INVALID-IMAGE-ID", "1111", "abcZ"):
        with pytest.raises(NotFound, match="could not be found"):
            ord_.get_image(invalid)
    with pytest.raises(NotFound, match="Image not found"):
        ord_.get_image("unknown")
    assert [f.id for f in ord_.list_flavors(limit="2", marker="2")] == ["3", "4"]


def test_limits_count_live_servers(ord_):
    create(ord_, "a")
    create(ord_, "b", flavorRef="performance1-8")
    gone = create(ord_, "c")
    ord_.delete_server(gone.id)
    limits = ord_.limits()
    assert limits["totalInstancesUsed"] == 2
    assert limits["totalCoresUsed"] == 1 + 8
    assert limits["totalRAMUsed"] == 512 + 8192
    assert limits["maxServerMeta"] == 40


def test_keypairs(ord_):
    imported = ord_.create_keypair({"keypair": {"name": "mine", "public_key": "ssh-rsa AAA x"}})
    assert imported.private_key is None
    assert len(imported.fingerprint.split(":")) == 16
    generated = ord_.create_keypair({"keypair": {"name": "gen"}})
    assert generated.private_key and generated.public_key.startswith("ssh-rsa ")
    assert generated.fingerprint != imported.fingerprint
    with pytest.raises(AlreadyExists):
        ord_.create_keypair({"keypair": {"name": "mine", "public_key": "ssh-rsa BBB"}})
    assert [k.name for k in ord_.list_keypairs()] == ["mine", "gen"]
    ord_.delete_keypair("mine")
    with pytest.raises(NotFound):
        ord_.get_keypair("mine")
    for bad in (
        {},
        {"keypair": {}},
        {"keypair": {"name": ""}},
        {"keypair": {"name": "k", "public_key": 1}},
    ):
        with pytest.raises(Invalid):
            ord_.create_keypair(bad)


def test_reset_forgets_everything(backend):
    create(backend.region("t1", "ORD"))
    backend.reset()
    assert backend.region("t1", "ORD").list_servers().servers == []


# Fast generators: the same draws as randrange / choice / ipaddress ---------------------


def _reference_draws(rng: random.Random, ids: set[str]) -> list[str]:
    """What the generators drew before they were sped up (randrange, choice)."""
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

    def server_id() -> str:  # drawn again on a clash with an id taken
        while (value := f"test-server{(n := rng.randrange(10**10))}-id-{n}") in ids:
            pass
        ids.add(value)
        return value

    return [server_id(), "".join(rng.choice(chars) for _ in range(12))]


def _draws(tenant: Any) -> list[str]:
    """One of each value a server create draws, in the order it draws them (the id is
    taken as a create takes it: by storing a server under it)."""
    server_id = tenant.new_server_id()
    tenant.backend.servers[(tenant.tenant_id, server_id)] = None
    return [server_id, tenant.password()]


@pytest.mark.parametrize("seed", [0, 7, 2024])
def test_generators_draw_exactly_as_randrange_and_choice(seed):
    from simulacra.cloud.compute.model import TenantCompute

    tenant = TenantCompute("t", random.Random(seed), ComputeBackend(VirtualClock()))
    reference, ids = random.Random(seed), set()
    for _ in range(1000):
        assert _draws(tenant) == _reference_draws(reference, ids)
    assert tenant.rng.getstate() == reference.getstate()  # not one word more or less


def test_server_ids_are_drawn_again_on_a_clash_exactly_as_before():
    from simulacra.cloud.compute.model import TenantCompute

    tenant = TenantCompute("t", random.Random(3), ComputeBackend(VirtualClock()))
    # The ids the next 300 draws would give, two in three taken already.
    peek, taken = random.Random(3), set()
    for i in range(300):
        n = peek.randrange(10**10)
        if i % 3:
            taken.add(f"test-server{n}-id-{n}")
    for value in taken:
        tenant.backend.servers[("t", value)] = None
    reference, ids = random.Random(3), set(taken)
    for _ in range(100):
        assert _draws(tenant) == _reference_draws(reference, ids)
    assert tenant.rng.getstate() == reference.getstate()


def test_addresses_are_unique_in_the_tenant_until_the_range_is_used_up():
    """The n-th server's addresses: a permutation of each range, chosen by the tenant's id;
    every address well-formed; a 500 once the 65,024 private IPv4 addresses are given."""
    from simulacra.cloud.compute.faults import Fault
    from simulacra.cloud.compute.model import TenantCompute

    tenant = TenantCompute("t1", random.Random(0), ComputeBackend(VirtualClock()))
    state = tenant.rng.getstate()
    private, public, ipv6 = set(), set(), set()
    for n in range(256 * 254):
        a, b, c = tenant.addresses(n)
        private.add(a)
        public.add(b)
        ipv6.add(c)
    assert len(private) == len(public) == len(ipv6) == 256 * 254
    for head, values in (("10.180.", private), ("198.101.", public)):
        expected = {f"{head}{c}.{d}" for c in range(256) for d in range(1, 255)}
        assert values == expected  # every address of the range, each once
    assert all(
        ipaddress.IPv6Address(v) in ipaddress.IPv6Network("2001:4800:780e:510::/64")
        for v in list(ipv6)[:1000]
    )
    assert tenant.rng.getstate() == state  # addresses draw nothing from the rng
    with pytest.raises(Fault) as raised:
        tenant.addresses(256 * 254)
    assert raised.value.code == 500


def test_addresses_look_scattered_and_differ_between_tenants():
    from simulacra.cloud.compute.model import TenantCompute

    def first(tenant_id: str) -> list[tuple[str, str, str]]:
        tenant = TenantCompute(tenant_id, random.Random(0), ComputeBackend(VirtualClock()))
        return [tenant.addresses(n) for n in range(20)]

    one, other = first("t1"), first("t2")
    assert one != other
    assert first("t1") == one  # the same in every process
    third_octets = {a.split(".")[2] for a, _, _ in one}
    assert len(third_octets) > 10  # not 10.180.0.1, 10.180.0.2, ...


def test_public_ipv6_text_matches_ipaddress_also_with_zero_hextets():
    from simulacra.cloud.compute.model import public_ipv6_text

    prefix = 0x2001_4800_780E_0510 << 64
    rng = random.Random(5)
    lows = [rng.getrandbits(64) for _ in range(2000)]
    lows += [0, 1, 0xFFFF << 48, 0x0000_1234_0000_0000, 0x1234_0000_0000_5678, 2**64 - 1]
    lows += [0x1_0000_0001, 0x0001_0000_0000_0001, 0x1234_5678_0000_0000]
    for low in lows:
        assert public_ipv6_text(low) == str(ipaddress.IPv6Address(prefix | low)), hex(low)


# The cached detail JSON ---------------------------------------------------------------


def _urls(root: str = "http://h/mimicking/NovaApi-x/ORD", tenant: str = "t1"):
    from simulacra.cloud.compute.views import Urls

    return Urls(root, tenant)


def _fresh(server: Server, urls, now: float) -> bytes:
    import orjson

    from simulacra.cloud.compute.views import server_detail

    return orjson.dumps(server_detail(server, urls, now))


def test_detail_json_is_the_detail_and_is_reused_while_nothing_changes(ord_, clock):
    from simulacra.cloud.compute.views import server_detail_json

    server = create(ord_, metadata={"a": "1"})
    urls = _urls()
    first = server_detail_json(server, urls, clock.seconds())
    assert first == _fresh(server, urls, clock.seconds())
    assert server_detail_json(server, urls, clock.seconds()) is first  # reused


def test_detail_json_follows_every_change_through_the_model(ord_, clock):
    from simulacra.cloud.compute.views import server_detail_json

    server = create(ord_, metadata={"server_building": "100"})
    urls = _urls()

    def check() -> None:
        now = clock.seconds()
        got = server_detail_json(ord_.get_server(server.id), urls, now)
        assert got == _fresh(server, urls, now)

    check()
    clock.advance(30)  # progress moves with the clock while building
    check()
    clock.advance(80)  # ACTIVE
    check()
    ord_.set_metadata_item(server.id, "k", {"meta": {"k": "v"}})  # in place, same clock
    check()
    ord_.set_metadata_item(server.id, "k", {"meta": {"k": "w"}})
    check()
    ord_.delete_metadata_item(server.id, "k")
    check()
    ord_.replace_metadata(server.id, {"metadata": {"x": "1", "y": "2"}})
    check()
    ord_.update_metadata(server.id, {"metadata": {"z": "3"}})
    check()
    ord_.perform_action(server.id, {"resize": {"flavorRef": "3"}})
    check()
    ord_.perform_action(server.id, {"revertResize": None})
    check()
    ord_.perform_action(server.id, {"rebuild": {"imageRef": "other", "name": "renamed"}})
    check()
    clock.advance(10)
    check()
    ord_.perform_action(server.id, {"reboot": {"type": "HARD"}})
    check()
    ord_.set_statuses({"status": {server.id: "ERROR"}})
    check()
    # Another host name or tenant in the URLs: other links.
    other = _urls("http://other:9/mimicking/NovaApi-x/ORD", "t2")
    assert server_detail_json(server, other, clock.seconds()) == _fresh(
        server, other, clock.seconds()
    )


def test_detail_json_notices_a_direct_change_to_any_field(ord_, clock):
    """However a field changes, the cached JSON is never served stale."""
    import dataclasses

    from simulacra.cloud.compute.views import server_detail_json

    urls = _urls()
    now = clock.seconds()
    for field in dataclasses.fields(Server):
        if field.name == "view_cache":
            continue
        server = create(ord_, name=f"s-{field.name}", metadata={"a": "1"})
        server_detail_json(server, urls, now)
        value = getattr(server, field.name)
        if isinstance(value, str):
            changed: object = value + "-changed"
        elif isinstance(value, float):
            changed = value + 1.0
        elif isinstance(value, dict):
            changed = {**value, "new": "item"}
        elif isinstance(value, list) or field.name == "pending":  # () when none is due
            changed = [(now + 50.0, "ACTIVE")]
        elif value is None:
            changed = "set"
        else:
            changed = ("changed", 1)
        setattr(server, field.name, changed)
        assert server_detail_json(server, urls, now) == _fresh(server, urls, now), field.name
    server = create(ord_, name="in-place", metadata={"a": "1"})
    server_detail_json(server, urls, now)
    server.metadata["a"] = "2"
    assert server_detail_json(server, urls, now) == _fresh(server, urls, now)


def test_json_list_is_orjson_of_the_whole_list():
    import orjson

    from simulacra.cloud.compute.views import json_list

    items = [{"a": i, "b": [1, "x"]} for i in range(4)]
    links = {"servers_links": [{"href": "http://h/x?limit=2", "rel": "next"}]}
    for n in range(4):
        parts = [orjson.dumps(item) for item in items[:n]]
        assert json_list("servers", parts) == orjson.dumps({"servers": items[:n]})
        assert json_list("servers", parts, links) == orjson.dumps({"servers": items[:n], **links})
