"""The compute mock over a real socket, driven by python-novaclient and requests.

python-novaclient (with keystoneauth1) drives the Nova API; requests drives the control
plane (tick, behaviors, attributes, presets) and checks raw bodies. Every test uses its
own tenant; the virtual clock is shared by the whole session, so times are asserted
relative to ticks made here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v2
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc

from simulacra.cloud.compute import NOVA, NOVA_CONTROL

BUILD_120 = {"server_building": 120}


def nova_url(base_url: str, tenant: str, region: str = "ORD") -> str:
    return f"{base_url}/mimicking/{NOVA.service_id}/{region}/v2/{tenant}"


def control_url(base_url: str, tenant: str, region: str = "ORD") -> str:
    return f"{base_url}/mimicking/{NOVA_CONTROL.service_id}/{region}/v2/{tenant}"


def novaclient_for(base_url: str, tenant: str, region: str = "ORD"):
    """novaclient on the catalog URL, without identity (any token is accepted)."""
    auth = token_endpoint.Token(endpoint=nova_url(base_url, tenant, region), token="any")
    return nova_client.Client("2", session=ks_session.Session(auth=auth))


def tick(http, base_url: str, seconds: float) -> str:
    response = http.post(base_url + "/mimic/v1.1/tick", json={"amount": seconds})
    assert response.status_code == 200, response.text
    return response.json()["now"]


def seconds_of(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


@pytest.fixture
def tenant(name: str) -> str:
    return name


@pytest.fixture
def nova(base_url, tenant):
    return novaclient_for(base_url, tenant)


@pytest.fixture
def api(base_url, tenant) -> str:
    return nova_url(base_url, tenant)


@pytest.fixture
def ctl(base_url, tenant) -> str:
    return control_url(base_url, tenant)


def boot(nova, name: str = "web", **kwargs):
    return nova.servers.create(name, image="img", flavor="2", **kwargs)


def status(nova, server) -> str:
    return nova.servers.get(server.id).status


# The acceptance check ----------------------------------------------------------------------


def test_readme_example_builds_for_120_seconds_then_is_active(http, base_url, api, nova):
    # The README's own request body, number and all (Mimic answered it with a 400).
    readme = {
        "server": {
            "name": "api-test-server-1",
            "imageRef": "3afe97b2-26dc-49c5-a2cc-a2fc8d80c001",
            "flavorRef": "2",
            "metadata": {"server_building": 120},
        }
    }
    created = http.post(api + "/servers", json=readme)
    assert created.status_code == 202, created.text
    server_id = created.json()["server"]["id"]
    assert nova.servers.get(server_id).status == "BUILD"
    tick(http, base_url, 60)
    half_way = nova.servers.get(server_id)
    assert (half_way.status, half_way.progress) == ("BUILD", 50)
    tick(http, base_url, 59)
    assert nova.servers.get(server_id).status == "BUILD"
    tick(http, base_url, 1)
    done = nova.servers.get(server_id)
    assert (done.status, done.progress) == ("ACTIVE", 100)
    assert getattr(done, "OS-EXT-STS:vm_state") == "active"


def test_server_building_through_novaclient_metadata(http, base_url, nova):
    server = boot(nova, meta=BUILD_120)
    assert status(nova, server) == "BUILD"
    assert nova.servers.get(server.id).metadata == {"server_building": "120"}
    tick(http, base_url, 120)
    assert status(nova, server) == "ACTIVE"


# Servers -----------------------------------------------------------------------------------


def test_server_lifecycle_with_novaclient(http, base_url, nova, tenant):
    now = tick(http, base_url, 0)
    server = boot(nova, "web-1", meta={"role": "web"}, key_name="mykey")
    assert server.adminPass and len(server.adminPass) == 12
    shown = nova.servers.get(server.id)
    assert (shown.name, shown.status, shown.tenant_id) == ("web-1", "ACTIVE", tenant)
    assert shown.metadata == {"role": "web"}
    assert shown.key_name == "mykey"
    assert shown.created == shown.updated == now
    assert shown.flavor["id"] == "2" and shown.image["id"] == "img"
    public = [a["addr"] for a in shown.addresses["public"]]
    assert shown.accessIPv4 in public and shown.accessIPv6 in public
    db = boot(nova, "db-1")
    assert sorted(s.name for s in nova.servers.list()) == ["db-1", "web-1"]
    assert [s.name for s in nova.servers.list(search_opts={"name": "web"})] == ["web-1"]
    assert [s.id for s in nova.servers.list(detailed=False)] == [server.id, db.id]
    nova.servers.delete(server)
    with pytest.raises(nova_exc.NotFound):
        nova.servers.get(server.id)
    assert [s.name for s in nova.servers.list()] == ["db-1"]


def test_links_are_absolute_and_bookmarks_carry_no_version(http, api, tenant):
    created = http.post(
        api + "/servers", json={"server": {"name": "a", "imageRef": "i", "flavorRef": "2"}}
    )
    server = created.json()["server"]
    assert server["OS-DCF:diskConfig"] == "AUTO"
    links = {link["rel"]: link["href"] for link in server["links"]}
    assert links["self"] == f"{api}/servers/{server['id']}"
    assert (
        links["bookmark"] == api.replace(f"/v2/{tenant}", f"/{tenant}") + f"/servers/{server['id']}"
    )
    detail = http.get(links["self"]).json()["server"]
    assert detail["image"]["links"][0]["href"].endswith(f"/{tenant}/images/i")


def test_timestamps_and_changes_since_follow_the_virtual_clock(http, base_url, api, nova):
    old = boot(nova, "old")
    tick(http, base_url, 10)
    since = tick(http, base_url, 0)
    tick(http, base_url, 5)
    changed_at = tick(http, base_url, 0)
    nova.servers.set_meta_item(old, "touched", "yes")
    gone = boot(nova, "gone")
    nova.servers.delete(gone)
    assert nova.servers.get(old.id).updated == changed_at
    found = http.get(api + "/servers/detail", params={"changes-since": since}).json()["servers"]
    assert {(s["name"], s["status"]) for s in found} == {("old", "ACTIVE"), ("gone", "DELETED")}
    # Deleted servers only show with changes-since, in the plain list too.
    plain = http.get(api + "/servers", params={"changes-since": since}).json()["servers"]
    assert {s["name"] for s in plain} == {"old", "gone"}
    assert [s.name for s in nova.servers.list()] == ["old"]
    later = tick(http, base_url, 1)
    assert nova.servers.list(search_opts={"changes-since": later}) == []


def test_paging_with_limit_marker_and_next_links(http, api, nova):
    ids = [boot(nova, f"s{i}").id for i in range(5)]
    first = http.get(api + "/servers", params={"limit": 2}).json()
    assert [s["id"] for s in first["servers"]] == ids[:2]
    next_link = first["servers_links"][0]
    assert next_link["rel"] == "next"
    query = parse_qs(urlparse(next_link["href"]).query)
    assert query == {"limit": ["2"], "marker": [ids[1]]}
    second = http.get(next_link["href"]).json()
    assert [s["id"] for s in second["servers"]] == ids[2:4]
    assert [s.id for s in nova.servers.list(limit=2, marker=ids[3])] == ids[4:]
    assert [s.id for s in nova.servers.list(limit=-1)] == ids  # novaclient pages by marker
    with pytest.raises(nova_exc.BadRequest, match=r"marker \[nope\] not found"):
        nova.servers.list(marker="nope")


def test_ids_and_addresses_are_unique_per_tenant(base_url, tenant):
    servers = []
    for region in ("ORD", "DFW"):
        nova = novaclient_for(base_url, tenant, region)
        servers += [nova.servers.get(boot(nova, f"u{i}").id) for i in range(15)]
    assert len({s.id for s in servers}) == 30
    addresses = [a["addr"] for s in servers for net in s.addresses.values() for a in net]
    assert len(addresses) == 90
    assert len(set(addresses)) == 90  # Mimic gave every server the same IPv6 address


def test_ips_by_network(http, api, nova):
    server = boot(nova)
    addresses = nova.servers.ips(server)
    assert set(addresses) == {"private", "public"}
    assert addresses["private"][0]["addr"].startswith("10.180.")
    assert {a["version"] for a in addresses["public"]} == {4, 6}
    public = http.get(f"{api}/servers/{server.id}/ips/public")
    assert public.json() == {"public": addresses["public"]}
    missing = http.get(f"{api}/servers/{server.id}/ips/nowhere")
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["code"] == 404


# Actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "transient", "seconds"), [("HARD", "HARD_REBOOT", 6), ("SOFT", "REBOOT", 3)]
)
def test_reboot_then_active(http, base_url, nova, kind, transient, seconds):
    server = boot(nova)
    nova.servers.reboot(server, kind)
    assert status(nova, server) == transient
    tick(http, base_url, seconds - 0.1)
    assert status(nova, server) == transient
    tick(http, base_url, 0.1)
    assert status(nova, server) == "ACTIVE"


def test_rebuild_answers_the_server_and_takes_five_seconds(http, base_url, nova):
    server = boot(nova)
    rebuilt = nova.servers.rebuild(server, "img-2", password="s3cret", name="renamed")
    assert (rebuilt.status, rebuilt.adminPass, rebuilt.name) == ("REBUILD", "s3cret", "renamed")
    assert rebuilt.image["id"] == "img-2"
    tick(http, base_url, 4.9)
    assert status(nova, server) == "REBUILD"
    tick(http, base_url, 0.1)
    assert status(nova, server) == "ACTIVE"


def test_resize_confirm_revert_and_conflicts(http, api, nova):
    server = boot(nova)
    nova.servers.resize(server, "3")
    shown = nova.servers.get(server.id)
    assert (shown.status, shown.flavor["id"]) == ("VERIFY_RESIZE", "3")
    nova.servers.revert_resize(server)
    shown = nova.servers.get(server.id)
    assert (shown.status, shown.flavor["id"]) == ("ACTIVE", "2")
    nova.servers.resize(server, "4")
    nova.servers.confirm_resize(server)
    assert nova.servers.get(server.id).flavor["id"] == "4"
    response = http.post(f"{api}/servers/{server.id}/action", json={"confirmResize": None})
    assert response.status_code == 409
    assert response.json()["conflictingRequest"]["code"] == 409
    assert "confirmResize" in response.json()["conflictingRequest"]["message"]
    bad = http.post(f"{api}/servers/{server.id}/action", json={"resize": {"flavorRef": "8888"}})
    assert bad.status_code == 400 and "badRequest" in bad.json()


def test_rescue_unrescue_password_stop_start(http, api, nova):
    server = boot(nova)
    response, body = nova.servers.rescue(server, password="rescue-me")
    assert response.status_code == 200 and body == {"adminPass": "rescue-me"}
    assert status(nova, server) == "RESCUE"
    with pytest.raises(nova_exc.Conflict):
        nova.servers.change_password(server, "new")
    nova.servers.unrescue(server)
    nova.servers.change_password(server, "new")
    nova.servers.stop(server)
    assert status(nova, server) == "SHUTOFF"
    nova.servers.start(server)
    assert status(nova, server) == "ACTIVE"
    unknown = http.post(f"{api}/servers/{server.id}/action", json={"levitate": {}})
    assert unknown.status_code == 400
    assert unknown.json()["badRequest"]["message"] == "There is no such action currently supported"


def test_create_image_location_names_the_snapshot(http, api, nova):
    ubuntu = next(
        i
        for i in nova.client.get("/images/detail")[1]["images"]
        if i["name"] == "Ubuntu 14.04 LTS (Trusty Tahr) (PVHVM)"
    )
    server = nova.servers.create("snapme", image=ubuntu["id"], flavor="2")
    image_id = nova.servers.create_image(server, "my-snapshot", metadata={"k": "v"})
    _, body = nova.client.get(f"/images/{image_id}")
    image = body["image"]
    assert (image["name"], image["status"], image["server"]["id"]) == (
        "my-snapshot",
        "ACTIVE",
        server.id,
    )
    assert image["metadata"]["image_type"] == "snapshot"
    assert image["metadata"]["org.openstack__1__os_distro"] == "org.ubuntu"
    assert image["metadata"]["k"] == "v"
    assert image_id in [i["id"] for i in http.get(api + "/images").json()["images"]]


def test_action_statuses_are_mimics(http, base_url, api, nova):
    server = boot(nova)
    url = f"{api}/servers/{server.id}/action"
    steps = [
        ({"resize": {"flavorRef": "3"}}, 202),
        ({"confirmResize": None}, 204),
        ({"resize": {"flavorRef": "2"}}, 202),
        ({"revertResize": None}, 202),
        ({"rescue": None}, 200),
        ({"unrescue": None}, 200),
        ({"changePassword": {"adminPass": "pw"}}, 202),
        ({"createImage": {"name": "snap"}}, 202),
        ({"os-stop": None}, 202),
        ({"os-start": None}, 202),
        ({"reboot": {"type": "SOFT"}}, 202),
    ]
    for action, expected in steps:
        response = http.post(url, json=action)
        assert response.status_code == expected, (action, response.text)
    tick(http, base_url, 3)
    assert http.post(url, json={"rebuild": {"imageRef": "img"}}).status_code == 202
    keypair = http.post(api + "/os-keypairs", json={"keypair": {"name": "k"}})
    assert keypair.status_code == 200
    assert http.delete(api + "/os-keypairs/k").status_code == 202


def test_actions_on_an_unknown_server_are_404(http, api):
    response = http.post(api + "/servers/nope/action", json={"reboot": {"type": "HARD"}})
    assert response.status_code == 404
    assert response.json() == {
        "itemNotFound": {"message": "Instance nope could not be found", "code": 404}
    }


# Metadata ----------------------------------------------------------------------------------


def test_metadata_with_novaclient_and_raw_routes(http, api, nova):
    server = boot(nova, meta={"a": "1"})
    nova.servers.set_meta(server, {"b": "2"})  # POST merges
    nova.servers.set_meta_item(server, "c", "3")  # PUT one item
    nova.servers.delete_meta(server, ["a"])
    assert nova.servers.get(server.id).metadata == {"b": "2", "c": "3"}
    item = http.get(f"{api}/servers/{server.id}/metadata/b")
    assert item.json() == {"meta": {"b": "2"}}
    replaced = http.put(f"{api}/servers/{server.id}/metadata", json={"metadata": {"z": "9"}})
    assert replaced.json() == {"metadata": {"z": "9"}}
    assert http.get(f"{api}/servers/{server.id}/metadata").json() == {"metadata": {"z": "9"}}
    mismatch = http.put(f"{api}/servers/{server.id}/metadata/x", json={"meta": {"y": "1"}})
    assert mismatch.json() == {
        "badRequest": {"message": "Request body and URI mismatch", "code": 400}
    }
    gone = http.get(f"{api}/servers/nope/metadata")
    assert gone.json() == {"itemNotFound": {"message": "Server does not exist", "code": 404}}


def test_more_than_40_metadata_items_are_forbidden(http, api):
    body = {"server": {"name": "m", "imageRef": "i", "flavorRef": "2"}}
    body["server"]["metadata"] = {f"k{i}": "v" for i in range(41)}
    response = http.post(api + "/servers", json=body)
    assert response.status_code == 403
    assert response.json() == {
        "forbidden": {"message": "Maximum number of metadata items exceeds 40", "code": 403}
    }


# Images, flavors, keypairs, limits ---------------------------------------------------------


def test_flavors_with_novaclient(base_url, tenant, nova):
    flavors = nova.flavors.list()
    assert len(flavors) == 35
    assert flavors[0].id == "2"
    small = nova.flavors.get("2")
    assert (small.name, small.ram, small.vcpus, small.disk) == (
        "512MB Standard Instance",
        512,
        1,
        20,
    )
    assert small.ephemeral == 0
    assert small.to_dict()["OS-FLV-WITH-EXT-SPECS:extra_specs"]["class"] == "standard1"
    with pytest.raises(nova_exc.NotFound):
        nova.flavors.get("onmetal-io1")  # OnMetal is IAD only
    iad = novaclient_for(base_url, tenant, "IAD")
    assert iad.flavors.get("onmetal-io1").ram == 131072
    assert nova.flavors.find(name="1 GB General Purpose v1").id == "general1-1"


def test_images_through_novaclients_http_client(nova):
    # novaclient 18 sends image lookups to Glance; its HTTP client still reaches Nova's.
    _, listing = nova.client.get("/images")
    assert len(listing["images"]) == 38
    first = listing["images"][0]
    assert set(first) == {"id", "links", "name"}
    _, shown = nova.client.get(f"/images/{first['id']}")
    image = shown["image"]
    assert image["name"] == first["name"]
    assert image["status"] == "ACTIVE"
    assert set(image["metadata"]) >= {"os_type", "vm_mode", "flavor_classes"}
    _, detail = nova.client.get("/images/detail")
    assert [i["id"] for i in detail["images"]] == [i["id"] for i in listing["images"]]


def test_keypairs_with_novaclient(http, api, nova):
    generated = nova.keypairs.create("generated")
    assert generated.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    imported = nova.keypairs.create("imported", public_key="ssh-rsa AAAAB3Nza me@host")
    assert imported.public_key == "ssh-rsa AAAAB3Nza me@host"
    assert not hasattr(imported, "private_key")
    assert sorted(k.name for k in nova.keypairs.list()) == ["generated", "imported"]
    assert nova.keypairs.get("imported").fingerprint == imported.fingerprint
    with pytest.raises(nova_exc.Conflict):
        nova.keypairs.create("imported", public_key="ssh-rsa other")
    nova.keypairs.delete("imported")
    with pytest.raises(nova_exc.NotFound):
        nova.keypairs.get("imported")
    missing = http.post(api + "/os-keypairs", json={"keypair": {"public_key": "x"}})
    assert missing.status_code == 400 and "badRequest" in missing.json()


def test_limits_with_novaclient(nova):
    boot(nova, "a")
    nova.servers.create("b", image="img", flavor="performance1-4")
    limits = nova.limits.get()
    absolute = {item.name: item.value for item in limits.absolute}
    assert absolute["maxServerMeta"] == 40
    assert absolute["maxTotalInstances"] == 200
    assert absolute["totalInstancesUsed"] == 2
    assert absolute["totalRAMUsed"] == 512 + 4096
    assert list(limits.rate) == []


# Errors ------------------------------------------------------------------------------------


def test_unknown_server_is_item_not_found(http, api):
    response = http.get(api + "/servers/nope")
    assert response.status_code == 404
    assert response.json() == {
        "itemNotFound": {"message": "Instance could not be found", "code": 404}
    }
    assert http.delete(api + "/servers/nope").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/servers", "not json"),
        ("POST", "/servers", "[]"),
        ("POST", "/servers", ""),
        ("POST", "/servers", {}),
        ("POST", "/servers", {"server": "x"}),
        ("POST", "/servers", {"server": {"imageRef": "i", "flavorRef": "2"}}),
        ("POST", "/servers", {"server": {"name": "n", "imageRef": "i"}}),
        ("POST", "/servers", {"server": {"name": "n", "flavorRef": "2"}}),
        ("POST", "/servers", {"server": {"name": ["n"], "imageRef": "i", "flavorRef": "2"}}),
        ("POST", "/servers", {"server": {"name": "n", "imageRef": 1.5, "flavorRef": "2"}}),
        (
            "POST",
            "/servers",
            {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "metadata": "x"}},
        ),
        (
            "POST",
            "/servers",
            {"server": {"name": "n", "imageRef": "i", "flavorRef": "2", "metadata": {"k": 1}}},
        ),
        (
            "POST",
            "/servers",
            {
                "server": {
                    "name": "n",
                    "imageRef": "i",
                    "flavorRef": "2",
                    "OS-DCF:diskConfig": "FAST",
                }
            },
        ),
        (
            "POST",
            "/servers",
            {
                "server": {
                    "name": "n",
                    "imageRef": "i",
                    "flavorRef": "2",
                    "metadata": {"server_building": "later"},
                }
            },
        ),
        ("GET", "/servers?limit=ten", None),
        ("GET", "/servers/detail?limit=-3", None),
        ("GET", "/servers/detail?changes-since=yesterday", None),
        ("GET", "/images?marker=nope", None),
        ("GET", "/flavors/detail?limit=x", None),
        ("POST", "/os-keypairs", {}),
        ("POST", "/os-keypairs", {"keypair": {"name": 3}}),
        ("POST", "/os-keypairs", "{"),
    ],
)
def test_bad_input_is_a_400_bad_request_never_a_500(http, api, method, path, body):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    response = http.request(method, api + path, **kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["badRequest"]
    assert error["code"] == 400 and error["message"]


def test_create_errors_are_novas_exact_bodies(http, base_url, api):
    invalid = http.post(api + "/servers", data=b"{not json")
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == "application/json"
    assert invalid.content == b'{"badRequest":{"message":"Invalid JSON request body","code":400}}'
    # A bad region wins over a bad body, as in Mimic.
    for body in (b"{not json", b" " * (11 * 1024 * 1024)):
        response = http.post(nova_url(base_url, "t1", "MARS") + "/servers", data=body)
        assert response.status_code == 404
        assert response.json() == {
            "itemNotFound": {
                "message": "region MARS is not served by cloudServersOpenStack",
                "code": 404,
            }
        }


def test_a_create_over_the_body_limit_is_413_over_limit(http, api):
    huge = b" " * (11 * 1024 * 1024)
    chunked = iter([huge[: 6 * 1024 * 1024], huge[6 * 1024 * 1024 :]])
    for response in (
        http.post(api + "/servers", data=huge),
        http.post(api + "/servers", data=chunked),
    ):
        assert response.status_code == 413
        error = response.json()["overLimit"]
        assert error["code"] == 413 and "limit" in error["message"]
    assert http.get(api + "/servers").json() == {"servers": []}


def test_a_create_with_a_trailing_slash_is_redirected(http, api):
    body = {"server": {"name": "slash", "imageRef": "i", "flavorRef": "2"}}
    redirect = http.post(api + "/servers/", json=body, allow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("/servers")
    assert http.put(api + "/servers", json=body).status_code == 405


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/metadata", {}),
        ("/metadata", {"metadata": None}),
        ("/metadata", {"metadata": {"k": ["v"]}}),
        ("/metadata/k", {"meta": "v"}),
        ("/metadata/k", {"meta": {"k": "v", "j": "w"}}),
        ("/metadata/k", {"meta": {"k": 5}}),
        ("/action", {}),
        ("/action", {"reboot": None}),
        ("/action", {"reboot": {"type": "LOUD"}}),
        ("/action", {"reboot": []}),
        ("/action", {"rebuild": {}}),
        ("/action", {"changePassword": {"adminPass": ""}}),
        ("/action", {"createImage": {"name": 7}}),
    ],
)
def test_bad_server_sub_requests_are_400(http, api, nova, path, body):
    server = boot(nova)
    method = "POST" if path == "/action" else "PUT"
    response = http.request(method, f"{api}/servers/{server.id}{path}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["badRequest"]["code"] == 400


# Presets -----------------------------------------------------------------------------------


def test_create_server_failure_preset(http, api, nova):
    failure = json.dumps({"message": "No capacity", "code": 503})
    with pytest.raises(nova_exc.ClientException) as caught:
        boot(nova, meta={"create_server_failure": failure})
    assert caught.value.code == 503
    assert "No capacity" in str(caught.value)
    raw = {"message": "plain words", "code": 418, "type": "string"}
    body = {
        "server": {
            "name": "r",
            "imageRef": "i",
            "flavorRef": "2",
            "metadata": {"create_server_failure": json.dumps(raw)},
        }
    }
    response = http.post(api + "/servers", json=body)
    assert (response.status_code, response.text) == (418, "plain words")
    assert nova.servers.list() == []


def test_server_error_preset(nova):
    assert status(nova, boot(nova, meta={"server_error": "yes"})) == "ERROR"


def test_delete_server_failure_preset_honours_its_code(http, api, nova):
    server = boot(nova, meta={"delete_server_failure": json.dumps({"code": 503, "times": 2})})
    for _ in range(2):
        response = http.delete(f"{api}/servers/{server.id}")
        assert response.status_code == 503  # Mimic always answered 500
        assert response.json()["computeFault"]["code"] == 503
    assert http.delete(f"{api}/servers/{server.id}").status_code == 204
    assert http.get(f"{api}/servers/{server.id}").status_code == 404


def test_invalid_image_and_flavor_refs(http, api, nova):
    for image in ("INVALID-IMAGE-ID", "1111", "endsWithZ"):
        with pytest.raises(nova_exc.BadRequest):
            nova.servers.create("x", image=image, flavor="2")
        got = http.get(f"{api}/images/{image}")
        assert got.status_code == 404
        assert got.json()["itemNotFound"]["message"] == "The resource could not be found."
    for flavor in ("INVALID-FLAVOR-ID", "8888", "-4", "1"):
        with pytest.raises(nova_exc.BadRequest):
            nova.servers.create("x", image="img", flavor=flavor)
        assert http.get(f"{api}/flavors/{flavor}").status_code == 404
    assert nova.servers.list() == []


def test_server_presets_are_listed(http, base_url):
    presets = http.get(base_url + "/mimic/v1.0/presets").json()["servers"]
    assert set(presets) == {
        "create_server_failure",
        "delete_server_failure",
        "invalid_image_ref",
        "invalid_flavor_ref",
        "server_error",
        "server_building",
    }
    assert presets["invalid_flavor_ref"] == ["INVALID-FLAVOR-ID", "8888", "-4", "1"]


# Behaviors and the control plane ------------------------------------------------------------


def add_behavior(http, ctl, name, parameters=None, criteria=None) -> str:
    document = {"name": name, "parameters": parameters or {}, "criteria": criteria or []}
    response = http.post(ctl + "/behaviors/creation", json=document)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_fail_behavior_crud(http, ctl, nova):
    behavior_id = add_behavior(
        http, ctl, "fail", {"code": 418, "message": "teapot"}, [{"server_name": "tea.*"}]
    )
    listing = http.get(ctl + "/behaviors/creation").json()["behaviors"]
    assert [(b["id"], b["name"]) for b in listing] == [(behavior_id, "fail")]
    with pytest.raises(nova_exc.ClientException) as caught:
        boot(nova, "teapot-1")
    assert caught.value.code == 418 and "teapot" in str(caught.value)
    assert boot(nova, "coffee").name == "coffee"
    assert http.delete(f"{ctl}/behaviors/creation/{behavior_id}").status_code == 204
    assert http.delete(f"{ctl}/behaviors/creation/{behavior_id}").status_code == 404
    assert http.get(ctl + "/behaviors/creation").json()["behaviors"] == []
    assert boot(nova, "teapot-2").name == "teapot-2"


def test_false_negative_reports_a_failure_but_creates(http, ctl, nova):
    add_behavior(
        http, ctl, "false-negative", {"type": "string", "message": "oops"}, [{"server_name": "fn"}]
    )
    with pytest.raises(nova_exc.ClientException) as caught:
        boot(nova, "fn-1")
    assert caught.value.code == 500
    assert [(s.name, s.status) for s in nova.servers.list()] == [("fn-1", "ACTIVE")]


def test_build_and_active_then_error_behaviors(http, base_url, ctl, nova):
    add_behavior(http, ctl, "build", {"duration": 30}, [{"server_name": "slow"}])
    add_behavior(http, ctl, "active-then-error", {"duration": 40}, [{"metadata": {"hw": "flaky"}}])
    add_behavior(http, ctl, "error", {}, [{"server_name": "broken"}])
    slow, flaky, broken = (
        boot(nova, "slow"),
        boot(nova, "x", meta={"hw": "flaky"}),
        boot(nova, "broken"),
    )
    assert [status(nova, s) for s in (slow, flaky, broken)] == ["BUILD", "ACTIVE", "ERROR"]
    tick(http, base_url, 30)
    assert [status(nova, s) for s in (slow, flaky)] == ["ACTIVE", "ACTIVE"]
    tick(http, base_url, 10)
    assert status(nova, flaky) == "ERROR"


def test_sequence_behavior_cycles(http, ctl, nova):
    steps = [{"name": "fail", "parameters": {"code": 503}}, {"name": "default"}]
    add_behavior(http, ctl, "sequence", {"behaviors": steps})
    outcomes = []
    for i in range(4):
        try:
            boot(nova, f"s{i}")
            outcomes.append("ok")
        except nova_exc.ClientException as exc:
            outcomes.append(exc.code)
    assert outcomes == [503, "ok", 503, "ok"]


def test_metadata_presets_win_over_behaviors(http, base_url, ctl, nova):
    add_behavior(http, ctl, "fail", {"code": 500})
    server = boot(nova, meta={"server_building": "1"})
    assert status(nova, server) == "BUILD"
    with pytest.raises(nova_exc.ClientException):
        boot(nova)


def test_behaviors_are_scoped_to_tenant_and_region(http, base_url, tenant):
    add_behavior(http, control_url(base_url, tenant, "ORD"), "error")
    assert (
        status(
            novaclient_for(base_url, tenant, "ORD"), boot(novaclient_for(base_url, tenant, "ORD"))
        )
        == "ERROR"
    )
    dfw = novaclient_for(base_url, tenant, "DFW")
    assert status(dfw, boot(dfw)) == "ACTIVE"
    other = novaclient_for(base_url, tenant + "-other", "ORD")
    assert status(other, boot(other)) == "ACTIVE"


@pytest.mark.parametrize(
    "document",
    [
        {"name": "explode", "criteria": []},
        {"name": "build", "criteria": []},
        {"name": "fail", "criteria": [{"flavor": "2"}]},
        {"name": "fail", "criteria": [{"server_name": "("}]},
        {"name": "fail", "parameters": {"code": "teapot"}, "criteria": []},
        {"name": "sequence", "parameters": {"behaviors": []}, "criteria": []},
    ],
)
def test_bad_behaviors_are_400(http, ctl, document):
    response = http.post(ctl + "/behaviors/creation", json=document)
    assert response.status_code == 400
    assert response.json()["code"] == 400


@pytest.mark.parametrize("suffix", ["/attributes/", "/attributes"])
def test_status_override_through_attributes(http, ctl, nova, suffix):
    a, b = boot(nova, "a"), boot(nova, "b")
    response = http.post(ctl + suffix, json={"status": {a.id: "ERROR", b.id: "SHUTOFF"}})
    assert response.status_code == 201
    assert (status(nova, a), status(nova, b)) == ("ERROR", "SHUTOFF")
    refused = http.post(ctl + suffix, json={"status": {a.id: "ACTIVE", "nope": "ACTIVE"}})
    assert refused.status_code == 400
    assert status(nova, a) == "ERROR"  # nothing changed
    assert http.post(ctl + suffix, json={"state": {}}).status_code == 400


def test_an_override_cancels_a_pending_build(http, base_url, ctl, nova):
    server = boot(nova, meta=BUILD_120)
    http.post(ctl + "/attributes/", json={"status": {server.id: "ERROR"}})
    tick(http, base_url, 200)
    assert status(nova, server) == "ERROR"


def test_unknown_region_is_404(http, base_url, tenant):
    for url in (
        nova_url(base_url, tenant, "MARS") + "/servers",
        nova_url(base_url, tenant, "MARS"),
    ):
        response = http.get(url)
        assert response.status_code == 404
        assert response.json()["itemNotFound"]["code"] == 404
    behaviors = http.get(control_url(base_url, tenant, "MARS") + "/behaviors/creation")
    assert behaviors.status_code == 404


# Version discovery and the catalog ----------------------------------------------------------


def test_version_documents_for_discovery(http, base_url, api, nova):
    for url in (api, api + "/", api.rsplit("/", 1)[0], api.rsplit("/", 1)[0] + "/"):
        version = http.get(url).json()["version"]
        assert (version["id"], version["version"], version["min_version"]) == ("v2.0", "", "")
    versions = http.get(api.rsplit("/", 2)[0]).json()["versions"]
    assert [v["id"] for v in versions] == ["v2.0"]
    assert nova.api_version.get_string() == "2.0"
    current = nova.versions.get_current()
    assert current.id == "v2.0"
    assert [v.id for v in nova.versions.list()] == ["v2.0"]


def test_end_to_end_through_identity_catalog(base_url, name):
    """keystoneauth1 v2 password auth, catalog lookup and version discovery, then novaclient."""
    auth = v2.Password(
        auth_url=base_url + "/identity/v2.0",
        username="user-" + name,
        password="pw",
        tenant_name=name,
    )
    sess = ks_session.Session(auth=auth)
    endpoint = sess.get_endpoint(service_type="compute", interface="public", region_name="DFW")
    tenant = sess.get_project_id()
    assert endpoint == nova_url(base_url, tenant, "DFW")
    data = auth.get_endpoint_data(
        sess, service_type="compute", interface="public", region_name="DFW", discover_versions=True
    )
    assert data.api_version == (2, 0)
    nova = nova_client.Client("2", session=sess, region_name="DFW")
    server = nova.servers.create("e2e", image="img", flavor="2")
    assert nova.servers.get(server.id).tenant_id == tenant
    assert [s.id for s in novaclient_for(base_url, tenant, "DFW").servers.list()] == [server.id]
