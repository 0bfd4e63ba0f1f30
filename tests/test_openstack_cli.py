"""The real ``openstack`` CLI (python-openstackclient from PyPI) against a running server.

Mimic's README promised that the OpenStack client works by pointing ``OS_AUTH_URL`` at
the server; today's client needs Identity v3 for ``server list`` and resolves
``--image`` through the image service. These tests run the CLI as a user would, with
``OS_*`` variables, and assert on its ``-f json`` output. Each run costs about a second
of imports, so each test groups several assertions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from simulacra.cloud.compute import NOVA
from tests.server import RunningServer

OPENSTACK = Path(sys.executable).with_name("openstack")
CENTOS = "CentOS 7 (PVHVM)"
FLAVOR = "512MB Standard Instance"


def environment(base_url: str, user: str, tenant: str, version: str = "3", path: str = "") -> dict:
    """The ``OS_*`` variables the README shows, for Identity ``version`` 3 or 2.0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(
        OS_USERNAME=user,
        OS_PASSWORD="secret",
        OS_PROJECT_NAME=tenant,
        OS_REGION_NAME="ORD",
        OS_IDENTITY_API_VERSION=version,
        # No clouds.yaml of the machine's may change what the CLI does.
        OS_CLIENT_CONFIG_FILE=os.devnull,
    )
    if version == "3":
        env.update(
            OS_AUTH_URL=base_url + (path or "/identity/v3"),
            OS_USER_DOMAIN_NAME="Default",
            OS_PROJECT_DOMAIN_NAME="Default",
        )
    else:
        env["OS_AUTH_URL"] = base_url + (path or "/identity/v2.0")
    return env


