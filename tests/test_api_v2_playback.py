"""Contract tests: Mirage API v2 playback (POST .../stubs, POST /api/v2/matcher), matchers,
priority and stateful sequences, all through the real server."""

from __future__ import annotations

import json
import os

import pytest

from tests.mirage_helpers import (
    HOST,
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    end_ok,
    play,
    playback_of,
    put_stub_ok,
    record,
    stub,
    stubs_path,
)

E017 = "No matching response found"


def body_of(http, base_url, scenario, session, body="", headers=None, params=None) -> str | None:
    """The played-back body, or None when nothing matched (the E017 400)."""
    response = play(http, base_url, scenario, session, body, headers, params)
    if response.status_code == 400 and E017 in response.text:
        assert_error(response, 400, E017)
        return None
    assert response.status_code == 200, response.text
    return response.text


class TestPlayback:
    def test_answers_the_stub_status_headers_and_body_exactly(self, http, base_url, name):
        doc = stub(
            "<resp>\n  <ok>yes</ok>\n</resp>\n",
            status=207,
            response_headers={"Content-Type": "text/xml; charset=utf-8", "X-Trace": "abc 123"},
            **contains("<ask>1</ask>"),
        )
        session = playback_of(http, base_url, name, [doc])
        response = play(http, base_url, name, session, "<req><ask>1</ask></req>")
        assert response.status_code == 207
        assert response.content == b"<resp>\n  <ok>yes</ok>\n</resp>\n"
        assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert response.headers["X-Trace"] == "abc 123"

    def test_json_response_body_and_error_statuses_are_played_as_is(self, http, base_url, name):
        session = playback_of(
            http,
            base_url,
            name,
            [
                stub(
                    '{"a": [1, 2]}',
                    response_headers={"Content-Type": "application/json"},
                    **contains("j"),
                ),
                stub("gone", status=503, **contains("down")),
            ],
        )
        response = play(http, base_url, name, session, "j")
        assert response.status_code == 200
        assert response.json() == {"a": [1, 2]}
        down = play(http, base_url, name, session, "down")
        assert (down.status_code, down.text) == (503, "gone")

    def test_unicode_body_round_trips(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("héllo → 世界", **contains("ü"))])
        response = play(http, base_url, name, session, "grüß")
        assert response.status_code == 200
        assert response.content.decode("utf-8") == "héllo → 世界"

    def test_session_by_full_scenario_name_in_path(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        assert body_of(http, base_url, f"{HOST}:{name}", session, "a") == "ok"

    def test_no_match_is_mirage_e017_400(self, http, base_url, name):
        # Mirage quirk kept: no matching stub is a 400 (E017), clients test for it.
        session = playback_of(http, base_url, name, [stub("ok", **contains("expected"))])
        response = play(http, base_url, name, session, "something else")
        message = assert_error(response, 400, E017)
        assert message.startswith("E017")

    def test_missing_session_header_is_400(self, http, base_url, name):
        playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        assert_error(play(http, base_url, name, None, "a"), 400, "session")

    def test_unknown_session_is_404(self, http, base_url, name):
        playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        assert_error(play(http, base_url, name, "nosuch", "a"), 404, "nosuch")

    def test_session_in_record_is_409(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        put_stub_ok(http, base_url, name, name, stub("ok", **contains("a")))
        assert_error(play(http, base_url, name, name, "a"), 409, name)

    def test_dormant_session_is_409(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        end_ok(http, base_url, name, session)
        assert_error(play(http, base_url, name, session, "a"), 409, session)
        # and the recording session, long ended, is dormant too
        assert_error(play(http, base_url, name, name + "_rec", "a"), 409)

    def test_session_of_another_scenario_is_refused(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("a"))])
        create_scenario(http, base_url, name + "_other")
        response = play(http, base_url, name + "_other", session, "a")
        assert_error(response, 400, session)


class TestStateful:
    def test_responses_in_order_then_the_last_repeats(self, http, base_url, name):
        stubs = [stub(body, **contains("poll")) for body in ("pending", "running", "done")]
        session = playback_of(http, base_url, name, stubs)
        got = [body_of(http, base_url, name, session, "poll") for _ in range(5)]
        assert got == ["pending", "running", "done", "done", "done"]

    def test_a_list_body_is_a_sequence_too(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub(["1", "2"], **contains("q"))])
        got = [body_of(http, base_url, name, session, "q") for _ in range(3)]
        assert got == ["1", "2", "2"]

    def test_sequences_are_per_stub(self, http, base_url, name):
        stubs = [
            stub("a1", **contains("a")),
            stub("a2", **contains("a")),
            stub("b1", **contains("b")),
            stub("b2", **contains("b")),
        ]
        session = playback_of(http, base_url, name, stubs)
        got = [body_of(http, base_url, name, session, q) for q in "abab"]
        assert got == ["a1", "b1", "a2", "b2"]

    def test_each_playback_session_has_its_own_counters(self, http, base_url, name):
        stubs = [stub(body, **contains("q")) for body in ("one", "two", "three")]
        first = playback_of(http, base_url, name, stubs)
        second = name + "_second"
        begin_ok(http, base_url, name, second, "playback")
        assert body_of(http, base_url, name, first, "q") == "one"
        assert body_of(http, base_url, name, first, "q") == "two"
        assert body_of(http, base_url, name, second, "q") == "one"
        assert body_of(http, base_url, name, first, "q") == "three"
        assert body_of(http, base_url, name, second, "q") == "two"

    def test_ending_and_beginning_again_restarts_the_sequence(self, http, base_url, name):
        stubs = [stub(body, **contains("q")) for body in ("one", "two")]
        session = playback_of(http, base_url, name, stubs)
        assert [body_of(http, base_url, name, session, "q") for _ in range(3)] == [
            "one",
            "two",
            "two",
        ]
        end_ok(http, base_url, name, session)
        begin_ok(http, base_url, name, session, "playback")
        assert body_of(http, base_url, name, session, "q") == "one"

    def test_stateful_statuses_follow_the_sequence(self, http, base_url, name):
        stubs = [stub("wait", status=202, **contains("q")), stub("ok", status=200, **contains("q"))]
        session = playback_of(http, base_url, name, stubs)
        first = play(http, base_url, name, session, "q")
        second = play(http, base_url, name, session, "q")
        assert (first.status_code, first.text) == (202, "wait")
        assert (second.status_code, second.text) == (200, "ok")


