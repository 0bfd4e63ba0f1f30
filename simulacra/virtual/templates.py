"""Response templates: Jinja2 in an immutable sandbox, compiled once, rendered per playback.

**Opt-in.** A response body is a template when it contains ``{{`` or ``{%``; any other
body is played byte for byte (Mirage rendered every body as a Tornado template, which
also left such bodies unchanged). A body that must contain a literal ``{{`` wraps it
in ``{% raw %}...{% endraw %}``. A body that does not compile is refused (400) when
the stub is stored, so playback never meets a syntax error.

**Names** a template sees (documented in docs/compatibility.md):

- ``request.body``, ``request.method``, ``request.path``, ``request.query`` (name ->
  first value), ``request.headers`` (lowercase names), ``request.json`` (the parsed
  body, or None when it is not JSON); ``request_text`` is ``request.body`` (Mirage).
- ``args``: the stub's args; ``recorded``: the date the stub was recorded.
- ``now``: the current UTC datetime; ``today(fmt="%Y-%m-%d", days=0)``: a formatted date.

**Bounds.** The sandbox stops templates from reaching Python internals, but not from
spending CPU or memory, and a render runs on the server's one event loop: every other
request waits for it. So each render is held to: at most ``MAX_ITERATIONS`` loop
iterations, ``range()`` of at most ``MAX_RANGE`` items, ``MAX_OUTPUT`` characters of
output, ``MAX_WORK`` characters built by operators, filters and string methods that
can grow a value (``*``, ``+``, ``~``, ``%``, ``**``, ``replace``, ``join``,
``center``...), and ``MAX_COST`` (about 50 ms) of work by filters, each charged its
input's size times what one item costs it (``FILTER_COST``; ``sort`` on a 10-million
item list is refused, never started): all checked *before* the work is done. A
``DEADLINE`` of wall time is the backstop between steps. ``include``, ``import`` and
``extends`` are refused: a body is one template.

A render that fails (a limit, an undefined value used in a way that needs it, a type
error) raises ``Invalid``: the playback answers 400 with the template line and reason.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import gc
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from simulacra.errors import Invalid
from simulacra.virtual.matching import NOT_JSON, PlaybackRequest
from simulacra.virtual.model import Response, Stub

MARKERS = ("{{", "{%")
MAX_ITERATIONS = 20_000  # ~1-5 us each with a small body: 20-100 ms at the very most
MAX_RANGE = 10_000
MAX_OUTPUT = 10 * 1024 * 1024  # characters; a rendered body is no bigger than a stub body
MAX_WORK = 32 * 1024 * 1024  # characters built by growing operations, per render
# Filters' work, in nanoseconds as measured on the bench VM: a render may spend about this.
MAX_COST = 50_000_000
# What one input item (character or element) costs a filter, in ns (measured, rounded up):
# the Python-level filters walk their input item by item; others are C loops over it.
FILTER_COST = {
    "sort": 2000,
    "dictsort": 2000,
    "groupby": 2000,
    "unique": 400,
    "wordwrap": 400,
    "urlize": 300,
    "map": 300,
    "select": 300,
    "reject": 300,
    "selectattr": 300,
    "rejectattr": 300,
    "batch": 300,
    "slice": 300,
    "sum": 100,
    "min": 300,
    "max": 300,
    "xmlattr": 300,
    "pprint": 300,
    "tojson": 100,
    "wordcount": 100,
    "striptags": 50,
    "title": 30,
    "capitalize": 30,
    "e": 30,
    "escape": 30,
    "forceescape": 30,
    "urlencode": 100,
    "format": 30,
}
DEFAULT_FILTER_COST = 10  # a C loop over the input (lower, list, reverse, trim, length...)
DEADLINE = 0.05  # seconds per render: a backstop between steps, the budgets bind first
_SMALL = 32  # what a non-sized value (a number, None) counts for

_LOOP_GUARD = "__simulacra_loop__"
_CONCAT_GUARD = "__simulacra_concat__"


class TemplateLimit(Exception):
    """A render went over one of its bounds."""


@dataclass
class _Budget:
    deadline: float
    iterations: int = MAX_ITERATIONS
    work: int = MAX_WORK
    cost: int = MAX_COST

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {DEADLINE} s")

    def charge(self, size: int, what: str) -> None:
        if size > self.work:
            raise TemplateLimit(
                f"{what} would build {size} characters; a render may build at most"
                f" {MAX_WORK} in all"
            )
        self.work -= size

    def spend(self, ns: int, what: str) -> None:
        if ns > self.cost:
            raise TemplateLimit(
                f"{what} on this input is more work than a render may do (about"
                f" {MAX_COST // 1_000_000} ms); make the input smaller"
            )
        self.cost -= ns


# The render in progress on this task (None outside a render, e.g. constant folding).
_current: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "simulacra_template_budget", default=None
)


def _size(value: object) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return _SMALL


def _charge(size: int, what: str) -> None:
    budget = _current.get()
    if budget is not None:
        budget.tick()
        budget.charge(size, what)
    elif size > MAX_WORK:
        raise TemplateLimit(f"{what} would build {size} characters")


def _tick() -> None:
    budget = _current.get()
    if budget is not None:
        budget.tick()


def _spend(items: int, name: str) -> None:
    """Charge filter ``name`` its input of ``items`` before it runs (``FILTER_COST``)."""
    ns = items * FILTER_COST.get(name, DEFAULT_FILTER_COST)
    budget = _current.get()
    if budget is not None:
        budget.spend(ns, f"'{name}'")
    elif ns > MAX_COST:
        raise TemplateLimit(f"'{name}' on this input is more work than a render may do")


def _materialized(value: object, name: str) -> object:
    """An unsized iterable (a generator from ``map``, say) as a list, each item charged as
    it is drawn, so a filter's input always has a size to charge."""
    if isinstance(value, str | bytes) or hasattr(value, "__len__"):
        return value
    if not isinstance(value, Iterable):
        return value
    items = []
    for item in value:
        _spend(1, name)
        items.append(item)
        if len(items) > MAX_ITERATIONS * 10:
            raise TemplateLimit(f"'{name}' was given more than {MAX_ITERATIONS * 10} items")
    return items


