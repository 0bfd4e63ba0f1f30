"""``--shared-cloud``: cloud-mock state and the virtual clock shared through PostgreSQL.

Real instances on real sockets over the machine's PostgreSQL (each test in a schema of its
own, tests/pg.py), driven by requests, keystoneauth1 and python-novaclient. A cloud request
commits before it answers, so what one instance acknowledged the next request on another
instance sees: no waiting is needed, unlike the NOTIFY-driven checks of test_shared_store.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v2
from novaclient import client as nova_client

from simulacra.cloud.compute import NOVA, NOVA_CONTROL
from simulacra.cloud.loadbalancer import CLB
from simulacra.cloud.shared import restricted_loads
from tests.server import RunningServer, refused_serve
from tests.test_shared_store import can_restart_postgres, eventually, pg_ctl, pg_ready

SHARED = ["--shared-cloud"]


def start(store: str, extra: list[str] | None = None) -> RunningServer:
    return RunningServer(store=store, extra_args=list(SHARED if extra is None else extra)).start()


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    a, b = start(pg_url), start(pg_url)
    yield a, b
    assert a.stop() == 0
    assert b.stop() == 0


def authenticate(url: str, username: str, tenant: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {"passwordCredentials": {"username": username, "password": "x"}}
    if tenant is not None:
        auth["tenantName"] = tenant
    response = requests.post(url + "/identity/v2.0/tokens", json={"auth": auth})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def nova_url(url: str, tenant: str, region: str = "ORD") -> str:
    return f"{url}/mimicking/{NOVA.service_id}/{region}/v2/{tenant}"


def clb_url(url: str, tenant: str) -> str:
    return f"{url}/mimicking/{CLB.service_id}/ORD/v2/{tenant}"


def novaclient_on(url: str, username: str, tenant: str) -> Any:
    """python-novaclient authenticated through ``url``'s Identity v2.0 (keystoneauth1)."""
    auth = v2.Password(
        auth_url=url + "/identity/v2.0", username=username, password="x", tenant_name=tenant
    )
    return nova_client.Client("2", session=ks_session.Session(auth=auth), region_name="ORD")


def test_token_server_and_clock_are_shared(pair):
    a, b = pair
    access = authenticate(a.url, "alice", "900001")
    token = access["token"]["id"]
    # A token issued by A validates on B, and B's login answers the same token.
    checked = requests.get(f"{b.url}/identity/v2.0/tokens/{token}", params={"belongsTo": "900001"})
    assert checked.status_code == 200, checked.text
    assert authenticate(b.url, "alice", "900001")["token"]["id"] == token
    # A server created on B (python-novaclient authenticated on B) is listed and shown by A.
    nova_b = novaclient_on(b.url, "alice", "900001")
    created = nova_b.servers.create("web", image="img", flavor="2", meta={"server_building": "30"})
    nova_a = novaclient_on(a.url, "alice", "900001")
    assert [s.id for s in nova_a.servers.list()] == [created.id]
    assert nova_a.servers.get(created.id).status == "BUILD"
    # One clock: a tick on A moves the server seen from B.
    tick = requests.post(a.url + "/mimic/v1.1/tick", json={"amount": 30})
    assert tick.status_code == 200, tick.text
    assert nova_b.servers.get(created.id).status == "ACTIVE"
    detail = requests.get(
        f"{nova_url(b.url, '900001')}/servers/{created.id}", headers={"X-Auth-Token": token}
    )
    assert detail.json()["server"]["status"] == "ACTIVE"
    assert (
        requests.post(b.url + "/mimic/v1.1/tick", json={"amount": 0}).json()["now"]
        == (tick.json()["now"])
    )