class TestContains:
    def test_whitespace_is_stripped_from_both_sides(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("hit", **contains("<a> <b>1</b>\n</a>"))])
        assert body_of(http, base_url, name, session, "<x><a>\n\t<b> 1 </b></a></x>") == "hit"
        assert body_of(http, base_url, name, session, "<a><b>1</b></a>") == "hit"

    def test_case_sensitive(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("hit", **contains("<Status>OK"))])
        assert body_of(http, base_url, name, session, "<Status>OK</Status>") == "hit"
        assert body_of(http, base_url, name, session, "<status>ok</status>") is None

    def test_all_patterns_must_hold(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("hit", **contains("one", "two"))])
        assert body_of(http, base_url, name, session, "two and one") == "hit"
        assert body_of(http, base_url, name, session, "one only") is None
        assert body_of(http, base_url, name, session, "two only") is None

    def test_legacy_list_form(self, http, base_url, name):
        doc = {
            "request": {"method": "POST", "bodyPatterns": [{"contains": ["<op>get</op>"]}]},
            "response": {"status": 200, "body": "legacy"},
        }
        session = playback_of(http, base_url, name, [doc])
        assert body_of(http, base_url, name, session, "<r><op>get</op></r>") == "legacy"
        assert body_of(http, base_url, name, session, "<r><op>put</op></r>") is None

    def test_legacy_list_form_keeps_every_element(self, http, base_url, name):
        doc = {
            "request": {"bodyPatterns": [{"contains": ["one"]}, {"contains": ["two"]}]},
            "response": {"body": "both"},
        }
        session = playback_of(http, base_url, name, [doc])
        assert body_of(http, base_url, name, session, "one two") == "both"
        assert body_of(http, base_url, name, session, "one") is None

    def test_negated_contains(self, http, base_url, name):
        doc = stub("hit", bodyPatterns={"contains": ["order"], "!contains": ["cancel"]})
        session = playback_of(http, base_url, name, [doc])
        assert body_of(http, base_url, name, session, "new order") == "hit"
        assert body_of(http, base_url, name, session, "cancel order") is None

    def test_longest_specific_stub_not_confused_by_shared_text(self, http, base_url, name):
        stubs = [stub("short", **contains("<id>1</id>")), stub("long", **contains("<id>12</id>"))]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "<id>12</id>") == "long"
        assert body_of(http, base_url, name, session, "<id>1</id>") == "short"