def _check_width(width: object, what: str) -> None:
    if isinstance(width, int) and width > MAX_OUTPUT:
        raise TemplateLimit(f"{what} width {width} is over {MAX_OUTPUT}")


# printf widths and precisions (``%0999999d``) and str.format specs (``{:>999999}``)
# allocate before anything else can look at the result.
_PRINTF_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC_NUMBER = re.compile(r"\{[^{}]*:[^{}]*?(\d{6,})")


def _check_printf(fmt: str) -> None:
    for width, precision in _PRINTF_WIDTH.findall(fmt):
        for number in (width, precision):
            if number == "*" or (number and int(number) > 100_000):
                raise TemplateLimit("printf-style width or precision over 100000 (or '*')")


def _check_format_spec(fmt: str) -> None:
    if _FORMAT_SPEC_NUMBER.search(fmt):
        raise TemplateLimit("format spec width over 99999")


def _estimate_replace(s: object, old: object, new: object, count: object = None) -> int:
    text, old_s, new_s = str(s), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * len(new_s)


def _estimate_join(sep: object, items: list[Any]) -> int:
    return sum(_size(i) for i in items) + len(str(sep)) * max(len(items) - 1, 0)


# -- filters -----------------------------------------------------------------------


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Pre-check the filters that can multiply their input; charge every result."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        # pass_context / pass_eval_context / pass_environment filters get that first.
        plain = [a for a in args if not _is_jinja_internal(a)]
        value = plain[0] if plain else None
        rest = plain[1:]
        if plain:
            sized = _materialized(value, name)
            if sized is not value:
                args = tuple(sized if a is value else a for a in args)
                value = sized
            _spend(_size(value), name)
        if name == "center":
            _check_width(rest[0] if rest else kwargs.get("width", 80), "center")
        elif name == "indent":
            width = rest[0] if rest else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width
            if isinstance(pad, int):
                lines = str(value).count("\n") + 1
                _charge(_size(value) + lines * max(pad, 0), "indent")
        elif name == "replace" and len(rest) >= 2:
            _charge(_estimate_replace(value, *rest[:3]), "replace")
        elif name == "format" and isinstance(value, str):
            _check_printf(value)
        elif name == "join":
            items = list(value) if isinstance(value, Iterable) else []
            _charge(_estimate_join(rest[0] if rest else kwargs.get("d", ""), items), "join")
            args = tuple(items if a is value else a for a in args)
        elif name in _GROWTH:
            _charge(_size(value) * _GROWTH[name], name)
        result = func(*args, **kwargs)
        _charge(_size(result), name)
        return result

    return guarded


