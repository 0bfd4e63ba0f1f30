"""The stub index beyond ``contains``: JSONPath and XPath equalities looked up by their literal,
the index built in bounded steps, its automata split into shards (issue 18, items 5 and 7).
Pure domain code, then two tests through the real server."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulacra.regex import OverBudget
from simulacra.virtual.matching import (
    _JSONPATH,
    _SORT_CHUNK,
    LITERAL_CHILDREN,
    MAX_LITERAL_PLACES,
    REQUEST_WORK_US,
    JsonEquality,
    JsonLiteral,
    JsonPath,
    MatchingWork,
    PlaybackRequest,
    StubIndex,
    TooMuchWork,
    XmlLiteral,
    XPath,
    compile_request,
    priority_key,
)
from simulacra.virtual.model import Response, Stub, normalize_request
from tests.mirage_helpers import assert_error, play, playback_of, stub


def req(body: str = "", method: str = "POST", path: str = "/p") -> PlaybackRequest:
    return PlaybackRequest(method, path, "", {}, body)


def make(seq: int, request: dict, priority: int | None = None) -> Stub:
    return Stub(
        scenario="h:s",
        request=normalize_request(request),
        responses=[Response(200, f"r{seq}")],
        priority=priority,
        id=f"id{seq}",
        seq=seq,
    )


def jsonpath(expr: str, **kw: object) -> dict:
    return {"bodyPatterns": {"jsonpath": [expr]}, **kw}


def xpath(expr: str, **kw: object) -> dict:
    return {"bodyPatterns": {"xpath": [expr]}, **kw}


def linear(stubs: list[Stub], request: PlaybackRequest) -> Stub | None:
    """What the index must find: the first stub in priority order that matches."""
    ordered = sorted(stubs, key=priority_key)
    return next((s for s in ordered if compile_request(s.request).matches(request)), None)


def drain(builder):
    steps = 0
    while True:
        try:
            next(builder)
        except StopIteration as done:
            return done.value, steps
        steps += 1


class TestLiterals:
    @pytest.mark.parametrize(
        ("expr", "where", "value"),
        [
            ("$[?(@.id == 'x')]", JsonLiteral((), ("id",)), "x"),
            ("$.order[?(@.id == '00009')]", JsonLiteral(("order",), ("id",)), "00009"),
            ('$.a.b[?(@.c.d == "y")]', JsonLiteral(("a", "b"), ("c", "d")), "y"),
            ("$[?'x' == @['id']]", JsonLiteral((), ("id",)), "x"),
            ("$[?($.order.id == 'z')]", JsonLiteral(None, ("order", "id")), "z"),
            ("$.list[?(@ == 'w')]", JsonLiteral(("list",), ()), "w"),
        ],
    )
    def test_simple_jsonpath_equalities_are_indexed(self, expr, where, value):
        assert JsonPath(expr).literal == (where, value)

    @pytest.mark.parametrize(
        "expr",
        [
            "$.order.id",
            "$[?(@.id == 9)]",  # a number: 9 == 9.0 == true... not looked up
            "$[?(@.id != 'x')]",
            "$[?(@.id == 'x' && @.b)]",
            "$[?(@.id == 'x' || @.b)]",
            "$..order[?(@.id == 'x')]",
            "$.a[0][?(@.id == 'x')]",
            "$.a[*][?(@.id == 'x')]",
            "$[?(@.id == $.b)]",
            "$[?(@.a[0] == 'x')]",
            "$[?(@.id == 'x')].name",
        ],
    )
    def test_other_jsonpaths_are_not(self, expr):
        assert JsonPath(expr).literal is None

    @pytest.mark.parametrize(
        ("expr", "local", "text_nodes", "value"),
        [
            ("//id[text()='00009']", "id", True, "00009"),
            ('/order/id[text() = "x"]', "id", True, "x"),
            ("/order//id[.='x']", "id", False, "x"),
            ("//id = 'x'", "id", False, "x"),
            ("/a/id/text() = 'x'", "id", True, "x"),
            ("'x' = //id", "id", False, "x"),
        ],
    )
    def test_simple_xpath_equalities_are_indexed(self, expr, local, text_nodes, value):
        where, literal = XPath(expr).literal
        assert (where.namespace, where.local, where.text_nodes, literal) == (
            None,
            local,
            text_nodes,
            value,
        )

    def test_a_prefixed_name_is_looked_up_in_its_namespace(self):
        where, literal = XPath("//c:id[text()='7']", {"c": "urn:crm"}).literal
        assert (where.namespace, where.local, literal) == ("urn:crm", "id", "7")
        body = '<r xmlns:c="urn:crm"><c:id>7</c:id><id>8</id></r>'
        assert where.values(req(body)) == {"7"}

    @pytest.mark.parametrize(
        "expr",
        [
            "//id",
            "//*[text()='x']",
            "//id[@a='x']",
            "//id[text()='x' or true()]",
            "count(//id) = 1",
            "/a[b]/id = 'x'",
            "//id[contains(., 'x')]",
            "//id != 'x'",
        ],
    )
    def test_other_xpaths_are_not(self, expr):
        assert XPath(expr).literal is None

    def test_json_values_are_the_strings_compared(self):
        where = JsonLiteral(("order",), ("id",))
        assert where.values(req('{"order": {"a": {"id": "x"}, "b": {"id": 1}, "c": [1]}}')) == {"x"}
        assert where.values(req('{"order": [{"id": "x"}, {"id": "y"}, "s"]}')) == {"x", "y"}
        assert where.values(req('{"order": "x"}')) == ()  # a filter selects nothing
        assert where.values(req("not json")) == ()
        many = json.dumps({"order": [{"id": str(i)} for i in range(LITERAL_CHILDREN + 1)]})
        assert where.values(req(many)) is None  # too many: every such stub is tried

    def test_xml_values_are_the_text_nodes_or_string_values(self):
        body = "<r><id>a</id><x><id>b<i/>c</id></x></r>"
        assert XmlLiteral.of(None, "id", True).values(req(body)) == {"a", "b", "c"}
        assert XmlLiteral.of(None, "id", False).values(req(body)) == {"a", "bc"}
        assert XmlLiteral.of(None, "id", True).values(req('{"id": "a"}')) == ()


class TestLiteralIndex:
    def test_one_candidate_among_many_jsonpath_stubs(self):
        stubs = [make(i, jsonpath(f"$.order[?(@.id == '{i:05d}')]")) for i in range(2000)]
        index = StubIndex(stubs)
        request = req(json.dumps({"order": {"first": {"id": "01234"}, "lines": [1, 2]}}))
        assert index.candidates(request) == [1234]
        assert index.match(request).seq == 1234
        # `@` is each child of the order: its own id is not one.
        assert index.candidates(req(json.dumps({"order": {"id": "01234"}}))) == []

    def test_one_candidate_among_many_xpath_stubs(self):
        stubs = [make(i, xpath(f"/order/id[text()='{i:05d}']")) for i in range(2000)]
        index = StubIndex(stubs)
        request = req("<order><id>01999</id><customer><id>00007</id></customer></order>")
        assert index.candidates(request) == [7, 1999]  # //id: both looked up
        assert index.match(request).seq == 1999  # /order/id: only the order's

    def test_priority_still_decides_between_a_literal_and_other_stubs(self):
        stubs = [
            make(1, jsonpath("$[?(@.id == 'x')]")),
            make(2, jsonpath("$[?(@.id == 'x')]"), priority=1),
            make(3, {"method": "POST"}, priority=5),
            make(4, jsonpath("$..id")),
        ]
        index = StubIndex(stubs)
        assert index.match(req('{"a": {"id": "x"}}')).seq == 2
        assert index.match(req('{"a": {"id": "y"}}')).seq == 3
        assert index.match(req('{"a": {"id": "y"}}', method="GET")).seq == 4

    def test_a_body_with_too_many_children_tries_every_such_stub(self):
        stubs = [make(i, jsonpath(f"$.items[?(@.id == '{i}')]")) for i in range(10)]
        stubs.append(make(10, xpath("//id[.='7']")))
        body = json.dumps({"items": [{"id": "z"}] * LITERAL_CHILDREN + [{"id": "7"}]})
        assert StubIndex(stubs).candidates(req(body)) == list(range(10))

    def test_places_past_the_limit_are_tried_for_every_request(self):
        stubs = [
            make(i, jsonpath(f"$.k{i}[?(@.id == 'x')]")) for i in range(MAX_LITERAL_PLACES + 3)
        ]
        index = StubIndex(stubs)
        assert index.candidates(req('{"q": 1}')) == list(range(MAX_LITERAL_PLACES, len(stubs)))
        last = len(stubs) - 1
        assert index.match(req(json.dumps({f"k{last}": [{"id": "x"}]}))).seq == last


# The index must pick exactly what a linear scan in priority order picks, for bodies that
# hit, miss, or are not JSON or XML at all.
IDS = st.sampled_from(["a", "b", "1", ""])
JSON_MATCHERS = st.sampled_from(
    [
        "$[?(@.id == '{v}')]",
        "$.o[?(@.id == '{v}')]",
        "$[?($.o.id == '{v}')]",
        "$.o[?(@ == '{v}')]",
        "$.o[?(@.id != '{v}')]",
    ]
)
XML_MATCHERS = st.sampled_from(
    [
        "//id[text()='{v}']",
        "/o/id[.='{v}']",
        "//id = '{v}'",
        "/o/id/text() = '{v}'",
        "//id[@v='{v}']",
    ]
)
JSON_VALUE = st.one_of(IDS, st.integers(0, 2), st.none(), st.booleans())
JSON_BODY = st.recursive(
    st.dictionaries(st.sampled_from(["id", "o", "x"]), JSON_VALUE, max_size=3),
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(["id", "o", "x"]), inner, max_size=3),
        st.lists(inner, max_size=3),
    ),
    max_leaves=8,
)
XML_BODY = st.recursive(
    st.builds(lambda tag, text: f"<{tag}>{text}</{tag}>", st.sampled_from(["id", "o", "x"]), IDS),
    lambda inner: st.builds(
        lambda tag, kids, tail: f"<{tag}>{''.join(kids)}{tail}</{tag}>",
        st.sampled_from(["id", "o", "x"]),
        st.lists(inner, max_size=3),
        IDS,
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(
        st.tuples(
            st.one_of(
                st.builds(lambda m, v: jsonpath(m.format(v=v)), JSON_MATCHERS, IDS),
                st.builds(lambda m, v: xpath(m.format(v=v)), XML_MATCHERS, IDS),
                st.builds(lambda m: {"method": m}, st.sampled_from(["GET", "POST"])),
            ),
            st.one_of(st.none(), st.integers(-1, 1)),
        ),
        max_size=8,
    ),
    body=st.one_of(JSON_BODY.map(json.dumps), XML_BODY, st.just("not a body")),
)
def test_literal_index_agrees_with_linear_scan(docs, body):
    stubs = [make(i, doc, priority) for i, (doc, priority) in enumerate(docs)]
    request = req(body)
    assert StubIndex(stubs).match(request) is linear(stubs, req(body))


class TestBuildInSteps:
    def test_build_yields_and_returns_the_same_index(self):
        stubs = [
            make(i, {"bodyPatterns": {"contains": [f"<id>{i:05d}</id>"]}}) for i in range(5000)
        ]
        index, steps = drain(StubIndex.build(stubs, slice_s=0.0))
        assert steps > len(stubs)  # a step per stub, at least, with no time at all
        assert len(index._automata) > 1  # the anchors in several automata
        for i in (0, 2499, 4999):
            request = req(f"<r><id>{i:05d}</id></r>")
            assert index.candidates(request) == [i]
            assert index.match(request).seq == i
        whole = StubIndex(stubs)
        assert len(whole._automata) == 1
        assert [s.seq for s in whole.stubs] == [s.seq for s in index.stubs]

    def test_a_shared_anchor_in_several_automata_finds_every_stub(self):
        shared = {"bodyPatterns": {"contains": ["<same/>"]}}
        stubs = [make(0, shared)]
        stubs += [
            make(i, {"bodyPatterns": {"contains": [f"<id>{i:05d}</id>"]}}) for i in range(1, 5000)
        ]
        stubs += [make(5000, shared), make(5001, shared, priority=1)]
        index, _ = drain(StubIndex.build(stubs, slice_s=0.0))
        assert len(index._automata) > 1
        found = [index.stubs[rank].seq for rank in index.candidates(req("<same/>"))]
        assert found == [5001, 0, 5000]  # priority order
        assert index.match(req("<same/>")).seq == 5001

    def test_priority_order_across_sort_chunks(self):
        rng = random.Random(18)
        count = 2 * _SORT_CHUNK + 17
        stubs = [
            make(i, {"method": "POST"}, priority=rng.choice([None, -3, 0, 2]))
            for i in rng.sample(range(count), count)
        ]
        index, _ = drain(StubIndex.build(stubs, slice_s=0.0))
        assert [s.seq for s in index.stubs] == [s.seq for s in sorted(stubs, key=priority_key)]
        assert index.match(req()) is linear(stubs, req())

    def test_stubs_found_by_anchor_are_compiled_when_first_tried(self):
        stubs = [
            make(i, {"bodyPatterns": {"contains": [f"<n>{i}</n>"]}, "method": "POST"})
            for i in range(5)
        ]
        index = StubIndex(stubs)
        assert index._compiled == [None] * 5
        assert index.match(req("<n>3</n>")).seq == 3
        assert index.match(req("<n>3</n>", method="GET")) is None
        assert [c is not None for c in index._compiled] == [False, False, False, True, False]
        [miss] = index.near_misses(req("<n>3</n>", method="GET"), limit=1)
        assert (miss.stub_id, miss.failed) == ("id3", ("method",))


def test_playback_of_many_jsonpath_and_xpath_stubs(http, base_url, name):
    stubs = [
        stub(f"json {i}", bodyPatterns={"jsonpath": [f"$[?(@.id == '{i:04d}')]"]})
        for i in range(150)
    ]
    stubs += [
        stub(f"xml {i}", bodyPatterns={"xpath": [f"/order/id[text()='{i:04d}']"]})
        for i in range(150)
    ]
    stubs.append(stub("first", priority=1, bodyPatterns={"xpath": ["/order/id[.='0042']"]}))
    session = playback_of(http, base_url, name, stubs)
    for i in (0, 77, 149):
        answer = play(http, base_url, name, session, json.dumps({"order": {"id": f"{i:04d}"}}))
        assert (answer.status_code, answer.text) == (200, f"json {i}")
        answer = play(http, base_url, name, session, f"<order><id>{i:04d}</id></order>")
        assert (answer.status_code, answer.text) == (200, f"xml {i}")
    answer = play(http, base_url, name, session, "<order><id>0042</id></order>")
    assert (answer.status_code, answer.text) == (200, "first")
    missed = play(http, base_url, name, session, json.dumps({"order": {"id": "9999"}}))
    assert_error(missed, 400, "No matching response found")


def test_playback_of_namespaced_xpath_stubs_in_soap_bodies(http, base_url, name):
    namespaces = {"c": "http://example.com/crm/v1"}
    stubs = [
        stub(
            f"customer {i}",
            bodyPatterns={
                "xpath": [f"//c:customer/c:id[text()='{i:05d}']"],
                "namespaces": namespaces,
            },
        )
        for i in range(100)
    ]
    session = playback_of(http, base_url, name, stubs)

    def soap(ident: str, ns: str = namespaces["c"]) -> str:
        return (
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<c:get xmlns:c="{ns}"><c:customer><c:id>{ident}</c:id></c:customer></c:get>'
            "</s:Body></s:Envelope>"
        )

    answer = play(http, base_url, name, session, soap("00063"))
    assert (answer.status_code, answer.text) == (200, "customer 63")
    other_namespace = play(http, base_url, name, session, soap("00063", "urn:other"))
    assert_error(other_namespace, 400, "No matching response found")


# `JsonEquality.first` walks the simple filters the index looks up by hand: it must give
# python-jsonpath's answer (True, False or OverBudget) and charge the same work, always.
def by_both(expr: str, data: object, left_us: int = REQUEST_WORK_US) -> tuple[object, object]:
    """(answer, work left) by JsonEquality and by python-jsonpath; an answer is True, False,
    "over" (OverBudget) or "too much" (TooMuchWork)."""
    path = JsonPath(expr)
    assert path.equality is not None, expr
    outcomes = []
    for run in (path.equality.first, lambda d, w: _JSONPATH.first(path.path, d, w)):
        work = MatchingWork(left_us)
        try:
            answer: object = run(data, work)
        except OverBudget:
            answer = "over"
        except TooMuchWork:
            answer = "too much"
        outcomes.append((answer, work.left))
    return outcomes[0], outcomes[1]


def agree(expr: str, data: object, left_us: int = REQUEST_WORK_US) -> object:
    hand, library = by_both(expr, data, left_us)
    assert hand == library, (expr, data)
    return hand[0]


NAMES = ["id", "o", "1", "é", "a b", "true"]


def name_path(names: list[str]) -> str:
    return "".join(f"[{json.dumps(n, ensure_ascii=False)}]" for n in names)


def equality(parent: list[str], member: list[str], root: bool, value: str, swap: bool) -> str:
    query = ("$" if root else "@") + name_path(member)
    literal = json.dumps(value, ensure_ascii=False)
    test = f"{literal} == {query}" if swap else f"{query} == {literal}"
    return f"${name_path(parent)}[?({test})]"


EQ_VALUES = ["x", "1", "true", "", "é", "x y", "null"]
EQ_SCALARS = st.one_of(
    st.sampled_from(EQ_VALUES),
    st.sampled_from([1, 1.0, 0, True, False, None, -1, 1e300]),
)
EQ_BODY = st.recursive(
    EQ_SCALARS,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
        st.lists(inner, max_size=4),
    ),
    max_leaves=12,
)
EQ_PATH = st.lists(st.sampled_from(NAMES), max_size=3)


@st.composite
def near(draw: st.DrawFn, names: list[str], leaf: object) -> object:
    """``leaf`` at ``names`` (or nearly: a level in an array, a name missing), with
    siblings."""
    value = leaf
    for name in reversed(names):
        level = draw(st.dictionaries(st.sampled_from(NAMES), EQ_BODY, max_size=2))
        if draw(st.integers(0, 5)):  # else the name is missing
            level[name] = value
        value = [level] if not draw(st.integers(0, 7)) else level  # an array in the path
    return value


@st.composite
def eq_cases(draw: st.DrawFn) -> tuple[str, object]:
    """An expression ``JsonEquality`` takes, and a body that it may well select from."""
    parent, member = draw(EQ_PATH), draw(EQ_PATH)
    root, swap = draw(st.booleans()), draw(st.booleans())
    value = draw(st.sampled_from(EQ_VALUES))
    leaves = st.one_of(st.just(value), EQ_SCALARS, EQ_BODY)
    child = leaves.flatmap(lambda leaf: near(member, leaf))
    children = draw(st.lists(st.one_of(child, EQ_BODY), max_size=4))
    node: object = children
    if draw(st.booleans()):
        node = {str(i): child for i, child in enumerate(children)}
    elif not draw(st.integers(0, 7)):
        node = draw(EQ_SCALARS)  # a filter on a scalar
    data = draw(near(parent, node))
    found = draw(near(member, draw(leaves)))
    if root and isinstance(data, dict) and isinstance(found, dict):
        # `$.member` beside `$.parent`; where they overlap, one of them wins.
        data = {**data, **found} if draw(st.booleans()) else {**found, **data}
    if not isinstance(data, dict | list):
        data = [data]
    return equality(parent, member, root, value, swap), data


EQ_CASES = eq_cases()


class TestJsonEquality:
    @pytest.mark.parametrize(
        ("expr", "equality"),
        [
            ("$[?(@.id == 'x')]", JsonEquality((), ("id",), False, "x")),
            ("$.a.b[?(@.c.d == 'y')]", JsonEquality(("a", "b"), ("c", "d"), False, "y")),
            ("$.a[?($.b == 'z')]", JsonEquality(("a",), ("b",), True, "z")),
            ("$.l[?('w' == @)]", JsonEquality(("l",), (), False, "w")),
            ("$['1'][?(@['é'] == 'é')]", JsonEquality(("1",), ("é",), False, "é")),
        ],
    )
    def test_simple_equalities_are_walked_by_hand(self, expr, equality):
        assert JsonPath(expr).equality == equality

    @pytest.mark.parametrize(
        "expr",
        ["$.order.id", "$[?(@.id == 1)]", "$[?(@.id != 'x')]", "$.a[1][?(@.b == 'x')]"],
    )
    def test_other_expressions_are_python_jsonpaths(self, expr):
        assert JsonPath(expr).equality is None

    @pytest.mark.parametrize(
        "data",
        [
            {"id": "x"},
            {"a": {"id": "x"}},
            {"a": {"id": "x "}},
            {"a": {"id": True}, "b": {"id": 1}, "c": {"id": ["x"]}, "d": {"id": {"x": "x"}}},
            [{"id": "x"}],
            [["x"], {"id": None}, "x", {"id": "x"}],
            {"a": [{"id": "x"}]},  # the filter is on the root's children, not deeper
            {"a": "x", "id": "x"},
            [],
            {},
            1,  # scalar roots (a string root is no JSONPath's: test_matching.py)
            1.5,
            None,
            True,
        ],
    )
    def test_types_and_places(self, data):
        agree("$[?(@.id == 'x')]", data)
        agree("$[?(@ == 'x')]", data)
        agree("$.a[?(@.id == 'x')]", data)
        agree("$.a[?(@ == 'x')]", data)
        agree("$[?($.a.id == 'x')]", data)
        agree("$.a[?($.id == 'x')]", data)

    def test_a_string_equals_only_that_string(self):
        body = [{"v": v} for v in [1, 1.0, True, None, "1.0", "True", "true", "1 "]]
        for literal in ["1", "true", "null", "1.0"]:
            assert agree(f"$[?(@.v == '{literal}')]", body) is (literal in {"1.0", "true"})

    def test_unicode_names_and_values(self):
        data = {"ключ": [{"名前": "値"}, {"名前": "값"}], "e\u0301": {"x": "é"}}
        assert agree("$.ключ[?(@.名前 == '값')]", data) is True
        assert agree("$['e\u0301'][?(@ == 'é')]", data) is True
        assert agree("$['é'][?(@ == 'é')]", data) is False  # not normalized
        assert agree("$.ключ[?(@.名前 == '\\u5024')]", data) is True  # an escape in the literal

    @pytest.mark.parametrize("depth", [6, 7, 8, 9, 15, 16])
    def test_deep_paths_cost_more_steps(self, depth):
        # A node 8 levels down costs 2 steps, 16 levels down 3 (`_node_steps`).
        names = [f"n{i}" for i in range(depth)]
        data: object = "x"
        for name in reversed(names + names):
            data = {name: data}
        assert agree(equality(names, names[:-1], False, "x", False), data) is False
        assert agree(equality(names[:-1], names, False, "x", False), data) is True
        assert agree(equality(names, names + names, True, "x", False), data) is True
        assert agree(equality(names[:-1], [*names, "n0"], False, "x", False), data) is False

    @pytest.mark.parametrize("size", [1, 10, 490, 499, 500, 501, 666, 667, 1000, 5000])
    @pytest.mark.parametrize("at", ["first", "last", "none"])
    def test_the_step_budget_over_many_children(self, size, at):
        children: list[object] = [{"id": "y"}] * size
        if at != "none":
            children[0 if at == "first" else -1] = {"id": "x"}
        keyed = {str(i): child for i, child in enumerate(children)}
        for data in (children, {"k": children}, {"k": keyed}):
            agree("$[?(@.id == 'x')]", data)
            agree("$.k[?(@.id == 'x')]", data)
            agree("$.k[?(@ == 'x')]", data)
            agree("$.k[?($.q == 'x')]", {**data, "q": "x"} if isinstance(data, dict) else data)
        scalars = ["y"] * size + ["x"] * (at != "none")
        agree("$[?(@ == 'x')]", scalars)
        agree("$[?(@.id == 'x')]", scalars)
        # 4 steps a child (its query's root and id, the comparison, the filter), 1 for `$`,
        # 1 for the node selected: 2,000 steps end between the 499th child and the 500th.
        if at == "first":
            expected: object = True
        elif size < 500:
            expected = at == "last"
        else:
            expected = "over"
        assert agree("$[?(@.id == 'x')]", children) == expected

    def test_the_request_budget(self):
        data = {"a": [{"id": "y"}] * 100 + [{"id": "x"}]}
        assert agree("$.a[?(@.id == 'x')]", data, left_us=0) == "too much"
        assert agree("$.a[?(@.id == 'x')]", data, left_us=1) is True  # charged after

    @settings(max_examples=1500, deadline=None)
    @given(case=EQ_CASES)
    def test_agrees_with_python_jsonpath(self, case):
        expr, data = case
        agree(expr, data)


def test_a_json_string_body_matches_no_jsonpath_stub(http, base_url, name):
    stubs = [
        stub("equality", bodyPatterns={"jsonpath": ["$[?(@.id == 'x')]"]}),
        stub("path", bodyPatterns={"jsonpath": ["$.id"]}),
    ]
    session = playback_of(http, base_url, name, stubs)
    for body in ['"{oops"', json.dumps(json.dumps({"id": "x"}))]:
        assert_error(play(http, base_url, name, session, body), 400, "No matching response found")
