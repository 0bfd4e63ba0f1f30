"""Contract tests: Mirage's legacy API v1 (/stubo/api/...), through the real server.

Every route, its success shape and its error paths: each error is the envelope with the
HTTP status equal to error.code, never a 500.
"""

from __future__ import annotations

import pytest

from tests.mirage_helpers import (
    HOST,
    assert_data,
    assert_error,
    contains,
    create_scenario,
    full,
    stub,
)

V1 = "/stubo/api/"
ALL_GET_OR_POST = [
    "begin/session",
    "end/session",
    "end/sessions",
    "delete/stubs",
    "get/stublist",
    "get/stubcount",
    "get/scenarios",
    "get/export",
    "put/delay_policy",
    "get/delay_policy",
    "delete/delay_policy",
    "get/version",
    "get/status",
]


def call(http, base_url, route, method="GET", **params):
    return http.request(method, base_url + V1 + route, params=params)


def ok(http, base_url, route, method="GET", **params):
    return assert_data(call(http, base_url, route, method, **params))


def put_stub(http, base_url, session, doc, **params):
    return http.post(base_url + V1 + "put/stub", params={"session": session, **params}, json=doc)


def get_response(http, base_url, session, body="", headers=None, **params):
    if session is not None:
        params["session"] = session
    return http.post(base_url + V1 + "get/response", params=params, data=body, headers=headers)


def recorded(http, base_url, scenario, docs, session=None):
    """Record ``docs`` into a new scenario through v1; returns the (ended) session name."""
    session = session or scenario + "_rec"
    ok(http, base_url, "begin/session", scenario=scenario, session=session, mode="record")
    for doc in docs:
        assert_data(put_stub(http, base_url, session, doc))
    ok(http, base_url, "end/session", session=session)
    return session


def playing(http, base_url, scenario, docs):
    """A v1 playback session over ``docs``; returns its name."""
    recorded(http, base_url, scenario, docs)
    session = scenario + "_play"
    ok(http, base_url, "begin/session", scenario=scenario, session=session, mode="playback")
    return session


class TestEnvelopeAndMethods:
    @pytest.mark.parametrize("route", ALL_GET_OR_POST)
    def test_get_and_post_both_reach_the_route(self, http, base_url, route):
        for method in ("GET", "POST"):
            response = call(http, base_url, route, method)
            assert response.status_code != 405, (method, route, response.text)
            assert response.status_code < 500, (method, route, response.text)
            assert response.headers["x-stubo-version"]

    @pytest.mark.parametrize("route", ["put/stub", "get/response", "get/response/anything/x"])
    def test_post_only_routes_refuse_get_with_405_in_the_envelope(self, http, base_url, route):
        assert_error(http.get(base_url + V1 + route), 405, "not allowed")

    def test_unknown_v1_route_is_a_404_envelope(self, http, base_url):
        assert_error(http.get(base_url + V1 + "get/nothing"), 404, "no such resource")

    def test_version(self, http, base_url):
        data = ok(http, base_url, "get/version")
        assert data["version"] == http.get(base_url + V1 + "get/version").json()["version"]


