"""Stub matchers, compiled once, and an index that finds the winning stub fast.

Each matcher kind is one small class registered under the name it has in the
stub JSON (``method``, ``urlPath``, ``bodyPatterns.contains``...). A ``!`` prefix
on any name negates it. ``compile_request`` turns a stub's ``request`` object
into a tuple of predicates and raises ``Invalid`` for anything it cannot use, so
a bad stub is refused at PUT time, never at playback.

``StubIndex`` keeps playback nearly flat as stubs grow: stubs with a ``contains``
pattern are found through one Aho-Corasick pass over the request body (for a window of at
most ``ANCHOR_CHARS`` of their longest pattern), stubs with
an exact ``urlPath`` through a dict; only the candidates are fully evaluated, in
priority order.

When nothing matches, ``StubIndex.near_misses`` says which stubs came closest and
which of their matchers failed, by the names those matchers have in the stub JSON.

The server has one event loop, so no matcher may hold it long (issue 14). Regular
expressions run on RE2 with a bound on their work (``simulacra.regex``); XPath runs only
the expressions ``xpath_cost`` accepts, on bodies within ``MAX_PARSED_BODY``,
``MAX_XML_DEPTH`` and ``XPATH_WORK``; JSONPath on bodies within ``MAX_PARSED_BODY`` and
``JSONPATH_STEPS``. A matcher that cannot be evaluated within its bounds raises
``OverBudget``, and the stub does not match (not even through a ``!``). All the stubs
tried for one request share ``REQUEST_WORK_US``: past it, the request is refused (400).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import heapq
import math
import re
import sys
import threading
import time
from array import array
from collections.abc import (
    Callable,
    Collection,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sized,
)
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from urllib.parse import parse_qs

import ahocorasick
import jsonpath
import orjson
from jsonpath.exceptions import JSONPathRecursionError
from jsonpath.filter import (
    FilterExpression,
    InfixExpression,
    RegexLiteral,
    RelativeFilterQuery,
    RootFilterQuery,
    StringLiteral,
)
from jsonpath.function_extensions import ExpressionType, FilterFunction
from jsonpath.path import CompoundJSONPath, JSONPath
from jsonpath.segments import JSONPathChildSegment
from jsonpath.selectors import Filter, NameSelector
from jsonpath.token import TOKEN_RE_FLAGS
from lxml import etree

from simulacra.background import emptying
from simulacra.errors import Invalid, shown
from simulacra.regex import LinearRegex, OverBudget, Work
from simulacra.virtual import xpath_cost
from simulacra.virtual.model import Stub

_MISSING = object()
NOT_JSON = object()
TOO_DEEP = object()
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)

# What XPath and JSONPath matchers evaluate, so that one request cannot hold the loop
# (measured worst cases: about 25 ms each). A body outside these bounds makes such a stub
# not match.
MAX_PARSED_BODY = 1024 * 1024  # characters; a larger body is not parsed (templates too)
# A request with a larger body is matched off the loop (``VirtualService``): whitespace
# stripping, the anchor scan and each `contains` take a few ms a MB.
LARGE_BODY = 256 * 1024
COUNTED_CONTAINS = 16 * 1024  # a `contains` search in a longer body counts as work
MAX_XML_DEPTH = 64  # a pass costs the body's size times its depth
XPATH_WORK = 40_000  # the body's `<` count times the expression's passes (xpath_cost)
JSONPATH_STEPS = 2_000  # nodes reached, filters and comparisons evaluated (~10 µs each)
# `..` walks every item of every container below it, scalars too, and python-jsonpath
# only reaches (and counts) the containers: the body's items times the `..` is bounded.
DESCENT_WORK = 16_000
MAX_EXPRESSION_CHARS = 16 * 1024  # an XPath or JSONPath, parsed at PUT on the loop
_COMPILE_UNITS = 500_000  # regex work charged for compiling a pattern found in a body
# All the stubs tried for one request may cost about this much: on the loop, and for a
# request with a large body, on the matching thread. Costs are estimated from counted work
# (measured worst cases below), so an answer never depends on the machine.
REQUEST_WORK_US = 30_000
LARGE_REQUEST_WORK_US = 500_000
_STEP_US = 12  # a JSONPath step: 5 to 15 µs
_REGEX_UNITS_PER_US = 100  # regex work (simulacra.regex): ~8 ns a unit at worst
_CONTAINS_CHARS_PER_US = 300  # a `contains` search: up to ~3 ns a character of the body
_PASS_TAG_US = 0.6  # one `<` of a body in one pass of an XPath: up to ~0.6 µs
_XML_START = re.compile(r"\ufeff?\s*<")
_JSON_START = re.compile(r'\ufeff?\s*[\[{"\-0-9tfn]')
_SORTED = orjson.OPT_SORT_KEYS
_TOO_DEEP = etree.XPath("boolean(" + "/*" * (MAX_XML_DEPTH + 1) + ")")


class TooMuchWork(Exception):
    """Matching one request went over its budget (``StubIndex.match`` says so)."""


class MatchingWork:
    """What matching one request may still cost, in estimated µs."""

    __slots__ = ("left",)

    def __init__(self, budget_us: int = REQUEST_WORK_US) -> None:
        self.left = float(budget_us)

    def check(self) -> None:
        if self.left <= 0:
            raise TooMuchWork

    def spend(self, micros: float) -> None:
        self.left -= micros


_ASCII_WHITESPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "  # what str.split() splits ASCII on


def strip_whitespace(text: str) -> str:
    """Mirage compares ``contains`` patterns with every whitespace character removed."""
    if text.isascii():
        # split() makes a string per word: 200 ms for 9 MB of short lines; this, 30 ms.
        stripped = text.encode("ascii").translate(None, _ASCII_WHITESPACE).decode("ascii")
    else:
        stripped = "".join(text.split())
    # Unchanged: the same string, so that a stub's pattern is not held twice.
    return text if len(stripped) == len(text) else stripped


class PlaybackRequest:
    """The request a stub is matched against; parsed views are computed once, lazily."""

    __slots__ = (
        "_canonical",
        "_items",
        "_json",
        "_markup",
        "_norm",
        "_query",
        "_work",
        "_xml",
        "body",
        "headers",
        "method",
        "path",
        "query",
    )

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
        self._canonical: bytes | None = None
        self._xml: Any = _MISSING
        self._markup = self._items = -1
        self._query: dict[str, list[str]] | None = None
        self._work: MatchingWork | None = None

    @property
    def normalized_body(self) -> str:
        if self._norm is None:
            self._norm = strip_whitespace(self.body)
        return self._norm

    @property
    def json(self) -> Any:
        """The body as JSON, or ``NOT_JSON`` when it is not JSON or is over
        ``MAX_PARSED_BODY`` (parsing 9 MB takes 70 ms, in one call nothing can interrupt)."""
        if self._json is _MISSING:
            if len(self.body) > MAX_PARSED_BODY:
                self._json = NOT_JSON
                return NOT_JSON
            try:
                self._json = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                self._json = NOT_JSON
        return self._json

    @property
    def canonical_json(self) -> bytes | None:
        """The body's JSON written with sorted keys (``equalToJson``), None if not JSON."""
        canonical = self._canonical
        if canonical is None:
            data = self.json
            # b"": not JSON, kept so that each equalToJson stub tried does not try again.
            try:
                canonical = b"" if data is NOT_JSON else orjson.dumps(data, option=_SORTED)
            except TypeError:  # deeper than orjson writes (254): equal to no stub's value
                canonical = b""
            self._canonical = canonical
        return canonical or None

    @property
    def xml(self) -> Any:
        """The body as an lxml root element, None when it is not XML, or ``TOO_DEEP``."""
        if self._xml is _MISSING:
            try:
                self._xml = etree.fromstring(self.body.encode(), _XML_PARSER)
            except (etree.XMLSyntaxError, ValueError):
                self._xml = None
            else:
                if _TOO_DEEP(self._xml):
                    self._xml = TOO_DEEP
        return self._xml

    @property
    def markup(self) -> int:
        """How many ``<`` the body holds: a bound on its XML elements and comments."""
        if self._markup < 0:
            self._markup = self.body.count("<")
        return self._markup

    @property
    def items(self) -> int:
        """A bound on the values in the body as JSON: one per `,` `[` `{`, plus one."""
        if self._items < 0:
            body = self.body
            self._items = body.count(",") + body.count("[") + body.count("{") + 1
        return self._items

    @property
    def work(self) -> MatchingWork:
        """What matching this request may still cost (``StubIndex`` starts it afresh)."""
        if self._work is None:
            self._work = MatchingWork()
        return self._work

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
        request._canonical = None
        request._markup = request._items = -1
        request._work = None
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
    Matchers never change once compiled, so stubs may share them (``compile_request``).
    """

    __slots__ = ()  # subclasses without __slots__ have a __dict__; one per stub declares them
    name = ""

    def matches(self, request: PlaybackRequest) -> bool:
        raise NotImplementedError


def _named(matcher: Matcher, name: str) -> Matcher:
    matcher.name = name  # type: ignore[misc]  # each subclass has a __dict__ or a name slot
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
    """The pattern occurs in the path (Python's ``re.search``), run on RE2."""

    def __init__(self, value: object) -> None:
        self.regex = LinearRegex(_string(value, "request.urlPattern"), "request.urlPattern")

    def matches(self, request: PlaybackRequest) -> bool:
        path, regex = request.path, self.regex
        if regex.is_small(path):  # the common case, on the hot path: nothing to count
            return regex.search_small(path)
        spent = request.work
        spent.check()
        work = Work()
        try:
            return regex.search(path, work)
        finally:
            spent.spend(work.spent / _REGEX_UNITS_PER_US)


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
        expected = [_string(v, f"request.queryArgs[{shown(name)}]") for v in items]
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
        str(k).lower(): (str(k), _string(v, f"request.headers[{shown(k)}]"))
        for k, v in value.items()
    }
    return AllOf(
        _named(Header(lower, v), f"headers.{given}") for lower, (given, v) in by_name.items()
    )


