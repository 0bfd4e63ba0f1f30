"""Stub matchers, compiled once, and an index that finds the winning stub fast.

Each matcher kind is one small class registered under the name it has in the
stub JSON (``method``, ``urlPath``, ``bodyPatterns.contains``...). A ``!`` prefix
on any name negates it. ``compile_request`` turns a stub's ``request`` object
into a tuple of predicates and raises ``Invalid`` for anything it cannot use, so
a bad stub is refused at PUT time, never at playback.

``StubIndex`` keeps playback nearly flat as stubs grow: stubs with a ``contains``
pattern are found through one Aho-Corasick pass over the request body, stubs with
an exact ``urlPath`` through a dict; only the candidates are fully evaluated, in
priority order.

When nothing matches, ``StubIndex.near_misses`` says which stubs came closest and
which of their matchers failed, by the names those matchers have in the stub JSON.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any
from urllib.parse import parse_qs

import ahocorasick
import jsonpath
import orjson
from lxml import etree

from simulacra.errors import Invalid
from simulacra.virtual.model import Stub

_MISSING = object()
NOT_JSON = object()
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def strip_whitespace(text: str) -> str:
    """Mirage compares ``contains`` patterns with every whitespace character removed."""
    return "".join(text.split())


class PlaybackRequest:
    """The request a stub is matched against; parsed views are computed once, lazily."""

    __slots__ = ("_json", "_norm", "_query", "_xml", "body", "headers", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: str = "",
    ) -> None:
        self.method = method.upper()
        self.path = path
        self.query = query
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self._norm: str | None = None
        self._json: Any = _MISSING
        self._xml: Any = _MISSING
        self._query: dict[str, list[str]] | None = None

    @property
    def normalized_body(self) -> str:
        if self._norm is None:
            self._norm = strip_whitespace(self.body)
        return self._norm

    @property
    def json(self) -> Any:
        """The body as JSON, or ``NOT_JSON`` when it is not JSON."""
        if self._json is _MISSING:
            try:
                self._json = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                self._json = NOT_JSON
        return self._json

    @property
    def xml(self) -> Any:
        """The body as an lxml root element, or None when it is not XML."""
        if self._xml is _MISSING:
            try:
                self._xml = etree.fromstring(self.body.encode(), _XML_PARSER)
            except (etree.XMLSyntaxError, ValueError):
                self._xml = None
        return self._xml

    @property
    def query_args(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.query, keep_blank_values=True)
        return self._query

    @classmethod
    def from_proxy_headers(
        cls,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: str,
    ) -> PlaybackRequest:
        """Use Mirage's ``Stubo-Request-*`` headers where a proxy sent them.

        ``headers`` must have lowercase names, as ASGI gives them.
        ``Stubo-Request-Headers`` is a dict literal; Mirage ``eval``'d it, we read it
        as JSON or a Python literal and never execute it.
        """
        method = headers.get("stubo-request-method", method)
        path = headers.get("stubo-request-path", path)
        query = headers.get("stubo-request-query", query)
        raw = headers.get("stubo-request-headers")
        if raw is not None:
            return cls(method, path, query, parse_header_literal(raw), body)
        return cls.from_headers(method, path, query, headers, body)

    @classmethod
    def from_headers(
        cls, method: str, path: str, query: str, headers: dict[str, str], body: str
    ) -> PlaybackRequest:
        """The request as a client sent it; ``headers`` must have lowercase names (kept,
        not copied: the hot path)."""
        request = cls.__new__(cls)
        request.method = method.upper()
        request.path = path
        request.query = query
        request.headers = headers
        request.body = body
        request._norm = None
        request._json = request._xml = _MISSING
        request._query = None
        return request


def parse_header_literal(raw: str) -> dict[str, str]:
    if len(raw) > 64 * 1024:
        raise Invalid("Stubo-Request-Headers is too large")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = _MISSING  # TypeError: an unhashable key, as in "{[1]: 2}"
    if not isinstance(value, dict):
        raise Invalid("Stubo-Request-Headers must be a JSON object (or a Python dict literal)")
    return {str(k): str(v) for k, v in value.items()}


class Matcher:
    """One condition on a request; subclasses compile in ``__init__`` (raising Invalid).

    ``name`` is the matcher's name in the stub JSON (``method``, ``headers.X-Trace``,
    ``bodyPatterns.!contains``), set by ``compile_request``; near misses report it.
    """

    name = ""

    def matches(self, request: PlaybackRequest) -> bool:
        raise NotImplementedError


def _named(matcher: Matcher, name: str) -> Matcher:
    matcher.name = name
    return matcher


class Not(Matcher):
    def __init__(self, inner: Matcher) -> None:
        self.inner = inner

    def matches(self, request: PlaybackRequest) -> bool:
        return not self.inner.matches(request)


class AllOf(Matcher):
    """Every part must hold. ``compile_request`` spreads the parts of a positive one into
    the stub's own matchers (so each is named and reported alone); ``!`` keeps it whole."""

    def __init__(self, parts: Iterable[Matcher]) -> None:
        self.parts = tuple(parts)

    def matches(self, request: PlaybackRequest) -> bool:
        for part in self.parts:  # noqa: SIM110  # all() makes a generator per request
            if not part.matches(request):
                return False
        return True


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a string, got {type(value).__name__}")
    return value


