"""Contract tests: the Mirage API v2 tracker (records list with q and paging, record detail),
what it records, its cap, durability and the switch to turn it off, through the real server."""

from __future__ import annotations

import signal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.mirage_helpers import (
    assert_data,
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    end_ok,
    play,
    playback_of,
    put_stub,
    put_stub_ok,
    stub,
    stubs_url,
)
from tests.server import RunningServer, refused_serve

RECORDS = "/api/v2/tracker/records"
OBJECTS = RECORDS + "/objects/"
SUMMARY_KEYS = {
    "id",
    "href",
    "start_time",
    "function",
    "scenario",
    "session",
    "request_params",
    "return_code",
    "duration_ms",
    "delay",
    "stubo_response",
}


def records(http, base_url, q: str = "", **params: Any) -> dict[str, Any]:
    response = http.get(base_url + RECORDS, params={"q": q, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "paging"}
    return body


def all_records(http, base_url, q: str) -> list[dict[str, Any]]:
    return records(http, base_url, q, limit=1000)["data"]


def detail(http, base_url, record_id: str) -> dict[str, Any]:
    response = http.get(base_url + OBJECTS + record_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data"}
    return body["data"]


def skip_of(link: str | None) -> int | None:
    return None if link is None else int(parse_qs(urlsplit(link).query)["skip"][0])


class TestWhatIsRecorded:
    def test_session_stub_and_playback_calls(self, http, base_url, name):
        create_scenario(http, base_url, name)  # not tracked (as in Mirage)
        begin_ok(http, base_url, name, "rec", "record")
        put = put_stub(http, base_url, name, "rec", stub("pong", **contains("ping")))
        assert put.status_code == 201
        end_ok(http, base_url, name, "rec")
        begin_ok(http, base_url, name, "play", "playback")
        assert play(http, base_url, name, "play", "ping").text == "pong"
        http.get(stubs_url(base_url, name))

        data = all_records(http, base_url, name)
        seen = [(r["function"].rsplit("/", 1)[1], r["session"], r["return_code"]) for r in data]
        # newest first
        assert seen == [
            ("stubs", None, 200),  # GET stubs
            ("stubs", "play", 200),  # playback
            ("action", "play", 200),  # begin playback
            ("action", "rec", 200),  # end
            ("stubs", "rec", 201),  # PUT stub
            ("action", "rec", 200),  # begin record
        ]
        assert [int(r["id"]) for r in data] == sorted((int(r["id"]) for r in data), reverse=True)
        for r in data:
            assert set(r) == SUMMARY_KEYS
            assert r["scenario"] == f"127.0.0.1:{name}"
            assert r["href"] == OBJECTS + r["id"]
            assert r["delay"] == 0
            assert isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0
        assert data[1]["stubo_response"] == "pong"
        assert data[1]["function"] == f"/api/v2/scenarios/objects/{name}/stubs"

    def test_detail_has_the_whole_call(self, http, base_url, name):
        long_body = "x" * 500
        session = playback_of(
            http,
            base_url,
            name,
            [stub(long_body, status=202, response_headers={"X-Kind": "long"}, **contains("q"))],
        )
        response = play(http, base_url, name, session, "q=1", params={"trace": "yes"})
        assert response.status_code == 202
        [summary] = records(http, base_url, f"{name} session:{session} sc:202")["data"]
        assert summary["stubo_response"] == "x" * 120  # the start of the body
        full = detail(http, base_url, summary["id"])
        assert full["id"] == summary["id"]
        assert full["function"] == f"/api/v2/scenarios/objects/{name}/stubs"
        assert (full["scenario"], full["session"]) == (f"127.0.0.1:{name}", session)
        assert full["request_method"] == "POST"
        assert full["request_params"] == {"trace": "yes"}
        assert full["request_headers"]["Session"] == session
        assert full["request_size"] == 3
        assert full["return_code"] == 202
        assert full["response_headers"]["X-Kind"] == "long"
        assert full["response_size"] == 500
        assert full["stubo_response"] == "x" * 120
        assert (full["delay"], full["error"]) == (0, None)
        assert full["host"] == "127.0.0.1"
        assert full["remote_ip"] == "127.0.0.1"
        assert full["port"] == base_url.rsplit(":", 1)[1]
        assert full["tracking_level"] == "normal"
        assert full["start_time"] == summary["start_time"]
        assert full["duration_ms"] == summary["duration_ms"]

    def test_the_stub_that_answered_is_recorded(self, http, base_url, name):
        rec, played = f"{name}_rec", f"{name}_play"  # session names are the server's
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, rec, "record")
        keys = [
            put_stub_ok(http, base_url, name, rec, stub(body, **contains(word)))["key"]
            for body, word in (("pong", "ping"), ("bar", "foo"))
        ]
        end_ok(http, base_url, name, rec)
        begin_ok(http, base_url, name, played, "playback")
        assert play(http, base_url, name, played, "foo").text == "bar"
        assert play(http, base_url, name, played, "ping").text == "pong"
        assert play(http, base_url, name, played, "nothing").status_code == 400  # no match
        found = all_records(http, base_url, f"{name}/stubs session:{played}")  # not the begin
        assert [r["return_code"] for r in found] == [400, 200, 200]
        assert [detail(http, base_url, r["id"])["stub_id"] for r in found] == [
            None,
            keys[0],
            keys[1],
        ]
        assert all("stub_id" not in r for r in found)  # the list view is Mirage's

    def test_errors_are_recorded_with_their_message(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("known"))])
        assert play(http, base_url, name, session, "other").status_code == 400
        assert play(http, base_url, name, "ghost", "known").status_code == 404
        assert play(http, base_url, name, None, "known").status_code == 400
        bad_json = http.put(stubs_url(base_url, name), data=b"{", headers={"session": session})
        assert bad_json.status_code == 400
        data = all_records(http, base_url, f"{name} sc:>=400")
        errors = [(r["return_code"], detail(http, base_url, r["id"])["error"]) for r in data]
        assert [code for code, _ in errors] == [400, 400, 404, 400]
        assert "JSON" in errors[0][1]
        assert "session" in errors[1][1]
        assert "ghost" in errors[2][1]
        assert "E017" in errors[3][1]
        assert data[0]["function"] == f"/api/v2/scenarios/objects/{name}/stubs"

    def test_requests_that_reach_no_endpoint_are_not_calls(self, http, base_url, name):
        # A wrong method is refused by the router before any endpoint runs.
        assert http.patch(stubs_url(base_url, name)).status_code == 405
        assert all_records(http, base_url, name) == []

    def test_matcher_calls(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("m"))])
        http.post(base_url + "/api/v2/matcher", data="m", headers={"session": f"{name}:{session}"})
        http.post(base_url + "/api/v2/matcher", data="zz", headers={"session": f"{name}:{session}"})
        data = all_records(http, base_url, f"/api/v2/matcher session:{session}")
        assert [r["return_code"] for r in data] == [404, 200]
        assert {r["scenario"] for r in data} == {f"127.0.0.1:{name}"}

    def test_admin_calls_are_not_recorded(self, http, base_url, name):
        create_scenario(http, base_url, name)
        http.get(base_url + f"/api/v2/scenarios/objects/{name}")
        http.put(
            base_url + "/api/v2/delay-policy",
            json={"name": name, "delay_type": "fixed", "milliseconds": 1},
        )
        assert all_records(http, base_url, name) == []


