"""What an XPath matcher may cost, decided when its stub is stored.

libxml2 evaluates XPath with no bound on time, and the server has one event loop. Some
expressions are quadratic or worse in the request body (measured on bodies of 1 MiB):

* the following, preceding and sibling axes visit O(n) nodes from every node they start
  from (``count(//b[. = following::b])`` on 180 KB: 3.5 s);
* a step from many nodes on an axis whose results can repeat (descendant, ancestor,
  parent: ``//a//b``, ``//a/..``) is merged with a duplicate check that is O(n²)
  (``count(//*//*)``: more than 8 s);
* a union or a comparison of two node-sets is O(|a|·|b|) (``//a | //b``: more than 8 s);
* a predicate runs once per candidate node: an absolute path in it, a sibling reached
  through ``..``, or the string value of an ancestor repeat O(n) work n times;
* a descendant step nested in a predicate's descendant step multiplies by the depth again.

``check`` accepts the expressions that cost at most (body size * depth) per *pass* over the
body, and counts the passes: each descendant or ancestor step, each predicate, each string
value taken of element nodes. The matcher evaluates a body only when its number of ``<``
times the passes is within a budget, and when it is at most 64 levels deep (see matching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simulacra.errors import shown

EXSLT_REGEXP = "http://exslt.org/regular-expressions"
MAX_PASSES = 16
# re:test is a call into Python (~3 µs with its string value), not a step of libxml2's own
# (~0.3 µs): it counts as this many passes.
RE_TEST_PASSES = 8

_NCNAME = r"[^\W\d][\w.\-\u00b7]*"
_TOKEN = re.compile(
    rf"""(?P<ws>\s+)
    |(?P<lit>"[^"]*"|'[^']*')
    |(?P<num>\d+(?:\.\d*)?|\.\d+)
    |(?P<sym>//|::|\.\.|!=|<=|>=|[()\[\].@,/|+\-=<>*$])
    |(?P<name>{_NCNAME}(?::(?:{_NCNAME}|\*))?)""",
    re.VERBOSE,
)
_OPERATORS = frozenset({"/", "//", "|", "+", "-", "=", "!=", "<", "<=", ">", ">="})
_OPERATOR_NAMES = frozenset({"and", "or", "mod", "div"})
_NODE_TYPES = frozenset({"node", "text", "comment", "processing-instruction"})
_LEAF_TESTS = frozenset({"text()", "comment()", "processing-instruction()"})
_AXES = frozenset(
    {
        "ancestor",
        "ancestor-or-self",
        "attribute",
        "child",
        "descendant",
        "descendant-or-self",
        "following",
        "following-sibling",
        "namespace",
        "parent",
        "preceding",
        "preceding-sibling",
        "self",
    }
)
_SCANNING_AXES = frozenset({"following", "following-sibling", "preceding", "preceding-sibling"})
_BINARY_LEVELS = (
    ("or",),
    ("and",),
    ("=", "!="),
    ("<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "div", "mod"),
)
# Function -> (result type, how it uses node-set arguments): "string" takes their string
# values, "nodes" only the nodes (count, boolean), "name" only the first node's name.
_FUNCTIONS: dict[str, tuple[str, str]] = {
    "last": ("number", "nodes"),
    "position": ("number", "nodes"),
    "count": ("number", "nodes"),
    "id": ("nodes", "string"),
    "local-name": ("string", "name"),
    "namespace-uri": ("string", "name"),
    "name": ("string", "name"),
    "string": ("string", "string"),
    "concat": ("string", "string"),
    "starts-with": ("boolean", "string"),
    "contains": ("boolean", "string"),
    "substring-before": ("string", "string"),
    "substring-after": ("string", "string"),
    "substring": ("string", "string"),
    "string-length": ("number", "string"),
    "normalize-space": ("string", "string"),
    "translate": ("string", "string"),
    "boolean": ("boolean", "nodes"),
    "not": ("boolean", "nodes"),
    "true": ("boolean", "nodes"),
    "false": ("boolean", "nodes"),
    "lang": ("boolean", "string"),
    "number": ("number", "string"),
    "sum": ("number", "string"),
    "floor": ("number", "string"),
    "ceiling": ("number", "string"),
    "round": ("number", "string"),
}
_OF_CONTEXT = frozenset({"string", "string-length", "normalize-space", "number"})

_MERGE = (
    "a `//`, descendant, ancestor or `..` step may only start from one node (the document,"
    " the context node, a predicate's node): from many nodes, libxml2 merges their results"
    " with a duplicate check that is quadratic. Write //b[ancestor::a] for //a//b"
)
_UP_DOWN = (
    "a predicate may look down from its node, or up at its ancestors and their"
    " attributes, not up and then down again (its siblings and cousins): that repeats"
    " a scan of the parent for every candidate"
)
_DEEP_TWICE = (
    "a predicate may make one deep step (`.//`, descendant, ancestor, lang(), or the"
    " string value of a deep step's nodes), not one inside another: each multiplies the"
    " work by the depth of the document"
)


class Refused(Exception):
    """The expression is outside what ``check`` accepts; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Tok:
    kind: str  # lit, num, sym, name, op
    text: str


def _tokenize(expr: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        found = _TOKEN.match(expr, pos)
        if found is None:
            raise Refused(f"cannot read the expression at {shown(expr[pos : pos + 20])}")
        pos = found.end()
        kind = found.lastgroup or ""
        if kind == "ws":
            continue
        text = found.group()
        # XPath 1.0 §3.7: after an operand, * multiplies and and/or/mod/div are operators.
        prev = out[-1] if out else None
        operand_next = (
            prev is None
            or prev.kind == "op"
            or (prev.kind == "sym" and prev.text in ("@", "::", "(", "[", ","))
        )
        operator = text in _OPERATORS if kind == "sym" else False
        if operator or (not operand_next and (text == "*" or text in _OPERATOR_NAMES)):
            kind = "op"
        out.append(_Tok(kind, text))
    return out


# The syntax tree: just what the cost rules look at.
@dataclass
class _Step:
    axis: str
    test: str
    preds: list[object] = field(default_factory=list)


@dataclass
class _Path:
    absolute: bool
    steps: list[_Step]
    base: object = None  # a filter expression the steps continue from


@dataclass
class _Filter:
    primary: object
    preds: list[object]


@dataclass
class _Call:
    name: str
    args: list[object]


@dataclass
class _Binary:
    op: str
    left: object
    right: object


@dataclass
class _Union:
    parts: list[object]


@dataclass
class _Neg:
    operand: object


@dataclass
class _Literal:
    kind: str  # string, number
    text: str


@dataclass
class _Var:
    name: str


def _descendant_or_self() -> _Step:
    return _Step("descendant-or-self", "node()")


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, ahead: int = 0) -> _Tok | None:
        at = self.pos + ahead
        return self.tokens[at] if at < len(self.tokens) else None

    def at(self, kind: str, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == kind and (not texts or tok.text in texts)

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise Refused("the expression ends too early")
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise Refused(f"expected {text!r}, found {shown(tok.text)}")

    def parse(self) -> object:
        tree = self.binary(0)
        if self.pos != len(self.tokens):
            raise Refused(f"unexpected {shown(self.tokens[self.pos].text)}")
        return tree

    def binary(self, level: int) -> object:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.at("op", *_BINARY_LEVELS[level]):
            op = self.next().text
            left = _Binary(op, left, self.binary(level + 1))
        return left

    def unary(self) -> object:
        if self.at("op", "-"):
            self.next()
            return _Neg(self.unary())
        parts = [self.path_expr()]
        while self.at("op", "|"):
            self.next()
            parts.append(self.path_expr())
        return parts[0] if len(parts) == 1 else _Union(parts)

    def starts_step(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        if tok.kind == "sym":
            return tok.text in (".", "..", "@", "*")
        if tok.kind != "name":
            return False
        after = self.peek(1)
        is_call = after is not None and after.kind == "sym" and after.text == "("
        return not is_call or tok.text in _NODE_TYPES

    def path_expr(self) -> object:
        if self.at("op", "/"):
            self.next()
            return _Path(True, self.steps() if self.starts_step() else [])
        if self.at("op", "//"):
            self.next()
            return _Path(True, [_descendant_or_self(), *self.steps()])
        if self.starts_step():
            return _Path(False, self.steps())
        primary = self.primary()
        preds = self.predicates()
        base = _Filter(primary, preds) if preds else primary
        if self.at("op", "/", "//"):
            return _Path(False, self.steps(after_separator=True), base)
        return base

    def steps(self, after_separator: bool = False) -> list[_Step]:
        out: list[_Step] = []
        if not after_separator:
            out.append(self.step())
        while self.at("op", "/", "//"):
            if self.next().text == "//":
                out.append(_descendant_or_self())
            out.append(self.step())
        return out

    def step(self) -> _Step:
        if self.at("sym", "."):
            self.next()
            return _Step("self", "node()")
        if self.at("sym", ".."):
            self.next()
            return _Step("parent", "node()")
        axis = "child"
        if self.at("sym", "@"):
            self.next()
            axis = "attribute"
        else:
            after = self.peek(1)
            if after is not None and after.kind == "sym" and after.text == "::":
                axis = self.next().text
                self.next()
                if axis not in _AXES:
                    raise Refused(f"unknown axis {shown(axis)}")
        return _Step(axis, self.node_test(), self.predicates())

    def node_test(self) -> str:
        tok = self.next()
        if tok.text == "*":
            return "*"
        if tok.kind != "name":
            raise Refused(f"expected a node test, found {shown(tok.text)}")
        if tok.text in _NODE_TYPES and self.at("sym", "("):
            self.next()
            if self.at("lit"):
                self.next()
            self.expect(")")
            return f"{tok.text}()"
        return tok.text

    def predicates(self) -> list[object]:
        preds = []
        while self.at("sym", "["):
            self.next()
            preds.append(self.binary(0))
            self.expect("]")
        return preds

    def primary(self) -> object:
        tok = self.next()
        if tok.kind == "lit":
            return _Literal("string", tok.text)
        if tok.kind == "num":
            return _Literal("number", tok.text)
        if tok.text == "$":
            return _Var(self.next().text)
        if tok.text == "(":
            inner = self.binary(0)
            self.expect(")")
            return inner
        if tok.kind == "name" and self.at("sym", "("):
            self.next()
            args: list[object] = []
            if not self.at("sym", ")"):
                args.append(self.binary(0))
                while self.at("sym", ","):
                    self.next()
                    args.append(self.binary(0))
            self.expect(")")
            return _Call(tok.text, args)
        raise Refused(f"unexpected {shown(tok.text)}")


@dataclass(frozen=True)
class _Value:
    type: str  # nodes, string, number, boolean
    single: bool = False  # at most one node
    up: bool = False  # reached by going up from a predicate's node
    leaf: bool = False  # attributes, text, comments: each one's string value is its own
    exp: int = 0  # in a predicate: evaluating it costs its node's subtree (1) or not (0)


@dataclass(frozen=True)
class _Context:
    local: bool  # inside a predicate: evaluated once per candidate node
    exp: int = 0
    up: bool = False

    def node(self) -> _Value:
        return _Value("nodes", single=True, up=self.up, exp=self.exp)


@dataclass(frozen=True)
class Cost:
    passes: int  # passes over the document, at least 1
    patterns: tuple[tuple[str, str], ...]  # literal re:test (pattern, flags), to compile now


class _Checker:
    def __init__(self, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.passes = 0
        self.patterns: list[tuple[str, str]] = []

    def value(self, node: object, ctx: _Context) -> _Value:
        if isinstance(node, _Literal):
            return _Value(node.kind)
        if isinstance(node, _Var):
            raise Refused(f"variables ({shown(node.name)}) are not supported")
        if isinstance(node, _Path):
            return self.path(node, ctx)
        if isinstance(node, _Filter):
            return self.filter(node, ctx)
        if isinstance(node, _Union):
            return self.union(node, ctx)
        if isinstance(node, _Neg):
            self.use_as_string(self.value(node.operand, ctx), ctx)
            return _Value("number")
        if isinstance(node, _Binary):
            return self.binary(node, ctx)
        if isinstance(node, _Call):
            return self.call(node, ctx)
        raise Refused("cannot read the expression")

    def path(self, path: _Path, ctx: _Context) -> _Value:
        if path.base is not None:
            current = self.value(path.base, ctx)
            if current.type != "nodes":
                raise Refused("a path must continue from a node-set")
        elif path.absolute:
            if ctx.local:
                raise Refused(
                    "an absolute path (/... or //...) in a predicate reads the document"
                    " again for every candidate node; use a path relative to the candidate"
                )
            current = _Value("nodes", single=True)
        else:
            current = ctx.node()
        for i, step in enumerate(path.steps):
            from_root = path.absolute and path.base is None and i == 0
            current = self.step(step, current, ctx, from_root)
        return current

    def step(self, step: _Step, current: _Value, ctx: _Context, from_root: bool) -> _Value:
        axis, test = step.axis, step.test
        single, up, leaf, exp = current.single, current.up, False, current.exp
        if axis in _SCANNING_AXES:
            raise Refused(
                f"the {axis} axis visits O(n) nodes from every node it starts from, O(n²)"
                " in all; select by position or name instead"
            )
        if axis == "child":
            if up and ctx.local:
                raise Refused(_UP_DOWN)
            # The document node has exactly one element child.
            single = from_root and test not in _LEAF_TESTS and test != "node()"
            leaf = test in _LEAF_TESTS
        elif axis in ("attribute", "namespace"):
            single = single and axis == "attribute" and test != "*"
            leaf = True
        elif axis == "self":
            leaf = current.leaf
        else:  # parent, ancestor(-or-self), descendant(-or-self): results can repeat
            if not single:
                raise Refused(_MERGE)
            going_down = axis.startswith("descendant")
            if going_down and up and ctx.local:
                raise Refused(_UP_DOWN)
            if axis != "parent":
                single = False
                self.passes += 1
                exp += int(ctx.local)
            up = up or not going_down
            leaf = going_down and test in _LEAF_TESTS
        if exp > 1:
            raise Refused(_DEEP_TWICE)
        inner = _Context(True, exp if ctx.local else 0, up and ctx.local)
        for pred in step.preds:
            self.predicate(pred, inner)
            single = single or _is_position(pred)
        return _Value("nodes", single, up, leaf, exp)

    def predicate(self, pred: object, ctx: _Context) -> None:
        self.passes += 1
        self.value(pred, ctx)  # a node-set is tested for existence; a number is a position

    def filter(self, node: _Filter, ctx: _Context) -> _Value:
        base = self.value(node.primary, ctx)
        if base.type != "nodes":
            raise Refused("a predicate must follow a node-set")
        inner = _Context(True, base.exp if ctx.local else 0, base.up and ctx.local)
        single = base.single
        for pred in node.preds:
            self.predicate(pred, inner)
            single = single or _is_position(pred)
        return _Value("nodes", single, base.up, base.leaf, base.exp)

    def union(self, node: _Union, ctx: _Context) -> _Value:
        parts = [self.value(part, ctx) for part in node.parts]
        if any(part.type != "nodes" for part in parts):
            raise Refused("`|` joins node-sets only")
        if sum(not part.single for part in parts) > 1:
            raise Refused(
                "a union (`|`) of two node-sets that may hold many nodes is merged in"
                " quadratic time; use one path with a predicate (//*[self::a or self::b])"
            )
        return _Value(
            "nodes",
            up=any(p.up for p in parts),
            leaf=all(p.leaf for p in parts),
            exp=max(p.exp for p in parts),
        )

    def binary(self, node: _Binary, ctx: _Context) -> _Value:
        left, right = self.value(node.left, ctx), self.value(node.right, ctx)
        if node.op in ("and", "or"):
            return _Value("boolean")  # node-sets are tested for existence
        if node.op in ("=", "!=", "<", "<=", ">", ">="):
            both = left.type == "nodes" and right.type == "nodes"
            if both and not (left.single or right.single):
                raise Refused(
                    "comparing two node-sets that may hold many nodes is quadratic;"
                    " compare a node-set with a literal, a number or a single node"
                )
            for this, other in ((left, right), (right, left)):
                if other.type != "boolean":  # against a boolean, a node-set is existence
                    self.use_as_string(this, ctx)
            return _Value("boolean")
        self.use_as_string(left, ctx)  # arithmetic
        self.use_as_string(right, ctx)
        return _Value("number")

    def call(self, node: _Call, ctx: _Context) -> _Value:
        name = node.name
        prefix, sep, local_name = name.rpartition(":")
        if sep:
            if prefix not in self.namespaces:
                raise Refused(f"the prefix of {shown(name)} is not declared in namespaces")
            if self.namespaces[prefix] != EXSLT_REGEXP or local_name != "test":
                raise Refused(
                    f"unknown function {shown(name)}: XPath 1.0 functions and re:test (EXSLT"
                    f" regular expressions, {EXSLT_REGEXP}, on RE2) are accepted"
                )
            result, usage = "boolean", "string"
            self.patterns.extend(_literal_pattern(node.args))
            self.passes += RE_TEST_PASSES
        elif name in _FUNCTIONS:
            result, usage = _FUNCTIONS[name]
        else:
            raise Refused(f"unknown function {shown(name)}")
        if name == "id" and ctx.local:
            raise Refused("id() in a predicate reads nodes anywhere in the document")
        if name == "lang":  # walks up from the context node
            self.passes += 1
            if ctx.local and ctx.exp + 1 > 1:
                raise Refused(_DEEP_TWICE)
        args = [self.value(arg, ctx) for arg in node.args]
        if not node.args and name in _OF_CONTEXT:
            args = [ctx.node()]
        if usage == "string":
            for arg in args:
                self.use_as_string(arg, ctx)
        return _Value(result)

    def use_as_string(self, value: _Value, ctx: _Context) -> None:
        """A node-set used as a string or number: the string values of its nodes."""
        if value.type != "nodes" or value.leaf:
            return  # an attribute's or a text's value is its own: no more work than finding it
        self.passes += 1
        if not ctx.local:
            return
        if value.up:
            raise Refused(
                "in a predicate, the string value of an ancestor (or of `..`) is a whole"
                " subtree, taken again for every candidate; compare its attributes instead"
            )
        if value.exp + 1 > 1:
            raise Refused(_DEEP_TWICE)


def _is_position(pred: object) -> bool:
    return isinstance(pred, _Literal) and pred.kind == "number"


def _literal_pattern(args: list[object]) -> list[tuple[str, str]]:
    """re:test's pattern and flags when they are literals (the common case)."""
    if len(args) < 2 or not (isinstance(args[1], _Literal) and args[1].kind == "string"):
        return []
    flags = args[2] if len(args) > 2 else None
    letters = flags.text[1:-1] if isinstance(flags, _Literal) and flags.kind == "string" else ""
    return [(args[1].text[1:-1], letters)]


def check(expr: str, namespaces: dict[str, str]) -> Cost:
    """How many passes ``expr`` makes over a document; ``Refused`` if one can cost more
    than the document's size times its depth, or if it makes more than ``MAX_PASSES``."""
    try:
        tree = _Parser(_tokenize(expr)).parse()
        checker = _Checker(namespaces)
        checker.value(tree, _Context(False))
    except RecursionError:
        raise Refused("the expression is nested too deeply") from None
    if checker.passes > MAX_PASSES:
        raise Refused(
            f"it makes {checker.passes} passes over the document (each `//` or deep step,"
            f" predicate and string value of elements is one); at most {MAX_PASSES}"
        )
    return Cost(max(checker.passes, 1), tuple(checker.patterns))