class TestBodyPathMatchers:
    def test_jsonpath_matches_when_it_finds_anything(self, http, base_url, name):
        doc = stub("found", bodyPatterns={"jsonpath": ["$.order.items[?@.sku == 'A1']"]})
        session = playback_of(http, base_url, name, [doc])
        hit = json.dumps({"order": {"items": [{"sku": "B2"}, {"sku": "A1"}]}})
        miss = json.dumps({"order": {"items": [{"sku": "B2"}]}})
        assert body_of(http, base_url, name, session, hit) == "found"
        assert body_of(http, base_url, name, session, miss) is None
        assert body_of(http, base_url, name, session, "not json at all") is None

    def test_jsonpath_simple_key(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("k", bodyPatterns={"jsonpath": ["$.k"]})])
        assert body_of(http, base_url, name, session, '{"k": null}') == "k"
        assert body_of(http, base_url, name, session, '{"j": 1}') is None

    def test_xpath_matches_when_it_selects_anything(self, http, base_url, name):
        doc = stub("x", bodyPatterns={"xpath": ["/req/item[@id='7']"]})
        session = playback_of(http, base_url, name, [doc])
        assert body_of(http, base_url, name, session, '<req><item id="7"/></req>') == "x"
        assert body_of(http, base_url, name, session, '<req><item id="8"/></req>') is None
        assert body_of(http, base_url, name, session, "<<broken") is None

    def test_xpath_with_namespaces(self, http, base_url, name):
        doc = stub(
            "soap",
            bodyPatterns={
                "xpath": ["//s:Body/m:GetPrice[m:Item='Apple']"],
                "namespaces": {
                    "s": "http://schemas.xmlsoap.org/soap/envelope/",
                    "m": "urn:market",
                },
            },
        )
        session = playback_of(http, base_url, name, [doc])
        envelope = (
            '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
            '<soap:Body><GetPrice xmlns="urn:market"><Item>{}</Item></GetPrice>'
            "</soap:Body></soap:Envelope>"
        )
        assert body_of(http, base_url, name, session, envelope.format("Apple")) == "soap"
        assert body_of(http, base_url, name, session, envelope.format("Pear")) is None
        wrong_ns = envelope.format("Apple").replace("urn:market", "urn:other")
        assert body_of(http, base_url, name, session, wrong_ns) is None

    def test_negated_xpath(self, http, base_url, name):
        doc = stub("no-error", bodyPatterns={"!xpath": ["//error"]}, method="POST")
        session = playback_of(http, base_url, name, [doc])
        assert body_of(http, base_url, name, session, "<r><ok/></r>") == "no-error"
        assert body_of(http, base_url, name, session, "<r><error/></r>") is None