def query(pg_url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    from simulacra.store.postgres import split_url

    url, schema = split_url(pg_url)
    with psycopg.connect(url, options=f"-csearch_path={schema}", autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def stored_versions(pg_url: str) -> dict[str, int]:
    """Every stored part's version, by key (placeholders of version 0 left out)."""
    rows = query(pg_url, "SELECT key, version FROM cloud_part WHERE version > 0")
    return {key: int(version) for key, version in rows}


def stored_sizes(pg_url: str) -> dict[str, int]:
    """Every stored part's size in bytes, by key (placeholders and absent parts left out)."""
    rows = query(pg_url, "SELECT key, length(data) FROM cloud_part WHERE data IS NOT NULL")
    return {key: int(size) for key, size in rows}


def tenant_part(tenant: str) -> str:
    return f"compute.tenants:{tenant!r}"


def server_part(tenant: str, server_id: str) -> str:
    return f"compute.servers:{(tenant, server_id)!r}"


def id_page_part(tenant: str, region: str, page: int) -> str:
    return f"compute.tenants_server_id_pages:{(tenant, region, page)!r}"


def test_reads_write_nothing_and_a_write_writes_only_its_parts(pair, pg_url):
    a, b = pair
    api_a, api_b = nova_url(a.url, "900007"), nova_url(b.url, "900007")
    body = {"server": {"name": "r", "imageRef": "img", "flavorRef": "2"}}
    assert requests.post(api_a + "/servers", json=body).status_code == 202
    versions = stored_versions(pg_url)
    assert tenant_part("900007") in versions
    # B loads A's change, then both read: the parts pickle to the same bytes in each
    # process (their sets included), so nothing is written back.
    for api in (api_b, api_a, api_b, api_a):
        assert len(requests.get(api + "/servers/detail").json()["servers"]) == 1
    assert stored_versions(pg_url) == versions
    # A create writes its region's page of server ids and its server's, once, and nothing
    # else: not the tenant's other server, nor the tenant's part.
    created = requests.post(api_b + "/servers", json=body)
    assert created.status_code == 202
    after = stored_versions(pg_url)
    moved = {key for key in after if after[key] != versions.get(key)}
    assert moved == {
        id_page_part("900007", "ORD", 0),
        server_part("900007", created.json()["server"]["id"]),
    }


def test_what_a_create_writes_does_not_grow_with_the_tenants_servers(pair, pg_url):
    """A tenant's part holds one block of address numbers per page of ids, not its servers'
    ids or addresses: the create of its 40th server writes as many bytes as its first's (a
    page of ids fills, then a new one, and only then the tenant's part)."""
    a, b = pair
    body = {"server": {"name": "r", "imageRef": "img", "flavorRef": "2"}}
    made = []
    for i in range(40):
        api = nova_url((a, b)[i % 2].url, "900017")
        created = requests.post(api + "/servers", json=body)
        assert created.status_code == 202
        made.append(created.json()["server"]["id"])
        if i == 0:
            first = stored_sizes(pg_url)
    last = stored_sizes(pg_url)
    tenant = tenant_part("900017")
    # Rows are taken in the byte order of their keys; a tenant's pages sort after its row, so
    # whoever holds the tenant's row takes a new page's without waiting (migration 0012).
    assert all(tenant.encode() < key.encode() for key in last if "server_id_pages" in key)
    assert abs(last[tenant] - first[tenant]) < 8  # a block more
    assert id_page_part("900017", "ORD", 1) in last  # 32 ids to a page
    assert last[id_page_part("900017", "ORD", 1)] < last[id_page_part("900017", "ORD", 0)]
    for instance in (a, b):
        listed = requests.get(nova_url(instance.url, "900017") + "/servers").json()["servers"]
        assert [s["id"] for s in listed] == made


def execute(pg_url: str, sql: str, args: tuple[Any, ...] = ()) -> None:
    import psycopg

    from simulacra.store.postgres import split_url

    url, schema = split_url(pg_url)
    with psycopg.connect(url, options=f"-csearch_path={schema}", autocommit=True) as conn:
        conn.execute(sql, args)


def test_unreadable_state_is_a_500_until_reset_as_documented(pair, pg_url):
    a, b = pair
    api_a, api_b = nova_url(a.url, "900008"), nova_url(b.url, "900008")
    body = {"server": {"name": "r", "imageRef": "img", "flavorRef": "2"}}
    assert requests.post(api_a + "/servers", json=body).status_code == 202
    # A part no allowed class can build (as from another version): refused, not run.
    forged = b"cos\nsystem\n(S'echo pwned'\ntR."
    execute(
        pg_url,
        "UPDATE cloud_part SET version = nextval('cloud_part_version'), data = %s WHERE key = %s",
        (forged, tenant_part("900008")),
    )
    assert requests.get(api_b + "/servers").status_code == 500
    assert requests.get(api_a + "/servers").status_code == 500
    # Another tenant's state is not that part: it still answers.
    assert requests.get(nova_url(b.url, "900009") + "/servers").status_code == 200
    # docs/scaling.md's reset: every instance starts afresh.
    execute(pg_url, "DELETE FROM cloud_part")
    for api in (api_a, api_b):
        listed = requests.get(api + "/servers")
        assert listed.status_code == 200 and listed.json()["servers"] == []


def test_load_balancer_and_node_are_shared(pair):
    a, b = pair
    clb_a, clb_b = clb_url(a.url, "900002"), clb_url(b.url, "900002")
    body = {
        "loadBalancer": {
            "name": "front",
            "protocol": "HTTP",
            "virtualIps": [{"type": "PUBLIC"}],
        }
    }
    created = requests.post(clb_a + "/loadbalancers", json=body)
    assert created.status_code == 202, created.text
    lb_id = created.json()["loadBalancer"]["id"]
    node = {"nodes": [{"address": "10.0.0.7", "port": 80, "condition": "ENABLED"}]}
    added = requests.post(f"{clb_a}/loadbalancers/{lb_id}/nodes", json=node)
    assert added.status_code == 202, added.text
    node_id = added.json()["nodes"][0]["id"]
    seen = requests.get(f"{clb_b}/loadbalancers/{lb_id}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["loadBalancer"]["name"] == "front"
    nodes = requests.get(f"{clb_b}/loadbalancers/{lb_id}/nodes").json()["nodes"]
    assert [(n["id"], n["address"]) for n in nodes] == [(node_id, "10.0.0.7")]


def test_behaviors_registered_on_one_instance_apply_on_the_other(pair):
    a, b = pair
    # Their predicates are closures, compiled again from the criteria after loading.
    ctl = f"{a.url}/mimicking/{NOVA_CONTROL.service_id}/ORD/v2/900002"
    rule = {
        "name": "fail",
        "parameters": {"code": 503, "message": "no room"},
        "criteria": [{"server_name": "doomed.*"}],
    }
    assert requests.post(ctl + "/behaviors/creation", json=rule).status_code == 201
    server = {"server": {"name": "doomed-1", "imageRef": "img", "flavorRef": "2"}}
    refused = requests.post(nova_url(b.url, "900002") + "/servers", json=server)
    assert refused.status_code == 503, refused.text
    server["server"]["name"] = "fine"
    assert requests.post(nova_url(b.url, "900002") + "/servers", json=server).status_code == 202


def test_concurrent_creates_on_two_instances_all_land(pair):
    a, b = pair
    servers = {a.url: nova_url(a.url, "900003"), b.url: nova_url(b.url, "900003")}

    def create(i: int) -> str:
        url = list(servers.values())[i % 2]
        body = {"server": {"name": f"s{i}", "imageRef": "img", "flavorRef": "2"}}
        response = requests.post(url + "/servers", json=body)
        assert response.status_code == 202, response.text
        return response.json()["server"]["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))
    assert len(set(ids)) == 40
    for url in servers.values():
        listed = requests.get(url + "/servers").json()["servers"]
        assert {s["id"] for s in listed} == set(ids)


def test_without_shared_cloud_instances_keep_their_own_state(pg_url):
    a, b = start(pg_url, []), start(pg_url, [])
    try:
        body = {"server": {"name": "solo", "imageRef": "img", "flavorRef": "2"}}
        created = requests.post(nova_url(a.url, "900004") + "/servers", json=body)
        assert created.status_code == 202
        assert requests.get(nova_url(a.url, "900004") + "/servers").json()["servers"]
        assert requests.get(nova_url(b.url, "900004") + "/servers").json()["servers"] == []
        requests.post(a.url + "/mimic/v1.1/tick", json={"amount": 5})
        now_a = requests.post(a.url + "/mimic/v1.1/tick", json={"amount": 0}).json()["now"]
        now_b = requests.post(b.url + "/mimic/v1.1/tick", json={"amount": 0}).json()["now"]
        assert now_a != now_b
    finally:
        a.stop()
        b.stop()


def test_shared_cloud_refuses_a_sqlite_store(tmp_path):
    stderr = refused_serve("--store", f"sqlite:///{tmp_path}/s.db", *SHARED)
    assert "--shared-cloud keeps the cloud state in the shared store" in stderr
    assert "postgresql://" in stderr


def test_workers_without_shared_cloud_warn(pg_url):
    server = RunningServer(store=pg_url, extra_args=["--workers", "2"]).start()
    # The warning comes before the banner, both printed before the server starts.
    output = "".join(server.output().splitlines(keepends=True)[:2])
    # Let both workers finish starting: granian may miss a SIGTERM sent before then.
    for _ in range(20):
        requests.get(server.url + "/mimic/v1.0/presets")
    time.sleep(1)
    assert server.stop() == 0
    assert "warning: cloud-mock state" in output and "per worker process" in output
    assert "--shared-cloud" in output


def test_workers_share_the_cloud(pg_url):
    """``--workers 2 --shared-cloud``: the two processes behind one port agree on everything."""
    server = start(pg_url, ["--shared-cloud", "--workers", "2"])
    try:
        api = nova_url(server.url, "900005")
        ids = set()
        for i in range(12):  # new connections: granian spreads them over both workers
            body = {"server": {"name": f"w{i}", "imageRef": "img", "flavorRef": "2"}}
            ids.add(requests.post(api + "/servers", json=body).json()["server"]["id"])
            listed = {s["id"] for s in requests.get(api + "/servers").json()["servers"]}
            assert listed == ids
    finally:
        assert server.stop() == 0


def test_postgres_restart_answers_503_or_succeeds_and_keeps_what_it_acknowledged(pg_url):
    reason = can_restart_postgres()
    if reason:
        pytest.skip(reason)
    a, b = start(pg_url), start(pg_url)
    stopped = False
    acknowledged: list[str] = []  # server ids whose create answered 202
    statuses: dict[int, int] = {}
    bodies_503: list[dict[str, Any]] = []
    stop = threading.Event()

    def writer(server: RunningServer, tag: str) -> None:
        api = nova_url(server.url, "900006")
        i = 0
        with requests.Session() as http:
            while not stop.is_set():
                i += 1
                body = {"server": {"name": f"{tag}{i}", "imageRef": "img", "flavorRef": "2"}}
                try:
                    response = http.post(api + "/servers", json=body, timeout=30)
                except requests.RequestException:
                    continue
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    acknowledged.append(response.json()["server"]["id"])
                elif response.status_code == 503:
                    bodies_503.append(response.json())
                    time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
    try:
        for thread in threads:
            thread.start()
        eventually(lambda: len(acknowledged) >= 20, "servers created before the restart")
        pg_ctl("stop")
        stopped = True
        eventually(lambda: len(bodies_503) >= 4, "cloud requests answer 503 during the outage")
        pg_ctl("start")
        stopped = False
        before = len(acknowledged)
        eventually(lambda: len(acknowledged) >= before + 20, "servers created after the restart")
        stop.set()
        for thread in threads:
            thread.join()
        assert all(s.process and s.process.poll() is None for s in (a, b)), "an instance died"
        assert set(statuses) <= {202, 503}, statuses
        assert bodies_503[0]["code"] == 503
        assert "unavailable" in bodies_503[0]["message"]
        for server in (a, b):  # nothing acknowledged is lost, seen from either instance
            listed = requests.get(nova_url(server.url, "900006") + "/servers").json()["servers"]
            assert set(acknowledged) <= {s["id"] for s in listed}
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        if stopped:
            pg_ctl("start")
        a.stop()
        b.stop()
        eventually(pg_ready, "PostgreSQL is back", patience=60)


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_foreign_classes():
    with pytest.raises(pickle.UnpicklingError, match=r"(posix|os)\.system"):
        restricted_loads(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="not an allowed class"):
        restricted_loads(pickle.dumps(pickle.Pickler))  # a class, but not one of ours
    with pytest.raises(pickle.UnpicklingError, match="not an allowed class"):
        restricted_loads(pickle.dumps(restricted_loads))  # ours, but a function
    # What the state is made of loads.
    import random

    from simulacra.cloud.compute.model import Keypair

    keypair = Keypair("k", "ssh-rsa x", "aa", 0.0, 1)
    rng = random.Random(7)
    loaded = restricted_loads(pickle.dumps({"k": keypair, "rng": rng, "s": {1, 2}}))
    assert loaded["k"] == keypair and loaded["rng"].random() == rng.random()


def test_references_resolve_only_to_this_process_objects():
    forged = b"csimulacra.cloud.shared\n_Ref\n(S'os.system'\ntR."  # _Ref(name), REDUCE
    with pytest.raises(pickle.UnpicklingError, match="unknown persistent reference"):
        restricted_loads(forged)
    clock = object()
    assert restricted_loads(forged.replace(b"os.system", b"clock"), {"clock": clock}) is clock


def test_restricted_unpickler_refuses_classes_merely_imported_by_cloud_modules():
    from starlette.responses import Response

    import simulacra.cloud.http as cloud_http

    assert cloud_http.Response is Response  # reachable as simulacra.cloud.http.Response
    forged = b"csimulacra.cloud.http\nResponse\n."  # GLOBAL opcode, then STOP
    with pytest.raises(pickle.UnpicklingError, match="not an allowed class"):
        restricted_loads(forged)


def test_parts_pickle_wiring_as_references_and_refuse_callables():
    import functools
    import io
    import itertools
    import random

    from simulacra.cloud.shared import _Pickler

    wiring = random.Random(1)  # a backend's generator: this process's, never stored
    state_rng = random.Random(2)  # a generator of the same type that is state
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, {id(wiring): "rng:x"}, [wiring])
    pickler.dump({"w": wiring, "s": state_rng, "n": itertools.count(5, 2)})
    loaded = restricted_loads(buffer.getvalue(), {"rng:x": wiring})
    assert loaded["w"] is wiring
    assert loaded["s"] is not state_rng and loaded["s"].random() == state_rng.random()
    assert next(loaded["n"]) == 5 and next(loaded["n"]) == 7
    for callable_ in (functools.partial(print), len, pickler.dump):
        with pytest.raises(pickle.PicklingError, match="holds a function"):
            pickler.dump({"f": callable_})
    # A plain function pickles by name (the pickler's fast path), and no process loads it.
    buffer.seek(0)
    buffer.truncate()
    pickler.clear_memo()  # as SharedCloud does before each part
    pickler.dump({"f": restricted_loads})
    with pytest.raises(pickle.UnpicklingError, match="not an allowed class"):
        restricted_loads(buffer.getvalue())


def test_a_request_touches_the_rest_of_only_the_services_it_looks_up():
    """A compute create pickles and checks the clock and compute's rest, not identity's or the
    load balancers' (each a part every request touched, and checked in the store); a reset,
    which goes through every service, touches them all."""
    from simulacra.clock import VirtualClock
    from simulacra.cloud import build_cloud
    from simulacra.cloud.compute.routes import create_server
    from simulacra.cloud.shared import SharedCloud

    core, _ = build_cloud(VirtualClock(), ("ORD",))
    every = {"clock", *(f"rest:{name}" for name in core.services)}
    shared = SharedCloud(core)

    def fixed_touched() -> set[str]:
        touched = shared._collect()
        keys = {part.key for part, _, _ in touched.changes}
        keys |= {part.key for part, _ in touched.reads}
        return {key for key in keys if key == "clock" or key.startswith("rest:")}

    body = b'{"server": {"name": "b", "imageRef": "img", "flavorRef": "2"}}'
    assert create_server(core, "http://x", "t1", "ORD", body).status == 202
    assert fixed_touched() == {"clock", "rest:compute"}
    core.reset()
    assert fixed_touched() == every
    assert fixed_touched() == {"clock"}  # nothing looked up since
