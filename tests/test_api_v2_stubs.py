"""Contract tests: Mirage API v2 stubs (PUT, GET and DELETE .../objects/{name}/stubs)."""

from __future__ import annotations

import re

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
    put_stub,
    put_stub_ok,
    record,
    scenario_detail,
    stub,
    stubs_url,
)

INSERTED_RE = re.compile(r"^inserted scenario_stub: (\S+)$")


@pytest.fixture
def recording(http, base_url, name) -> str:
    """A fresh scenario ``name`` with session ``name`` recording into it."""
    create_scenario(http, base_url, name)
    begin_ok(http, base_url, name, name, "record")
    return name


class TestPut:
    def test_insert_answers_201_with_the_key(self, http, base_url, recording):
        doc = stub("<r>yes</r>", status=202, response_headers={"X-A": "1"}, **contains("<q>1</q>"))
        response = put_stub(http, base_url, recording, recording, doc)
        data = assert_data(response, 201)
        assert data["status"] == "created"
        match = INSERTED_RE.match(data["message"])
        assert match, data
        assert match.group(1) == data["key"]
        [listed] = list_stubs(http, base_url, recording)
        assert listed["id"] == data["key"]

    def test_listed_stub_shape(self, http, base_url, recording):
        request = {"method": "POST", "bodyPatterns": {"contains": ["<q>1</q>"]}}
        doc = {
            "request": request,
            "response": {"status": 202, "body": "<r>yes</r>", "headers": {"X-A": "1"}},
        }
        key = put_stub_ok(http, base_url, recording, recording, doc)["key"]
        [listed] = list_stubs(http, base_url, recording)
        assert set(listed) == {"id", "stub", "matchers_hash", "space_used", "recorded", "scenario"}
        assert listed["id"] == key
        assert listed["scenario"] == f"{HOST}:{recording}"
        assert re.fullmatch(r"[0-9a-f]{32}", listed["matchers_hash"])
        assert isinstance(listed["space_used"], int) and listed["space_used"] > 0
        assert DATE_RE.match(listed["recorded"])
        body = listed["stub"]
        assert body["request"] == request
        assert body["response"] == {"status": 202, "body": "<r>yes</r>", "headers": {"X-A": "1"}}
        assert body["priority"] is None
        assert body["args"] == {}
        assert body["recorded"] == listed["recorded"]

    def test_legacy_list_body_patterns_are_stored_as_an_object(self, http, base_url, recording):
        doc = {"request": {"bodyPatterns": [{"contains": ["a"]}]}, "response": {"body": "x"}}
        put_stub_ok(http, base_url, recording, recording, doc)
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["request"] == {"bodyPatterns": {"contains": ["a"]}}
        assert listed["stub"]["response"]["status"] == 200

    def test_same_matchers_again_appends_a_stateful_response(self, http, base_url, recording):
        first = put_stub_ok(http, base_url, recording, recording, stub("one", **contains("q")))
        again = put_stub(http, base_url, recording, recording, stub("two", **contains("q")))
        data = assert_data(again, 200)
        assert data["message"] == "updated with stateful response"
        assert data["status"] == "updated"
        assert data["key"] == first["key"]
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["response"]["body"] == ["one", "two"]

    def test_identical_stub_with_default_stateful_is_appended(self, http, base_url, recording):
        # Mirage quirk kept: stateful defaults to true, so a repeat is another response.
        put_stub_ok(http, base_url, recording, recording, stub("same", **contains("q")))
        again = put_stub(http, base_url, recording, recording, stub("same", **contains("q")))
        assert assert_data(again, 200)["status"] == "updated"
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["response"]["body"] == ["same", "same"]

    def test_stateful_false_identical_body_is_ignored(self, http, base_url, recording):
        doc = stub("same", **contains("q"))
        first = put_stub_ok(http, base_url, recording, recording, doc)
        before = list_stubs(http, base_url, recording)
        again = put_stub(http, base_url, recording, recording, doc, {"stateful": "false"})
        data = assert_data(again, 200)
        assert data["status"] == "ignored"
        assert data["key"] == first["key"]
        assert list_stubs(http, base_url, recording) == before

    def test_stateful_false_different_body_is_still_appended(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, stub("one", **contains("q")))
        again = put_stub(
            http,
            base_url,
            recording,
            recording,
            stub("two", **contains("q")),
            {"stateful": "false"},
        )
        assert assert_data(again, 200)["status"] == "updated"
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["response"]["body"] == ["one", "two"]

    def test_different_matchers_are_different_stubs(self, http, base_url, recording):
        a = put_stub_ok(http, base_url, recording, recording, stub("a", **contains("q")))
        b = put_stub_ok(
            http, base_url, recording, recording, stub("b", **contains("q", method="GET"))
        )
        c = put_stub_ok(http, base_url, recording, recording, stub("c", **contains("other")))
        assert len({a["key"], b["key"], c["key"]}) == 3
        listed = list_stubs(http, base_url, recording)
        assert [s["id"] for s in listed] == [a["key"], b["key"], c["key"]]  # insertion order
        assert listed[0]["matchers_hash"] != listed[1]["matchers_hash"]

    def test_query_args_become_stub_args(self, http, base_url, recording):
        response = put_stub(
            http,
            base_url,
            recording,
            recording,
            stub("x", **contains("q")),
            params={"tag": "v1", "team": "qa"},
        )
        assert response.status_code == 201, response.text
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["args"] == {"tag": "v1", "team": "qa"}

    def test_priority_from_document_and_header(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, stub("a", priority=3, **contains("a")))
        put_stub_ok(
            http, base_url, recording, recording, stub("b", **contains("b")), {"priority": "7"}
        )
        # the document's own priority wins over the header
        put_stub_ok(
            http,
            base_url,
            recording,
            recording,
            stub("c", priority=1, **contains("c")),
            {"priority": "9"},
        )
        priorities = [s["stub"]["priority"] for s in list_stubs(http, base_url, recording)]
        assert priorities == [3, 7, 1]

    @pytest.mark.parametrize("bad", ["high", "1.5", "true"])
    def test_bad_priority_header_is_400(self, http, base_url, recording, bad):
        response = put_stub(
            http, base_url, recording, recording, stub("a", **contains("a")), {"priority": bad}
        )
        assert_error(response, 400, "priority")
        assert list_stubs(http, base_url, recording) == []

    def test_stub_counts_in_scenario_detail(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, stub("a", **contains("a")))
        put_stub_ok(http, base_url, recording, recording, stub("b", **contains("b")))
        put_stub(http, base_url, recording, recording, stub("b2", **contains("b")))
        assert scenario_detail(http, base_url, recording)["stub_count"] == 2