class TestSessions:
    def test_begin_record_creates_the_scenario(self, http, base_url, name):
        data = ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        assert data["status"] == "record"
        assert data["scenario"] == full(name)
        assert data["session"] == name
        assert data["scenarioRef"] == f"/api/v2/scenarios/objects/{full(name)}"
        # the same scenario through v2
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 200

    def test_begin_record_on_a_scenario_with_stubs_is_duplicate_scenario(
        self, http, base_url, name
    ):
        recorded(http, base_url, name, [stub("a", **contains("a"))])
        response = call(
            http, base_url, "begin/session", scenario=name, session="s2" + name, mode="record"
        )
        assert_error(response, 400, "Duplicate scenario")
        # delete/stubs first, then the (kept, empty) scenario records again
        ok(http, base_url, "delete/stubs", scenario=name)
        ok(http, base_url, "begin/session", scenario=name, session="s2" + name, mode="record")

    def test_begin_record_on_an_existing_empty_scenario_records_into_it(self, http, base_url, name):
        create_scenario(http, base_url, name)
        data = ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        assert data["status"] == "record"

    def test_begin_with_a_session_suffix_strips_it(self, http, base_url, name):
        data = ok(
            http, base_url, "begin/session", scenario=name, session=name + ",x_1", mode="record"
        )
        assert data["session"] == name

    def test_arguments_in_a_form_body_count_as_in_the_query(self, http, base_url, name):
        # Tornado's get_argument (Mirage) reads a form-encoded POST body as well.
        response = http.post(
            base_url + V1 + "begin/session",
            data={"scenario": name, "session": name, "mode": "record"},
        )
        assert assert_data(response)["status"] == "record"
        # the body's value wins over the query's, as Tornado returns the last one
        response = http.post(
            base_url + V1 + "end/session", params={"session": "nope"}, data={"session": name}
        )
        assert assert_data(response) == {"message": "Session ended"}
        # a JSON body is not a form: the argument is missing
        response = http.post(base_url + V1 + "end/sessions", json={"scenario": name})
        assert_error(response, 400, "'scenario'")

    def test_begin_playback_errors(self, http, base_url, name):
        response = call(
            http, base_url, "begin/session", scenario=name, session=name, mode="playback"
        )
        assert_error(response, 404, "not found")
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        response = call(
            http, base_url, "begin/session", scenario=name, session="p" + name, mode="playback"
        )
        assert_error(response, 400, "being recorded")
        ok(http, base_url, "end/session", session=name)
        response = call(
            http, base_url, "begin/session", scenario=name, session="p" + name, mode="playback"
        )
        assert_error(response, 412, "no stubs")

    def test_begin_argument_errors(self, http, base_url, name):
        assert_error(call(http, base_url, "begin/session"), 400, "'scenario'")
        assert_error(call(http, base_url, "begin/session", scenario=name), 400, "'session'")
        response = call(http, base_url, "begin/session", scenario=name, session=name)
        assert_error(response, 400, "'mode'")
        response = call(http, base_url, "begin/session", scenario=name, session=name, mode="x")
        assert_error(response, 400, "mode must be")
        response = call(
            http, base_url, "begin/session", scenario="a b", session=name, mode="record"
        )
        assert_error(response, 400, "illegal")
        response = call(
            http, base_url, "begin/session", scenario=name, session="a/b", mode="record"
        )
        assert_error(response, 400, "illegal")

    def test_a_session_begun_twice_or_in_another_scenario_is_refused(self, http, base_url, name):
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        response = call(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        assert_error(response, 400, "already exists")
        other = name + "_other"
        response = call(
            http, base_url, "begin/session", scenario=other, session=name, mode="record"
        )
        assert_error(response, 400, "already belongs")
        # refused before creating anything: no stray scenario
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{other}").status_code == 404

    def test_end_session_and_end_sessions(self, http, base_url, name):
        session = playing(http, base_url, name, [stub("a", **contains("a"))])
        ok(http, base_url, "begin/session", scenario=name, session=name + "_p2", mode="playback")
        assert ok(http, base_url, "end/session", session=session) == {"message": "Session ended"}
        ended = ok(http, base_url, "end/sessions", scenario=name)
        assert ended == {name + "_p2": {"message": "Session ended"}}
        assert ok(http, base_url, "end/sessions", scenario=name) == {}

    def test_end_errors(self, http, base_url, name):
        assert_error(call(http, base_url, "end/session"), 400, "'session'")
        assert_error(call(http, base_url, "end/session", session=name), 404, "session not found")
        assert_error(call(http, base_url, "end/sessions"), 400, "'scenario'")
        assert_error(call(http, base_url, "end/sessions", scenario=name), 404, "not found")


class TestPutStub:
    def test_created_updated_ignored_and_args(self, http, base_url, name):
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        doc = stub("one", **contains("q"))
        first = assert_data(put_stub(http, base_url, name + ",1", doc, tag="x", priority="3"))
        assert first["message"]["status"] == "created"
        assert first["message"]["key"]
        assert "inserted" in first["message"]["msg"]
        again = assert_data(put_stub(http, base_url, name, stub("two", **contains("q"))))
        assert again["message"] == {**again["message"], "status": "updated"}
        doc = stub("solo", **contains("r"))
        assert_data(put_stub(http, base_url, name, doc))
        same = assert_data(put_stub(http, base_url, name, doc, stateful="false"))
        assert same["message"]["status"] == "ignored"
        stubs = ok(http, base_url, "get/stublist", scenario=name)["stubs"]
        assert len(stubs) == 2
        first_stub = stubs[0]["stub"]
        assert first_stub["args"] == {"tag": "x"}
        assert first_stub["priority"] == 3
        assert first_stub["response"]["body"] == ["one", "two"]

    def test_put_stub_errors(self, http, base_url, name):
        doc = stub("x", **contains("x"))
        assert_error(http.post(base_url + V1 + "put/stub", json=doc), 400, "'session'")
        assert_error(put_stub(http, base_url, name, doc), 404, "session not found")
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        response = http.post(
            base_url + V1 + "put/stub",
            params={"session": name},
            data="||textMatcher||a||response||b",
        )
        assert_error(response, 400, "legacy", "not supported")
        response = http.post(base_url + V1 + "put/stub", params={"session": name}, data="{x")
        assert_error(response, 400, "not valid JSON")
        response = http.post(base_url + V1 + "put/stub", params={"session": name}, data="")
        assert_error(response, 400, "empty")
        assert_error(put_stub(http, base_url, name, {"request": 1}), 400)
        assert_error(put_stub(http, base_url, name, doc, priority="high"), 400, "priority")
        ok(http, base_url, "end/session", session=name)
        assert_error(put_stub(http, base_url, name, doc), 409, "not record")


class TestGetResponse:
    def test_plays_back_by_session_arg_or_header(self, http, base_url, name):
        doc = stub("<ok/>", status=201, response_headers={"X-A": "1"}, **contains("<q>"))
        session = playing(http, base_url, name, [doc])
        by_arg = get_response(http, base_url, session, "<r><q></r>")
        assert (by_arg.status_code, by_arg.text, by_arg.headers["X-A"]) == (201, "<ok/>", "1")
        by_header = get_response(
            http, base_url, None, "<q>", headers={"Stubo-Request-Session": session}
        )
        assert by_header.text == "<ok/>"
        suffixed = http.post(
            base_url + V1 + "get/response/any/thing", params={"session": session}, data="<q>"
        )
        assert suffixed.text == "<ok/>"

    def test_stateful_responses_play_in_order_then_repeat(self, http, base_url, name):
        session = playing(
            http, base_url, name, [stub("1", **contains("q")), stub("2", **contains("q"))]
        )
        bodies = [get_response(http, base_url, session, "q").text for _ in range(3)]
        assert bodies == ["1", "2", "2"]

    def test_delay_policy_arg_delays_the_response(self, http, base_url, name):
        ok(http, base_url, "put/delay_policy", name=name, delay_type="fixed", milliseconds="300")
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="record")
        assert_data(put_stub(http, base_url, name, stub("d", **contains("d")), delay_policy=name))
        ok(http, base_url, "end/session", session=name)
        ok(http, base_url, "begin/session", scenario=name, session=name, mode="playback")
        response = get_response(http, base_url, name, "d")
        assert response.text == "d"
        assert response.elapsed.total_seconds() >= 0.3

    def test_get_response_errors(self, http, base_url, name):
        assert_error(get_response(http, base_url, None, "x"), 400, "no session")
        assert_error(get_response(http, base_url, name, "x"), 404, "session not found")
        session = playing(http, base_url, name, [stub("a", **contains("a"))])
        assert_error(get_response(http, base_url, session, "zzz"), 400, "E017")
        ok(http, base_url, "end/session", session=session)
        assert_error(get_response(http, base_url, session, "a"), 409, "dormant")


