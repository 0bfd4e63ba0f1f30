"""Contract tests: malformed input to the Mirage API v2 is a 4xx envelope, never a 500,
and never changes what is stored."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.mirage_helpers import (
    HOST,
    action_url,
    assert_data,
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    list_stubs,
    play,
    playback_of,
    put_stub,
    put_stub_ok,
    scenario_url,
    stub,
    stubs_url,
)

MiB = 1024 * 1024
LIMIT = 10 * MiB  # the server's default --max-body-bytes
SCENARIOS = "/api/v2/scenarios"


def assert_4xx_envelope(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert_error(response, response.status_code)


def assert_healthy(http, base_url) -> None:
    response = http.get(base_url + SCENARIOS)
    assert response.status_code == 200
    assert isinstance(response.json()["data"], list)


@pytest.fixture
def recording(http, base_url, name) -> str:
    create_scenario(http, base_url, name)
    begin_ok(http, base_url, name, name, "record")
    return name


class TestInvalidJson:
    BAD = [b"{", b"}", b'{"a": 1,}', b"{'a': 1}", b"nul", b"\x00\x01", b"[" * 5000, b'"\xff"']

    @pytest.mark.parametrize("raw", BAD)
    def test_put_scenario(self, http, base_url, raw):
        assert_error(http.put(base_url + SCENARIOS, data=raw), 400, "JSON")

    @pytest.mark.parametrize("raw", BAD)
    def test_action(self, http, base_url, name, raw):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), data=raw), 400, "JSON")

    @pytest.mark.parametrize("raw", BAD)
    def test_put_stub(self, http, base_url, recording, raw):
        response = http.put(
            stubs_url(base_url, recording), data=raw, headers={"session": recording}
        )
        assert_error(response, 400, "JSON")
        assert list_stubs(http, base_url, recording) == []

    def test_empty_stub_body(self, http, base_url, recording):
        response = http.put(
            stubs_url(base_url, recording), data=b"", headers={"session": recording}
        )
        assert_error(response, 400)


class TestWrongTypes:
    @pytest.mark.parametrize("value", [5, 5.5, True, ["a"], {"a": "b"}])
    def test_scenario_name_not_a_string(self, http, base_url, value):
        assert_error(http.put(base_url + SCENARIOS, json={"scenario": value}), 400)

    @pytest.mark.parametrize("body", [["scenario", "x"], [{"scenario": "x"}], 42, "x", None])
    def test_scenario_body_not_an_object(self, http, base_url, body):
        assert_error(http.put(base_url + SCENARIOS, json=body), 400)

    @pytest.mark.parametrize("body", [[{"begin": None}], "end", 0, None])
    def test_action_body_not_an_object(self, http, base_url, name, body):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json=body), 400)

    @pytest.mark.parametrize("body", [[], [stub("x")], "stub", 1, None, True])
    def test_stub_body_not_an_object(self, http, base_url, recording, body):
        assert_error(put_stub(http, base_url, recording, recording, body), 400)
        assert list_stubs(http, base_url, recording) == []

    def test_session_as_number_in_begin(self, http, base_url, name):
        create_scenario(http, base_url, name)
        body = {"begin": None, "session": 12, "mode": "record"}
        assert_error(http.post(action_url(base_url, name), json=body), 400, "session")


class TestMissingFields:
    def test_scenario_body_without_scenario(self, http, base_url):
        assert_error(http.put(base_url + SCENARIOS, json={"name": "x"}), 400, "scenario")

    def test_begin_without_session_or_mode(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json={"begin": None}), 400)

    def test_end_without_session(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(http.post(action_url(base_url, name), json={"end": None}), 400)

    def test_stub_without_request_or_response(self, http, base_url, recording):
        for doc in ({"request": {}}, {"response": {}}, {}):
            assert_error(put_stub(http, base_url, recording, recording, doc), 400)
        assert list_stubs(http, base_url, recording) == []


class TestUnknownObjects:
    def test_every_scenario_route_on_an_unknown_scenario(self, http, base_url, name):
        assert_error(http.get(scenario_url(base_url, name)), 404)
        assert_error(http.delete(scenario_url(base_url, name)), 412)
        begin = {"begin": None, "session": name, "mode": "record"}
        assert_error(http.post(action_url(base_url, name), json=begin), 404)
        assert_error(http.post(action_url(base_url, name), json={"end": "sessions"}), 404)
        assert_error(http.get(stubs_url(base_url, name)), 404)
        assert_error(http.delete(stubs_url(base_url, name)), 404)
        assert_error(put_stub(http, base_url, name, name, stub("x")), 404)
        assert_error(play(http, base_url, name, name, "x"), 404)

    def test_unknown_session_everywhere(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_error(put_stub(http, base_url, name, "ghost", stub("x")), 404, "ghost")
        assert_error(play(http, base_url, name, "ghost", "x"), 404, "ghost")
        body = {"end": None, "session": "ghost"}
        assert_error(http.post(action_url(base_url, name), json=body), 404, "ghost")
        matcher = http.post(base_url + "/api/v2/matcher", headers={"session": f"{name}:ghost"})
        assert_error(matcher, 404)

    @pytest.mark.parametrize("path_name", ["%00", "a%20b", "a%2Fb", "a.b", "x%3Ay%3Az"])
    def test_odd_names_in_the_path(self, http, base_url, path_name):
        for response in (
            http.get(scenario_url(base_url, path_name)),
            http.get(stubs_url(base_url, path_name)),
            http.delete(stubs_url(base_url, path_name)),
            play(http, base_url, path_name, "s", "x"),
        ):
            assert_4xx_envelope(response)

    def test_very_long_session_header(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert_4xx_envelope(play(http, base_url, name, "s" * 6000, "x"))
        assert_4xx_envelope(put_stub(http, base_url, name, "s" * 6000, stub("x")))


class TestHugeBodies:
    def test_put_stub_over_the_limit_is_413(self, http, base_url, recording):
        doc = b'{"request": {}, "response": {"body": "' + b"x" * (11 * MiB) + b'"}}'
        response = http.put(
            stubs_url(base_url, recording), data=doc, headers={"session": recording}
        )
        assert_error(response, 413, str(LIMIT))
        assert list_stubs(http, base_url, recording) == []
        assert_healthy(http, base_url)

    def test_playback_over_the_limit_is_413(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", **contains("x"))])
        response = play(http, base_url, name, session, b"x" * (11 * MiB))
        assert_error(response, 413)
        assert_healthy(http, base_url)
        # the session still plays
        assert play(http, base_url, name, session, "x").text == "ok"

    def test_chunked_body_over_the_limit_is_413(self, http, base_url, recording):
        def chunks() -> Iterator[bytes]:
            yield b'{"request": {}, "response": {"body": "'
            for _ in range(11):
                yield b"y" * MiB
            yield b'"}}'

        response = http.put(
            stubs_url(base_url, recording), data=chunks(), headers={"session": recording}
        )
        assert_error(response, 413)
        assert list_stubs(http, base_url, recording) == []
        assert_healthy(http, base_url)

    def test_other_routes_refuse_huge_bodies_too(self, http, base_url, name):
        create_scenario(http, base_url, name)
        huge = b" " * (11 * MiB)
        assert_error(http.put(base_url + SCENARIOS, data=huge), 413)
        assert_error(http.post(action_url(base_url, name), data=huge), 413)
        matcher = http.post(
            base_url + "/api/v2/matcher", data=huge, headers={"session": f"{name}:{name}"}
        )
        assert matcher.status_code in (404, 413)  # the session is looked up first
        assert_error(matcher, matcher.status_code)
        assert_healthy(http, base_url)

    def test_a_large_body_under_the_limit_round_trips(self, http, base_url, name):
        big = "z" * (2 * MiB)
        session = playback_of(http, base_url, name, [stub(big, **contains("big"))])
        response = play(http, base_url, name, session, "big" + "." * MiB)
        assert response.status_code == 200
        assert response.text == big


class TestEncoding:
    def test_non_utf8_playback_body(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("matched", **contains("<a>hi</a>"))])
        response = play(http, base_url, name, session, b"\xff\xfe<a>hi</a>\xc3\x28")
        assert response.status_code == 200, response.text
        assert response.text == "matched"
        miss = play(http, base_url, name, session, b"\xff\xfe\xfd")
        assert_error(miss, 400, "No matching response found")
        assert_healthy(http, base_url)

    def test_non_utf8_body_to_xpath_and_jsonpath_stubs(self, http, base_url, name):
        stubs = [
            stub("xml", bodyPatterns={"xpath": ["//a"]}),
            stub("json", bodyPatterns={"jsonpath": ["$.a"]}),
        ]
        session = playback_of(http, base_url, name, stubs)
        for raw in (b"<a>\xff</a>", b'{"a": "\xff"}', b"\x80\x81", b'<?xml version="1.0"?>\xff'):
            response = play(http, base_url, name, session, raw)
            assert response.status_code in (200, 400), response.text
            if response.status_code == 400:
                assert_error(response, 400, "No matching response found")

    def test_non_utf8_stub_document_is_400(self, http, base_url, recording):
        raw = b'{"request": {}, "response": {"body": "\xff\xfe"}}'
        response = http.put(
            stubs_url(base_url, recording), data=raw, headers={"session": recording}
        )
        assert_error(response, 400)
        assert list_stubs(http, base_url, recording) == []

    def test_undecodable_query_string_on_put_stub(self, http, base_url, recording):
        url = stubs_url(base_url, recording) + "?%ff%fe=%c3%28&ok=1"
        response = http.put(url, json=stub("x", **contains("q")), headers={"session": recording})
        assert response.status_code == 201, response.text
        [listed] = list_stubs(http, base_url, recording)
        assert listed["stub"]["args"]["ok"] == "1"

    def test_latin1_header_values(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("ok", headers={"X-Name": "caf\xe9"})])
        response = play(http, base_url, name, session, "", {"X-Name": "caf\xe9"})
        assert response.status_code == 200, response.text
        assert response.text == "ok"


# A valid stub, and the places where a malformed value can go into it.
VALID: dict[str, Any] = {
    "request": {"method": "POST", "bodyPatterns": {"contains": ["<fuzz/>"]}},
    "response": {"status": 200, "body": "fuzzed", "headers": {"X-F": "1"}},
}
BAD_VALUES: dict[tuple[str, ...], list[Any]] = {
    ("request",): [None, [], "POST", 5, True],
    ("request", "method"): [None, 5, ["POST"], {}],
    ("request", "urlPath"): [None, 7, []],
    ("request", "urlPattern"): ["[", "(?P<", "*", "a{2,1}", 5],
    ("request", "queryArgs"): ["a=1", [], {"a": 5}, {"a": [5]}, {"a": {"b": "c"}}],
    ("request", "headers"): ["a: b", [], {"a": 5}, {"a": None}, {"a": ["b"]}],
    ("request", "bodyPatterns"): [
        "x",
        5,
        [1],
        [None],
        {"contains": [None]},
        {"contains": [{}]},
        {"contains": 5},
        {"jsonpath": ["$..["]},
        {"jsonpath": [5]},
        {"xpath": ["///"]},
        {"xpath": ["//a"], "namespaces": "urn:x"},
        {"xpath": ["//a"], "namespaces": {"a": 5}},
        {"xpath": [{"expression": "//a", "namespaces": "urn:x"}]},
        {"xpath": [{"expression": "//a", "namespaces": ["urn:x"]}]},
        {"xpath": ["//p:a"]},
        {"xpath": ["$v"]},
        {"xpath": ["nosuchfunction(1)"]},
        {"equals": ["x"]},
        [{"namespaces": {"a": "urn:a"}}, {"namespaces": "urn:b"}],
        [{"namespaces": "urn:b"}, {"namespaces": {"a": "urn:a"}}],
    ],
    ("request", "bodyPattern"): [{"contains": ["x"]}],
    ("request", "Method"): ["POST"],
    ("request", "!!method"): ["POST"],
    ("request", "!bodyPatterns"): [{"contains": ["x"]}],
    ("response",): [None, [], "ok", 5],
    ("response", "status"): ["ok", 0, 99, 600, 1000, -1, True, 1.5, [200], {}],
    ("response", "headers"): ["a: b", [], {"a": []}, {"a": {}}, {"a": None}, {"a": True}],
    ("response", "body"): [[]],
    ("response", "delayPolicy"): [5, []],
    ("responses",): [[], "x", [5], [{"status": "bad"}]],
    ("priority",): ["first", 1.5, True, [], {}, "100000000000000000000000"],
    ("args",): [[], "", 0, "x", 5],
}


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "request": {**VALID["request"]},
        "response": {**VALID["response"]},
    }
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def malformed_documents() -> list[Any]:
    docs: list[Any] = [with_value(path, v) for path, values in BAD_VALUES.items() for v in values]
    # a few whole-document shapes, and seeded random pairs of bad values
    docs += [None, [], "stub", 0, {}, {"request": {}}, {"response": {}}, [VALID]]
    rng = random.Random(20240601)
    pairs = [(p, v) for p, values in BAD_VALUES.items() for v in values if len(p) > 1]
    for (p1, v1), (p2, v2) in itertools.islice(
        (tuple(rng.sample(pairs, 2)) for _ in itertools.count()), 20
    ):
        doc = with_value(p1, v1)
        target = doc
        for key in p2[:-1]:
            target = target[key] if isinstance(target.get(key), dict) else target
        target[p2[-1]] = v2
        docs.append(doc)
    return docs


class TestFuzz:
    def test_malformed_stub_documents_are_refused_and_change_nothing(
        self, http, base_url, recording
    ):
        put_stub_ok(http, base_url, recording, recording, VALID)
        before = list_stubs(http, base_url, recording)
        docs = malformed_documents()
        assert len(docs) > 100
        for doc in docs:
            response = put_stub(http, base_url, recording, recording, doc)
            assert response.status_code == 400, (doc, response.status_code, response.text)
            assert_error(response, 400)
        assert list_stubs(http, base_url, recording) == before
        assert_healthy(http, base_url)

    def test_malformed_headers_on_put_stub(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, VALID)
        before = list_stubs(http, base_url, recording)
        for headers in (
            {"priority": "x"},
            {"priority": "9" * 40},
            {"priority": "1e3"},
            {"session": ""},
        ):
            doc = with_value(("request", "method"), "PUT")  # a new stub if accepted
            all_headers = {"session": recording, **headers}
            response = http.put(stubs_url(base_url, recording), json=doc, headers=all_headers)
            assert_4xx_envelope(response)
        assert list_stubs(http, base_url, recording) == before

    def test_malformed_raw_bodies_to_every_json_route(self, http, base_url, recording):
        put_stub_ok(http, base_url, recording, recording, VALID)
        before = list_stubs(http, base_url, recording)
        raws = [b"", b" ", b"{", b"[1,", b"\xff", b'{"a":' * 300, b"\x00", b"true", b"1e999"]
        for raw in raws:
            for response in (
                http.put(base_url + SCENARIOS, data=raw),
                http.post(action_url(base_url, recording), data=raw),
                http.put(stubs_url(base_url, recording), data=raw, headers={"session": recording}),
            ):
                assert_4xx_envelope(response)
        assert list_stubs(http, base_url, recording) == before
        assert assert_data(http.get(stubs_url(base_url, recording))) == before


class TestProxyHeaders:
    @pytest.mark.parametrize(
        "literal",
        [
            "",
            "{",
            "[('a', 'b')]",
            "{[1]: 2}",
            "{{}: 1}",
            "set()",
            "{'a': 1} if True else {}",
            "(" * 1000 + ")" * 1000,
            "{" * 2000,
            "{'a': " + "[" * 3000 + "]" * 3000 + "}",
        ],
    )
    def test_bad_stubo_request_headers_are_400(self, http, base_url, name, literal):
        session = playback_of(http, base_url, name, [stub("x", **contains("x"))])
        response = play(http, base_url, name, session, "x", {"Stubo-Request-Headers": literal})
        assert_error(response, 400, "Stubo-Request-Headers")
        assert play(http, base_url, name, session, "x").text == "x"

    def test_odd_proxy_method_path_and_query_just_do_not_match(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("x", method="GET", urlPath="/p")])
        for headers in (
            {"Stubo-Request-Method": "G E T", "Stubo-Request-Path": "/p"},
            {"Stubo-Request-Method": "GET", "Stubo-Request-Path": "%%%"},
            {
                "Stubo-Request-Method": "GET",
                "Stubo-Request-Path": "/p",
                "Stubo-Request-Query": "&&=%",
            },
        ):
            response = play(http, base_url, name, session, "", headers)
            assert response.status_code in (200, 400), response.text
            if response.status_code == 400:
                assert_error(response, 400, "No matching response found")

    def test_host_of_the_scenario_is_the_request_host(self, http, base_url, name):
        # sanity: bad input tests above really run in the 127.0.0.1 namespace
        assert create_scenario(http, base_url, name)["name"] == f"{HOST}:{name}"