class Contains(Matcher):
    __slots__ = ("name", "pattern")  # one per stub: 100,000 stubs hold 100,000

    def __init__(self, value: object) -> None:
        self.name = ""
        self.pattern = strip_whitespace(_string(value, "bodyPatterns.contains item"))

    def matches(self, request: PlaybackRequest) -> bool:
        body = request.normalized_body
        if len(body) > COUNTED_CONTAINS:  # a search of megabytes counts against the request
            work = request.work
            work.check()
            work.spend(len(body) / _CONTAINS_CHARS_PER_US)
        return self.pattern in body


class _Budget:
    """What one JSONPath or XPath evaluation may still do: steps, and regex work."""

    __slots__ = ("regex", "steps")

    def __init__(self) -> None:
        self.steps = JSONPATH_STEPS
        self.regex = Work()

    def step(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            raise OverBudget

    @property
    def micros(self) -> float:
        """What it cost, estimated: what was charged, up to the bounds (a refused charge
        did not run)."""
        steps = min(JSONPATH_STEPS - self.steps, JSONPATH_STEPS)
        return steps * _STEP_US + self.regex.spent / _REGEX_UNITS_PER_US


# The budget of the evaluation running on this thread: python-jsonpath and lxml call back
# into code (filters, functions) that cannot be handed one.
_running = threading.local()


def _budget() -> _Budget:
    budget: _Budget | None = getattr(_running, "budget", None)
    return budget if budget is not None else _Budget()  # outside an evaluation: unbounded


def _evaluate(work: MatchingWork, run: Callable[[], bool]) -> bool:
    """``run`` one JSONPath or XPath evaluation with a budget, charged to ``work``."""
    work.check()
    budget = _Budget()
    previous = getattr(_running, "budget", None)
    _running.budget = budget
    try:
        return run()
    finally:
        _running.budget = previous
        work.spend(budget.micros)


class _RegexCache:
    """Patterns compiled at playback (found in a body): each compile is charged."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.compiled: dict[tuple[str, str], LinearRegex | None] = {}

    def get(self, pattern: str, flags: str = "", *, strict: bool = False) -> LinearRegex | None:
        """The compiled pattern; None if RE2 refuses it (``strict``: raise Invalid)."""
        key = (pattern, flags)
        known = self.compiled.get(key, _MISSING)
        if known is not _MISSING and not strict:
            return known  # type: ignore[return-value]
        if not strict:
            _budget().regex.charge(_COMPILE_UNITS)
        if len(self.compiled) >= 1024:
            self.compiled.clear()
        try:
            regex: LinearRegex | None = LinearRegex(pattern, self.where, flags)
        except Invalid:
            if strict:
                raise
            regex = None
        self.compiled[key] = regex
        return regex


class _JsonRegex:
    """A JSONPath regex literal (``@.a =~ /re/i``), compiled by RE2 when the stub is put.

    python-jsonpath calls ``fullmatch``; ``pattern`` and ``flags`` print it."""

    __slots__ = ("flags", "pattern", "regex")

    _FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "a": re.ASCII}

    def __init__(self, pattern: str, letters: str) -> None:
        self.pattern = pattern
        self.flags = sum(self._FLAGS[c] for c in set(letters) if c in self._FLAGS)
        inline = "".join(sorted(set(letters) & set("ims")))  # ASCII is RE2's default
        self.regex = LinearRegex(pattern, "bodyPatterns.jsonpath regex", inline)

    def fullmatch(self, text: str) -> bool:
        return self.regex.fullmatch(text, _budget().regex)


class _LinearParser(jsonpath.Parser):
    def parse_regex(self, stream: Any) -> Any:
        # As python-jsonpath's own, but on RE2 instead of Python's backtracking re.
        pattern = stream.current().value
        letters = ""
        if stream.peek().kind == TOKEN_RE_FLAGS:
            stream.next()
            letters = stream.next().value
        return RegexLiteral(value=_JsonRegex(pattern, letters))  # type: ignore[arg-type]


class _RegexFunction(FilterFunction):
    """The standard ``match()`` (whole value) and ``search()`` functions, on RE2."""

    arg_types = [ExpressionType.VALUE, ExpressionType.VALUE]
    return_type = ExpressionType.LOGICAL

    def __init__(self, anchor: str) -> None:
        self.anchor = anchor
        self.cache = _RegexCache(f"bodyPatterns.jsonpath {anchor}() pattern")

    def __call__(self, value: object, pattern: object) -> bool:
        if not isinstance(value, str) or not isinstance(pattern, str):
            return False
        regex = self.cache.get(pattern)
        if regex is None:  # RFC 9535: an invalid pattern matches nothing
            return False
        work = _budget().regex
        return regex.fullmatch(value, work) if self.anchor == "match" else regex.search(value, work)


def _node_steps(depth: int) -> int:
    """The steps a node reached at ``depth`` costs (``_CountedMatch``, ``JsonEquality``)."""
    return 1 + depth // 8


class _CountedMatch(jsonpath.JSONPathMatch):
    """A node python-jsonpath reached (filter queries' own roots too): each is a step,
    and more when deep: `..` hands each node up through one generator per level.

    Its path is not built (python-jsonpath formats one per node): a matcher only asks
    whether anything matched."""

    __slots__ = ("depth",)

    def __init__(self, **parts: Any) -> None:
        parent = parts.get("parent")
        self.depth: int = parent.depth + 1 if isinstance(parent, _CountedMatch) else 0
        _budget().step(_node_steps(self.depth))
        super().__init__(**parts)

    def new_child(self, obj: object, key: int | str) -> jsonpath.JSONPathMatch:
        return _CountedMatch(
            filter_context=self.filter_context(),
            obj=obj,
            parent=self,
            path="",
            parts=(),
            root=self.root,
        )

    def add_child(self, *children: jsonpath.JSONPathMatch) -> None:
        pass  # only findall() reads children


class _LinearJsonPath(jsonpath.JSONPathEnvironment):
    """python-jsonpath with RE2 regexes and every node, filter and comparison counted.

    Only its async API builds nodes through ``match_class`` everywhere (filter queries
    too), so ``first`` drives it; on parsed JSON it never waits for anything."""

    parser_class = _LinearParser
    match_class = _CountedMatch

    def setup_function_extensions(self) -> None:
        super().setup_function_extensions()
        self.function_extensions["match"] = _RegexFunction("match")
        self.function_extensions["search"] = _RegexFunction("search")

    def validate_function_extension_signature(self, token: Any, args: list[Any]) -> list[Any]:
        args = super().validate_function_extension_signature(token, args)
        function = self.function_extensions.get(token.value)
        if isinstance(function, _RegexFunction) and isinstance(args[1], StringLiteral):
            function.cache.get(args[1].value, strict=True)  # a literal pattern: refused now
        return args

    def is_truthy(self, obj: object) -> bool:
        _budget().step()  # once per filter evaluation
        return super().is_truthy(obj)

    def compare(self, left: object, operator: str, right: object) -> bool:
        budget = _budget()
        budget.step()
        if operator == "in" and isinstance(right, Sized):
            budget.step(len(right))
        elif operator == "contains" and isinstance(left, Sized):
            budget.step(len(left))
        return super().compare(left, operator, right)

    def first(self, path: Any, data: Any, work: MatchingWork) -> bool:
        """Whether ``path`` finds anything in ``data``; ``OverBudget`` past the budget."""
        hooks = sys.get_asyncgen_hooks()
        # The running loop would adopt each async generator made here and schedule a task
        # to close each one left unfinished; these never wait, so none needs the loop.
        sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
        try:
            return _evaluate(work, lambda: _run_now(_found(path, data)))
        except JSONPathRecursionError:
            raise OverBudget from None  # nested deeper than python-jsonpath descends
        finally:
            sys.set_asyncgen_hooks(*hooks)


async def _found(path: Any, data: Any) -> bool:
    async for _match in await path.finditer_async(data):
        return True
    return False


def _run_now(coroutine: Coroutine[Any, Any, bool]) -> bool:
    """Run a coroutine that never waits to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return bool(done.value)
    coroutine.close()
    raise OverBudget  # it waited: not on parsed JSON


# Without filter caching a root query in a filter (`$[?@.a == $.b]`) is evaluated, and
# counted, for every candidate; with it, python-jsonpath copies the filter per node instead.
_JSONPATH = _LinearJsonPath(filter_caching=False)


def _jsonpath_reason(exc: jsonpath.JSONPathError) -> str:
    """python-jsonpath's message, without its quote of the whole expression (twice)."""
    token = exc.token
    where = f" at character {token.index}" if token is not None else ""
    return f"{exc.message}{where}"


class EqualToJson(Matcher):
    """The body is JSON equal to this value (WireMock's ``equalToJson``): objects in any key
    order, numbers and literals by their JSON text (``1`` is not ``true``). A string is read
    as JSON text, as WireMock reads it. A body over ``MAX_PARSED_BODY`` is not parsed."""

    def __init__(self, value: object) -> None:
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise Invalid(f"bodyPatterns.equalToJson {shown(value)} is not JSON text") from None
        try:
            self.canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # too deep, or an integer over 64 bits
            raise Invalid("bodyPatterns.equalToJson cannot be written as JSON") from None

    def matches(self, request: PlaybackRequest) -> bool:
        return request.canonical_json == self.canonical


class JsonPath(Matcher):
    """Matches when the expression finds anything in the JSON body (python-jsonpath; a
    ``JsonEquality`` by hand)."""

    def __init__(self, value: object) -> None:
        expr = _string(value, "bodyPatterns.jsonpath item")
        where = f"bodyPatterns.jsonpath {shown(expr)}"
        _check_length(expr, where)
        try:
            self.path = _JSONPATH.compile(expr)
        except jsonpath.JSONPathError as exc:
            raise Invalid(f"{where} is not valid JSONPath: {_jsonpath_reason(exc)}") from None
        self.descents = expr.count("..")  # a `..` in a string literal is counted too
        if isinstance(self.path, CompoundJSONPath) and any(
            op == _JSONPATH.intersection_token for op, _path in self.path.paths
        ):
            raise Invalid(
                f"{where} is refused: an intersection (&) compares every result of one path"
                " with every result of the other (quadratic); use a filter"
            )
        self.equality = _json_equality(self.path)
        self.literal = None if self.equality is None else self.equality.literal
        paths = [self.path]
        if isinstance(self.path, CompoundJSONPath):  # a union (intersections are refused)
            paths = [self.path.path, *(path for _op, path in self.path.paths)]
        self.finds_root = any(
            isinstance(p, JSONPath) and not p.segments and not p.pseudo_root for p in paths
        )

    def matches(self, request: PlaybackRequest) -> bool:
        body = request.body
        if len(body) > MAX_PARSED_BODY:
            if _JSON_START.match(body) is None:
                return False  # not JSON, whatever its size
            raise OverBudget
        data = request.json
        if data is NOT_JSON:
            return False
        if self.descents and request.items * self.descents > DESCENT_WORK:
            raise OverBudget
        if type(data) is str:
            # python-jsonpath would parse a string again as a document (a 500 when it is
            # not one, unbounded work when it is): only `$` finds the string itself.
            return self.finds_root
        if self.equality is not None:
            return self.equality.first(data, request.work)
        try:
            return _JSONPATH.first(self.path, data, request.work)
        except jsonpath.JSONPathError:
            return False


# A filter on a node with more children than this is not looked up: its stubs are tried.
LITERAL_CHILDREN = 4096


@dataclass(frozen=True, slots=True)
class JsonLiteral:
    """Where the strings are that ``$.a[?(@.b.c == 'x')]`` (``parent`` ("a",), ``member``
    ("b", "c")) or ``$.a[?($.b == 'x')]`` (``parent`` None: from the root) compares with
    its literal: the stub can only match a body in which one of them is that literal."""

    parent: tuple[str, ...] | None
    member: tuple[str, ...]

    def values(self, request: PlaybackRequest) -> Collection[str] | None:
        """The strings compared in this body (none when JSONPath would not read it);
        None when there are too many to look up."""
        if len(request.body) > MAX_PARSED_BODY:
            return ()  # never evaluated (``JsonPath.matches``)
        data = request.json
        if data is NOT_JSON:
            return ()
        if self.parent is None:
            value = _query(data, self.member)[0]
            return (value,) if type(value) is str else ()
        node = _query(data, self.parent)[0]
        children: Collection[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return ()  # a filter selects nothing from a scalar
        if len(children) > LITERAL_CHILDREN:
            return None
        member = self.member
        found = set()
        for child in children:
            value = _query(child, member)[0]
            if type(value) is str:
                found.add(value)
        return found


def _names(path: object) -> tuple[str, ...] | None:
    """The names of a path made only of ``.name`` steps, else None."""
    if not isinstance(path, JSONPath) or path.pseudo_root:
        return None
    names = []
    for segment in path.segments:
        if type(segment) is not JSONPathChildSegment or len(segment.selectors) != 1:
            return None
        selector = segment.selectors[0]
        if type(selector) is not NameSelector:
            return None
        names.append(selector.name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class JsonEquality:
    """A JSONPath that is one filter of names compared with a string: ``$.a[?(@.b.c ==
    'x')]`` (``parent`` ("a",), ``member`` ("b", "c"), ``value`` "x") or ``$.a[?($.b.c ==
    'x')]`` (``from_root``). ``first`` gives python-jsonpath's answer, and charges the steps
    it counts, walking the parsed body by hand: on bench.peers' 2 KB order python-jsonpath
    took ~40 µs, this ~2 µs (the whole match of a request: 49 -> 11 µs). python-jsonpath's
    ``==`` between a string literal and one node is true exactly when the node is that
    string (not ``true``, not 1); tests/test_matching_index.py compares the two."""

    parent: tuple[str, ...]
    member: tuple[str, ...]
    from_root: bool
    value: str

    @property
    def literal(self) -> Literal:
        """Where the index looks up ``value``, and ``value``."""
        return JsonLiteral(None if self.from_root else self.parent, self.member), self.value

    def first(self, data: object, work: MatchingWork) -> bool:
        """Whether the filter selects a node of ``data`` (parsed JSON, not a string), as
        ``_LinearJsonPath.first``: the same steps charged (its nodes, filters and
        comparisons, up to the first node selected), ``OverBudget`` past the same bound."""
        work.check()
        steps = _node_steps(0)  # the root node
        try:
            node: object = data
            for depth, name in enumerate(self.parent, 1):
                if type(node) is not dict or name not in node:
                    return False
                node = node[name]
                steps += _node_steps(depth)
            if type(node) is dict:
                children: Iterable[object] = node.values()
            elif type(node) is list:
                children = node
            else:
                return False  # a filter selects nothing from a scalar
            selected = _node_steps(len(self.parent) + 1)
            value, member = self.value, self.member
            if self.from_root:
                # The same for every child: one evaluation's steps, counted per child.
                found, query = _query(data, member)
                each = query + 2  # the query, the comparison, the filter's truth
                count = len(node)
                if count and found == value:
                    steps += each + selected
                    return True
                steps += each * count
                return False
            for child in children:
                if type(child) is dict or type(child) is list:
                    found, query = _query(child, member)
                    steps += query + 2
                else:  # a scalar: `@` is itself, `@.b` nothing (no node made)
                    found = _MISSING if member else child
                    steps += 2
                if found == value:  # no other JSON value equals a string
                    steps += selected
                    return True
                if steps > JSONPATH_STEPS:
                    return False  # past the bound: walk no further (OverBudget, below)
            return False
        finally:
            work.spend(min(steps, JSONPATH_STEPS) * _STEP_US)
            if steps > JSONPATH_STEPS:
                raise OverBudget  # where python-jsonpath's count would have stopped it


def _query(value: object, names: tuple[str, ...]) -> tuple[object, int]:
    """What a path of names only (``.a.b``) selects in parsed JSON (``_MISSING``: nothing),
    and the steps python-jsonpath counts for it as a filter query (its own root node, then
    each node found)."""
    steps = _node_steps(0)
    for depth, name in enumerate(names, 1):
        if type(value) is not dict:
            return _MISSING, steps
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING, steps
        steps += _node_steps(depth)
    return value, steps


def _json_equality(path: object) -> JsonEquality | None:
    """``$.a.b[?(@.c == 'x')]``, ``$[?($.a.b == 'x')]`` (either side) as a ``JsonEquality``;
    None for any other expression."""
    if not isinstance(path, JSONPath) or path.pseudo_root or not path.segments:
        return None
    *steps, last = path.segments
    parent = _names(JSONPath(env=path.env, segments=tuple(steps)))
    if parent is None or type(last) is not JSONPathChildSegment or len(last.selectors) != 1:
        return None
    selector = last.selectors[0]
    if type(selector) is not Filter or type(selector.expression) is not FilterExpression:
        return None
    test = selector.expression.expression
    if type(test) is not InfixExpression or test.operator != "==":
        return None
    query, literal = test.left, test.right
    if type(query) is StringLiteral:
        query, literal = literal, query
    if type(literal) is not StringLiteral or type(query) not in (
        RelativeFilterQuery,
        RootFilterQuery,
    ):
        return None
    member = _names(query.path)  # type: ignore[attr-defined]
    if member is None:
        return None
    return JsonEquality(parent, member, type(query) is RootFilterQuery, literal.value)


def _check_length(expr: str, where: str) -> None:
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise Invalid(f"{where} is {len(expr)} characters long; at most {MAX_EXPRESSION_CHARS}")


_RE_TEST = _RegexCache("bodyPatterns.xpath re:test pattern")
_STRING_VALUE = etree.XPath("string()")


def _xpath_string(value: object) -> str:
    """An XPath value as XPath's string() converts it (extension functions get raw values)."""
    if isinstance(value, list):
        if not value:
            return ""
        value = value[0]
        return str(_STRING_VALUE(value)) if isinstance(value, etree._Element) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _re_test(_context: object, text: object, pattern: object, flags: object = "") -> bool:
    """EXSLT ``re:test(string, regex, flags?)`` on RE2 (lxml's own runs Python's re)."""
    ignore_case = "i" if "i" in _xpath_string(flags) else ""
    regex = _RE_TEST.get(_xpath_string(pattern), ignore_case)
    if regex is None:
        raise Invalid("re:test pattern refused")  # from the body: the stub does not match
    return regex.search(_xpath_string(text), _budget().regex)


_XPATH_EXTENSIONS = {(xpath_cost.EXSLT_REGEXP, "test"): _re_test}


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
        where = f"bodyPatterns.xpath {shown(expr)}"
        _check_length(expr, where)
        try:
            # regexp=False: lxml's EXSLT regular expressions run Python's re; re:test is
            # registered again on RE2 (_re_test), re:match and re:replace are refused.
            self.xpath = etree.XPath(
                expr,
                namespaces=namespaces or None,
                regexp=False,
                extensions=_XPATH_EXTENSIONS,
            )
        except (etree.XPathError, TypeError, ValueError) as exc:
            raise Invalid(f"{where} is not valid XPath: {exc}") from None
        try:
            cost = xpath_cost.check(expr, namespaces or {})
        except xpath_cost.Refused as exc:
            raise Invalid(f"{where} is refused: {exc.reason}") from None
        self.passes = cost.passes
        for pattern, flags in cost.patterns:  # literal re:test patterns: refused now
            _RE_TEST.get(pattern, "i" if "i" in flags else "", strict=True)
        try:
            # Undeclared prefixes, variables and functions only fail when evaluated:
            # evaluate once now, so they are refused at PUT time, not never matched.
            _evaluate(MatchingWork(), lambda: bool(self.xpath(etree.Element("probe"))))
        except (etree.XPathError, TypeError, ValueError) as exc:
            raise Invalid(f"{where} is not valid XPath: {exc}") from None
        self.literal = _xpath_literal(expr, namespaces or {})

    def matches(self, request: PlaybackRequest) -> bool:
        body = request.body
        if _XML_START.match(body) is None:
            return False  # not XML, whatever its size
        if len(body) > MAX_PARSED_BODY or request.markup * self.passes > XPATH_WORK:
            raise OverBudget
        root = request.xml
        if root is None:
            return False
        if root is TOO_DEEP:
            raise OverBudget
        work = request.work
        work.check()
        work.spend(self.passes * request.markup * _PASS_TAG_US)
        try:
            return _evaluate(work, lambda: bool(self.xpath(root)))
        except (etree.XPathError, Invalid):
            return False


_XML_NAME = r"(?:(?P<prefix>[A-Za-z_][\w.-]*):)?(?P<local>[A-Za-z_][\w.-]*)"
_XML_PATH = rf"(?:/{{1,2}}[A-Za-z_][\w.:-]*)*/{{1,2}}{_XML_NAME}"  # /a//b:c: names only
_XML_STRING = r"'(?P<s1>[^']*)'|\"(?P<s2>[^\"]*)\""
# `//id[text()='x']`, `/a/id[.='x']`, `//id = 'x'`, `//id/text() = 'x'`, `'x' = //id`
_XPATH_EQUALITY = [
    re.compile(rf"\s*{_XML_PATH}\s*\[\s*(?P<what>text\(\)|\.)\s*=\s*(?:{_XML_STRING})\s*\]\s*"),
    re.compile(rf"\s*{_XML_PATH}\s*(?P<what>/\s*text\(\))?\s*=\s*(?:{_XML_STRING})\s*"),
    re.compile(rf"\s*(?:{_XML_STRING})\s*=\s*{_XML_PATH}\s*(?P<what>/\s*text\(\))?\s*"),
]


@dataclass(frozen=True, slots=True)
class XmlLiteral:
    """Where the strings are that ``//id[text()='x']`` (the text nodes of every ``id``
    element) or ``/a/id[.='x']`` (their string values) compares with its literal: the stub
    can only match a body in which one of them is that literal."""

    namespace: str | None
    local: str
    text_nodes: bool
    select: etree.XPath = field(compare=False, hash=False, repr=False)

    @classmethod
    @functools.lru_cache(maxsize=1024)  # stubs comparing the same element share one
    def of(cls, namespace: str | None, local: str, text_nodes: bool) -> XmlLiteral:
        name = f"n:{local}" if namespace is not None else local
        found = f"//{name}/text()" if text_nodes else f"//{name}"
        select = etree.XPath(found, namespaces={"n": namespace} if namespace else None)
        return cls(namespace, local, text_nodes, select)

    def values(self, request: PlaybackRequest) -> Collection[str] | None:
        """The strings compared in this body (none when XPath would not read it)."""
        body = request.body
        # As ``XPath.matches``: every stub's expression takes at least one pass.
        if _XML_START.match(body) is None or len(body) > MAX_PARSED_BODY:
            return ()
        if request.markup > XPATH_WORK:
            return ()
        root = request.xml
        if root is None or root is TOO_DEEP:
            return ()
        request.work.spend(request.markup * _PASS_TAG_US)  # one pass, as a stub's would be
        found = self.select(root)
        if self.text_nodes:
            return set(found)
        return {str(_STRING_VALUE(element)) for element in found}


def _xpath_literal(expr: str, namespaces: dict[str, str]) -> tuple[XmlLiteral, str] | None:
    """An equality of the last element of a path of names with a string (the forms of
    ``_XPATH_EQUALITY``): the literal and where it is compared; None for any other XPath."""
    for form in _XPATH_EQUALITY:
        found = form.fullmatch(expr)
        if found is None:
            continue
        prefix = found["prefix"]
        namespace = namespaces.get(prefix) if prefix else None
        if prefix and namespace is None:
            return None
        literal = found["s1"] if found["s1"] is not None else found["s2"]
        text_nodes = (found["what"] or ".").replace(" ", "").endswith("text()")
        return XmlLiteral.of(namespace, found["local"], text_nodes), literal
    return None


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
    "equalToJson": EqualToJson,
    "jsonpath": JsonPath,
    "xpath": XPath,
}


Literal = tuple["JsonLiteral | XmlLiteral", str]


@dataclass(frozen=True, slots=True)
class CompiledRequest:
    matchers: tuple[Matcher, ...]
    # Index hints: positive conditions that every matching request must satisfy.
    anchor: str | None  # the longest whitespace-stripped ``contains`` pattern (or a window)
    exact_path: str | None
    method: str | None = None
    literal: Literal | None = None  # a JSONPath or XPath equality with a string: where, what

    def matches(self, request: PlaybackRequest) -> bool:
        try:
            for matcher in self.matchers:  # all() would make a generator per request
                if not matcher.matches(request):
                    return False
        except OverBudget:
            return False  # a body too large for a matcher's bounds: no match, even with "!"
        return True

    def failures(self, request: PlaybackRequest) -> list[str]:
        """The names of the matchers that do not hold (all evaluated: not for the hot path)."""
        failed = []
        for matcher in self.matchers:
            try:
                held = matcher.matches(request)
            except OverBudget:
                held = False
            if not held:
                failed.append(matcher.name)
        return failed


def _split_negation(key: str) -> tuple[str, bool]:
    return (key[1:], True) if key.startswith("!") else (key, False)


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


# A request matcher's compiled form: its matchers, and the exact path and method it sets.
_Part = tuple[tuple[Matcher, ...], str | None, str | None]
SharedParts = dict[tuple[str, bytes], _Part]


def compile_request(request: dict[str, Any], shared: SharedParts | None = None) -> CompiledRequest:
    """Compile a stub's ``request`` object; raise Invalid for unknown or malformed matchers.

    ``shared``: request matchers already compiled for other stubs (by key and value), used
    as they are: matchers never change, and 100,000 stubs mostly share a method and path.
    """
    matchers: list[Matcher] = []
    anchors: list[str] = []
    exact_path = method = None
    literal = None
    for key, value in request.items():
        name, negated = _split_negation(key)
        if name == "bodyPatterns" and not negated:
            body_matchers, body_anchors, literal = _compile_body(value)
            matchers.extend(body_matchers)
            anchors.extend(body_anchors)
            continue
        cache_key = None
        if shared is not None:
            # Not JSON (no stored stub's value): compiled for this stub alone.
            with contextlib.suppress(TypeError):
                cache_key = (key, orjson.dumps(value, option=_SORTED))
        part = shared.get(cache_key) if shared is not None and cache_key else None
        if part is None:
            part = _compile_part(key, name, negated, value)
            if shared is not None and cache_key:
                shared[cache_key] = part
        matchers.extend(part[0])
        if part[1] is not None:
            exact_path = part[1]
        if part[2] is not None:
            method = part[2]
    anchor = max(anchors, key=len) if anchors else None
    return CompiledRequest(tuple(matchers), anchor or None, exact_path, method, literal)


def _compile_part(key: str, name: str, negated: bool, value: object) -> _Part:
    factory = REQUEST_MATCHERS.get(name)
    if factory is None:
        known = ", ".join(["bodyPatterns", *REQUEST_MATCHERS])
        raise Invalid(
            f"unknown request matcher {shown(key)}; known: {known} (prefix '!' to negate)"
        )
    matcher = factory(value)
    if negated:
        return (_named(Not(matcher), key),), None, None
    if isinstance(matcher, AllOf):
        return matcher.parts, None, None  # named by their factory
    _named(matcher, key)
    if isinstance(matcher, UrlPath):
        return (matcher,), matcher.path, None
    if isinstance(matcher, Method):
        return (matcher,), None, matcher.method
    return (matcher,), None, None


def _compile_body(value: object) -> tuple[list[Matcher], list[str], Literal | None]:
    if not isinstance(value, dict):
        raise Invalid("request.bodyPatterns must be an object (or a list of objects)")
    namespaces = value.get("namespaces")
    if namespaces is not None and not (
        isinstance(namespaces, dict) and all(isinstance(v, str) for v in namespaces.values())
    ):
        raise Invalid("bodyPatterns.namespaces must map prefixes to namespace URIs")
    matchers: list[Matcher] = []
    anchors: list[str] = []
    literal = None
    for key, items in value.items():
        if key == "namespaces":
            continue
        name, negated = _split_negation(key)
        factory = BODY_MATCHERS.get(name)
        if factory is None:
            known = ", ".join(BODY_MATCHERS)
            raise Invalid(f"unknown bodyPatterns matcher {shown(key)}; known: {known}, namespaces")
        listed = _as_list(items)
        for i, item in enumerate(listed):
            matcher = factory(item, namespaces) if name == "xpath" else factory(item)
            if negated:
                matcher = Not(matcher)
            elif name == "contains":
                anchors.append(matcher.pattern)  # type: ignore[attr-defined]
            elif literal is None and isinstance(matcher, JsonPath | XPath):
                literal = matcher.literal
            # One item is named by its list; several by their index in it.
            label = sys.intern(f"bodyPatterns.{key}" + (f"[{i}]" if len(listed) > 1 else ""))
            matchers.append(_named(matcher, label))
    return matchers, anchors, literal


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


def _share_strings(stub: Stub, strings: dict[str, str], empty: dict[str, Any]) -> None:
    """One object for the values that stubs share (a store reads each stub's own copy of
    its scenario's name, its method, its path, its empty args and headers: ~60 bytes each,
    100,000 times). Nothing changes a stored stub's args or headers in place."""
    if not stub.args:
        stub.args = empty
    for response in stub.responses:
        if not response.headers:
            response.headers = empty
    stub.scenario = strings.setdefault(stub.scenario, stub.scenario)
    stub.recorded = strings.setdefault(stub.recorded, stub.recorded)
    request = stub.request
    for key, value in request.items():
        if type(value) is str:
            request[key] = strings.setdefault(value, value)  # an equal value: no size change


def _add_rank(table: dict[str, int | list[int]], key: str, rank: int) -> None:
    """One rank as itself, several as a list: most keys belong to one stub."""
    held = table.get(key)
    if held is None:
        table[key] = rank
    elif isinstance(held, int):
        table[key] = [held, rank]
    else:
        held.append(rank)


def priority_key(stub: Stub) -> tuple[int, int, int]:
    """Lower priority wins; stubs without one come after all with one; ties keep order."""
    if stub.priority is None:
        return (1, 0, stub.seq)
    return (0, stub.priority, stub.seq)


# The anchor scan costs ~1.1 ns a body character for each character of anchor its state
# is deep in (pyahocorasick walks the state's suffixes): a body of `a`s against an anchor of
# 6,000 `a`s and a `b` took 6.9 s a MB. So an anchor is a window of at most this many
# characters of the stub's longest `contains` pattern: at most ~70 ns a body character.
ANCHOR_CHARS = 64
_SCAN_SLICE = 64 * 1024  # ~5 ms of scanning, at worst


def _sliced(automaton: Any, body: str) -> Iterator[tuple[int, int]]:
    """The anchors in ``body``, scanned a slice at a time, the slices overlapping by an
    anchor's length: on the matching thread, the loop's thread runs between them. Slices are
    copied: iter(body, start, end) converts all of body each time (an end past it: SIGSEGV)."""
    for start in range(0, len(body), _SCAN_SLICE):
        yield from automaton.iter(body[start : start + _SCAN_SLICE + ANCHOR_CHARS - 1])


class _AnchorWindows:
    """Picks each long pattern's window that the fewest patterns share: recorded Mirage
    patterns are whole bodies that differ only in a few values, somewhere."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, pattern: str | None) -> None:
        if pattern and len(pattern) > ANCHOR_CHARS:
            for window in set(self.windows(pattern)):
                self.counts[window] = self.counts.get(window, 0) + 1

    @staticmethod
    def windows(pattern: str) -> list[str]:
        last = len(pattern) - ANCHOR_CHARS
        step = max(ANCHOR_CHARS // 2, last // 64)  # at most ~65 windows a pattern
        starts = [*range(0, last, step), last]
        return [pattern[i : i + ANCHOR_CHARS] for i in starts]

    def rarest(self, pattern: str) -> str:
        if len(pattern) <= ANCHOR_CHARS:
            return pattern
        return min(self.windows(pattern), key=self.counts.__getitem__)


# StubIndex.build does about this much work per step, between which the caller lets the
# event loop run (100,000 stubs: ~1 s of work in all).
BUILD_SLICE_S = 0.001
# pyahocorasick's make_automaton is one C call that keeps the GIL (20-70 ms for 100,000
# anchors of 14-33 characters, 200 ns a node for long random ones): a sliced build splits
# the anchors into automata sized from the time the last one took, each built in about this
# long. A body is then scanned once per automaton (~1.3 µs each for a 600-byte body; at 4 ms
# an automaton, 100,000 anchors of 33 characters made 16, 22 µs a request against 3 µs for
# one). 25 ms keeps that to a few automata, a few µs a request, and such a step comes a few
# times per 100,000 stubs: well under what may hold the loop (100 ms), rare enough for p99.
_SHARD_MAKE_S = 0.025
_FIRST_SHARD_CHARS = 32 * 1024  # at 200 ns a character (the worst seen): 6 ms
# Stubs compared by JSONPath or XPath equality are looked up by the value at most this
# many places in the body (each a walk of the parsed body); the rest are tried as before.
MAX_LITERAL_PLACES = 32
_SORT_CHUNK = 2048


class _Clock:
    """Says when a build step has had its time (never, without a limit)."""

    __slots__ = ("limit", "until")

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.until = math.inf
        self.restart()

    def restart(self) -> None:
        if self.limit is not None:
            self.until = time.perf_counter() + self.limit

    def due(self) -> bool:
        return time.perf_counter() >= self.until


class _Anchors:
    """Anchors into Aho-Corasick automata: one (``sliced`` False), or as many as keep each
    make_automaton near ``_SHARD_MAKE_S``, each sized from the time the last one took. An
    automaton's value for an anchor is its stub's rank * 2, or the index in ``groups`` of
    the ranks of the stubs that share it * 2 + 1."""

    def __init__(self, sliced: bool) -> None:
        self.sliced = sliced
        self.automata: list[Any] = []
        self.groups: list[list[int]] = []
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        self.chars = 0
        self.limit = _FIRST_SHARD_CHARS

    def add(self, anchor: str, rank: int) -> bool:
        """Add one; True when the automaton is full (``make`` it)."""
        automaton = self.automaton
        held = automaton.get(anchor, None)
        if held is None:
            automaton.add_word(anchor, rank << 1)
            self.chars += len(anchor)
        elif held & 1:
            self.groups[held >> 1].append(rank)
        else:
            automaton.add_word(anchor, (len(self.groups) << 1) | 1)
            self.groups.append([held >> 1, rank])
        return self.sliced and self.chars >= self.limit

    def make(self) -> None:
        if not self.chars:
            return
        started = time.perf_counter()
        self.automaton.make_automaton()
        took = time.perf_counter() - started
        self.automata.append(self.automaton)
        # The next one sized from this one's time (at most 4 times as large).
        self.limit = max(1024, int(self.chars * min(4.0, _SHARD_MAKE_S / max(took, 1e-6))))
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        self.chars = 0


class StubIndex:
    """All stubs of one scenario, compiled, in priority order, indexed for lookup.

    Each stub is found through one of its positive conditions, the first of: its
    ``contains`` anchor (an Aho-Corasick scan of the body); the literal a JSONPath or
    XPath equality compares (the body parsed once, the value looked up); its exact
    ``urlPath``; else it is tried for every request. Candidates are then fully checked in
    priority order, so the index never changes which stub wins.
    """

    def __init__(self, stubs: Iterable[Stub] = ()) -> None:
        for _ in self._fill(stubs, None):
            pass

    @classmethod
    def build(
        cls, stubs: Iterable[Stub], slice_s: float = BUILD_SLICE_S
    ) -> Generator[None, None, StubIndex]:
        """Build an index in steps of about ``slice_s`` of work each (``next()`` runs one),
        so that the caller can let the event loop run between them; the index is the
        generator's return value (``StopIteration.value``)."""
        index = cls.__new__(cls)
        yield from index._fill(stubs, slice_s)
        return index

    def _fill(self, stubs: Iterable[Stub], slice_s: float | None) -> Generator[None, None, None]:
        clock = _Clock(slice_s)
        self.stubs: list[Stub] = []
        yield from self._priority_order(list(stubs), clock)
        # A stub found by its anchor is compiled again when first a candidate: the index
        # keeps only its anchor (100,000 stubs: ~180 bytes each); the others stay compiled.
        self._compiled: list[CompiledRequest | None] = []
        self._shared: SharedParts = {}
        strings: dict[str, str] = {}
        empty: dict[str, Any] = {}
        windows = _AnchorWindows()
        long_anchors: list[tuple[int, str]] = []  # placed once all windows are counted
        anchors = _Anchors(slice_s is not None)
        # Ranks are held as array('i') where only near misses read them: no int objects.
        self._by_path: dict[str, list[int]] = {}
        self._always: list[int] = []
        self._near_path: dict[str, array[int]] = {}
        self._near_method: dict[str, array[int]] = {}
        # Literal index: per place in the body, the literal compared there -> rank(s).
        self._literals: list[tuple[JsonLiteral | XmlLiteral, dict[str, int | list[int]]]] = []
        places: dict[JsonLiteral | XmlLiteral, dict[str, int | list[int]]] = {}
        for rank, stub in enumerate(self.stubs):
            _share_strings(stub, strings, empty)
            compiled = compile_request(stub.request, self._shared)
            path = compiled.exact_path
            literal = compiled.literal
            anchor = compiled.anchor
            if anchor:
                self._compiled.append(None)
                if len(anchor) > ANCHOR_CHARS:
                    windows.add(anchor)
                    long_anchors.append((rank, anchor))
                elif anchors.add(anchor, rank):
                    yield  # an automaton is full: made in a step of its own
                    anchors.make()
                    yield
                    clock.restart()
            else:
                self._compiled.append(compiled)
                if literal is not None and (
                    literal[0] in places or len(places) < MAX_LITERAL_PLACES
                ):
                    where, value = literal
                    table = places.get(where)
                    if table is None:
                        table = places[where] = {}
                        self._literals.append((where, table))
                    _add_rank(table, value, rank)
                elif path is not None:
                    self._by_path.setdefault(path, []).append(rank)
                else:
                    self._always.append(rank)
            if path is not None:
                self._near_path.setdefault(path, array("i")).append(rank)
            if compiled.method is not None:
                self._near_method.setdefault(compiled.method, array("i")).append(rank)
            if clock.due():
                yield
                clock.restart()
        del strings, places
        for rank, anchor in long_anchors:
            if anchors.add(windows.rarest(anchor), rank):
                yield
                anchors.make()
                yield
                clock.restart()
            elif clock.due():
                yield
                clock.restart()
        del windows, long_anchors
        yield
        anchors.make()
        self._automata = anchors.automata
        self._anchor_groups = anchors.groups

    def release(self) -> Generator[None, None, None]:
        """Let go of the stubs and automata a step at a time, for an index that nothing
        uses any more (its stubs freed at once: ~60 ms for 100,000; its automata, ~3 ms
        each, one a step)."""
        yield from emptying(self.stubs, self._compiled)
        yield from emptying(self._automata, step=1)

    def _compile(self, rank: int) -> CompiledRequest:
        """A stub found by its anchor, compiled again (as when the index was built)."""
        compiled = compile_request(self.stubs[rank].request, self._shared)
        self._compiled[rank] = compiled
        return compiled

    def _priority_order(self, stubs: list[Stub], clock: _Clock) -> Generator[None, None, None]:
        """``self.stubs``: ``stubs`` in priority order (sorted in chunks, then merged: one
        sort of 100,000 keys is one call of tens of ms)."""
        # The usual case, no priorities and stubs in insertion order: nothing to sort (nor
        # 100,000 keys to hold meanwhile).
        previous = None
        for stub in stubs:
            key = priority_key(stub)
            if previous is not None and key < previous:
                break
            previous = key
            if clock.due():
                yield
                clock.restart()
        else:
            self.stubs = stubs
            return
        keys = []
        for stub in stubs:
            keys.append(priority_key(stub))
            if clock.due():
                yield
                clock.restart()
        chunks = []
        for start in range(0, len(keys), _SORT_CHUNK):
            chunk = range(start, min(start + _SORT_CHUNK, len(keys)))
            chunks.append(sorted(chunk, key=keys.__getitem__))
            if clock.due():
                yield
                clock.restart()
        ordered = self.stubs
        for position in heapq.merge(*chunks, key=keys.__getitem__):
            ordered.append(stubs[position])
            if clock.due():
                yield
                clock.restart()

    def __len__(self) -> int:
        return len(self.stubs)

    def candidates(self, request: PlaybackRequest) -> list[int]:
        """Ranks of stubs that may match, ascending (best first)."""
        ranks: list[int] = list(self._always)
        path_hits = self._by_path.get(request.path)
        if path_hits:
            ranks.extend(path_hits)
        if self._literals:
            self._add_literal_hits(request, ranks)
        self._add_anchor_hits(request, ranks)
        ranks.sort()
        return ranks

    def _add_literal_hits(self, request: PlaybackRequest, ranks: list[int]) -> None:
        """Append the ranks of stubs whose JSONPath or XPath literal is in the body, where
        their expression compares it (the body parsed once, for all of them)."""
        for where, table in self._literals:
            values = where.values(request)
            found: Iterable[int | list[int]]
            if values is None:  # too many to look up: all of them are tried
                found = table.values()
            else:
                found = [hit for hit in map(table.get, values) if hit is not None]
            for hit in found:
                if type(hit) is int:
                    ranks.append(hit)
                else:
                    ranks.extend(hit)  # type: ignore[arg-type]

    def _add_anchor_hits(self, request: PlaybackRequest, ranks: list[int]) -> None:
        """Append the ranks of stubs whose ``contains`` anchor occurs in the body."""
        automata = self._automata
        body = request.normalized_body if automata else ""
        if not body:
            return
        seen: set[int] = set()
        for automaton in automata:
            hits = automaton.iter(body) if len(body) <= _SCAN_SLICE else _sliced(automaton, body)
            for _end, value in hits:
                if value not in seen:
                    seen.add(value)
                    if value & 1:
                        ranks.extend(self._anchor_groups[value >> 1])
                    else:
                        ranks.append(value >> 1)

    def match(self, request: PlaybackRequest, work_us: int = REQUEST_WORK_US) -> Stub | None:
        """The best stub matching ``request``; Invalid if trying them costs more than
        ``work_us`` (estimated)."""
        compiled = self._compiled
        request._work = None if work_us == REQUEST_WORK_US else MatchingWork(work_us)
        try:
            for rank in self.candidates(request):
                if (compiled[rank] or self._compile(rank)).matches(request):
                    return self.stubs[rank]
        except TooMuchWork:
            raise Invalid(
                f"matching this request against the scenario's stubs costs more than the"
                f" {work_us // 1000} ms a request may take: XPath, JSONPath, regular"
                " expression and contains matchers on a large body; give the stubs a"
                " urlPath, a method or a more specific contains pattern, so that fewer are"
                " tried"
            ) from None
        return None

    def near_misses(
        self,
        request: PlaybackRequest,
        limit: int = 3,
        budget: int = NEAR_MISS_BUDGET,
        work_us: int = REQUEST_WORK_US,
    ) -> list[NearMiss]:
        """The ``limit`` stubs closest to matching ``request``: fewest failed matchers first,
        then priority order. For a request ``match`` found nothing for.

        Bounded whatever the number of stubs: all matchers of at most ``budget`` stubs are
        evaluated, taken in this order until the budget is spent: stubs with the request's
        exact ``urlPath``; stubs whose ``contains`` anchor occurs in the body; stubs with
        the request's ``method``; then the rest, in priority order.
        """
        if limit <= 0 or budget <= 0:
            return []
        compiled = self._compiled
        scored = []
        request._work = None if work_us == REQUEST_WORK_US else MatchingWork(work_us)
        for rank in self._near_candidates(request, budget):
            try:
                failed = (compiled[rank] or self._compile(rank)).failures(request)
            except TooMuchWork:
                break  # near misses are a hint: those found so far
            scored.append((len(failed), rank, failed))
        scored.sort(key=lambda item: item[:2])
        return [
            NearMiss(self.stubs[rank].id, self.stubs[rank].request, tuple(failed))
            for _count, rank, failed in scored[:limit]
        ]

    def _near_candidates(self, request: PlaybackRequest, budget: int) -> list[int]:
        anchor_hits: list[int] = []
        self._add_anchor_hits(request, anchor_hits)
        anchor_hits.sort()
        tiers: tuple[Iterable[int], ...] = (
            self._near_path.get(request.path, ()),
            anchor_hits,
            self._near_method.get(request.method, ()),
            range(len(self.stubs)),
        )
        chosen: dict[int, None] = {}  # ordered and unique
        for rank in chain.from_iterable(tiers):
            chosen[rank] = None
            if len(chosen) >= budget:
                break
        return list(chosen)