class TestStubsAndScenarios:
    def test_stublist_stubcount_scenarios(self, http, base_url, name):
        recorded(http, base_url, name, [stub("a", **contains("a")), stub("b", **contains("b"))])
        data = ok(http, base_url, "get/stublist", scenario=name)
        assert data["scenario"] == full(name)
        assert [s["stub"]["request"]["bodyPatterns"]["contains"] for s in data["stubs"]] == [
            ["a"],
            ["b"],
        ]
        assert ok(http, base_url, "get/stubcount", scenario=name) == {"count": 2}
        assert ok(http, base_url, "get/stubcount")["count"] >= 2
        data = ok(http, base_url, "get/scenarios", "POST")
        assert data["host"] == HOST
        mine = [s for s in data["scenarios"] if s["name"] == full(name)]
        assert mine and mine[0]["stub_count"] == 2
        other = ok(http, base_url, "get/scenarios", host="elsewhere.example")
        assert other == {"host": "elsewhere.example", "scenarios": []}

    def test_host_arg_names_another_namespace(self, http, base_url, name):
        create_scenario(http, base_url, f"other.example:{name}")
        assert ok(http, base_url, "get/stubcount", scenario=name, host="Other.Example") == {
            "count": 0
        }
        assert_error(call(http, base_url, "get/stubcount", scenario=name), 404, "not found")
        assert_error(call(http, base_url, "get/stubcount", scenario=name, host="all"), 400, "all")
        assert_error(call(http, base_url, "get/stubcount", scenario=name, host="a b"), 400)

    def test_list_errors(self, http, base_url, name):
        assert_error(call(http, base_url, "get/stublist"), 400, "'scenario'")
        assert_error(call(http, base_url, "get/stublist", scenario=name), 404, "not found")
        assert_error(call(http, base_url, "get/stublist", scenario="x y"), 400, "illegal")

    def test_delete_stubs(self, http, base_url, name):
        session = playing(http, base_url, name, [stub("a", **contains("a"))])
        response = call(http, base_url, "delete/stubs", scenario=name)
        assert_error(response, 400, session)
        assert ok(http, base_url, "delete/stubs", scenario=name, force="true") == (
            "Deleted stubs count: 1"
        )
        assert ok(http, base_url, "get/stubcount", scenario=name) == {"count": 0}
        missing = ok(http, base_url, "delete/stubs", scenario=name + "_none")
        assert missing.startswith("Deleted stubs count: 0")
        assert_error(call(http, base_url, "delete/stubs"), 400, "'scenario'")

    def test_export_links_to_the_v2_export(self, http, base_url, name):
        recorded(http, base_url, name, [stub("a", **contains("a"))])
        data = ok(http, base_url, "get/export", scenario=name, session_id="s1")
        url = data["links"][0]
        assert f"/api/v2/scenarios/objects/{full(name)}/export" in url
        assert data["yaml_links"][0][1] == url
        archive = http.get(url)
        assert archive.status_code == 200
        assert archive.headers["content-type"] == "application/zip"
        assert_error(call(http, base_url, "get/export"), 400, "'scenario'")
        assert_error(call(http, base_url, "get/export", scenario=name + "x"), 404)
        response = call(http, base_url, "get/export", scenario=name, runnable="true")
        assert_error(response, 400, "runnable")
        response = call(http, base_url, "get/export", scenario=name, session_id="a/b")
        assert_error(response, 400, "illegal")