class TestQuery:
    @pytest.fixture
    def mixed(self, http, base_url, name) -> str:
        """A scenario with fast and 150 ms responses, and some errors; returns the session."""
        http.put(
            base_url + "/api/v2/delay-policy",
            json={"name": name, "delay_type": "fixed", "milliseconds": 150},
        )
        session = playback_of(
            http,
            base_url,
            name,
            [
                stub("fast", **contains("fast")),
                (stub("slow", **contains("slow")), {"delay_policy": name}),
                (stub("slow fail", status=503, **contains("bad")), {"delay_policy": name}),
            ],
        )
        for body in ["fast", "slow", "fast", "bad", "slow", "nothing"]:
            play(http, base_url, name, session, body)
        return session

    def codes(self, http, base_url, q: str) -> list[tuple[int, int]]:
        return [(r["return_code"], r["delay"]) for r in all_records(http, base_url, q)]

    def test_status_and_time_combined(self, http, base_url, name, mixed):
        q = f"{name} /stubs session:{mixed}"  # the playbacks, not the begin action
        assert self.codes(http, base_url, q) == [
            (400, 0),
            (200, 150),
            (503, 150),
            (200, 0),
            (200, 150),
            (200, 0),
        ]
        assert self.codes(http, base_url, f"{q} sc:200 rt:>=150") == [(200, 150), (200, 150)]
        assert self.codes(http, base_url, f"{q} sc:>=200 sc:<300 rt:<150") == [(200, 0), (200, 0)]
        assert self.codes(http, base_url, f"{q} sc:>=500 rt:>=150") == [(503, 150)]
        assert self.codes(http, base_url, f"{q} sc:>200 rt:<150") == [(400, 0)]
        assert self.codes(http, base_url, f"{q} sc:=404") == []
        assert self.codes(http, base_url, f"{q} d:>0") == [(200, 150), (503, 150), (200, 150)]
        assert self.codes(http, base_url, f"{q} d:0 sc:<=200") == [(200, 0), (200, 0)]

    def test_words_match_path_or_scenario_case_insensitively(self, http, base_url, name, mixed):
        assert len(all_records(http, base_url, name.upper())) > 6
        assert len(all_records(http, base_url, f"{name} /ACTION")) == 3  # begin, end, begin
        assert all_records(http, base_url, f"{name} no-such-word") == []

    def test_session_filter(self, http, base_url, name, mixed):
        assert len(all_records(http, base_url, f"session:{mixed}")) == 7  # + begin playback
        assert all_records(http, base_url, f"{name} session:{mixed}x") == []

    @pytest.mark.parametrize("q", ["sc:", "sc:abc", "rt:>>1", "d:<=x", "session:"])
    def test_malformed_query_is_400(self, http, base_url, q):
        assert_error(http.get(base_url + RECORDS, params={"q": q}), 400, q)

    def test_all_hosts(self, http, base_url, name):
        host = f"{name}.other.test"
        other = requests.Session()
        other.headers["Host"] = host
        session = playback_of(other, base_url, name, [stub("ok", **contains("a"))])
        assert play(other, base_url, name, session, "a").status_code == 200
        everywhere = all_records(http, base_url, f"session:{session}")
        assert everywhere and {r["scenario"] for r in everywhere} == {f"{host}:{name}"}
        here = records(http, base_url, f"session:{session}", **{"all-hosts": "false"})
        assert here["data"] == []
        assert "all-hosts=false" in here["paging"]["first"]
        there = records(other, base_url, f"session:{session}", **{"all-hosts": "false"})
        assert len(there["data"]) == len(everywhere)


