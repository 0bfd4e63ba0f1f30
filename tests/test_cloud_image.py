"""The image service (Glance v2, Rackspace's ``cloudImages``) over a real socket.

requests checks raw documents, paging and filters; openstacksdk (what the ``openstack``
CLI uses) and keystoneauth1 check that a real client discovers and pages it. The images
are compute's: every id and name resolves through both APIs.
"""

from __future__ import annotations

import openstack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keystoneauth1 import session
from keystoneauth1.identity import v3
from novaclient import client as nova_client

from simulacra.cloud.compute import NOVA
from simulacra.cloud.image import GLANCE
from simulacra.cloud.image.model import SORT_KEYS

WINDOWS = "Windows Server 2012 R2"

# openstacksdk warns about its own future removals on every call; they are not ours.
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")


def glance_url(base_url: str, tenant: str, region: str = "ORD") -> str:
    return f"{base_url}/mimicking/{GLANCE.service_id}/{region}/v2/{tenant}"


def nova_url(base_url: str, tenant: str, region: str = "ORD") -> str:
    return f"{base_url}/mimicking/{NOVA.service_id}/{region}/v2/{tenant}"


@pytest.fixture
def api(base_url, name) -> str:
    return glance_url(base_url, name)


def get(http, url, status=200):
    response = http.get(url)
    assert response.status_code == status, response.text
    return response.json()


def every_image(http, api, query="") -> list[dict]:
    """All pages, following ``next`` as clients do (it is a path from Glance's root)."""
    page = get(http, api + "/images" + query)
    images = page["images"]
    while "next" in page:
        page = get(http, api + page["next"].removeprefix("/v2"))
        images += page["images"]
    return images


def names(http, api, query) -> list[str]:
    return [i["name"] for i in get(http, api + "/images" + query)["images"]]


def assert_glance_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "title", "message"} and body["code"] == status


def v3_session(base_url, name) -> session.Session:
    auth = v3.Password(
        auth_url=base_url + "/identity/v3",
        username=name,
        password="secret",
        user_domain_id="default",
        project_id=name,
    )
    return session.Session(auth=auth)


# Listing and paging ---------------------------------------------------------------------


def test_first_page_and_links(http, api):
    page = get(http, api + "/images")
    assert len(page["images"]) == 25  # Glance's default page
    assert page["first"] == "/v2/images" and page["schema"] == "/v2/schemas/images"
    assert page["next"] == f"/v2/images?marker={page['images'][-1]['id']}"
    # Clients that take the catalog URL for Glance's root add /v2 (novaclient, glanceclient).
    rest = get(http, api + page["next"])
    assert len(rest["images"]) == 38 - 25 and "next" not in rest
    assert get(http, api + "/v2/images?limit=25")["images"] == page["images"]
    limited = get(http, api + "/images?limit=2&visibility=public")
    assert len(limited["images"]) == 2
    marker = limited["images"][-1]["id"]
    assert limited["first"] == "/v2/images?limit=2&visibility=public"
    assert limited["next"] == f"/v2/images?limit=2&visibility=public&marker={marker}"


def test_every_page_holds_compute_images(http, base_url, api, name):
    """Glance's default order is newest first, ties by id descending: each image once."""
    for region in ("ORD", "IAD"):
        images = every_image(http, glance_url(base_url, name, region))
        ids = [i["id"] for i in images]
        assert ids == sorted(ids, reverse=True)
        compute = get(http, nova_url(base_url, name, region) + "/images")["images"]
        assert {(i["id"], i["name"]) for i in images} == {(i["id"], i["name"]) for i in compute}
    assert len(every_image(http, api)) == 38  # OnMetal images are IAD's only


def test_image_document_matches_compute(http, base_url, api, name):
    compute = get(http, nova_url(base_url, name) + "/images/detail")["images"]
    nova_image = next(i for i in compute if i["name"] == WINDOWS)
    image = get(http, f"{api}/images/{nova_image['id']}")
    assert {
        "id": image["id"],
        "name": image["name"],
        "minRam": image["min_ram"],
        "minDisk": image["min_disk"],
        "OS-EXT-IMG-SIZE:size": image["size"],
    } == {k: nova_image[k] for k in ("id", "name", "minRam", "minDisk", "OS-EXT-IMG-SIZE:size")}
    assert image["status"] == "active" and image["visibility"] == "public"
    assert (image["disk_format"], image["container_format"]) == ("vhd", "ovf")
    assert image["protected"] is False and image["os_hidden"] is False and image["tags"] == []
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert image["created_at"] == "1972-01-01T15:59:11Z" == image["updated_at"]
    assert len(image["checksum"]) == 32 and image["os_hash_algo"] == "sha512"
    # Compute's metadata are Glance's extra properties, strings at the top level.
    for key, value in nova_image["metadata"].items():
        assert image[key] == value
    assert image["os_type"] == "windows"
    assert image["com.rackspace__1__ui_default_show"] == "True"
    # The same document in the listing.
    listed = every_image(http, api)
    assert next(i for i in listed if i["id"] == image["id"]) == image