class Method(Matcher):
    def __init__(self, value: object) -> None:
        self.method = _string(value, "request.method").upper()

    def matches(self, request: PlaybackRequest) -> bool:
        return request.method == self.method


class UrlPath(Matcher):
    def __init__(self, value: object) -> None:
        self.path = _string(value, "request.urlPath")

    def matches(self, request: PlaybackRequest) -> bool:
        return request.path == self.path


class UrlPattern(Matcher):
    def __init__(self, value: object) -> None:
        try:
            self.regex = re.compile(_string(value, "request.urlPattern"))
        except re.error as exc:
            raise Invalid(f"request.urlPattern is not a valid regular expression: {exc}") from None

    def matches(self, request: PlaybackRequest) -> bool:
        return self.regex.search(request.path) is not None


class QueryArg(Matcher):
    """The named argument is present with exactly these values, in this order."""

    def __init__(self, arg: str, values: list[str]) -> None:
        self.arg = arg
        self.values = values

    def matches(self, request: PlaybackRequest) -> bool:
        return request.query_args.get(self.arg) == self.values


def query_args(value: object) -> AllOf:
    """Every named argument must be present with exactly these values (Mirage: a subset)."""
    if not isinstance(value, dict):
        raise Invalid("request.queryArgs must be an object of names to value lists")
    parts = []
    for name, values in value.items():
        items = values if isinstance(values, list) else [values]
        expected = [_string(v, f"request.queryArgs[{name!r}]") for v in items]
        parts.append(_named(QueryArg(str(name), expected), f"queryArgs.{name}"))
    return AllOf(parts)


class Header(Matcher):
    """The header (name lower-case, as requests carry them) is present with this value."""

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self.value = value

    def matches(self, request: PlaybackRequest) -> bool:
        return request.headers.get(self.header) == self.value


def headers(value: object) -> AllOf:
    """Every named header must be present with this value; names are case-insensitive."""
    if not isinstance(value, dict):
        raise Invalid("request.headers must be an object of header names to values")
    # Names differing only in case are one header: the last one given wins.
    by_name = {
        str(k).lower(): (str(k), _string(v, f"request.headers[{k!r}]")) for k, v in value.items()
    }
    return AllOf(
        _named(Header(lower, v), f"headers.{given}") for lower, (given, v) in by_name.items()
    )


class Contains(Matcher):
    def __init__(self, value: object) -> None:
        self.pattern = strip_whitespace(_string(value, "bodyPatterns.contains item"))

    def matches(self, request: PlaybackRequest) -> bool:
        return self.pattern in request.normalized_body


class JsonPath(Matcher):
    """Matches when the expression finds anything in the JSON body."""

    def __init__(self, value: object) -> None:
        expr = _string(value, "bodyPatterns.jsonpath item")
        try:
            self.path = jsonpath.compile(expr)
        except jsonpath.JSONPathError as exc:
            raise Invalid(f"bodyPatterns.jsonpath {expr!r} is not valid JSONPath: {exc}") from None

    def matches(self, request: PlaybackRequest) -> bool:
        data = request.json
        if data is NOT_JSON:
            return False
        try:
            return self.path.match(data) is not None
        except jsonpath.JSONPathError:
            return False


class XPath(Matcher):
    """Matches when the expression selects anything (or is true) in the XML body."""

    def __init__(self, value: object, namespaces: dict[str, str] | None = None) -> None:
        if isinstance(value, dict):
            own = value.get("namespaces") or {}
            if not isinstance(own, dict):
                raise Invalid("bodyPatterns.xpath namespaces must map prefixes to namespace URIs")
            namespaces = {**(namespaces or {}), **own}
            value = value.get("expression", value.get("xpath"))
        expr = _string(value, "bodyPatterns.xpath item")
        try:
            self.xpath = etree.XPath(expr, namespaces=namespaces or None)
            # Undeclared prefixes, variables and functions only fail when evaluated:
            # evaluate once now, so they are refused at PUT time, not never matched.
            self.xpath(etree.Element("probe"))
        except (etree.XPathError, TypeError, ValueError) as exc:
            raise Invalid(f"bodyPatterns.xpath {expr!r} is not valid XPath: {exc}") from None

    def matches(self, request: PlaybackRequest) -> bool:
        root = request.xml
        if root is None:
            return False
        try:
            return bool(self.xpath(root))
        except etree.XPathError:
            return False