class TestRequestMatchers:
    """The matched request is the real POST unless Stubo-Request-* headers say otherwise."""

    def test_method_of_the_real_request_is_post(self, http, base_url, name):
        stubs = [stub("get", method="GET"), stub("post", method="post")]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session) == "post"
        proxied = {"Stubo-Request-Method": "GET"}
        assert body_of(http, base_url, name, session, headers=proxied) == "get"
        assert (
            body_of(http, base_url, name, session, headers={"Stubo-Request-Method": "PUT"}) is None
        )

    def test_negated_method(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("not-get", **{"!method": "GET"})])
        assert body_of(http, base_url, name, session) == "not-get"
        assert (
            body_of(http, base_url, name, session, headers={"Stubo-Request-Method": "GET"}) is None
        )

    def test_url_path_of_the_real_request(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("real", urlPath=stubs_path(name))])
        assert body_of(http, base_url, name, session) == "real"
        other = {"Stubo-Request-Path": "/somewhere/else"}
        assert body_of(http, base_url, name, session, headers=other) is None

    def test_url_path_from_proxy_header(self, http, base_url, name):
        stubs = [stub("users", urlPath="/api/users"), stub("orders", urlPath="/api/orders")]
        session = playback_of(http, base_url, name, stubs)
        for path, expected in [("/api/users", "users"), ("/api/orders", "orders")]:
            headers = {"Stubo-Request-Path": path}
            assert body_of(http, base_url, name, session, headers=headers) == expected
        headers = {"Stubo-Request-Path": "/api/users/1"}
        assert body_of(http, base_url, name, session, headers=headers) is None

    def test_negated_url_path(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("x", **{"!urlPath": "/admin"})])
        assert body_of(http, base_url, name, session, headers={"Stubo-Request-Path": "/a"}) == "x"
        headers = {"Stubo-Request-Path": "/admin"}
        assert body_of(http, base_url, name, session, headers=headers) is None

    def test_url_pattern_is_a_regex_search(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("item", urlPattern=r"/items/\d+$")])
        hit = {"Stubo-Request-Path": "/v1/items/42"}
        assert body_of(http, base_url, name, session, headers=hit) == "item"
        miss = {"Stubo-Request-Path": "/v1/items/42/detail"}
        assert body_of(http, base_url, name, session, headers=miss) is None
        assert body_of(http, base_url, name, session, headers={"Stubo-Request-Path": "/x"}) is None

    def test_url_pattern_on_the_real_path(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("real", urlPattern=f"{name}/stubs$")])
        assert body_of(http, base_url, name, session) == "real"

    def test_query_args_of_the_real_request(self, http, base_url, name):
        doc = stub("q", queryArgs={"id": ["7"], "lang": ["en"]})
        session = playback_of(http, base_url, name, [doc])
        params = {"id": "7", "lang": "en", "extra": "x"}  # a subset is enough
        assert body_of(http, base_url, name, session, params=params) == "q"
        assert body_of(http, base_url, name, session, params={"id": "7"}) is None
        assert body_of(http, base_url, name, session, params={"id": "8", "lang": "en"}) is None

    def test_query_args_from_proxy_header(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("q", queryArgs={"tag": ["a", "b"]})])
        headers = {"Stubo-Request-Query": "tag=a&tag=b&page=2"}
        assert body_of(http, base_url, name, session, headers=headers) == "q"
        headers = {"Stubo-Request-Query": "tag=a"}
        assert body_of(http, base_url, name, session, headers=headers) is None

    def test_negated_query_args(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("q", **{"!queryArgs": {"debug": ["1"]}})])
        assert body_of(http, base_url, name, session, params={"debug": "0"}) == "q"
        assert body_of(http, base_url, name, session, params={"debug": "1"}) is None

    def test_headers_of_the_real_request_case_insensitive(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("h", headers={"X-Api-Key": "k1"})])
        assert body_of(http, base_url, name, session, headers={"x-api-key": "k1"}) == "h"
        assert body_of(http, base_url, name, session, headers={"X-API-KEY": "k1"}) == "h"
        assert body_of(http, base_url, name, session, headers={"X-Api-Key": "k2"}) is None
        assert body_of(http, base_url, name, session) is None

    @pytest.mark.parametrize(
        "literal",
        [
            json.dumps({"X-Tenant": "acme", "Accept": "*/*"}),
            "{'X-Tenant': 'acme', 'Accept': '*/*'}",
            "{u'x-tenant': u'acme'}",
        ],
        ids=["json", "python-dict", "python2-unicode"],
    )
    def test_headers_from_proxy_header(self, http, base_url, name, literal):
        session = playback_of(http, base_url, name, [stub("tenant", headers={"x-TENANT": "acme"})])
        headers = {"Stubo-Request-Headers": literal}
        assert body_of(http, base_url, name, session, headers=headers) == "tenant"
        # the proxy's headers replace the real ones: a real X-Tenant no longer counts
        replaced = {"Stubo-Request-Headers": "{}", "X-Tenant": "acme"}
        assert body_of(http, base_url, name, session, headers=replaced) is None

    def test_negated_headers(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("anon", **{"!headers": {"X-User": "u"}})])
        assert body_of(http, base_url, name, session) == "anon"
        assert body_of(http, base_url, name, session, headers={"X-User": "u"}) is None

    def test_every_matcher_must_hold(self, http, base_url, name):
        doc = stub(
            "all",
            method="PUT",
            urlPath="/v1/things",
            queryArgs={"a": ["1"]},
            headers={"X-K": "v"},
            bodyPatterns={"contains": ["thing"]},
        )
        session = playback_of(http, base_url, name, [doc])
        good = {
            "Stubo-Request-Method": "PUT",
            "Stubo-Request-Path": "/v1/things",
            "Stubo-Request-Query": "a=1",
            "Stubo-Request-Headers": '{"X-K": "v"}',
        }
        assert body_of(http, base_url, name, session, "a thing", good) == "all"
        for key, wrong in [
            ("Stubo-Request-Method", "POST"),
            ("Stubo-Request-Path", "/v1/other"),
            ("Stubo-Request-Query", "a=2"),
            ("Stubo-Request-Headers", '{"X-K": "w"}'),
        ]:
            assert body_of(http, base_url, name, session, "a thing", {**good, key: wrong}) is None
        assert body_of(http, base_url, name, session, "a th1ng", good) is None

    def test_header_literal_is_never_evaluated(self, http, base_url, name):
        # Mirage eval()'d Stubo-Request-Headers; this must be refused, never run.
        target = f"/tmp/pwned-{name}"
        session = playback_of(http, base_url, name, [stub("x", headers={"a": "b"})])
        for payload in [
            f"__import__('os').system('touch {target}')",
            f"{{'a': __import__('os').system('touch {target}')}}",
            f"[x for x in ().__class__.__base__.__subclasses__()] or open('{target}', 'w')",
        ]:
            response = play(http, base_url, name, session, "", {"Stubo-Request-Headers": payload})
            assert_error(response, 400, "Stubo-Request-Headers")
        assert not os.path.exists(target)

    @pytest.mark.parametrize("literal", ["[1, 2]", "'a'", "{[1]: 2}", "{", "None", "{'a': }"])
    def test_header_literal_that_is_not_a_dict_is_400(self, http, base_url, name, literal):
        session = playback_of(http, base_url, name, [stub("x")])
        response = play(http, base_url, name, session, "", {"Stubo-Request-Headers": literal})
        assert_error(response, 400, "Stubo-Request-Headers")


