"""Contract tests: Mirage API v2 scenario objects (create, list, detail, get, delete)."""

from __future__ import annotations

import pytest

from tests.mirage_helpers import (
    DATE_RE,
    HOST,
    assert_data,
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    end_ok,
    list_stubs,
    play,
    put_stub_ok,
    record,
    ref,
    scenario_detail,
    scenario_url,
    stub,
)

SCENARIOS = "/api/v2/scenarios"


def names_in(body: dict) -> list[str]:
    return [item["name"] for item in body["data"]]


# create ------------------------------------------------------------------------


class TestCreate:
    def test_create_answers_201_with_the_bare_object(self, http, base_url, name):
        # Mirage quirk kept: the created object is not wrapped in {version, data}.
        response = http.put(base_url + SCENARIOS, json={"scenario": name})
        assert response.status_code == 201, response.text
        assert response.json() == {
            "name": f"{HOST}:{name}",
            "scenarioRef": f"/api/v2/scenarios/objects/{HOST}:{name}",
        }

    def test_created_scenario_is_listed_and_gettable(self, http, base_url, name):
        create_scenario(http, base_url, name)
        listing = http.get(base_url + SCENARIOS).json()
        assert {"name": f"{HOST}:{name}", "scenarioRef": ref(name)} in listing["data"]
        assert http.get(scenario_url(base_url, name)).status_code == 200

    def test_host_is_the_host_header_minus_port_lowercased(self, http, base_url, name):
        response = http.put(
            base_url + SCENARIOS, json={"scenario": name}, headers={"Host": "MyBox.Example:8001"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["name"] == f"mybox.example:{name}"
        # not in the 127.0.0.1 namespace, but reachable by its full name
        assert_error(http.get(scenario_url(base_url, name)), 404)
        got = http.get(scenario_url(base_url, f"mybox.example:{name}"))
        assert got.status_code == 200
        assert got.json()["name"] == f"mybox.example:{name}"

    def test_explicit_host_prefix_is_honoured(self, http, base_url, name):
        response = http.put(base_url + SCENARIOS, json={"scenario": f"otherhost:{name}"})
        assert response.status_code == 201, response.text
        assert response.json() == {
            "name": f"otherhost:{name}",
            "scenarioRef": f"/api/v2/scenarios/objects/otherhost:{name}",
        }
        assert_error(http.get(scenario_url(base_url, name)), 404)
        assert http.get(scenario_url(base_url, f"otherhost:{name}")).status_code == 200

    def test_explicit_local_host_prefix_is_the_same_scenario(self, http, base_url, name):
        create_scenario(http, base_url, f"{HOST}:{name}")
        assert http.get(scenario_url(base_url, name)).json()["name"] == f"{HOST}:{name}"

    def test_duplicate_is_422(self, http, base_url, name):
        create_scenario(http, base_url, name)
        message = assert_error(http.put(base_url + SCENARIOS, json={"scenario": name}), 422)
        assert name in message
        # the same scenario spelled with its host is a duplicate too
        again = http.put(base_url + SCENARIOS, json={"scenario": f"{HOST}:{name}"})
        assert_error(again, 422)

    def test_same_name_on_another_host_is_not_a_duplicate(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = http.put(base_url + SCENARIOS, json={"scenario": f"elsewhere:{name}"})
        assert response.status_code == 201, response.text

    @pytest.mark.parametrize("body", [{}, {"name": "x"}, {"scenario": None}, {"scenario": ""}])
    def test_missing_name_is_400(self, http, base_url, body):
        assert_error(http.put(base_url + SCENARIOS, json=body), 400)

    @pytest.mark.parametrize(
        "bad",
        ["a b", "a/b", "a.b", "a?b", "x;drop", "tab\there", "name:", ":name", "bad host:name"],
    )
    def test_illegal_name_is_400_and_nothing_is_created(self, http, base_url, bad):
        before = http.get(base_url + SCENARIOS).json()["data"]
        assert_error(http.put(base_url + SCENARIOS, json={"scenario": bad}), 400)
        assert http.get(base_url + SCENARIOS).json()["data"] == before

    def test_illegal_host_prefix_is_400(self, http, base_url, name):
        assert_error(http.put(base_url + SCENARIOS, json={"scenario": f"a/b:{name}"}), 400)

    @pytest.mark.parametrize("body", [[], ["x"], "name", 5, None, True])
    def test_non_object_body_is_400(self, http, base_url, body):
        assert_error(http.put(base_url + SCENARIOS, json=body), 400)

    @pytest.mark.parametrize("raw", [b"{", b'{"scenario": }', b"scenario=x", b""])
    def test_invalid_json_is_400(self, http, base_url, raw):
        response = http.put(
            base_url + SCENARIOS, data=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400)

    def test_name_accepts_word_characters_and_dashes(self, http, base_url, name):
        weird = f"{name}-A_9-"
        assert create_scenario(http, base_url, weird)["name"] == f"{HOST}:{weird}"


# list and detail -----------------------------------------------------------------


class TestList:
    def test_list_is_sorted_by_name(self, http, base_url, name):
        for suffix in ("c", "a", "b"):
            create_scenario(http, base_url, f"{name}_{suffix}")
        names = names_in(http.get(base_url + SCENARIOS).json())
        assert names == sorted(names)
        mine = [n for n in names if n.startswith(f"{HOST}:{name}_")]
        assert mine == [f"{HOST}:{name}_a", f"{HOST}:{name}_b", f"{HOST}:{name}_c"]

    def test_list_items_have_name_and_ref(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = http.get(base_url + SCENARIOS)
        assert response.status_code == 200
        for item in response.json()["data"]:
            assert set(item) == {"name", "scenarioRef"}
            assert item["scenarioRef"] == "/api/v2/scenarios/objects/" + item["name"]

    def test_all_hosts_false_limits_the_list_to_the_request_host(self, http, base_url, name):
        create_scenario(http, base_url, name)
        create_scenario(http, base_url, f"farhost:{name}")
        everything = names_in(http.get(base_url + SCENARIOS).json())
        assert f"farhost:{name}" in everything and f"{HOST}:{name}" in everything
        local = names_in(http.get(base_url + SCENARIOS, params={"all-hosts": "false"}).json())
        assert f"{HOST}:{name}" in local
        assert all(n.startswith(f"{HOST}:") for n in local)


class TestDetail:
    def test_fresh_scenario_detail(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert scenario_detail(http, base_url, name) == {
            "name": f"{HOST}:{name}",
            "stub_count": 0,
            "recorded": "-",
            "space_used_kb": 0,
            "sessions": [],
            "scenarioRef": ref(name),
        }

    def test_detail_after_recording(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name + "_rec", "record")
        big = "x" * 3000
        put_stub_ok(http, base_url, name, name + "_rec", stub(big, **contains("one")))
        put_stub_ok(http, base_url, name, name + "_rec", stub(big, **contains("two")))
        detail = scenario_detail(http, base_url, name)
        assert detail["stub_count"] == 2
        assert DATE_RE.match(detail["recorded"]), detail
        assert detail["space_used_kb"] >= 5  # two stubs of ~3 KB each
        [session] = detail["sessions"]
        assert session["name"] == name + "_rec"
        assert session["status"] == "record"
        assert DATE_RE.match(session["loaded"]), session
        assert set(session) == {"name", "status", "loaded", "last_used"}

    def test_detail_all_hosts_false(self, http, base_url, name):
        create_scenario(http, base_url, name)
        create_scenario(http, base_url, f"farhost:{name}")
        url = base_url + SCENARIOS + "/detail"
        everything = [d["name"] for d in assert_data(http.get(url))]
        assert f"farhost:{name}" in everything
        local = [d["name"] for d in assert_data(http.get(url, params={"all-hosts": "false"}))]
        assert f"{HOST}:{name}" in local
        assert all(n.startswith(f"{HOST}:") for n in local)

    def test_detail_is_sorted_by_name(self, http, base_url, name):
        create_scenario(http, base_url, name + "_z")
        create_scenario(http, base_url, name + "_y")
        names = [d["name"] for d in assert_data(http.get(base_url + SCENARIOS + "/detail"))]
        assert names == sorted(names)


# get object --------------------------------------------------------------------


class TestGetObject:
    def test_get_fresh_object(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = http.get(scenario_url(base_url, name))
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == f"{HOST}:{name}"
        assert body["stub_count"] == 0
        assert body["stubs"] == 0
        assert body["recorded"] == "-"
        assert body["space_used_kb"] == 0
        assert body["scenarioRef"] == ref(name)
        assert body["sessions"] == []

    def test_get_by_full_name_is_the_same_object(self, http, base_url, name):
        create_scenario(http, base_url, name)
        short = http.get(scenario_url(base_url, name)).json()
        qualified = http.get(scenario_url(base_url, f"{HOST}:{name}")).json()
        assert short == qualified

    def test_get_object_with_stubs_and_sessions(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a")), stub("b", **contains("b"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        body = http.get(scenario_url(base_url, name)).json()
        assert body["stub_count"] == 2
        assert body["stubs"] == 2
        assert DATE_RE.match(body["recorded"])
        sessions = {s["name"]: s["status"] for s in body["sessions"]}
        assert sessions == {name + "_rec": "dormant", name + "_p": "playback"}

    def test_unknown_is_404(self, http, base_url, name):
        assert_error(http.get(scenario_url(base_url, name)), 404, name)
        assert_error(http.get(scenario_url(base_url, f"nohost:{name}")), 404)

    def test_illegal_name_in_path_is_400(self, http, base_url):
        assert_error(http.get(scenario_url(base_url, "a%20b")), 400)


# delete ------------------------------------------------------------------------


class TestDelete:
    def test_delete_then_gone(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = http.delete(scenario_url(base_url, name))
        assert response.status_code == 200, response.text
        assert_error(http.get(scenario_url(base_url, name)), 404)
        assert f"{HOST}:{name}" not in names_in(http.get(base_url + SCENARIOS).json())

    def test_delete_missing_is_412(self, http, base_url, name):
        assert_error(http.delete(scenario_url(base_url, name)), 412, name)

    def test_delete_twice_is_412_the_second_time(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert http.delete(scenario_url(base_url, name)).status_code == 200
        assert_error(http.delete(scenario_url(base_url, name)), 412)

    def test_delete_by_full_name(self, http, base_url, name):
        create_scenario(http, base_url, f"otherhost:{name}")
        assert http.delete(scenario_url(base_url, f"otherhost:{name}")).status_code == 200
        assert_error(http.get(scenario_url(base_url, f"otherhost:{name}")), 404)

    def test_delete_while_recording_is_409(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        assert_error(http.delete(scenario_url(base_url, name)), 409, name)
        assert http.get(scenario_url(base_url, name)).status_code == 200

    def test_delete_while_playing_is_409(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        assert_error(http.delete(scenario_url(base_url, name)), 409)
        assert http.get(scenario_url(base_url, name)).status_code == 200

    @pytest.mark.parametrize("how", ["header", "query"])
    def test_force_deletes_with_active_sessions(self, http, base_url, name, how):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        if how == "header":
            response = http.delete(scenario_url(base_url, name), headers={"force": "true"})
        else:
            response = http.delete(scenario_url(base_url, name), params={"force": "true"})
        assert response.status_code == 200, response.text
        assert_error(http.get(scenario_url(base_url, name)), 404)
        # the playing session went with it
        assert_error(play(http, base_url, name, name + "_p", "a"), 404)

    def test_force_false_does_not_force(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        response = http.delete(scenario_url(base_url, name), headers={"force": "false"})
        assert_error(response, 409)

    def test_delete_with_only_dormant_sessions_needs_no_force(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        end_ok(http, base_url, name, name + "_p")
        assert http.delete(scenario_url(base_url, name)).status_code == 200

    def test_session_names_are_free_again_after_delete(self, http, base_url, name):
        session = name + "_s"
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, session, "record")
        assert http.delete(scenario_url(base_url, name), headers={"force": "true"}).ok
        other = name + "_other"
        create_scenario(http, base_url, other)
        data = begin_ok(http, base_url, other, session, "record")
        assert data["scenario"] == f"{HOST}:{other}"

    def test_recreated_scenario_starts_empty(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        assert http.delete(scenario_url(base_url, name)).status_code == 200
        create_scenario(http, base_url, name)
        assert list_stubs(http, base_url, name) == []
        detail = scenario_detail(http, base_url, name)
        assert (detail["stub_count"], detail["sessions"], detail["recorded"]) == (0, [], "-")


# routing errors --------------------------------------------------------------------


class TestRouting:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/v2/nope",
            "/api/nothing",
            "/api/v2/scenarios/objects/x/unknown",
            "/api/v2/scenarios/objects/x/stubs/extra",
            "/api/v3/scenarios",
        ],
    )
    def test_unknown_api_route_is_404_envelope(self, http, base_url, path):
        assert_error(http.get(base_url + path), 404)
        assert_error(http.post(base_url + path, data="x"), 404)

    @pytest.mark.parametrize(
        "method, path",
        [
            ("POST", "/api/v2/scenarios"),
            ("DELETE", "/api/v2/scenarios"),
            ("PATCH", "/api/v2/scenarios"),
            ("POST", "/api/v2/scenarios/detail"),
            ("PUT", "/api/v2/scenarios/objects/x"),
            ("POST", "/api/v2/scenarios/objects/x"),
            ("GET", "/api/v2/scenarios/objects/x/action"),
            ("PUT", "/api/v2/scenarios/objects/x/action"),
            ("PATCH", "/api/v2/scenarios/objects/x/stubs"),
            ("GET", "/api/v2/matcher"),
        ],
    )
    def test_wrong_method_is_405_envelope(self, http, base_url, method, path):
        assert_error(http.request(method, base_url + path), 405, method)