# name in the stub JSON -> factory; body matchers take one list item each.
REQUEST_MATCHERS: dict[str, Callable[[object], Matcher]] = {
    "method": Method,
    "urlPath": UrlPath,
    "urlPattern": UrlPattern,
    "queryArgs": query_args,
    "headers": headers,
}
BODY_MATCHERS: dict[str, Callable[..., Matcher]] = {
    "contains": Contains,
    "jsonpath": JsonPath,
    "xpath": XPath,
}


@dataclass(frozen=True)
class CompiledRequest:
    matchers: tuple[Matcher, ...]
    # Index hints: positive conditions that every matching request must satisfy.
    anchor: str | None  # the longest whitespace-stripped ``contains`` pattern
    exact_path: str | None
    method: str | None = None

    def matches(self, request: PlaybackRequest) -> bool:
        for matcher in self.matchers:  # noqa: SIM110  # all() makes a generator per request
            if not matcher.matches(request):
                return False
        return True

    def failures(self, request: PlaybackRequest) -> list[str]:
        """The names of the matchers that do not hold (all evaluated: not for the hot path)."""
        return [m.name for m in self.matchers if not m.matches(request)]


def _split_negation(key: str) -> tuple[str, bool]:
    return (key[1:], True) if key.startswith("!") else (key, False)


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def compile_request(request: dict[str, Any]) -> CompiledRequest:
    """Compile a stub's ``request`` object; raise Invalid for unknown or malformed matchers."""
    matchers: list[Matcher] = []
    anchors: list[str] = []
    exact_path = method = None
    for key, value in request.items():
        name, negated = _split_negation(key)
        if name == "bodyPatterns" and not negated:
            body_matchers, body_anchors = _compile_body(value)
            matchers.extend(body_matchers)
            anchors.extend(body_anchors)
            continue
        factory = REQUEST_MATCHERS.get(name)
        if factory is None:
            known = ", ".join(["bodyPatterns", *REQUEST_MATCHERS])
            raise Invalid(f"unknown request matcher {key!r}; known: {known} (prefix '!' to negate)")
        matcher = factory(value)
        if negated:
            matchers.append(_named(Not(matcher), key))
            continue
        if isinstance(matcher, AllOf):
            matchers.extend(matcher.parts)  # named by their factory
            continue
        if isinstance(matcher, UrlPath):
            exact_path = matcher.path
        elif isinstance(matcher, Method):
            method = matcher.method
        matchers.append(_named(matcher, key))
    anchor = max(anchors, key=len) if anchors else None
    return CompiledRequest(tuple(matchers), anchor or None, exact_path, method)


def _compile_body(value: object) -> tuple[list[Matcher], list[str]]:
    if not isinstance(value, dict):
        raise Invalid("request.bodyPatterns must be an object (or a list of objects)")
    namespaces = value.get("namespaces")
    if namespaces is not None and not (
        isinstance(namespaces, dict) and all(isinstance(v, str) for v in namespaces.values())
    ):
        raise Invalid("bodyPatterns.namespaces must map prefixes to namespace URIs")
    matchers: list[Matcher] = []
    anchors: list[str] = []
    for key, items in value.items():
        if key == "namespaces":
            continue
        name, negated = _split_negation(key)
        factory = BODY_MATCHERS.get(name)
        if factory is None:
            known = ", ".join(BODY_MATCHERS)
            raise Invalid(f"unknown bodyPatterns matcher {key!r}; known: {known}, namespaces")
        listed = _as_list(items)
        for i, item in enumerate(listed):
            matcher = factory(item, namespaces) if name == "xpath" else factory(item)
            if negated:
                matcher = Not(matcher)
            elif name == "contains":
                anchors.append(matcher.pattern)  # type: ignore[attr-defined]
            # One item is named by its list; several by their index in it.
            label = f"bodyPatterns.{key}" + (f"[{i}]" if len(listed) > 1 else "")
            matchers.append(_named(matcher, label))
    return matchers, anchors


@dataclass(frozen=True)
class NearMiss:
    """A stub that did not match a request, and which of its matchers failed."""

    stub_id: str
    request: dict[str, Any]  # the stub's ``request`` matchers, as stored
    failed: tuple[str, ...]  # matcher names as in the stub JSON, in its order

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.stub_id, "request": self.request, "failed": list(self.failed)}


# Near misses evaluate every matcher of at most this many stubs per unmatched request.
NEAR_MISS_BUDGET = 300


