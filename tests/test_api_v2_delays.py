"""Contract tests: Mirage API v2 delay policies (PUT, detail, objects GET/DELETE) and their
effect on playback and the matcher, through the real server."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from tests.mirage_helpers import (
    assert_data,
    assert_error,
    contains,
    play,
    playback_of,
    stub,
)
from tests.server import RunningServer

POLICY = "/api/v2/delay-policy"
DETAIL = "/api/v2/delay-policy/detail"
OBJECTS = "/api/v2/delay-policy/objects/"
RECORDS = "/api/v2/tracker/records"


def put_policy(http, base_url, doc: Any, headers: dict[str, str] | None = None):
    return http.put(base_url + POLICY, json=doc, headers=headers)


def fixed(name: str, ms: int | str) -> dict[str, Any]:
    return {"name": name, "delay_type": "fixed", "milliseconds": ms}


def last_record(http, base_url, q: str) -> dict[str, Any]:
    """The newest tracker record matching ``q``."""
    body = http.get(base_url + RECORDS, params={"q": q, "limit": 1}).json()
    assert body["data"], f"no tracker record for {q!r}"
    return body["data"][0]


def delayed_playback(http, base_url, name: str, policy: str, via: str = "header") -> str:
    """A playback session whose one stub (body 'a' -> 'ok') names ``policy``."""
    doc = stub("ok", **contains("a"))
    if via == "header":
        return playback_of(http, base_url, name, [(doc, {"delay_policy": policy})])
    doc["response"]["delayPolicy"] = policy
    return playback_of(http, base_url, name, [doc])


class TestPut:
    def test_new_is_201_then_updated_is_200(self, http, base_url, name):
        response = put_policy(http, base_url, fixed(name, 50))
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"version", "status_code", "data"}
        assert body["status_code"] == 201
        assert body["data"] == {
            "status": "new",
            "message": "Put Delay Policy Finished",
            "delay_type": "fixed",
            "delayPolicyRef": f"/api/v2/delay-policy/objects/{name}",
            "name": name,
        }
        again = put_policy(
            http, base_url, {"name": name, "delay_type": "weighted", "delays": "fixed,1,1"}
        )
        assert again.status_code == 200
        assert again.json()["status_code"] == 200
        assert again.json()["data"]["status"] == "updated"
        assert again.json()["data"]["delay_type"] == "weighted"

    @pytest.mark.parametrize(
        "doc",
        [
            {"delay_type": "fixed", "milliseconds": 50},
            {"delay_type": "fixed", "milliseconds": "50"},
            {"delay_type": "normalvariate", "mean": "100", "stddev": 10},
            {
                "delay_type": "weighted",
                "delays": "fixed,30000,5:normalvariate,5000,1000,15:normalvariate,1000,500,70",
            },
        ],
    )
    def test_each_type_round_trips(self, http, base_url, name, doc):
        assert put_policy(http, base_url, {"name": name, **doc}).status_code == 201
        [shown] = assert_data(http.get(base_url + OBJECTS + name))
        assert shown == {"name": name, **doc, "delayPolicyRef": OBJECTS + name}

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"{", "JSON"),
            (b"", "empty"),
            (b"[1]", "JSON object"),
            (b'{"delay_type": "fixed", "milliseconds": 5}', "'name' is missing"),
            (b'{"name": "a b", "delay_type": "fixed", "milliseconds": 5}', "illegal"),
            (b'{"name": "p", "milliseconds": 5}', "'delay_type' is missing"),
            (b'{"name": "p", "delay_type": "random"}', "unknown delay_type"),
            (b'{"name": "p", "delay_type": "fixed", "milliseconds": 5, "x": 1}', "unknown"),
        ],
    )
    def test_bad_request_is_400(self, http, base_url, body, fragment):
        assert_error(http.put(base_url + POLICY, data=body), 400, fragment)

    @pytest.mark.parametrize(
        ("doc", "fragment"),
        [
            ({"delay_type": "fixed", "milliseconds": 5, "mean": 1, "stddev": 2}, "remove"),
            ({"delay_type": "fixed"}, "'milliseconds' required"),
            ({"delay_type": "normalvariate", "mean": 5}, "'stddev' required"),
            ({"delay_type": "normalvariate", "mean": 5, "stddev": 1, "delays": "x"}, "remove"),
            ({"delay_type": "weighted"}, "'delays' required"),
            ({"delay_type": "weighted", "delays": "fixed,10"}, "segment 1"),
            ({"delay_type": "weighted", "delays": "fixed,10,5:bogus,1,2"}, "unknown type"),
            ({"delay_type": "weighted", "delays": "fixed,10,x"}, "weight"),
            ({"delay_type": "fixed", "milliseconds": "soon"}, "number"),
            ({"delay_type": "fixed", "milliseconds": -5}, "between"),
        ],
    )
    def test_wrong_combination_is_409(self, http, base_url, name, doc, fragment):
        assert_error(put_policy(http, base_url, {"name": name, **doc}), 409, fragment)
        assert_error(http.get(base_url + OBJECTS + name), 404)  # nothing was stored

    def test_wrong_method_is_405(self, http, base_url):
        assert_error(http.post(base_url + POLICY, json=fixed("p", 1)), 405)


class TestReadAndDelete:
    def test_detail_lists_this_hosts_policies(self, http, base_url, name):
        put_policy(http, base_url, fixed(name + "_b", 2))
        put_policy(http, base_url, fixed(name + "_a", 1))
        put_policy(http, base_url, fixed(name + "_c", 3), headers={"Host": "elsewhere.test"})
        data = assert_data(http.get(base_url + DETAIL))
        mine = [p for p in data if p["name"].startswith(name)]
        assert mine == [
            {
                "name": name + "_a",
                "delay_type": "fixed",
                "milliseconds": 1,
                "delayPolicyRef": OBJECTS + name + "_a",
            },
            {
                "name": name + "_b",
                "delay_type": "fixed",
                "milliseconds": 2,
                "delayPolicyRef": OBJECTS + name + "_b",
            },
        ]
        other = assert_data(http.get(base_url + DETAIL, headers={"Host": "elsewhere.test"}))
        assert [p["name"] for p in other if p["name"].startswith(name)] == [name + "_c"]

    def test_detail_of_a_host_without_policies_is_an_empty_list(self, http, base_url, name):
        host = f"{name}.empty.test"
        assert assert_data(http.get(base_url + DETAIL, headers={"Host": host})) == []

    def test_host_prefix_reaches_another_hosts_policy(self, http, base_url, name):
        response = put_policy(http, base_url, fixed(f"far.test:{name}", 7))
        assert response.status_code == 201
        assert response.json()["data"]["name"] == f"far.test:{name}"
        assert response.json()["data"]["delayPolicyRef"] == OBJECTS + f"far.test:{name}"
        [shown] = assert_data(http.get(base_url + OBJECTS + f"far.test:{name}"))
        assert shown["milliseconds"] == 7
        assert_error(http.get(base_url + OBJECTS + name), 404)
        [local] = assert_data(http.get(base_url + OBJECTS + name, headers={"Host": "far.test"}))
        assert local["name"] == name

    def test_get_missing_is_404(self, http, base_url, name):
        assert_error(http.get(base_url + OBJECTS + name), 404, name)
        assert_error(http.get(base_url + OBJECTS + "bad%20name"), 404)

    def test_delete(self, http, base_url, name):
        put_policy(http, base_url, fixed(name, 1))
        data = assert_data(http.delete(base_url + OBJECTS + name))
        assert data == {"message": f"Deleted 1 delay policies from ['{name}']"}
        assert_error(http.get(base_url + OBJECTS + name), 404)
        assert name not in [p["name"] for p in assert_data(http.get(base_url + DETAIL))]

    def test_delete_missing_is_404(self, http, base_url, name):
        assert_error(http.delete(base_url + OBJECTS + name), 404, name)


class TestPlaybackDelay:
    @pytest.mark.parametrize("via", ["header", "document"])
    def test_fixed_delay_holds_the_response(self, http, base_url, name, via):
        put_policy(http, base_url, fixed(name, 300))
        session = delayed_playback(http, base_url, name, name, via)
        started = time.perf_counter()
        response = play(http, base_url, name, session, "a")
        elapsed = time.perf_counter() - started
        assert (response.status_code, response.text) == (200, "ok")
        assert elapsed >= 0.3
        record = last_record(http, base_url, f"{name} session:{session}")
        assert record["delay"] == 300
        assert record["duration_ms"] >= 300

    def test_matcher_is_delayed_too(self, http, base_url, name):
        put_policy(http, base_url, fixed(name, 200))
        session = delayed_playback(http, base_url, name, name)
        started = time.perf_counter()
        response = http.post(
            base_url + "/api/v2/matcher", data="a", headers={"session": f"{name}:{session}"}
        )
        assert time.perf_counter() - started >= 0.2
        assert response.json() == {"body": "ok", "headers": {}, "statusCode": 200}
        record = last_record(http, base_url, f"/api/v2/matcher session:{session}")
        assert (record["delay"], record["scenario"]) == (200, f"127.0.0.1:{name}")

    def test_edits_apply_at_once(self, http, base_url, name):
        put_policy(http, base_url, fixed(name, 0))
        session = delayed_playback(http, base_url, name, name)
        q = f"{name} session:{session}"

        def delay_now() -> int:
            assert play(http, base_url, name, session, "a").status_code == 200
            return last_record(http, base_url, q)["delay"]

        assert delay_now() == 0
        assert put_policy(http, base_url, fixed(name, 120)).status_code == 200
        assert delay_now() == 120
        weighted = {"name": name, "delay_type": "weighted", "delays": "fixed,0,0:fixed,55,1"}
        put_policy(http, base_url, weighted)
        assert delay_now() == 55
        http.delete(base_url + OBJECTS + name)
        assert delay_now() == 0  # a missing policy is no delay, not an error

    def test_a_policy_created_after_the_stub_applies(self, http, base_url, name):
        session = delayed_playback(http, base_url, name, name)
        assert play(http, base_url, name, session, "a").status_code == 200
        put_policy(http, base_url, fixed(name, 80))
        assert play(http, base_url, name, session, "a").status_code == 200
        assert last_record(http, base_url, f"{name} session:{session}")["delay"] == 80

    def test_policies_of_another_host_do_not_apply(self, http, base_url, name):
        put_policy(http, base_url, fixed(name, 150), headers={"Host": "elsewhere.test"})
        session = delayed_playback(http, base_url, name, name)
        assert play(http, base_url, name, session, "a").status_code == 200
        assert last_record(http, base_url, f"{name} session:{session}")["delay"] == 0

    def test_a_stub_may_name_another_hosts_policy(self, http, base_url, name):
        put_policy(http, base_url, fixed(f"elsewhere.test:{name}", 90))
        session = delayed_playback(http, base_url, name, f"elsewhere.test:{name}")
        assert play(http, base_url, name, session, "a").status_code == 200
        assert last_record(http, base_url, f"{name} session:{session}")["delay"] == 90

    def test_delays_do_not_block_other_requests(self, base_url, name):
        with requests.Session() as http:
            put_policy(http, base_url, fixed(name, 1000))
            slow = delayed_playback(http, base_url, name, name)
            fast_scenario = name + "_fast"
            fast = playback_of(http, base_url, fast_scenario, [stub("quick", **contains("a"))])
        finished: dict[str, float] = {}
        started = time.perf_counter()

        def call(key: str, scenario: str, session: str) -> None:
            with requests.Session() as own:
                response = play(own, base_url, scenario, session, "a")
                assert response.status_code == 200
            finished[key] = time.perf_counter() - started

        threads = [threading.Thread(target=call, args=(f"slow{i}", name, slow)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # the slow ones are now sleeping in the server
        call("fast", fast_scenario, fast)
        for thread in threads:
            thread.join(10)
        assert len(finished) == 5
        # One at a time, four 1 s delays would take 4 s; together they take about 1 s.
        assert max(finished.values()) < 2.5
        assert finished["fast"] < min(v for k, v in finished.items() if k != "fast")


def test_policies_survive_a_restart(tmp_path):
    store = f"sqlite:///{tmp_path / 'delays.db'}"
    first = RunningServer(store=store).start()
    try:
        assert put_policy(requests, first.url, fixed("durable", 40)).status_code == 201
        weighted = {"name": "w", "delay_type": "weighted", "delays": "fixed,1,1:fixed,2,3"}
        assert put_policy(requests, first.url, weighted).status_code == 201
    finally:
        assert first.stop() == 0
    second = RunningServer(store=store).start()
    try:
        data = assert_data(requests.get(second.url + DETAIL))
        assert [(p["name"], p["delay_type"]) for p in data] == [
            ("durable", "fixed"),
            ("w", "weighted"),
        ]
        session = delayed_playback(requests.Session(), second.url, "restarted", "durable")
        assert play(requests, second.url, "restarted", session, "a").status_code == 200
        assert last_record(requests, second.url, "restarted session:" + session)["delay"] == 40
    finally:
        second.stop()