# Filters and sorting --------------------------------------------------------------------


def test_filters(http, api):
    assert names(http, api, f"?name={WINDOWS}") == [WINDOWS]
    both = names(http, api, '?name=in:"CentOS 7 (PVHVM)","Fedora 22 (PVHVM)"&sort_key=name')
    assert both == ["Fedora 22 (PVHVM)", "CentOS 7 (PVHVM)"]  # sort_dir defaults to desc
    assert names(http, api, "?name=nothing") == []
    assert len(every_image(http, api, "?visibility=public")) == 38
    assert names(http, api, "?visibility=private") == []
    assert names(http, api, "?visibility=community") == []
    assert len(every_image(http, api, "?status=active")) == 38
    assert names(http, api, "?status=queued") == []
    windows = every_image(http, api, "?os_type=windows")  # any other key: a property
    assert len(windows) == 9 and all(i["os_type"] == "windows" for i in windows)
    assert names(http, api, "?os_type=windows&name=Windows Server 2012") == ["Windows Server 2012"]
    size = get(http, f"{api}/images?name={WINDOWS}")["images"][0]["size"]
    assert names(http, api, f"?name={WINDOWS}&size_min={size}&size_max={size}") == [WINDOWS]
    assert names(http, api, f"?name={WINDOWS}&size_min={size + 1}") == []
    assert names(http, api, f"?name={WINDOWS}&size_max={size - 1}") == []
    assert names(http, api, "?tag=web") == []
    assert names(http, api, "?protected=true") == []
    assert names(http, api, "?os_hidden=true") == []
    assert len(every_image(http, api, "?member_status=all&protected=false")) == 38
    assert len(every_image(http, api, "?created_at=gte:1972-01-01T15:59:11Z")) == 38
    assert names(http, api, "?created_at=lt:1972-01-01T00:00:00Z") == []
    assert len(every_image(http, api, "?updated_at=eq:1972-01-01T15:59:11Z")) == 38


def test_sorting(http, api):
    by_name = [i["name"] for i in every_image(http, api, "?sort_key=name&sort_dir=asc")]
    assert by_name == sorted(by_name) and len(by_name) == 38
    assert [i["name"] for i in every_image(http, api, "?sort=name:desc")] == by_name[::-1]
    assert [i["name"] for i in every_image(http, api, "?sort=name")] == by_name[::-1]
    ram_then_name = every_image(http, api, "?sort=min_ram:asc,name:asc")
    assert [(i["min_ram"], i["name"]) for i in ram_then_name] == sorted(
        (i["min_ram"], i["name"]) for i in ram_then_name
    )
    # Paging follows the sort order.
    pages = every_image(http, api, "?sort_key=name&sort_dir=asc&limit=5")
    assert [i["name"] for i in pages] == by_name


@pytest.mark.parametrize(
    "query",
    [
        "limit=x",
        "limit=-1",
        "marker=00000000-0000-0000-0000-000000000000",
        "sort_key=owner_name",
        "sort_dir=sideways",
        "sort=name:up",
        "sort=name&sort_key=name",
        "sort_key=name&sort_dir=asc&sort_dir=desc",
        "visibility=everyone",
        "member_status=maybe",
        "size_min=big",
        "size_max=1.5",
        "protected=maybe",
        "os_hidden=2",
        "created_at=yesterday",
        "created_at=gt:yesterday",
        'name=in:"unterminated',
    ],
)
def test_bad_queries_are_400(http, api, query):
    assert_glance_error(http.get(f"{api}/images?{query}"), 400)


def test_one_image_and_404s(http, base_url, api, name):
    assert_glance_error(http.get(api + "/images/no-such-image"), 404)
    # Mimic's invalid_image_ref preset ids are not found here either.
    for preset in ("INVALID-IMAGE-ID", "1111", "abcZ"):
        assert_glance_error(http.get(f"{api}/images/{preset}"), 404)
    iad = glance_url(base_url, name, "IAD")
    onmetal = get(http, iad + "/images?name=OnMetal - CentOS 7")["images"][0]
    assert get(http, f"{iad}/images/{onmetal['id']}")["name"] == "OnMetal - CentOS 7"
    assert_glance_error(http.get(f"{api}/images/{onmetal['id']}"), 404)  # not in ORD
    assert_glance_error(http.get(glance_url(base_url, name, "SYD") + "/images"), 404)


# Snapshots: compute's createImage, visible through Glance --------------------------------