class TestDelayPolicies:
    def test_put_get_delete(self, http, base_url, name):
        data = ok(
            http,
            base_url,
            "put/delay_policy",
            name=name,
            delay_type="fixed",
            milliseconds="5",
            cache="ignored",
        )
        assert data["status"] == "new" and data["name"] == name
        assert data["delayPolicyRef"] == f"/api/v2/delay-policy/objects/{name}"
        data = ok(
            http,
            base_url,
            "put/delay_policy",
            "POST",
            name=name,
            delay_type="normalvariate",
            mean="10",
            stddev="2",
        )
        assert data["status"] == "updated"
        ok(
            http,
            base_url,
            "put/delay_policy",
            name=name + "w",
            delay_type="weighted",
            delays="fixed,30,5:normalvariate,50,10,15",
        )
        [policy] = ok(http, base_url, "get/delay_policy", name=name)
        assert (policy["delay_type"], policy["mean"], policy["stddev"]) == (
            "normalvariate",
            "10",
            "2",
        )
        names = {p["name"] for p in ok(http, base_url, "get/delay_policy")}
        assert {name, name + "w"} <= names
        # v2 sees the same policies
        assert http.get(f"{base_url}/api/v2/delay-policy/objects/{name}").status_code == 200
        data = ok(http, base_url, "delete/delay_policy", name=[name, name + "w"])
        assert "Deleted 2 delay policies" in data["message"]
        assert_error(call(http, base_url, "get/delay_policy", name=name), 404, "not found")

    def test_form_body_policy_and_repeated_names(self, http, base_url, name):
        form = {"name": name, "delay_type": "fixed", "milliseconds": "7"}
        data = assert_data(http.post(base_url + V1 + "put/delay_policy", data=form))
        assert data["status"] == "new"
        [policy] = ok(http, base_url, "get/delay_policy", name=name)
        assert policy["milliseconds"] == "7"
        response = http.post(base_url + V1 + "delete/delay_policy", data=[("name", name)])
        assert "Deleted 1 delay policies" in assert_data(response)["message"]

    def test_delay_policy_errors(self, http, base_url, name):
        assert_error(call(http, base_url, "put/delay_policy"), 400, "'name'")
        response = call(http, base_url, "put/delay_policy", name=name)
        assert_error(response, 400, "delay_type")
        response = call(http, base_url, "put/delay_policy", name=name, delay_type="slow")
        assert_error(response, 400, "unknown delay_type")
        response = call(http, base_url, "put/delay_policy", name=name, delay_type="fixed")
        assert_error(response, 409, "milliseconds")
        response = call(
            http, base_url, "put/delay_policy", name=name, delay_type="fixed", milliseconds="soon"
        )
        assert_error(response, 409)
        response = call(
            http, base_url, "put/delay_policy", name="a b", delay_type="fixed", milliseconds="1"
        )
        assert_error(response, 400, "illegal")
        assert_error(call(http, base_url, "get/delay_policy", name="a b"), 400)
        assert_error(call(http, base_url, "delete/delay_policy"), 400, "'name'")
        ok(http, base_url, "put/delay_policy", name=name, delay_type="fixed", milliseconds="1")
        response = call(http, base_url, "delete/delay_policy", name=[name, name + "_none"])
        assert_error(response, 404, "not found")
        assert ok(http, base_url, "get/delay_policy", name=name)  # all or nothing: kept