class TestPriority:
    def test_lower_number_wins(self, http, base_url, name):
        stubs = [
            stub("p10", priority=10, **contains("x")),
            stub("p1", priority=1, **contains("x", "y")),
            stub("p5", priority=5, **contains("y")),
        ]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x y") == "p1"
        assert body_of(http, base_url, name, session, "x") == "p10"
        assert body_of(http, base_url, name, session, "y") == "p5"

    def test_negative_priorities_sort_first(self, http, base_url, name):
        stubs = [stub("zero", priority=0, urlPattern="."), stub("neg", priority=-3, method="POST")]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session) == "neg"

    def test_stubs_without_priority_come_after_all_with_one(self, http, base_url, name):
        stubs = [
            stub("none", **contains("x")),
            stub("p1000", priority=1000, urlPattern="objects"),
            stub("none-too", method="POST"),
        ]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x") == "p1000"

    def test_ties_keep_insertion_order(self, http, base_url, name):
        stubs = [
            stub("first", priority=2, **contains("x")),
            stub("second", priority=2, urlPattern="stubs"),
            stub("third", priority=2, method="POST"),
        ]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x") == "first"
        assert body_of(http, base_url, name, session, "y") == "second"

    def test_ties_without_priority_keep_insertion_order(self, http, base_url, name):
        stubs = [stub("first", method="POST"), stub("second", **contains("x"))]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x") == "first"

    def test_priority_header(self, http, base_url, name):
        stubs = [
            (stub("header9", **contains("x")), {"priority": "9"}),
            (stub("header2", method="POST"), {"priority": "2"}),
        ]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x") == "header2"

    def test_document_priority_beats_the_header(self, http, base_url, name):
        stubs = [
            (stub("doc1", priority=1, **contains("x")), {"priority": "50"}),
            (stub("header2", method="POST"), {"priority": "2"}),
        ]
        session = playback_of(http, base_url, name, stubs)
        assert body_of(http, base_url, name, session, "x") == "doc1"