def run(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert OPENSTACK.exists(), "install the test extra: pip install -e '.[test]'"
    done = subprocess.run(
        [str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, f"openstack {' '.join(args)}:\n{done.stderr}"
    return done


def osc(env: dict, *args: str):
    """Run ``openstack <args> -f json`` and parse its output."""
    out = run(env, *args, "-f", "json").stdout
    # ``--wait`` writes "\rProgress: N" to stdout, before the JSON, when it sees a build
    # part-way through (read in text mode, the "\r" arrives as "\n").
    return json.loads(re.sub(r"^(\s*Progress: \d+)+", "", out))


@pytest.fixture
def v3_env(base_url, name) -> dict:
    return environment(base_url, f"user-{name}", name)


@pytest.fixture(scope="module")
def realtime() -> Iterator[RunningServer]:
    """A server on the wall clock (``--realtime``), for ``--wait`` without ticks."""
    running = RunningServer(store="memory://", extra_args=["--realtime"]).start()
    yield running
    running.stop()


def compute_api(base_url: str, tenant: str) -> str:
    return f"{base_url}/mimicking/{NOVA.service_id}/ORD/v2/{tenant}"


# Identity v3 ----------------------------------------------------------------------------


def test_catalog_list_and_token_issue(http, base_url, name, v3_env):
    catalog = {entry["Name"]: entry for entry in osc(v3_env, "catalog", "list")}
    types = {(entry["Name"], entry["Type"]) for entry in catalog.values()}
    assert {("keystone", "identity"), ("cloudImages", "image")} <= types
    assert ("cloudServersOpenStack", "compute") in types
    identity = catalog["keystone"]["Endpoints"]
    assert {e["url"] for e in identity} == {base_url + "/identity"}
    compute = catalog["cloudServersOpenStack"]["Endpoints"]
    assert {(e["region"], e["interface"]) for e in compute} == {
        (r, i) for r in ("ORD", "DFW", "IAD") for i in ("public", "internal")
    }
    assert all(e["url"].endswith("/v2/" + name) for e in compute)

    token = osc(v3_env, "token", "issue")
    assert token["project_id"] == name and token["id"].startswith("token_")
    # The v3 token is a v2.0 token too: same user, same tenant.
    access = http.get(f"{base_url}/identity/v2.0/tokens/{token['id']}").json()["access"]
    assert access["user"]["id"] == token["user_id"]
    assert access["token"]["tenant"]["id"] == name


def test_flavor_list_and_image_list(http, base_url, name, v3_env):
    api = compute_api(base_url, name)
    flavors = osc(v3_env, "flavor", "list")
    expected = http.get(api + "/flavors/detail").json()["flavors"]
    assert {(f["ID"], f["Name"], f["RAM"], f["VCPUs"], f["Disk"]) for f in flavors} == {
        (f["id"], f["name"], f["ram"], f["vcpus"], f["disk"]) for f in expected
    }
    # The image service serves compute's images: every id and name, across Glance's pages.
    images = osc(v3_env, "image", "list")
    compute_images = http.get(api + "/images").json()["images"]
    assert {(i["ID"], i["Name"]) for i in images} == {(i["id"], i["name"]) for i in compute_images}
    assert len(images) == 38 and {i["Status"] for i in images} == {"active"}


def test_server_create_list_show_delete(http, base_url, name, v3_env):
    created = osc(v3_env, "server", "create", "--image", CENTOS, "--flavor", FLAVOR, "web-1")
    assert created["status"] == "ACTIVE" and created["name"] == "web-1"
    image_id = next(
        i["id"]
        for i in http.get(compute_api(base_url, name) + "/images").json()["images"]
        if i["name"] == CENTOS
    )
    assert created["image"] == f"{CENTOS} ({image_id})"
    assert created["flavor"] == f"{FLAVOR} (2)"
    # An id from compute's image list resolves too, and a flavor by id.
    second = osc(v3_env, "server", "create", "--image", image_id, "--flavor", "2", "web-2")
    assert second["status"] == "ACTIVE"

    listed = {s["Name"]: s for s in osc(v3_env, "server", "list")}
    assert set(listed) == {"web-1", "web-2"}
    assert listed["web-1"]["ID"] == created["id"] and listed["web-1"]["Status"] == "ACTIVE"
    assert listed["web-1"]["Image"] == CENTOS and listed["web-1"]["Flavor"] == FLAVOR
    assert set(listed["web-1"]["Networks"]) == {"private", "public"}

    # From the unversioned identity URL, discovery finds v3.
    unversioned = environment(base_url, f"user-{name}", name, path="/identity")
    shown = osc(unversioned, "server", "show", "web-1")
    assert (shown["id"], shown["status"], shown["project_id"]) == (created["id"], "ACTIVE", name)
    assert shown["image"] == created["image"] and shown["addresses"]

    run(v3_env, "server", "delete", "web-1")  # by name, as the CLI finds it
    assert [s["Name"] for s in osc(v3_env, "server", "list")] == ["web-2"]


def test_server_create_wait_through_ticks(http, base_url, name, v3_env):
    """BUILD for 60 virtual seconds; the test ticks the clock while the CLI polls."""
    api = compute_api(base_url, name)
    stop = threading.Event()
    seen_build = threading.Event()

    def tick_once_building() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                servers = session.get(api + "/servers/detail?name=slow").json()["servers"]
                if servers and servers[0]["status"] == "BUILD":
                    seen_build.set()
                    # The CLI polls every 5 s; one tick finishes the build before its next poll.
                    session.post(base_url + "/mimic/v1.1/tick", json={"amount": 60})
                    return
                time.sleep(0.1)

    ticker = threading.Thread(target=tick_once_building, daemon=True)
    ticker.start()
    try:
        server = osc(
            v3_env,
            "server",
            "create",
            "--image",
            CENTOS,
            "--flavor",
            "2",
            "--property",
            "server_building=60",
            "--wait",
            "slow",
        )
    finally:
        stop.set()
        ticker.join(5)
    assert seen_build.is_set()
    assert server["status"] == "ACTIVE" and server["progress"] == 100


def test_server_create_wait_on_the_real_clock(realtime):
    env = environment(realtime.url, "rt-user", "rt-tenant")
    started = time.monotonic()
    server = osc(
        env,
        "server",
        "create",
        "--image",
        CENTOS,
        "--flavor",
        FLAVOR,
        "--property",
        "server_building=1",
        "--wait",
        "rt",
    )
    assert server["status"] == "ACTIVE"
    assert time.monotonic() - started >= 1
    assert [s["Status"] for s in osc(env, "server", "list")] == ["ACTIVE"]


# Identity v2.0 --------------------------------------------------------------------------


def test_v2_catalog_flavors_and_images(base_url, name):
    """v2.0 still serves the commands that need no identity service; ``server list``
    needs v3 (the client's own rule), which the error names."""
    env = environment(base_url, f"user-{name}", name, version="2")
    names = {entry["Name"] for entry in osc(env, "catalog", "list")}
    assert {"cloudServersOpenStack", "cloudImages"} <= names
    assert CENTOS in {i["Name"] for i in osc(env, "image", "list")}
    created = osc(env, "server", "create", "--image", CENTOS, "--flavor", "2", "v2-web")
    assert created["status"] == "ACTIVE"
    refused = run(env, "server", "list", check=False)
    assert refused.returncode != 0 and "identity" in refused.stderr
    # novaclient's CLI looks the image name up in Glance (the catalog URL plus /v2/images).
    nova = subprocess.run(
        [str(OPENSTACK.with_name("nova")), "boot", "--image", CENTOS, "--flavor", "2", "nova-web"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert nova.returncode == 0, nova.stderr
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in nova.stdout.splitlines()
        if len(cells := line.split("|")) == 4
    }
    assert rows["status"] == "ACTIVE" and rows["tenant_id"] == name
    assert rows["image"].startswith(CENTOS + " (")