class TestStatus:
    def test_store_scenario_and_session_status(self, http, base_url, name):
        assert ok(http, base_url, "get/status") == {"status": "ok", "store": "ok"}
        session = playing(http, base_url, name, [stub("a", **contains("a"))])
        data = ok(http, base_url, "get/status", scenario=name, session=session)
        assert data["scenario"] == full(name)
        statuses = {s["name"]: s["status"] for s in data["sessions"]}
        assert statuses[session] == "playback"
        assert data["session"]["status"] == "playback"

    def test_status_errors(self, http, base_url, name):
        assert_error(call(http, base_url, "get/status", scenario=name), 404, "not found")
        assert_error(call(http, base_url, "get/status", session=name), 404, "session not found")
        assert_error(call(http, base_url, "get/status", scenario="a b"), 400, "illegal")


class TestTracker:
    def test_v1_calls_are_tracked_with_their_session(self, http, base_url, name):
        session = playing(http, base_url, name, [stub("a", **contains("a"))])
        assert get_response(http, base_url, session, "zzz").status_code == 400
        records = http.get(
            base_url + "/api/v2/tracker/records", params={"q": f"session:{session}"}
        ).json()["data"]
        calls = [(r["function"], r["return_code"]) for r in records]
        assert (V1 + "get/response", 400) in calls
        assert (V1 + "begin/session", 200) in calls