class TestMatcherEndpoint:
    URL = "/api/v2/matcher"

    def test_match_returns_the_response_parts_as_json(self, http, base_url, name):
        doc = stub("<enc>QUJD</enc>", status=201, response_headers={"X-E": "b64"}, **contains("k"))
        session = playback_of(http, base_url, name, [doc])
        response = http.post(
            base_url + self.URL, data="k", headers={"session": f"{name}:{session}"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "body": "<enc>QUJD</enc>",
            "headers": {"X-E": "b64"},
            "statusCode": 201,
        }

    def test_matcher_with_host_prefix(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("b", **contains("k"))])
        key = f"{HOST}:{name}:{session}"
        response = http.post(base_url + self.URL, data="k", headers={"session": key})
        assert response.status_code == 200, response.text
        assert response.json()["body"] == "b"

    def test_matcher_follows_the_sequence(self, http, base_url, name):
        stubs = [stub("1", **contains("k")), stub("2", **contains("k"))]
        session = playback_of(http, base_url, name, stubs)
        headers = {"session": f"{name}:{session}"}
        bodies = [http.post(base_url + self.URL, data="k", headers=headers).json()["body"]]
        bodies.append(play(http, base_url, name, session, "k").text)
        bodies.append(http.post(base_url + self.URL, data="k", headers=headers).json()["body"])
        assert bodies == ["1", "2", "2"]

    def test_no_match_is_404_envelope(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("b", **contains("k"))])
        response = http.post(
            base_url + self.URL, data="zzz", headers={"session": f"{name}:{session}"}
        )
        assert_error(response, 404, E017)

    @pytest.mark.parametrize("key", [None, "", "nocolon", "a:b:c:d", ":s", "s:", "a b:c"])
    def test_bad_session_header_is_400(self, http, base_url, name, key):
        headers = {} if key is None else {"session": key}
        assert_error(http.post(base_url + self.URL, data="k", headers=headers), 400, "session")

    def test_unknown_session_is_404(self, http, base_url, name):
        create_scenario(http, base_url, name)
        response = http.post(base_url + self.URL, data="k", headers={"session": f"{name}:nope"})
        assert_error(response, 404)

    def test_session_of_another_scenario_is_404(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("b", **contains("k"))])
        create_scenario(http, base_url, name + "_x")
        response = http.post(
            base_url + self.URL, data="k", headers={"session": f"{name}_x:{session}"}
        )
        assert_error(response, 404)

    def test_session_not_in_playback_is_409(self, http, base_url, name):
        record(http, base_url, name, [stub("b", **contains("k"))])
        headers = {"session": f"{name}:{name}_rec"}
        assert_error(http.post(base_url + self.URL, data="k", headers=headers), 409)
