"""Issue 16: the typed Python client, sync (``Simulacra``) and async (``AsyncSimulacra``),
against a real server over a real socket.

Every public method of both clients is called here. The sync tests go method by method;
the async ones walk the same ground as a user would, each in ``asyncio.run`` (no plugin).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import socket
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from simulacra.client import (
    AsyncRecording,
    AsyncSimulacra,
    BehaviorEvent,
    Recording,
    Session,
    Simulacra,
    SimulacraError,
    _Calls,
)
from simulacra.cloud.compute import NOVA
from simulacra.models import DelayPolicyDocument, RecordRules, ScenarioDetail
from tests.server import RunningServer
from tests.zip_helpers import scenario_zip

REPO = Path(__file__).resolve().parent.parent
TOKENS = "/identity/v2.0/tokens"


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    """A server of its own: the tests reset it, and tick its clock."""
    server = RunningServer(store="memory://").start()
    yield server
    server.stop()


@pytest.fixture
def sim(running: RunningServer) -> Iterator[Simulacra]:
    with Simulacra(running.url) as client:
        yield client


def run(running: RunningServer, scenario: Callable[[AsyncSimulacra], Awaitable[None]]) -> None:
    """``scenario`` with an async client of the server, in an event loop of its own."""

    async def main() -> None:
        async with AsyncSimulacra(running.url) as client:
            await scenario(client)

    asyncio.run(main())


@contextlib.contextmanager
def requests_sent(sim: Simulacra) -> Iterator[list[httpx.Request]]:
    """The requests the client sends in the block."""
    sent: list[httpx.Request] = []
    hooks = sim.http.event_hooks
    sim.http.event_hooks = {**hooks, "request": [*hooks["request"], sent.append]}
    try:
        yield sent
    finally:
        sim.http.event_hooks = hooks


@contextlib.asynccontextmanager
async def async_requests_sent(sim: AsyncSimulacra) -> AsyncIterator[list[httpx.Request]]:
    sent: list[httpx.Request] = []

    async def note(request: httpx.Request) -> None:
        sent.append(request)

    hooks = sim.http.event_hooks
    sim.http.event_hooks = {**hooks, "request": [*hooks["request"], note]}
    try:
        yield sent
    finally:
        sim.http.event_hooks = hooks


def closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def login(http: httpx.Client, username: str) -> int:
    body = {"auth": {"passwordCredentials": {"username": username, "password": "p"}}}
    return http.post(TOKENS, json=body).status_code


# Sessions ----------------------------------------------------------------------------------


def test_record_then_play_on_a_port_of_its_own(sim: Simulacra, name: str) -> None:
    with sim.recording(name, f"{name}-rec") as rec:
        assert isinstance(rec, Recording) and rec.port is None
        first = rec.stub({"method": "GET", "urlPath": "/poll"}, [{"body": "pending"}])
        again = rec.stub(request={"method": "GET", "urlPath": "/poll"}, response={"body": "done"})
        assert first == again  # the same matchers: the sequence grows
    assert rec.ended
    with sim.playing(name, port=0) as play:
        assert isinstance(play.port, int) and play.url == f"http://127.0.0.1:{play.port}"
        assert [httpx.get(play.url + "/poll").text for _ in range(2)] == ["pending", "done"]
    assert closed(play.port)  # the session ended with the block, and its port with it
    [stub] = sim.stubs(name)
    assert (stub["request"], stub["response"]) == (
        {"method": "GET", "urlPath": "/poll"},
        {"status": 200, "body": ["pending", "done"]},  # a list body: the sequence
    )


def test_record_then_play_under_the_prefix(sim: Simulacra, name: str) -> None:
    with sim.recording(name) as rec:
        rec.stub({"method": "GET", "urlPattern": "/items/.*"}, {"body": "any"})
        rec.stub({"method": "GET", "urlPath": "/items/1"}, {"body": "one"}, priority=1)
    play = sim.playing(name, "front")  # not entered: it plays until ended
    assert play.port is None and play.url == f"{sim.base_url}/virtual/{name}/front"
    assert httpx.get(play.url + "/items/1").text == "one"
    assert httpx.get(play.url + "/items/2").text == "any"
    [detail] = [s for s in sim.scenarios() if s.name.endswith(f":{name}")]
    assert isinstance(detail, ScenarioDetail) and detail.stub_count == 2
    assert {(s.name, s.status) for s in detail.sessions} == {
        (rec.name, "dormant"),
        ("front", "playback"),
    }
    play.end()
    assert httpx.get(play.url + "/items/1").status_code == 409  # ended: dormant


def test_recording_an_upstream_with_its_options(sim: Simulacra, name: str) -> None:
    sim.delay_policy({"name": f"{name}-slow", "delay_type": "fixed", "milliseconds": 1000})
    with sim.recording(f"{name}-origin") as rec:
        rec.stub({"method": "GET", "urlPath": "/price"}, {"body": "9"})
        rec.stub({"method": "GET", "urlPath": "/slow"}, {"delayPolicy": f"{name}-slow"})
    with sim.playing(f"{name}-origin", port=0) as origin:
        options = {"verify": True, "ca_bundle": certifi.where(), "connect_timeout": 2}
        rules = RecordRules(ignoreQuery=["t"])
        with (
            requests_sent(sim) as sent,
            sim.recording(
                name, f"{name}-rec", upstream=origin.url, port=0, record=rules, **options
            ) as rec,
        ):
            assert rec.upstream == origin.url and rec.port is not None
            assert httpx.get(rec.url + "/price?t=1").text == "9"  # forwarded, recorded
        create, begin, end = (json.loads(request.content) for request in sent)
        assert (create, end) == ({"scenario": name}, {"end": None, "session": f"{name}-rec"})
        assert begin == {
            "begin": None,
            "session": f"{name}-rec",
            "mode": "record",
            "port": 0,
            "upstream": origin.url,
            "verify": True,
            "caBundle": certifi.where(),
            "connectTimeout": 2,
            "record": {"ignoreQuery": ["t"]},
        }
        with pytest.raises(SimulacraError, match="existing stubs"):
            sim.recording(name, upstream=origin.url)
        with sim.recording(name, upstream=origin.url, append=True, read_timeout=0.2) as rec:
            assert rec.url == f"{sim.base_url}/virtual/{name}/{rec.name}"
            assert httpx.get(rec.url + "/price?t=3").text == "9"
            assert httpx.get(rec.url + "/slow").status_code == 504  # over read_timeout
    assert [stub["request"] for stub in sim.stubs(name)] == [
        {"method": "GET", "urlPath": "/price"},  # ignoreQuery: not matched on ``t``
        {"method": "GET", "urlPath": "/price", "queryArgs": {"t": ["3"]}},  # appended, no rules
    ]
    with sim.playing(name, port=0) as copy:  # without the origin
        assert httpx.get(copy.url + "/price?t=2").text == "9"
    with pytest.raises(SimulacraError, match=re.escape("expected 'float' > 0.0 at connectTimeout")):
        sim.recording(name, upstream="http://127.0.0.1:9", read_timeout=0.5, connect_timeout=0)
    with pytest.raises(SimulacraError, match="unknown key 'ignoreQeury'"):
        sim.recording(name, upstream="http://127.0.0.1:9", record={"ignoreQeury": ["t"]})


def test_a_misspelt_key_is_refused_before_any_request_with_the_servers_message(
    sim: Simulacra, name: str
) -> None:
    rec = sim.recording(name)
    document = {"request": {"method": "GET", "urlPath": "/x"}, "respnse": {"body": "x"}}
    with requests_sent(sim) as sent, pytest.raises(SimulacraError) as refused:
        rec.stub(document["request"], {"stauts": 200})
    assert sent == []
    assert refused.value.status == 400
    assert refused.value.message == (
        "request body is invalid: unknown key 'stauts' in response; known: status, body,"
        " base64Body, headers, delayPolicy, fault, chunkedDribbleDelay"
    )
    # The server's own refusal of a misspelt key says it in the same words.
    stubs = f"/api/v2/scenarios/objects/{name}/stubs"
    with pytest.raises(SimulacraError) as server:
        sim.call("PUT", stubs, json=document, headers={"session": rec.name})
    assert server.value.message.startswith(
        "request body is invalid: unknown key 'respnse'; known: request,"
    )
    assert sim.stubs(name) == []
    rec.end()


def test_refusals_carry_the_status_and_the_servers_message(sim: Simulacra, name: str) -> None:
    created = sim.create_scenario(name)
    assert created.name.endswith(f":{name}") and created.scenarioRef.endswith(created.name)
    with pytest.raises(SimulacraError) as exists:
        sim.create_scenario(name)
    assert exists.value.status == 422
    assert exists.value.message == f"Scenario {created.name} already exists"
    assert str(exists.value) == f"422: Scenario {created.name} already exists"
    with pytest.raises(SimulacraError) as empty:
        sim.playing(name)
    assert empty.value.status == 412 and "has no stubs" in empty.value.message
    sim.delete_scenario(name)
    with pytest.raises(SimulacraError) as missing:
        sim.delete_scenario(name)
    assert missing.value.status == 412 and "does not exist" in missing.value.message  # Mirage


def test_action_and_call_reach_what_has_no_method(sim: Simulacra, name: str) -> None:
    with sim.recording(name) as rec:
        rec.stub({"method": "GET", "urlPath": "/a"}, {"body": "a"})
    sim.playing(name, "one")
    sim.playing(name, "two")
    assert sim.action(name, {"end": "sessions"}) == {
        "one": {"message": "Session ended"},
        "two": {"message": "Session ended"},
    }
    assert sim.call("GET", f"/api/v2/scenarios/objects/{name}")["stub_count"] == 1
    assert sim.call("GET", f"/api/v2/scenarios/objects/{name}/export")[:2] == b"PK"  # bytes
    with pytest.raises(SimulacraError, match="unknown key 'bgin'"):
        sim.action(name, {"bgin": None})


# Archives, delay policies, the tracker -----------------------------------------------------


def test_an_export_uploaded_plays_the_same(sim: Simulacra, name: str, tmp_path: Path) -> None:
    with sim.recording(name) as rec:
        rec.stub({"method": "GET", "urlPath": "/hello"}, {"body": "hi"})
    exported = sim.export(name, as_session="replay")
    with zipfile.ZipFile(BytesIO(exported)) as zipped:
        assert "session: replay" in next(
            zipped.read(n).decode() for n in zipped.namelist() if n.endswith(".yaml")
        )
    sim.delete_scenario(name)
    uploaded = sim.upload(exported)
    assert (uploaded.scenario, uploaded.session, uploaded.stub_count) == (name, "replay", 1)
    assert httpx.get(f"{sim.base_url}/virtual/{name}/replay/hello").text == "hi"
    # From a file, under another name.
    copy = f"{name}-copy"
    (tmp_path / "copy.zip").write_bytes(sim.export(name, as_scenario=copy, as_session="again"))
    assert sim.upload(tmp_path / "copy.zip").name.endswith(f":{copy}")
    assert httpx.get(f"{sim.base_url}/virtual/{copy}/again/hello").text == "hi"
    # A Mirage archive, as it is written elsewhere.
    other = f"{name}-mirage"
    stub = {"request": {"method": "GET", "urlPath": "/m"}, "response": {"body": "m"}}
    sim.upload(scenario_zip(other, "mirage", [stub]), filename="mirage.zip")
    assert httpx.get(f"{sim.base_url}/virtual/{other}/mirage/m").text == "m"


def test_a_har_file_becomes_stubs(sim: Simulacra, name: str, tmp_path: Path) -> None:
    entry = {
        "request": {"method": "GET", "url": "https://shop.example/hi?v=1", "headers": []},
        "response": {"status": 200, "headers": [], "content": {"text": "hello"}},
        "_initiator": "a custom key the HAR spec allows",
    }
    har = {"log": {"version": "1.2", "entries": [entry]}, "_exported_by": "a browser"}
    sim.create_scenario(name)
    imported = sim.import_har(name, har, record={"ignoreQuery": ["v"]})
    assert (imported.entries, imported.skipped, imported.stubs["created"]) == (1, 0, 1)
    assert sim.stubs(name)[0]["request"] == {"method": "GET", "urlPath": "/hi"}
    (tmp_path / "site.har").write_text(httpx.Response(200, json=har).text)
    assert sim.import_har(name, tmp_path / "site.har").stubs == {"created": 1, "updated": 0}
    with pytest.raises(SimulacraError, match="unknown key 'ignoreQeury'"):
        sim.import_har(name, har, record={"ignoreQeury": ["v"]})


def test_delay_policies(sim: Simulacra, name: str) -> None:
    put = sim.delay_policy({"name": name, "delay_type": "fixed", "milliseconds": 40})
    assert (put.status, put.delay_type) == ("new", "fixed")
    replaced = sim.delay_policy(
        DelayPolicyDocument(name=name, delay_type="normalvariate", mean=5, stddev=1)
    )
    assert replaced.status == "updated"
    [policy] = [p for p in sim.delay_policies() if p.name == name]
    assert (policy.delay_type, policy.mean, policy.stddev) == ("normalvariate", 5, 1)
    with pytest.raises(SimulacraError, match="unknown key 'milisecond'"):
        sim.delay_policy({"name": name, "delay_type": "fixed", "milisecond": 1})
    sim.delete_delay_policy(name)
    assert name not in [p.name for p in sim.delay_policies()]
    with pytest.raises(SimulacraError) as missing:
        sim.delete_delay_policy(name)
    assert missing.value.status == 404


def test_the_tracker_is_read_a_page_at_a_time(sim: Simulacra, name: str) -> None:
    with sim.recording(name) as rec:
        rec.stub({"method": "GET", "urlPattern": "/n/.*"}, {"body": "n"})
    with sim.playing(name) as play:
        for n in range(5):
            httpx.get(f"{play.url}/n/{n}")
    with requests_sent(sim) as sent:
        records = list(sim.tracked(f"session:{play.name} /n/", page=2))  # not its begin
    assert [r["function"] for r in records] == [
        f"/virtual/{name}/{play.name}/n/{n}" for n in reversed(range(5))
    ]  # newest first
    assert [dict(r.url.params) for r in sent] == [
        {"skip": "0", "limit": "2", "q": f"session:{play.name} /n/"},
        {"skip": "2", "limit": "2", "q": f"session:{play.name} /n/"},
        {"skip": "4", "limit": "2", "q": f"session:{play.name} /n/"},
    ]
    full = sim.tracker_record(records[0]["id"])
    assert (full["request_method"], full["stubo_response"]) == ("GET", "n")
    with pytest.raises(SimulacraError) as bad_query:
        next(sim.tracked("sc:abc"))
    assert bad_query.value.status == 400 and "sc:abc" in bad_query.value.message


# Operations and the cloud's control plane ------------------------------------------------------


def test_a_degraded_servers_503_is_its_health() -> None:
    # The store cannot be stopped under a running test server: the call reads the answer.
    degraded = {
        "status": "degraded",
        "version": "0.1.0",
        "uptime_s": 1.5,
        "store": {"reachable": False, "kind": "postgresql", "error": "connection refused"},
    }
    health = _Calls.health().outcome(httpx.Response(503, json=degraded))
    assert (health.status, health.store.error) == ("degraded", "connection refused")
    with pytest.raises(SimulacraError) as refused:
        _Calls.health().outcome(httpx.Response(500, text="oops"))
    assert (refused.value.status, refused.value.message) == (500, "oops")


def test_health_openapi_and_reset(sim: Simulacra, name: str) -> None:
    health = sim.health()
    assert (health.status, health.store.kind, health.store.reachable) == ("ok", "memory", True)
    assert "/api/v2/scenarios" in sim.openapi()["paths"]
    with sim.recording(name) as rec:
        rec.stub({"method": "GET", "urlPath": "/r"}, {"body": "r"})
    sim.tick(10)
    assert sim.reset("cloud").reset == ["cloud"]
    assert sim.tick(0) == "1970-01-01T00:00:00.000000Z"  # the clock is back at its start
    assert any(s.name.endswith(f":{name}") for s in sim.scenarios())
    assert sim.reset("virtual").reset == ["virtual"]
    assert sim.scenarios() == []
    assert sim.reset().reset == ["virtual", "cloud"]


def test_tick_moves_the_clock(sim: Simulacra) -> None:
    before = datetime.fromisoformat(sim.tick(0))
    ticked = sim.advance_clock(90.5)
    assert ticked.advanced == 90.5
    assert (datetime.fromisoformat(ticked.now) - before).total_seconds() == 90.5
    with pytest.raises(SimulacraError) as backwards:
        sim.tick(-1)
    assert backwards.value.message == "request body is invalid: expected 'float' >= 0.0 at amount"
    assert datetime.fromisoformat(sim.tick(0)) == datetime.fromisoformat(ticked.now)
    presets = sim.presets()
    assert "server_building" in presets["servers"]


def test_an_auth_behavior_takes_effect_until_removed(sim: Simulacra, name: str) -> None:
    auth = BehaviorEvent.identity_auth()
    behavior_id = sim.add_behavior(auth, "fail", criteria=[{"username": f"{name}-.*"}])
    assert login(sim.http, f"{name}-1") == 401
    assert login(sim.http, f"other-{name}") == 200
    [listed] = [b for b in sim.behaviors(auth) if b["id"] == behavior_id]
    assert (listed["name"], listed["criteria"]) == ("fail", [{"username": f"{name}-.*"}])
    sim.remove_behavior(auth, behavior_id)
    assert login(sim.http, f"{name}-1") == 200
    with pytest.raises(SimulacraError) as gone:
        sim.remove_behavior(auth, behavior_id)
    assert gone.value.status == 404
    with pytest.raises(SimulacraError, match="unknown behavior 'explode'"):
        sim.add_behavior(auth, "explode")
    with pytest.raises(SimulacraError, match="unknown key 'criterias'"):
        sim.call("POST", auth.path, json={"name": "fail", "criterias": []})  # the server's words


def test_a_behavior_block_on_server_creation(sim: Simulacra, name: str) -> None:
    creation = BehaviorEvent.server_creation(name, "DFW")
    servers = f"/mimicking/{NOVA.service_id}/DFW/v2/{name}/servers"
    boot = {"server": {"name": "tea-1", "imageRef": "img", "flavorRef": "2"}}
    teapot = {"code": 418, "message": "teapot"}
    with sim.behavior(
        creation, "fail", parameters=teapot, criteria=[{"server_name": "tea.*"}]
    ) as behavior_id:
        assert [b["id"] for b in sim.behaviors(creation)] == [behavior_id]
        assert sim.http.post(servers, json=boot).status_code == 418
    assert sim.behaviors(creation) == []
    assert sim.http.post(servers, json=boot).status_code == 202
    with sim.behavior(creation, "error"):
        sim.reset("cloud")  # the block's end finds nothing to remove, and says nothing


def test_load_balancer_creation_behaviors(sim: Simulacra, name: str) -> None:
    creation = BehaviorEvent.load_balancer_creation(name)
    behavior_id = sim.add_behavior(
        creation, "building", parameters={"duration": 30}, criteria=[{"loadbalancer_name": "x"}]
    )
    assert [(b["id"], b["parameters"]) for b in sim.behaviors(creation)] == [
        (behavior_id, {"duration": 30.0})
    ]
    sim.remove_behavior(creation, behavior_id)
    assert sim.behaviors(creation) == []


# The async client ----------------------------------------------------------------------------


def test_async_sessions_on_a_port_and_under_the_prefix(running: RunningServer, name: str) -> None:
    async def scenario(sim: AsyncSimulacra) -> None:
        async with sim.recording(name) as rec:
            assert isinstance(rec, AsyncRecording)
            await rec.stub({"method": "GET", "urlPath": "/a"}, [{"body": "1"}, {"body": "2"}])
        assert rec.ended
        async with sim.playing(name, port=0) as play, httpx.AsyncClient() as http:
            assert play.url == f"http://127.0.0.1:{play.port}"
            assert [(await http.get(play.url + "/a")).text for _ in range(2)] == ["1", "2"]
        assert closed(play.port or 0)
        prefixed = await sim.playing(name, "later")  # awaited: the session itself
        assert prefixed.url == f"{sim.base_url}/virtual/{name}/later"
        async with prefixed, httpx.AsyncClient() as http:
            assert (await http.get(prefixed.url + "/a")).text == "1"
        assert prefixed.ended
        recording = await sim.recording(f"{name}-more")
        await recording.end()
        [detail] = [s for s in await sim.scenarios() if s.name.endswith(f":{name}")]
        assert detail.stub_count == 1
        assert (await sim.stubs(name))[0]["request"] == {"method": "GET", "urlPath": "/a"}

    run(running, scenario)


def test_async_upstream_recording_and_refusals(running: RunningServer, name: str) -> None:
    async def scenario(sim: AsyncSimulacra) -> None:
        async with sim.recording(f"{name}-origin") as rec:
            await rec.stub({"method": "GET", "urlPath": "/p"}, {"body": "p"})
        async with sim.playing(f"{name}-origin", port=0) as origin:
            options = {"verify": False, "connect_timeout": 1, "read_timeout": 2}
            recording = sim.recording(
                name, upstream=origin.url, port=0, record={"recordFailures": True}, **options
            )
            async with recording as rec, httpx.AsyncClient() as http:
                assert (await http.get(rec.url + "/p")).text == "p"
                assert rec.upstream == origin.url
        async with async_requests_sent(sim) as sent:
            with pytest.raises(SimulacraError) as refused:
                async with sim.recording(name, upstream=origin.url, ca_bundle=7):  # not a str
                    pass
            with pytest.raises(SimulacraError) as typo:
                await rec.stub({"method": "GET"}, {"bdy": "x"})
        assert sent == []
        assert (
            refused.value.message
            == "request body is invalid: expected 'str | null', got 'int' at caBundle"
        )
        assert (typo.value.status, "unknown key 'bdy'" in typo.value.message) == (400, True)
        with pytest.raises(SimulacraError) as exists:
            await sim.create_scenario(name)
        assert exists.value.status == 422
        created = await sim.create_scenario(f"{name}-new")
        assert created.name.endswith(f":{name}-new")
        await sim.delete_scenario(f"{name}-new")
        assert await sim.action(f"{name}-origin", {"end": "sessions"}) == {}
        assert (await sim.call("GET", f"/api/v2/scenarios/objects/{name}"))["stub_count"] == 1

    run(running, scenario)


def test_async_archives_policies_and_the_tracker(running: RunningServer, name: str) -> None:
    async def scenario(sim: AsyncSimulacra) -> None:
        async with sim.recording(name) as rec:
            await rec.stub({"method": "GET", "urlPattern": "/t/.*"}, {"body": "t"})
        exported = await sim.export(name, as_scenario=f"{name}-up", as_session="s")
        uploaded = await sim.upload(exported)
        assert (uploaded.scenario, uploaded.session, uploaded.total) == (f"{name}-up", "s", 1)
        har = {"log": {"entries": []}}
        assert (await sim.import_har(name, har)).entries == 0
        put = await sim.delay_policy({"name": name, "delay_type": "fixed", "milliseconds": 1})
        assert put.name == name
        assert name in [p.name for p in await sim.delay_policies()]
        await sim.delete_delay_policy(name)
        assert name not in [p.name for p in await sim.delay_policies()]
        async with httpx.AsyncClient() as http:
            for n in range(3):
                await http.get(f"{sim.base_url}/virtual/{name}-up/s/t/{n}")
        async with async_requests_sent(sim) as sent:
            records = [r async for r in sim.tracked("session:s /t/", page=2)]
        assert [r["function"][-4:] for r in records] == ["/t/2", "/t/1", "/t/0"]
        assert len(sent) == 2
        full = await sim.tracker_record(int(records[-1]["id"]))
        assert full["function"] == records[-1]["function"]

    run(running, scenario)


def test_async_operations_and_the_control_plane(running: RunningServer, name: str) -> None:
    async def scenario(sim: AsyncSimulacra) -> None:
        assert (await sim.health()).status == "ok"
        assert "/mimic/v1.1/tick" in (await sim.openapi())["paths"]
        before = datetime.fromisoformat(await sim.tick(0))
        ticked = await sim.advance_clock(60)
        assert (datetime.fromisoformat(ticked.now) - before).total_seconds() == 60
        assert "identity" in await sim.presets()
        auth = BehaviorEvent.identity_auth()
        async with sim.behavior(auth, "fail", criteria=[{"username": f"{name}$"}]) as held:
            body = {"auth": {"passwordCredentials": {"username": name, "password": "p"}}}
            assert (await sim.http.post(TOKENS, json=body)).status_code == 401
            assert held in [b["id"] for b in await sim.behaviors(auth)]
        assert (await sim.http.post(TOKENS, json=body)).status_code == 200
        creation = BehaviorEvent.load_balancer_creation(name)
        behavior_id = await sim.add_behavior(creation, "error")
        assert [b["name"] for b in await sim.behaviors(creation)] == ["error"]
        await sim.remove_behavior(creation, behavior_id)
        assert await sim.behaviors(creation) == []
        assert (await sim.reset("cloud")).reset == ["cloud"]
        assert (await sim.reset("virtual")).reset == ["virtual"]
        assert (await sim.reset()).reset == ["virtual", "cloud"]
        assert await sim.scenarios() == []

    run(running, scenario)


# The clients and the document ---------------------------------------------------------------


def test_the_async_client_has_every_method_of_the_sync_one() -> None:
    def public(cls: type) -> dict[str, Any]:
        return {k: v for k, v in vars(cls).items() if not k.startswith("_")}

    sync, asynchronous = public(Simulacra), public(AsyncSimulacra)
    assert set(sync) - {"close"} == set(asynchronous) - {"aclose"}
    for method in set(sync) - {"close"}:
        parameters = inspect.signature(sync[method]).parameters
        assert parameters == inspect.signature(asynchronous[method]).parameters, method
    # Entered, awaited or iterated: the rest are coroutines.
    entered = {"recording", "playing", "tracked", "behavior"}
    assert {m for m, f in asynchronous.items() if not inspect.iscoroutinefunction(f)} == entered
    assert issubclass(Recording, Session)


def test_every_call_is_an_operation_of_the_openapi_document(sim: Simulacra) -> None:
    auth, nova = BehaviorEvent.identity_auth(), BehaviorEvent.server_creation("t", "IAD")
    clb = BehaviorEvent.load_balancer_creation("t")
    calls = {
        "create_scenario": _Calls.create_scenario("s"),
        "create_scenario_if_missing": _Calls.create_scenario_if_missing("s"),
        "scenarios": _Calls.scenarios(),
        "delete_scenario": _Calls.delete_scenario("s"),
        "stubs": _Calls.stubs("s"),
        "put_stub": _Calls.put_stub("s", "r", {"method": "GET"}, {"body": "b"}, None),
        "import_stubs": _Calls.import_stubs("s", [{"request": {}, "response": {}}], "r"),
        "action": _Calls.action("s", {"end": "sessions"}),
        "begin": _Calls.begin("s", {"session": "p", "mode": "playback"}),
        "begin_recording": _Calls.begin_recording(
            "s",
            None,
            upstream="http://upstream.example",
            port=0,
            append=False,
            verify=None,
            ca_bundle=None,
            connect_timeout=None,
            read_timeout=None,
            record=None,
        ),
        "begin_playback": _Calls.begin_playback("s", None, 0),
        "end_session": _Calls.end_session("s", "p"),
        "upload": _Calls.upload(b"PK", "s.zip"),
        "export": _Calls.export("s", None, None),
        "import_har": _Calls.import_har("s", {"log": {"entries": []}}, None),
        "put_delay_policy": _Calls.put_delay_policy({"name": "d"}),
        "delay_policies": _Calls.delay_policies(),
        "delete_delay_policy": _Calls.delete_delay_policy("d"),
        "tracker_page": _Calls.tracker_page("", 0, 10),
        "tracker_record": _Calls.tracker_record(1),
        "reset": _Calls.reset(None),
        "reset one side": _Calls.reset("virtual"),
        "health": _Calls.health(),
        "tick": _Calls.tick(1),
        "presets": _Calls.presets(),
        "add_behavior": _Calls.add_behavior(auth, "fail", None, None),
        "behaviors": _Calls.behaviors(nova),
        "remove_behavior": _Calls.remove_behavior(clb, "id", missing_ok=False),
    }
    # ``raw`` sends what it is given; ``openapi`` fetches the document itself.
    described = {n for n in vars(_Calls) if not n.startswith("_")} - {"raw", "openapi"}
    assert described <= set(calls), "a call without a check here"
    operations = [
        (re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), set(methods))
        for path, methods in sim.openapi()["paths"].items()
    ]
    for label, call in calls.items():
        for step in (*call.before, call):
            assert any(
                pattern.match(step.path) and step.method.lower() in methods
                for pattern, methods in operations
            ), (label, step.method, step.path)


def test_the_readme_example(sim: Simulacra, running: RunningServer) -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The Python client") :]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    sim.reset()  # the example names its scenario "orders"
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    asyncio.run(namespace["checkout"](running.url))
    assert [s.name.rpartition(":")[2] for s in sim.scenarios()] == ["orders"]


def test_import_stubs_at_once_then_play_them(sim: Simulacra, name: str) -> None:
    sim.create_scenario(name)
    stubs = [
        {"request": {"method": "GET", "urlPath": f"/items/{i}"}, "response": {"body": str(i)}}
        for i in range(500)
    ]
    imported = sim.import_stubs(name, [*stubs, stubs[7]])  # the same matchers again
    assert (imported.created, imported.updated, imported.ignored) == (500, 1, 0)
    with pytest.raises(SimulacraError) as refused:  # checked before anything is sent
        sim.import_stubs(name, [stubs[0], {"request": {}, "respnse": {}}])
    assert refused.value.status == 400 and refused.value.message.startswith("stub 1: ")
    assert len(sim.stubs(name)) == 500
    with sim.playing(name, port=0) as play:
        assert httpx.get(play.url + "/items/7").text == "7"
        assert httpx.get(play.url + "/items/499").text == "499"


def test_import_stubs_into_a_recording_session_async(running: RunningServer, name: str) -> None:
    async def scenario(client: AsyncSimulacra) -> None:
        async with client.recording(name, f"{name}-rec"):
            stub = {"request": {"urlPath": "/a"}, "response": {"body": "a"}}
            imported = await client.import_stubs(name, [stub], session=f"{name}-rec")
            assert imported.created == 1
        assert [s["response"]["body"] for s in await client.stubs(name)] == ["a"]

    run(running, scenario)
