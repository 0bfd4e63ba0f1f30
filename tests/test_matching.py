"""Unit tests of the pure matching core: matchers, compilation errors, the index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulacra.errors import Invalid
from simulacra.virtual.matching import (
    PlaybackRequest,
    StubIndex,
    compile_request,
    parse_header_literal,
    priority_key,
)
from simulacra.virtual.model import Response, Stub, normalize_host, normalize_request, qualify


def req(body: str = "", method: str = "POST", path: str = "/p", query: str = "", headers=None):
    return PlaybackRequest(method, path, query, headers or {}, body)


def matches(request_doc: dict, request: PlaybackRequest) -> bool:
    return compile_request(normalize_request(request_doc)).matches(request)


def stub(seq: int, request: dict, priority: int | None = None, body: str = "") -> Stub:
    return Stub(
        scenario="h:s",
        request=normalize_request(request),
        responses=[Response(200, body or f"r{seq}")],
        priority=priority,
        id=f"id{seq}",
        seq=seq,
    )


class TestMatchers:
    def test_contains_ignores_all_whitespace_and_is_case_sensitive(self):
        doc = {"bodyPatterns": {"contains": ["<a> x </a>"]}}
        assert matches(doc, req("<r>\n  <a>x</a>\t</r>"))
        assert not matches(doc, req("<r><A>x</A></r>"))

    def test_all_contains_patterns_must_hold(self):
        doc = {"bodyPatterns": {"contains": ["one", "two"]}}
        assert matches(doc, req("one and two"))
        assert not matches(doc, req("one only"))

    def test_legacy_list_form_keeps_every_element(self):
        doc = {"bodyPatterns": [{"contains": ["one"]}, {"contains": ["two"]}]}
        assert normalize_request(doc)["bodyPatterns"] == {"contains": ["one", "two"]}
        assert not matches(doc, req("one"))

    def test_method_path_pattern_query_headers(self):
        doc = {
            "method": "get",
            "urlPath": "/a/b",
            "urlPattern": "^/a/[a-z]$",
            "queryArgs": {"x": ["1"], "y": "2"},
            "headers": {"X-Token": "t"},
        }
        good = req(method="GET", path="/a/b", query="x=1&y=2&z=3", headers={"x-token": "t"})
        assert matches(doc, good)
        assert not matches(doc, req(method="POST", path="/a/b", query="x=1&y=2"))
        assert not matches(doc, req(method="GET", path="/a/b", query="x=1&x=2&y=2"))
        assert not matches(doc, req(method="GET", path="/a/b", query="x=1&y=2"))

    def test_jsonpath_and_xpath(self):
        assert matches({"bodyPatterns": {"jsonpath": ["$.a[?@.id == 3]"]}}, req('{"a":[{"id":3}]}'))
        assert not matches({"bodyPatterns": {"jsonpath": ["$.b"]}}, req('{"a":1}'))
        assert not matches({"bodyPatterns": {"jsonpath": ["$.a"]}}, req("not json"))
        ns = {"xpath": ["//n:item[@id='1']"], "namespaces": {"n": "urn:x"}}
        assert matches({"bodyPatterns": ns}, req('<r xmlns="urn:x"><item id="1"/></r>'))
        assert not matches({"bodyPatterns": ns}, req('<r xmlns="urn:x"><item id="2"/></r>'))
        assert not matches({"bodyPatterns": {"xpath": ["//a"]}}, req("<<not xml"))

    def test_xml_entities_are_not_resolved(self):
        body = '<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>'
        assert not matches({"bodyPatterns": {"xpath": ["//r[contains(., 'root')]"]}}, req(body))

    def test_negation_on_any_key(self):
        assert matches({"!method": "GET"}, req(method="POST"))
        assert not matches({"!method": "POST"}, req(method="POST"))
        doc = {"bodyPatterns": {"contains": ["a"], "!contains": ["b"]}}
        assert matches(doc, req("a"))
        assert not matches(doc, req("ab"))

    @pytest.mark.parametrize(
        "doc",
        [
            {"bodyPattern": {"contains": ["x"]}},
            {"urlPattern": "("},
            {"urlPath": 3},
            {"bodyPatterns": {"jsonpath": ["$[[["]}},
            {"bodyPatterns": {"xpath": ["//["]}},
            {"bodyPatterns": {"regex": ["x"]}},
            {"bodyPatterns": "x"},
            {"queryArgs": ["x"]},
            {"headers": {"a": 1}},
            {"!bodyPatterns": {"contains": ["x"]}},
        ],
    )
    def test_bad_matchers_are_refused_at_compile_time(self, doc):
        with pytest.raises(Invalid):
            compile_request(normalize_request(doc))


class TestIndex:
    def test_priority_lower_wins_unset_last_ties_in_order(self):
        stubs = [
            stub(1, {"bodyPatterns": {"contains": ["x"]}}),
            stub(2, {"bodyPatterns": {"contains": ["x"]}}, priority=5),
            stub(3, {"bodyPatterns": {"contains": ["x"]}}, priority=1),
            stub(4, {"bodyPatterns": {"contains": ["x"]}}, priority=1),
        ]
        index = StubIndex(stubs)
        assert [s.seq for s in index.stubs] == [3, 4, 2, 1]
        assert index.match(req("x")).seq == 3

    def test_unanchored_and_path_indexed_stubs_still_match(self):
        index = StubIndex(
            [
                stub(1, {"urlPath": "/only"}),
                stub(2, {"method": "POST"}),
                stub(3, {"bodyPatterns": {"contains": ["zzz"]}}, priority=0),
            ]
        )
        assert index.match(req("", path="/only")).seq == 1
        assert index.match(req("", path="/other")).seq == 2
        assert index.match(req("zzz")).seq == 3

    def test_no_match(self):
        index = StubIndex([stub(1, {"bodyPatterns": {"contains": ["abc"]}})])
        assert index.match(req("ab c d")) is not None  # whitespace is stripped
        assert index.match(req("xyz")) is None


# The index must pick exactly the stub a plain linear scan in priority order picks.
WORDS = st.sampled_from(["a", "b", "ab", "ba", "abc", " a b", "c", ""])
MATCHER = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["GET", "POST"]),
        "!method": st.sampled_from(["GET", "POST"]),
        "urlPath": st.sampled_from(["/x", "/y"]),
        "bodyPatterns": st.fixed_dictionaries(
            {}, optional={"contains": st.lists(WORDS, max_size=3), "!contains": st.lists(WORDS)}
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(st.tuples(MATCHER, st.one_of(st.none(), st.integers(-2, 2))), max_size=8),
    body=st.text(alphabet="abc \n", max_size=8),
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/x", "/y"]),
)
def test_index_agrees_with_linear_scan(docs, body, method, path):
    stubs = [stub(i, doc, priority) for i, (doc, priority) in enumerate(docs)]
    request = req(body, method=method, path=path)
    expected = next(
        (s for s in sorted(stubs, key=priority_key) if compile_request(s.request).matches(request)),
        None,
    )
    assert StubIndex(stubs).match(request) is expected


class TestModel:
    def test_hosts_and_names(self):
        assert normalize_host("LocalHost:8900") == "localhost"
        assert normalize_host("[::1]:8900") == "[::1]"
        assert qualify("s", "h") == "h:s"
        assert qualify("Other:s", "h") == "other:s"
        for bad in ("", "a b", "a/b", "h:", 3, None):
            with pytest.raises(Invalid):
                qualify(bad, "h")

    def test_header_literal_is_parsed_never_executed(self):
        assert parse_header_literal('{"a": "b"}') == {"a": "b"}
        assert parse_header_literal("{'a': 'b'}") == {"a": "b"}
        with pytest.raises(Invalid):
            parse_header_literal("__import__('os').system('true')")