class TestPaging:
    @pytest.fixture
    def seven(self, http, base_url, name) -> list[str]:
        """Seven tracked calls in a fresh scenario; their ids, newest first."""
        session = playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        for _ in range(3):
            play(http, base_url, name, session, "a")
        ids = [r["id"] for r in all_records(http, base_url, name)]
        assert len(ids) == 7
        return ids

    def test_pages_and_links(self, http, base_url, name, seven):
        page = records(http, base_url, name, skip=0, limit=3)
        assert [r["id"] for r in page["data"]] == seven[:3]
        paging = page["paging"]
        assert (paging["currentLimit"], paging["totalItems"]) == (3, 7)
        assert paging["previous"] is None
        assert (skip_of(paging["first"]), skip_of(paging["next"]), skip_of(paging["last"])) == (
            0,
            3,
            6,
        )
        assert paging["next"].startswith(RECORDS + "?skip=3&limit=3&q=")
        # Mirage hid this page (next was null when skip + 2 * limit >= total).
        middle = records(http, base_url, name, skip=3, limit=3)
        assert skip_of(middle["paging"]["next"]) == 6
        assert skip_of(middle["paging"]["previous"]) == 0
        end = records(http, base_url, name, skip=6, limit=3)
        assert [r["id"] for r in end["data"]] == seven[6:]
        assert end["paging"]["next"] is None
        assert skip_of(end["paging"]["previous"]) == 3

    def test_following_next_links_reads_everything_once(self, http, base_url, name, seven):
        link: str | None = RECORDS + f"?skip=0&limit=2&q={name}"
        seen: list[str] = []
        while link is not None:
            body = http.get(base_url + link).json()
            seen += [r["id"] for r in body["data"]]
            link = body["paging"]["next"]
        assert seen == seven

    def test_last_never_goes_negative(self, http, base_url, name, seven):
        paging = records(http, base_url, name, limit=50)["paging"]
        assert (skip_of(paging["last"]), paging["next"]) == (0, None)
        empty = records(http, base_url, name + "-nothing", limit=5)["paging"]
        assert (skip_of(empty["last"]), empty["totalItems"]) == (0, 0)

    def test_skip_beyond_the_end(self, http, base_url, name, seven):
        body = records(http, base_url, name, skip=40, limit=3)
        assert body["data"] == []
        assert skip_of(body["paging"]["previous"]) == 6

    def test_defaults_and_clamp(self, http, base_url, name, seven):
        assert records(http, base_url, name)["paging"]["currentLimit"] == 100
        assert records(http, base_url, name, limit=5000)["paging"]["currentLimit"] == 1000

    @pytest.mark.parametrize(
        "params", [{"skip": "-1"}, {"skip": "a"}, {"limit": "0"}, {"limit": "x"}, {"limit": "-2"}]
    )
    def test_bad_paging_is_400(self, http, base_url, params):
        assert_error(http.get(base_url + RECORDS, params=params), 400)