class TestPutSessionRules:
    def test_missing_session_header_is_400(self, http, base_url, recording):
        response = put_stub(http, base_url, recording, None, stub("a", **contains("a")))
        assert_error(response, 400, "session")
        assert list_stubs(http, base_url, recording) == []

    def test_unknown_session_is_404(self, http, base_url, recording):
        response = put_stub(http, base_url, recording, "nosuch", stub("a", **contains("a")))
        assert_error(response, 404, "nosuch")

    def test_session_in_playback_is_409(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        response = put_stub(http, base_url, name, name + "_p", stub("b", **contains("b")))
        assert_error(response, 409, name + "_p")
        assert len(list_stubs(http, base_url, name)) == 1

    def test_dormant_session_is_409(self, http, base_url, recording):
        end_ok(http, base_url, recording, recording)
        response = put_stub(http, base_url, recording, recording, stub("a", **contains("a")))
        assert_error(response, 409)
        assert list_stubs(http, base_url, recording) == []

    def test_session_of_another_scenario_is_400(self, http, base_url, name):
        create_scenario(http, base_url, name + "_a")
        create_scenario(http, base_url, name + "_b")
        begin_ok(http, base_url, name + "_a", name, "record")
        response = put_stub(http, base_url, name + "_b", name, stub("a", **contains("a")))
        assert_error(response, 400, name)
        assert list_stubs(http, base_url, name + "_a") == []
        assert list_stubs(http, base_url, name + "_b") == []

    def test_unknown_scenario_with_unknown_session_is_404(self, http, base_url, name):
        assert_error(put_stub(http, base_url, name, name, stub("a", **contains("a"))), 404)


BAD_STUBS = {
    "no request": {"response": {"status": 200, "body": "x"}},
    "no response": {"request": {"method": "POST"}},
    "request not an object": {"request": "POST", "response": {"body": "x"}},
    "request a list": {"request": [{"method": "POST"}], "response": {"body": "x"}},
    "response not an object": {"request": {}, "response": "x"},
    "response null": {"request": {}, "response": None},
    "unknown matcher bodyPattern": {
        "request": {"bodyPattern": {"contains": ["x"]}},
        "response": {"body": "x"},
    },
    "unknown matcher url": {"request": {"url": "/x"}, "response": {"body": "x"}},
    "unknown body matcher": {
        "request": {"bodyPatterns": {"equals": ["x"]}},
        "response": {"body": "x"},
    },
    "bad regex in urlPattern": {"request": {"urlPattern": "(unclosed"}, "response": {}},
    "urlPattern not a string": {"request": {"urlPattern": 5}, "response": {}},
    "bad jsonpath": {"request": {"bodyPatterns": {"jsonpath": ["$["]}}, "response": {}},
    "bad xpath": {"request": {"bodyPatterns": {"xpath": ["//a["]}}, "response": {}},
    "xpath with an undeclared prefix": {
        "request": {"bodyPatterns": {"xpath": ["//ns:a"]}},
        "response": {},
    },
    "xpath namespaces not an object": {
        "request": {"bodyPatterns": {"xpath": ["//a"], "namespaces": ["x"]}},
        "response": {},
    },
    "contains not strings": {"request": {"bodyPatterns": {"contains": [1]}}, "response": {}},
    "bodyPatterns a string": {"request": {"bodyPatterns": "x"}, "response": {}},
    "method not a string": {"request": {"method": ["GET"]}, "response": {}},
    "queryArgs not an object": {"request": {"queryArgs": "a=1"}, "response": {}},
    "headers matcher not an object": {"request": {"headers": ["a"]}, "response": {}},
    "status a word": {"request": {}, "response": {"status": "ok"}},
    "status too low": {"request": {}, "response": {"status": 99}},
    "status too high": {"request": {}, "response": {"status": 600}},
    "status a bool": {"request": {}, "response": {"status": True}},
    "status a float": {"request": {}, "response": {"status": 200.5}},
    "status a list": {"request": {}, "response": {"status": [200]}},
    "response headers a list": {"request": {}, "response": {"headers": [["a", "b"]]}},
    "response headers a string": {"request": {}, "response": {"headers": "a: b"}},
    "response header value an object": {"request": {}, "response": {"headers": {"a": {}}}},
    "empty body list": {"request": {}, "response": {"body": []}},
    "priority a word": {"request": {}, "response": {}, "priority": "first"},
    "args not an object": {"request": {}, "response": {}, "args": ["a"]},
}


class TestBadStubs:
    @pytest.mark.parametrize("doc", list(BAD_STUBS.values()), ids=list(BAD_STUBS))
    def test_bad_stub_is_400_and_nothing_is_stored(self, http, base_url, recording, doc):
        assert_error(put_stub(http, base_url, recording, recording, doc), 400)
        assert list_stubs(http, base_url, recording) == []

    def test_bad_stub_does_not_touch_an_existing_sequence(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, stub("one", **contains("q")))
        before = list_stubs(http, base_url, recording)
        bad = stub("two", **contains("q"))
        bad["response"]["status"] = "nope"
        assert_error(put_stub(http, base_url, recording, recording, bad), 400, "status")
        assert list_stubs(http, base_url, recording) == before

    def test_unknown_matcher_message_names_the_key(self, http, base_url, recording):
        doc = {"request": {"bodyPattern": {"contains": ["x"]}}, "response": {}}
        assert_error(put_stub(http, base_url, recording, recording, doc), 400, "bodyPattern")


class TestList:
    def test_fresh_scenario_has_no_stubs(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert list_stubs(http, base_url, name) == []

    def test_unknown_scenario_is_404(self, http, base_url, name):
        assert_error(http.get(stubs_url(base_url, name)), 404, name)

    def test_list_by_full_name(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        assert list_stubs(http, base_url, f"{HOST}:{name}") == list_stubs(http, base_url, name)

    def test_stateful_stub_shows_a_list_body(self, http, base_url, name):
        record(
            http,
            base_url,
            name,
            [stub("1", **contains("q")), stub("2", **contains("q")), stub("3", **contains("q"))],
        )
        [listed] = list_stubs(http, base_url, name)
        assert listed["stub"]["response"]["body"] == ["1", "2", "3"]


class TestDelete:
    def test_delete_stubs_counts_them(self, http, base_url, name):
        record(
            http,
            base_url,
            name,
            [stub("a", **contains("a")), stub("b", **contains("b")), stub("b2", **contains("b"))],
        )
        response = http.delete(stubs_url(base_url, name))
        assert assert_data(response) == "Deleted stubs count: 2"
        assert list_stubs(http, base_url, name) == []
        detail = scenario_detail(http, base_url, name)
        assert (detail["stub_count"], detail["recorded"]) == (0, "-")
        # the scenario itself and its (dormant) sessions are kept
        assert [s["name"] for s in detail["sessions"]] == [name + "_rec"]

    def test_delete_with_no_stubs_is_zero(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert assert_data(http.delete(stubs_url(base_url, name))) == "Deleted stubs count: 0"

    def test_delete_while_recording_is_409(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, stub("a", **contains("a")))
        assert_error(http.delete(stubs_url(base_url, recording)), 409)
        assert len(list_stubs(http, base_url, recording)) == 1

    def test_delete_while_playing_is_409(self, http, base_url, name):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        assert_error(http.delete(stubs_url(base_url, name)), 409, name + "_p")
        assert len(list_stubs(http, base_url, name)) == 1

    @pytest.mark.parametrize("how", ["header", "query"])
    def test_force_deletes_with_active_sessions(self, http, base_url, name, how):
        record(http, base_url, name, [stub("a", **contains("a"))])
        begin_ok(http, base_url, name, name + "_p", "playback")
        url = stubs_url(base_url, name)
        if how == "header":
            response = http.delete(url, headers={"force": "true"})
        else:
            response = http.delete(url, params={"force": "true"})
        assert assert_data(response) == "Deleted stubs count: 1"
        assert list_stubs(http, base_url, name) == []

    def test_delete_on_unknown_scenario_is_404(self, http, base_url, name):
        assert_error(http.delete(stubs_url(base_url, name)), 404)

    def test_record_again_after_delete(self, http, base_url, name):
        record(http, base_url, name, [stub("old", **contains("a"))])
        assert http.delete(stubs_url(base_url, name)).status_code == 200
        begin_ok(http, base_url, name, name + "_again", "record")
        put_stub_ok(http, base_url, name, name + "_again", stub("new", **contains("a")))
        [listed] = list_stubs(http, base_url, name)
        assert listed["stub"]["response"]["body"] == "new"
