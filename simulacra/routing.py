"""A Starlette router that tries fewer routes per request, with the same answers.

Starlette's ``Router`` tries every route in order until one matches. Simulacra has ~180
routes, and a Nova create (``POST .../servers``) is the 70th: the profile behind
bench/peers.py put the scan at about 40% of the create's CPU time (a regex ``match`` and
a scope copy per route).

``IndexedRouter`` sorts the routes into groups by their *shape*: the first two segments of
their literal prefix (the path up to its first ``{``) and their number of ``/``. A
``Route``'s regex is anchored at both ends, starts with that literal, and its parameters
(``str``, ``int``, ``float``, ``uuid``) never match a ``/``, so a path of another shape can
match the route neither fully nor partially (a 405). Each request goes to a plain
``Router`` holding, in their original order, the routes of its path's shape, of the shape
of the path Starlette would try for a slash redirect, and every route that has no shape
(mounts, ``{name:path}`` parameters...) except static ones too short for a shape (``/``,
``/identity``: they match only themselves). The first match, the 405s, the slash
redirects and the 404s are therefore Starlette's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.convertors import FloatConvertor, IntegerConvertor, StringConvertor, UUIDConvertor
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

DEPTH = 2  # literal path segments in a shape
_NO_SLASH = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)

Prefix = tuple[str, ...]
Shape = tuple[Prefix, int]  # (the first DEPTH literal segments, the number of "/")


def route_shape(route: BaseRoute) -> Shape | None:
    """The shape of every path ``route`` can match, or ``None`` when it has none.

    ``None`` for a route whose literal prefix has fewer than ``DEPTH`` whole segments
    (``/``, ``/identity``, ``/{name}/x``), a parameter that may match a ``/``, or any route
    that is not a plain ``Route`` (mounts and hosts are never grouped).
    """
    if type(route) is not Route:
        return None
    if not all(type(c) in _NO_SLASH for c in route.param_convertors.values()):
        return None
    path = route.path
    literal, brace, _ = path.partition("{")
    pieces = literal.split("/")[1:]
    if brace:
        pieces = pieces[:-1]  # the last piece runs into a parameter: not a whole segment
    if len(pieces) < DEPTH or any(not piece for piece in pieces[:DEPTH]):
        return None
    return tuple(pieces[:DEPTH]), path.count("/")


def path_prefix(path: str) -> Prefix | None:
    """The first ``DEPTH`` segments of a request path."""
    parts = path.split("/", DEPTH + 1)
    if len(parts) <= DEPTH or parts[0]:
        return None
    return tuple(parts[1 : DEPTH + 1])


class IndexedRouter(Router):
    """``Router`` trying only the routes a path's shape allows (see the module doc)."""

    def __init__(self, routes: Sequence[BaseRoute] | None = None, **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._indexed: tuple[list[BaseRoute], int] = ([], -1)
        self._shapes: list[Shape | None] = []
        self._prefixes: dict[Prefix, int] = {}  # prefix -> the most "/" of its routes
        self._ungrouped = Router()
        self._anywhere: list[bool] = []
        self._groups: dict[tuple[Prefix, int, int], Router] = {}

    def _router(self, routes: list[BaseRoute]) -> Router:
        return Router(routes, redirect_slashes=self.redirect_slashes, default=self.default)

    def _index(self) -> None:
        self._shapes = [route_shape(route) for route in self.routes]
        self._prefixes = {}
        for shape in self._shapes:
            if shape is not None:
                prefix, slashes = shape
                self._prefixes[prefix] = max(slashes, self._prefixes.get(prefix, 0))
        shaped = zip(self.routes, self._shapes, strict=True)
        self._ungrouped = self._router([route for route, shape in shaped if shape is None])
        # Routes a path of a known prefix may still match: unshaped ones, except static
        # paths (``/``, ``/identity/``), which match only themselves and their slash toggle,
        # and those have no two non-empty leading segments, as a known prefix has.
        self._anywhere = [
            shape is None and not (type(route) is Route and "{" not in route.path)
            for route, shape in zip(self.routes, self._shapes, strict=True)
        ]
        self._groups = {}
        # Routes added or replaced later (app.add_route) are picked up on the next request.
        self._indexed = (self.routes, len(self.routes))

    def _group(self, prefix: Prefix, slashes: int, redirect_slashes: int) -> Router:
        """The routes of shape (prefix, slashes) or (prefix, redirect_slashes), and no shape."""
        key = (prefix, slashes, redirect_slashes)
        router = self._groups.get(key)
        if router is None:
            wanted = {(prefix, slashes), (prefix, redirect_slashes)}
            routes = [
                route
                for route, shape, anywhere in zip(
                    self.routes, self._shapes, self._anywhere, strict=True
                )
                if anywhere or shape in wanted
            ]
            router = self._groups[key] = self._router(routes)
        return router

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().app(scope, receive, send)
            return
        indexed, count = self._indexed
        if indexed is not self.routes or count != len(self.routes):
            self._index()
        if scope.get("root_path"):  # mounted: Starlette's own scan, which knows mounts
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        path = scope["path"]
        prefix = path_prefix(path)
        most = -1 if prefix is None else self._prefixes.get(prefix, -1)
        if prefix is None or most < 0:
            router = self._ungrouped
        else:
            # The path Starlette tries for a slash redirect (Router.app): the slash toggled.
            raw = scope["path"]
            redirect = raw.rstrip("/").count("/") if raw.endswith("/") else raw.count("/") + 1
            slashes = path.count("/")
            # Counts that no route of the prefix has are all alike (-1): a bounded cache.
            router = self._group(
                prefix, slashes if slashes <= most else -1, redirect if redirect <= most else -1
            )
        await router.app(scope, receive, send)
