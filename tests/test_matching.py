"""Unit tests of the pure matching core: matchers, compilation errors, the index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulacra.errors import Invalid
from simulacra.virtual.matching import (
    CompiledRequest,
    NearMiss,
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
    # Near misses name failures from the same predicates: none exactly when a stub matches.
    for s in stubs:
        compiled = compile_request(s.request)
        assert (compiled.failures(request) == []) == compiled.matches(request)


def failures(doc: dict, request: PlaybackRequest) -> list[str]:
    return compile_request(normalize_request(doc)).failures(request)


class TestFailureNames:
    def test_names_are_the_stub_json_names(self):
        doc = {
            "method": "GET",
            "urlPath": "/a",
            "urlPattern": "^/b",
            "queryArgs": {"page": ["2"], "size": "10"},
            "headers": {"X-Foo": "1", "Accept": "text/xml"},
            "bodyPatterns": {"contains": ["one"], "jsonpath": ["$.a"], "xpath": ["//a"]},
        }
        request = req("two", path="/c", query="size=10", headers={"accept": "text/xml"})
        assert failures(doc, request) == [
            "method",
            "urlPath",
            "urlPattern",
            "queryArgs.page",
            "headers.X-Foo",
            "bodyPatterns.contains",
            "bodyPatterns.jsonpath",
            "bodyPatterns.xpath",
        ]
        good = req("one", method="GET", path="/a", query="page=2&size=10", headers={"x-foo": "1"})
        assert failures({k: doc[k] for k in ("method", "urlPath", "queryArgs")}, good) == []

    def test_negated_and_listed_matchers(self):
        doc = {
            "!method": "POST",
            "!headers": {"x-a": "1"},
            "bodyPatterns": {"contains": ["a", "b", "c"], "!contains": ["z"]},
        }
        request = req("a c z", headers={"x-a": "1"})
        assert failures(doc, request) == [
            "!method",
            "!headers",
            "bodyPatterns.contains[1]",
            "bodyPatterns.!contains",
        ]

    def test_header_names_differing_in_case_are_one_header_the_last_wins(self):
        doc = {"headers": {"X-A": "1", "x-a": "2"}}
        assert matches(doc, req(headers={"X-A": "2"}))
        assert failures(doc, req(headers={"x-a": "1"})) == ["headers.x-a"]


class TestNearMisses:
    def test_fewest_failures_first_then_priority(self):
        index = StubIndex(
            [
                stub(1, {"method": "GET", "urlPath": "/a", "headers": {"x": "1"}}),
                stub(2, {"method": "POST", "urlPath": "/b"}, priority=9),
                stub(3, {"method": "POST", "urlPath": "/b"}, priority=1),
                stub(4, {"method": "PUT", "urlPath": "/a"}),
            ]
        )
        request = req(method="POST", path="/a")
        assert index.match(request) is None
        misses = index.near_misses(request)
        # One failure each: stubs with a priority rank before those without (as in match).
        assert [(m.stub_id, m.failed) for m in misses] == [
            ("id3", ("urlPath",)),
            ("id2", ("urlPath",)),
            ("id4", ("method",)),
        ]
        assert [m.stub_id for m in index.near_misses(request, limit=5)][3:] == ["id1"]
        assert index.near_misses(request, limit=0) == []

    def test_to_dict_carries_the_stubs_matchers(self):
        doc = {"urlPath": "/a", "bodyPatterns": {"contains": ["<x/>"]}}
        [miss] = StubIndex([stub(7, doc)]).near_misses(req("<y/>", path="/a"))
        assert miss == NearMiss("id7", doc, ("bodyPatterns.contains",))
        assert miss.to_dict() == {"id": "id7", "request": doc, "failed": ["bodyPatterns.contains"]}

    def test_evaluates_at_most_the_budget_and_finds_the_same_path_first(self, monkeypatch):
        # Many stubs ahead in priority; the one on the request's path comes last, and has
        # a contains anchor (so the playback index files it by anchor, not by path).
        stubs = [stub(i, {"method": "GET", "urlPath": f"/p{i}"}, priority=0) for i in range(500)]
        stubs.append(stub(500, {"urlPath": "/target", "bodyPatterns": {"contains": ["k"]}}))
        index = StubIndex(stubs)
        evaluated = []
        real = CompiledRequest.failures

        def counting(self, request):
            evaluated.append(self)
            return real(self, request)

        monkeypatch.setattr(CompiledRequest, "failures", counting)
        request = req("nothing", method="POST", path="/target")
        misses = index.near_misses(request, limit=2, budget=20)
        assert len(evaluated) == 20
        assert [(m.stub_id, m.failed) for m in misses] == [
            ("id500", ("bodyPatterns.contains",)),
            ("id0", ("method", "urlPath")),
        ]

    def test_same_method_stubs_come_before_the_rest(self):
        stubs = [stub(i, {"method": "GET", "urlPattern": "^/z"}) for i in range(50)]
        stubs.append(stub(50, {"method": "POST", "urlPattern": "^/z"}))
        misses = StubIndex(stubs).near_misses(req(method="POST", path="/a"), limit=1, budget=5)
        assert [(m.stub_id, m.failed) for m in misses] == [("id50", ("urlPattern",))]


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