# Filters whose output can be this many times their input (escaping, quoting).
_GROWTH = {"e": 6, "escape": 6, "forceescape": 6, "urlencode": 3, "tojson": 6, "urlize": 3}


def _is_jinja_internal(value: object) -> bool:
    return isinstance(value, Context | nodes.EvalContext | Environment)


def _range(*args: int) -> range:
    _tick()
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimit(f"range() of {len(rng)} items; at most {MAX_RANGE} are allowed")
    return rng


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wrapped around every ``{% for %}``: counts iterations against the render's budget."""
    budget = _current.get()
    for item in iterable:
        if budget is not None:
            budget.iterations -= 1
            if budget.iterations < 0:
                raise TemplateLimit(
                    f"loops ran more than {MAX_ITERATIONS} iterations in one render"
                )
            budget.tick()
        yield item


def _concat(parts: list[Any]) -> str:
    """``a ~ b``: charged before the string is built."""
    strings = [str(p) for p in parts]
    _charge(sum(len(s) for s in strings), "'~'")
    return "".join(strings)


class _Guards(NodeTransformer):
    """Rewrites the parsed template so loops and ``~`` go through the guards above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.Name(_LOOP_GUARD, "load"), [node.iter], [], None, None, lineno=node.lineno
        ).set_environment(ENV)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.Name(_CONCAT_GUARD, "load"),
            [nodes.List(node.nodes, lineno=node.lineno)],
            [],
            None,
            None,
            lineno=node.lineno,
        ).set_environment(ENV)


class _Sandbox(ImmutableSandboxedEnvironment):
    # Intercepted operators are also never constant-folded at compile time, so
    # ``{{ 9 ** 9 ** 9 }}`` cannot hang a PUT either.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _charge(len(seq) * max(times, 0), "'*'")
                    if not isinstance(seq, str):  # a list copies a pointer per item
                        _spend(len(seq) * max(times, 0), "*")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _charge(len(left) + len(right), "'+'")
                if not isinstance(left, str):
                    _spend(len(left) + len(right), "+")
        elif operator == "%":
            if isinstance(left, str):
                _check_printf(left)
        elif operator == "**" and _huge_power(left, right):
            raise TemplateLimit(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        args = _check_method(obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str | list | tuple):
            _charge(len(result), "a call")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)


def _huge_power(base: Any, exponent: Any) -> bool:
    """An int result of more than ~100,000 bits is no response body's business."""
    if not isinstance(base, int) or not isinstance(exponent, int):
        return False
    return exponent > 0 and abs(base) > 1 and abs(base).bit_length() * exponent > 100_000


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Pre-checks for the str methods that can allocate far more than their input.

    Returns the arguments to call with: an iterator given to ``join`` is read once
    here to measure it, so the list it became is passed on instead.
    """
    wrapped = getattr(obj, "__wrapped__", None)  # the sandbox's str.format wrapper
    if wrapped is not None and isinstance(getattr(wrapped, "__self__", None), str):
        _check_format_spec(wrapped.__self__)
        return args
    if not isinstance(obj, types.BuiltinMethodType) or not isinstance(obj.__self__, str):
        return args
    text: str = obj.__self__
    name = obj.__name__
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_width(args[0], name)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            _charge(len(text) * max(tabsize, 1), "expandtabs")
    elif name == "replace" and len(args) >= 2:
        _charge(_estimate_replace(text, *args[:3]), "replace")
    elif name == "join" and args and isinstance(args[0], Iterable):
        items = list(args[0])
        _charge(_estimate_join(text, items), "join")
        return (items, *args[1:])
    return args


def _build_environment() -> _Sandbox:
    env = _Sandbox(
        autoescape=False,  # bodies are XML, JSON, text: escape explicitly with |e or |tojson
        keep_trailing_newline=True,  # a body's final newline is part of the body
        cache_size=0,  # compiled templates are cached by compile_template below
    )
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.globals["range"] = _range
    env.globals.pop("lipsum", None)  # lipsum(10**6) is work for nothing
    env.globals[_LOOP_GUARD] = _loop_guard
    env.globals[_CONCAT_GUARD] = _concat
    return env


ENV = _build_environment()


def is_template(body: str) -> bool:
    """A body opts into templating by containing ``{{`` or ``{%``."""
    return "{{" in body or "{%" in body


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Any:
    """Compile (and cache) a template; ``Invalid`` with the line for a bad one."""
    try:
        tree = ENV.parse(source)
        for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            kind = type(node).__name__.lower()
            raise Invalid(
                f"line {node.lineno}: '{kind}' is not available in response templates;"
                " a body is one self-contained template"
            )
        tree = _Guards().visit(tree)
        return ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        raise Invalid(f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise Invalid("the template nests too deeply") from None


def check_bodies(bodies: Iterable[str], where: str = "response.body") -> None:
    """Refuse (400) a stub whose template body does not compile, at PUT time."""
    items = list(bodies)
    for i, body in enumerate(items):
        if is_template(body):
            label = f"{where}[{i}]" if len(items) > 1 else where
            try:
                compile_template(body)
            except Invalid as exc:
                raise Invalid(
                    f"{label} is not a valid template ({exc.message}); wrap literal"
                    " '{{' or '{%' in {% raw %}...{% endraw %}"
                ) from None


class TemplateRequest:
    """The ``request`` a template sees: plain values, computed only when used."""

    __slots__ = ("_headers", "_json", "_query", "_request")

    def __init__(self, request: PlaybackRequest) -> None:
        self._request = request
        self._query: dict[str, str] | None = None
        self._headers: dict[str, str] | None = None
        self._json: Any = NOT_JSON

    @property
    def body(self) -> str:
        return self._request.body

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = {k: v[0] for k, v in self._request.query_args.items() if v}
        return self._query

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = dict(self._request.headers)
        return self._headers

    @property
    def json(self) -> Any:
        if self._json is NOT_JSON:
            parsed = self._request.json
            self._json = None if parsed is NOT_JSON else parsed
        return self._json


def context_for(request: PlaybackRequest, stub: Stub, now: datetime) -> dict[str, Any]:
    def today(fmt: str = "%Y-%m-%d", days: int = 0) -> str:
        return (now + timedelta(days=days)).strftime(fmt)

    view = TemplateRequest(request)
    return {
        "request": view,
        "request_text": request.body,
        "args": dict(stub.args),
        "recorded": stub.recorded,
        "now": now,
        "today": today,
    }


def _template_line(exc: BaseException) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's line numbers."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template body within the bounds above; ``Invalid`` when it fails."""
    template = compile_template(source)
    budget = _Budget(deadline=time.monotonic() + DEADLINE)
    token = _current.set(budget)
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context):
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateLimit(f"the output is over {MAX_OUTPUT} characters")
            budget.tick()
            parts.append(part)
        return "".join(parts)
    # A template is the stub author's program: whatever it raises (an undefined value,
    # a type error, a limit, recursion) is reported, not allowed to become a 500.
    except Exception as exc:
        line = _template_line(exc)
        where = f" at line {line}" if line else ""
        failure = f"response template failed{where}: {str(exc) or type(exc).__name__}"
    finally:
        _current.reset(token)
    # Jinja's rewritten traceback is a reference cycle (a frame's globals hold the exception)
    # that keeps the template's frames and values: megabytes, for a render stopped at a
    # bound. Freed here, not by a later collection that frees dozens at once (250 ms held).
    gc.collect(1)
    raise Invalid(failure)


def render_response(
    response: Response, stub: Stub, request: PlaybackRequest, now: datetime
) -> Response:
    """The response with its body rendered, when the body is a template."""
    if not is_template(response.body):
        return response
    try:
        body = render(response.body, context_for(request, stub, now))
    except Invalid as exc:
        raise Invalid(f"stub {stub.id}: {exc.message}") from None
    return dataclasses.replace(response, body=body)