def test_a_snapshot_is_a_private_image_of_its_tenant(http, base_url, api, name):
    nova = nova_client.Client("2", session=v3_session(base_url, name), region_name="ORD")
    centos = get(http, f"{api}/images?name=CentOS 7 (PVHVM)")["images"][0]
    server = nova.servers.create("snap-source", image=centos["id"], flavor="2")
    snapshot_id = nova.servers.create_image(server, "my snapshot", metadata={"role": "web"})
    image = get(http, f"{api}/images/{snapshot_id}")
    assert (image["name"], image["visibility"], image["owner"]) == ("my snapshot", "private", name)
    assert image["instance_uuid"] == server.id
    assert image["image_type"] == "snapshot" and image["role"] == "web"
    assert image["os_type"] == centos["os_type"] and image["min_ram"] == centos["min_ram"]
    # Alone among the private images. (Its created_at is the virtual clock's, 1970 here,
    # so it sorts before the base images' 1972: no assertion on the default order.)
    assert names(http, api, "?visibility=private") == ["my snapshot"]
    assert names(http, api, "?owner=" + name) == ["my snapshot"]
    assert names(http, api, "?role=web") == ["my snapshot"]
    assert len(every_image(http, api)) == 39
    # Compute shows the same image; another tenant sees neither.
    assert nova.glance.find_image("my snapshot").id == snapshot_id
    assert nova.glance.find_image(snapshot_id).name == "my snapshot"
    other = glance_url(base_url, "other" + name)
    assert_glance_error(http.get(f"{other}/images/{snapshot_id}"), 404)
    assert names(http, other, "?visibility=private") == []


# Discovery and real clients -------------------------------------------------------------


def test_version_discovery(http, base_url, name):
    root = f"{base_url}/mimicking/{GLANCE.service_id}/ORD"
    for path in ("", "/", "/versions", "/v2", "/v2/", f"/v2/{name}"):
        response = http.get(root + path)
        assert response.status_code == 300, path
        assert response.json() == {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": root + "/v2/"}],
                }
            ]
        }
    sess = v3_session(base_url, name)
    data = sess.get_endpoint_data(service_type="image", region_name="ORD", discover_versions=True)
    assert data.api_version == (2, 0)
    assert data.url == glance_url(base_url, name)


def test_openstacksdk_pages_and_finds_images(http, base_url, api, name):
    conn = openstack.connection.Connection(session=v3_session(base_url, name), region_name="ORD")
    images = list(conn.image.images())
    assert len(images) == 38 and len({i.id for i in images}) == 38
    found = conn.image.find_image(WINDOWS, ignore_missing=False)
    assert found.name == WINDOWS and found.os_type == "windows"
    assert conn.image.get_image(found.id).min_ram == found.min_ram
    assert [i.name for i in conn.image.images(visibility="public", sort="name:asc")][:2] == [
        "Arch 2015.7 (PVHVM)",
        "CentOS 5 (PV)",
    ]
    # The compute API knows the same id by the same name.
    assert get(http, f"{nova_url(base_url, name)}/images/{found.id}")["image"]["name"] == WINDOWS


# The model alone: paging never loses or repeats an image, whatever the order -------------


def _service():
    from simulacra.clock import VirtualClock
    from simulacra.cloud.compute.model import ComputeBackend
    from simulacra.cloud.image.model import ImageService

    backend = ComputeBackend(VirtualClock())
    return ImageService(backend.region)


@given(
    limit=st.integers(min_value=1, max_value=40),
    sort=st.lists(st.sampled_from(SORT_KEYS), min_size=1, max_size=3, unique=True),
    directions=st.lists(st.sampled_from(["asc", "desc"]), min_size=3, max_size=3),
    region=st.sampled_from(["ORD", "IAD"]),
)
@settings(max_examples=60, deadline=None)
def test_paging_covers_every_image_once_in_order(limit, sort, directions, region):
    service = _service()
    order = ",".join(f"{key}:{d}" for key, d in zip(sort, directions, strict=False))
    everything = service.list_images("t", region, {"sort": [order], "limit": ["1000"]}).images
    seen, marker = [], None
    while True:
        query = {"sort": [order], "limit": [str(limit)]}
        if marker is not None:
            query["marker"] = [marker]
        page = service.list_images("t", region, query)
        seen += page.images
        if page.next_marker is None:
            break
        marker = page.next_marker
    assert [i.id for i in seen] == [i.id for i in everything]
    assert len(seen) == len({i.id for i in seen}) == (52 if region == "IAD" else 38)


def test_quoted_in_filter_values():
    from simulacra.cloud.image.model import _split_in

    assert _split_in('a,"b,c",d') == ["a", "b,c", "d"]
    assert _split_in("") == [""]