def priority_key(stub: Stub) -> tuple[int, int, int]:
    """Lower priority wins; stubs without one come after all with one; ties keep order."""
    if stub.priority is None:
        return (1, 0, stub.seq)
    return (0, stub.priority, stub.seq)


class StubIndex:
    """All stubs of one scenario, compiled, in priority order, indexed for lookup."""

    def __init__(self, stubs: Iterable[Stub]) -> None:
        self.stubs: list[Stub] = sorted(stubs, key=priority_key)
        self._compiled = [compile_request(s.request) for s in self.stubs]
        self._by_anchor: dict[str, list[int]] = {}
        self._by_path: dict[str, list[int]] = {}
        self._always: list[int] = []
        for rank, compiled in enumerate(self._compiled):
            if compiled.anchor:
                self._by_anchor.setdefault(compiled.anchor, []).append(rank)
            elif compiled.exact_path is not None:
                self._by_path.setdefault(compiled.exact_path, []).append(rank)
            else:
                self._always.append(rank)
        # Built on the first near miss (never on the hot path): ranks by exact path, method.
        self._near: tuple[dict[str, list[int]], dict[str, list[int]]] | None = None
        self._automaton = None
        if self._by_anchor:
            automaton = ahocorasick.Automaton()
            for pattern in self._by_anchor:
                automaton.add_word(pattern, pattern)
            automaton.make_automaton()
            self._automaton = automaton

    def __len__(self) -> int:
        return len(self.stubs)

    def candidates(self, request: PlaybackRequest) -> list[int]:
        """Ranks of stubs that may match, ascending (best first)."""
        ranks: list[int] = list(self._always)
        path_hits = self._by_path.get(request.path)
        if path_hits:
            ranks.extend(path_hits)
        self._add_anchor_hits(request, ranks)
        ranks.sort()
        return ranks

    def _add_anchor_hits(self, request: PlaybackRequest, ranks: list[int]) -> None:
        """Append the ranks of stubs whose ``contains`` anchor occurs in the body."""
        automaton = self._automaton
        if automaton is None or not request.normalized_body:
            return
        seen: set[str] = set()
        for _end, pattern in automaton.iter(request.normalized_body):
            if pattern not in seen:
                seen.add(pattern)
                ranks.extend(self._by_anchor[pattern])

    def match(self, request: PlaybackRequest) -> Stub | None:
        compiled = self._compiled
        for rank in self.candidates(request):
            if compiled[rank].matches(request):
                return self.stubs[rank]
        return None

    def near_misses(
        self, request: PlaybackRequest, limit: int = 3, budget: int = NEAR_MISS_BUDGET
    ) -> list[NearMiss]:
        """The ``limit`` stubs closest to matching ``request``: fewest failed matchers first,
        then priority order. For a request ``match`` found nothing for.

        Bounded whatever the number of stubs: all matchers of at most ``budget`` stubs are
        evaluated, taken in this order until the budget is spent: stubs with the request's
        exact ``urlPath``; stubs whose ``contains`` anchor occurs in the body; stubs with
        the request's ``method``; then the rest, in priority order. The first call builds a
        path and method table (one pass over the compiled stubs, no matcher evaluated);
        later calls reuse it.
        """
        if limit <= 0 or budget <= 0:
            return []
        compiled = self._compiled
        scored = []
        for rank in self._near_candidates(request, budget):
            failed = compiled[rank].failures(request)
            scored.append((len(failed), rank, failed))
        scored.sort(key=lambda item: item[:2])
        return [
            NearMiss(self.stubs[rank].id, self.stubs[rank].request, tuple(failed))
            for _count, rank, failed in scored[:limit]
        ]

    def _near_candidates(self, request: PlaybackRequest, budget: int) -> list[int]:
        if self._near is None:
            by_path: dict[str, list[int]] = {}
            by_method: dict[str, list[int]] = {}
            for rank, compiled in enumerate(self._compiled):
                if compiled.exact_path is not None:
                    by_path.setdefault(compiled.exact_path, []).append(rank)
                if compiled.method is not None:
                    by_method.setdefault(compiled.method, []).append(rank)
            self._near = (by_path, by_method)
        by_path, by_method = self._near
        anchor_hits: list[int] = []
        self._add_anchor_hits(request, anchor_hits)
        anchor_hits.sort()
        tiers: tuple[Iterable[int], ...] = (
            by_path.get(request.path, ()),
            anchor_hits,
            by_method.get(request.method, ()),
            range(len(self.stubs)),
        )
        chosen: dict[int, None] = {}  # ordered and unique
        for rank in chain.from_iterable(tiers):
            chosen[rank] = None
            if len(chosen) >= budget:
                break
        return list(chosen)