class TestDetail:
    @pytest.mark.parametrize("record_id", ["999999999999", "abc", "1.5", "-1", "1" * 30, "\u0661"])
    def test_missing_is_404_json(self, http, base_url, record_id):
        assert_error(http.get(base_url + OBJECTS + record_id), 404, "not found")


def test_cap_keeps_the_newest_records(tmp_path):
    server = RunningServer(store="memory://", extra_args=["--tracker-cap", "5"]).start()
    try:
        with requests.Session() as http:
            session = playback_of(http, server.url, "capped", [stub("ok", **contains("a"))])
            for i in range(8):
                play(http, server.url, "capped", session, f"a{i}")
            body = records(http, server.url, "", limit=100)
            assert body["paging"]["totalItems"] == 5
            ids = [int(r["id"]) for r in body["data"]]
            assert ids == list(range(ids[0], ids[0] - 5, -1))
            assert all(r["function"].endswith("/stubs") for r in body["data"])
            assert_error(http.get(server.url + OBJECTS + "1"), 404)
    finally:
        server.stop()


def test_tracking_off_records_nothing():
    server = RunningServer(store="memory://", extra_args=["--no-tracking"]).start()
    try:
        with requests.Session() as http:
            session = playback_of(http, server.url, "quiet", [stub("ok", **contains("a"))])
            assert play(http, server.url, "quiet", session, "a").text == "ok"
            body = records(http, server.url)
            assert body["data"] == []
            assert body["paging"]["totalItems"] == 0
    finally:
        server.stop()


def test_records_are_flushed_on_shutdown(tmp_path):
    store = f"sqlite:///{tmp_path / 'tracker.db'}"
    first = RunningServer(store=store).start()
    try:
        with requests.Session() as http:
            session = playback_of(http, first.url, "kept", [stub("ok", **contains("a"))])
            for _ in range(3):
                assert play(http, first.url, "kept", session, "a").status_code == 200
    finally:
        # Straight after the last response, before any periodic flush could run.
        assert first.stop(signal.SIGTERM) == 0
    second = RunningServer(store=store).start()
    try:
        data = all_records(requests, second.url, f"session:{session}")
        assert [r["return_code"] for r in data] == [200, 200, 200, 200]  # + begin playback
        assert assert_data(requests.get(second.url + "/api/v2/scenarios"))  # still serving
    finally:
        second.stop()


def test_a_tracker_cap_below_one_is_refused_at_start():
    stderr = refused_serve("--store", "memory://", "--tracker-cap", "0")
    assert "--tracker-cap must be 1 or more" in stderr
