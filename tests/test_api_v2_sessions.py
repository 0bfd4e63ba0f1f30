"""Contract tests: Mirage API v2 sessions (begin/end via POST .../objects/{name}/action)."""

from __future__ import annotations

import pytest

from tests.mirage_helpers import (
    DATE_RE,
    HOST,
    TIMESTAMP_RE,
    action_url,
    assert_data,
    assert_error,
    begin,
    begin_ok,
    contains,
    create_scenario,
    end,
    end_ok,
    play,
    put_stub_ok,
    record,
    ref,
    scenario_detail,
    scenario_url,
    stub,
    stubs_url,
)


def statuses(http, base_url, scenario) -> dict[str, str]:
    return {s["name"]: s["status"] for s in scenario_detail(http, base_url, scenario)["sessions"]}


class TestBegin:
    def test_begin_record(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = begin(http, base_url, name, name, "record")
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["version"], str)
        data = body["data"]
        assert data["status"] == "record"
        assert data["scenario"] == f"{HOST}:{name}"
        assert data["session"] == name
        assert data["scenarioRef"] == ref(name)
        assert isinstance(data["message"], str) and data["message"]
        assert statuses(http, base_url, name) == {name: "record"}

    def test_begin_playback(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        data = begin_ok(http, base_url, name, name + "_p", "playback")
        assert data["status"] == "playback"
        assert data["scenario"] == f"{HOST}:{name}"
        assert data["session"] == name + "_p"
        assert data["scenarioRef"] == ref(name)
        assert statuses(http, base_url, name)[name + "_p"] == "playback"

    def test_begin_by_full_scenario_name(self, http, base_url, name):
        create_scenario(http, base_url, name)
        data = begin_ok(http, base_url, f"{HOST}:{name}", name, "record")
        assert data["scenario"] == f"{HOST}:{name}"

    def test_session_summary_in_detail(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        [session] = [
            s for s in scenario_detail(http, base_url, name)["sessions"] if s["name"] == name + "_p"
        ]
        assert set(session) == {"name", "status", "loaded", "last_used"}
        assert DATE_RE.match(session["loaded"])
        # after a playback request last_used is a timestamp
        assert play(http, base_url, name, name + "_p", "x").status_code == 200
        [session] = [
            s for s in scenario_detail(http, base_url, name)["sessions"] if s["name"] == name + "_p"
        ]
        assert TIMESTAMP_RE.match(session["last_used"]), session

    def test_unknown_scenario_is_404(self, http, base_url, name):
        assert_error(begin(http, base_url, name, name, "record"), 404, name)
        assert_error(begin(http, base_url, name, name, "playback"), 404)

    @pytest.mark.parametrize("mode", ["replay", "RECORD", "", None, 5, ["record"]])
    def test_bad_mode_is_400(self, http, base_url, name, mode):
        create_scenario(http, base_url, name)
        body = {"begin": None, "session": name, "mode": mode}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "mode")
        assert statuses(http, base_url, name) == {}

    def test_missing_mode_is_400(self, http, base_url, name):
        create_scenario(http, base_url, name)
        body = {"begin": None, "session": name}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "mode")

    @pytest.mark.parametrize("session", [None, "", "a b", "a/b", "a:b", 5, ["s"]])
    def test_missing_or_illegal_session_is_400(self, http, base_url, name, session):
        create_scenario(http, base_url, name)
        body = {"begin": None, "session": session, "mode": "record"}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "session")
        assert statuses(http, base_url, name) == {}

    def test_session_key_missing_is_400(self, http, base_url, name):
        create_scenario(http, base_url, name)
        body = {"begin": None, "mode": "record"}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "session")

    def test_record_needs_an_empty_scenario(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        message = assert_error(begin(http, base_url, name, name + "_r2", "record"), 400)
        assert "has existing stubs" in message
        assert name + "_r2" not in statuses(http, base_url, name)

    def test_playback_needs_stubs_412(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(begin(http, base_url, name, name, "playback"), 412, name)
        assert statuses(http, base_url, name) == {}

    def test_playback_refused_while_recording(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name + "_rec", "record")
        put_stub_ok(http, base_url, name, name + "_rec", stub("x", **contains("x")))
        assert_error(begin(http, base_url, name, name + "_p", "playback"), 400)
        assert statuses(http, base_url, name) == {name + "_rec": "record"}

    def test_session_name_is_unique_per_host(self, http, base_url, name):
        create_scenario(http, base_url, name + "_a")
        create_scenario(http, base_url, name + "_b")
        begin_ok(http, base_url, name + "_a", name, "record")
        message = assert_error(begin(http, base_url, name + "_b", name, "record"), 400)
        assert name in message
        # still refused once the first one is dormant: the name belongs to scenario a
        end_ok(http, base_url, name + "_a", name)
        assert_error(begin(http, base_url, name + "_b", name, "record"), 400)

    def test_same_session_name_on_another_host_is_fine(self, http, base_url, name):
        create_scenario(http, base_url, name)
        create_scenario(http, base_url, f"farhost:{name}")
        begin_ok(http, base_url, name, name, "record")
        data = begin_ok(http, base_url, f"farhost:{name}", name, "record")
        assert data["scenario"] == f"farhost:{name}"

    @pytest.mark.parametrize("first, second", [("record", "record"), ("record", "playback")])
    def test_recording_session_cannot_begin_again(self, http, base_url, name, first, second):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, first)
        put_stub_ok(http, base_url, name, name, stub("x", **contains("x")))
        assert_error(begin(http, base_url, name, name, second), 400, name)
        assert statuses(http, base_url, name) == {name: "record"}

    @pytest.mark.parametrize("second", ["record", "playback"])
    def test_playing_session_cannot_begin_again(self, http, base_url, name, second):
        record(http, base_url, name, [stub("x", **contains("x"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        assert_error(begin(http, base_url, name, name + "_p", second), 400, name + "_p")
        assert statuses(http, base_url, name)[name + "_p"] == "playback"

    def test_several_playback_sessions_may_share_a_scenario(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        begin_ok(http, base_url, name, name + "_1", "playback")
        begin_ok(http, base_url, name, name + "_2", "playback")
        assert statuses(http, base_url, name) == {
            name + "_rec": "dormant",
            name + "_1": "playback",
            name + "_2": "playback",
        }


class TestEnd:
    def test_end_session(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        response = end(http, base_url, name, name)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"message": "Session ended"}
        assert isinstance(response.json()["version"], str)
        assert statuses(http, base_url, name) == {name: "dormant"}

    def test_end_unknown_session_is_404(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(end(http, base_url, name, name + "_nope"), 404, name + "_nope")

    def test_end_session_of_another_scenario_is_404(self, http, base_url, name):
        create_scenario(http, base_url, name + "_a")
        create_scenario(http, base_url, name + "_b")
        begin_ok(http, base_url, name + "_a", name, "record")
        assert_error(end(http, base_url, name + "_b", name), 404)
        assert statuses(http, base_url, name + "_a") == {name: "record"}

    def test_end_on_unknown_scenario_is_404(self, http, base_url, name):
        assert_error(end(http, base_url, name, name), 404)

    def test_end_without_session_is_400(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json={"end": None}), 400, "session")

    def test_dormant_session_can_begin_again_in_either_mode(self, http, base_url, name):
        session = name + "_s"
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, session, "record")
        put_stub_ok(http, base_url, name, session, stub("x", **contains("x")))
        end_ok(http, base_url, name, session)
        assert begin_ok(http, base_url, name, session, "playback")["status"] == "playback"
        assert play(http, base_url, name, session, "x").text == "x"
        end_ok(http, base_url, name, session)
        assert begin_ok(http, base_url, name, session, "playback")["status"] == "playback"
        end_ok(http, base_url, name, session)
        # empty the scenario and record again with the same session
        assert http.delete(stubs_url(base_url, name)).status_code == 200
        assert begin_ok(http, base_url, name, session, "record")["status"] == "record"
        assert statuses(http, base_url, name) == {session: "record"}

    def test_ended_session_stays_visible_as_dormant(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        body = http.get(scenario_url(base_url, name)).json()
        assert body["sessions"][0]["name"] == name + "_rec"
        assert body["sessions"][0]["status"] == "dormant"

    def test_end_all_sessions(self, http, base_url, name):
        record(http, base_url, name, [stub("x", **contains("x"))])
        begin_ok(http, base_url, name, name + "_p1", "playback")
        begin_ok(http, base_url, name, name + "_p2", "playback")
        response = http.post(action_url(base_url, name), json={"end": "sessions"})
        assert assert_data(response) == {
            name + "_p1": {"message": "Session ended"},
            name + "_p2": {"message": "Session ended"},
        }
        assert set(statuses(http, base_url, name).values()) == {"dormant"}
        # nothing active any more: an empty map
        again = http.post(action_url(base_url, name), json={"end": "sessions"})
        assert assert_data(again) == {}

    def test_end_all_sessions_ends_a_recording(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        response = http.post(action_url(base_url, name), json={"end": "sessions"})
        assert assert_data(response) == {name: {"message": "Session ended"}}
        assert statuses(http, base_url, name) == {name: "dormant"}

    def test_end_all_only_touches_its_scenario(self, http, base_url, name):
        create_scenario(http, base_url, name + "_a")
        create_scenario(http, base_url, name + "_b")
        begin_ok(http, base_url, name + "_a", name + "_sa", "record")
        begin_ok(http, base_url, name + "_b", name + "_sb", "record")
        response = http.post(action_url(base_url, name + "_a"), json={"end": "sessions"})
        assert assert_data(response) == {name + "_sa": {"message": "Session ended"}}
        assert statuses(http, base_url, name + "_b") == {name + "_sb": "record"}

    def test_end_all_on_unknown_scenario_is_404(self, http, base_url, name):
        response = http.post(action_url(base_url, name), json={"end": "sessions"})
        assert_error(response, 404)


class TestActionBody:
    @pytest.mark.parametrize("body", [{}, {"foo": None}, {"session": "x", "mode": "record"}])
    def test_unknown_action_is_400(self, http, base_url, name, body):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json=body), 400)

    @pytest.mark.parametrize("body", [[], ["begin"], "begin", 1, None])
    def test_non_object_body_is_400(self, http, base_url, name, body):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json=body), 400)

    @pytest.mark.parametrize("raw", [b"", b"{", b"begin=1&session=x"])
    def test_invalid_json_is_400(self, http, base_url, name, raw):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), data=raw), 400)
