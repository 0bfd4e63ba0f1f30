"""IndexedRouter answers every request exactly as Starlette's Router does."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from simulacra.app import create_app
from simulacra.config import Settings
from simulacra.routing import IndexedRouter, path_prefix, route_shape
from tests.asgi import http_scope


def _endpoint(label: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{label} {sorted(request.path_params.items())}")

    return endpoint


def _clones(routes: list[BaseRoute]) -> list[BaseRoute]:
    """The same paths and methods, each answering with its own index."""
    out: list[BaseRoute] = []
    for i, route in enumerate(routes):
        if isinstance(route, Route):
            out.append(Route(route.path, _endpoint(str(i)), methods=route.methods))
        else:  # a route of its own kind (Fastly's fallback): it answers both routers alike
            out.append(route)
    return out


def _app_routes() -> list[BaseRoute]:
    return list(create_app(Settings(store_url="memory://")).routes)


def _call(router: Router, method: str, path: str, root_path: str = "") -> tuple[Any, ...]:
    scope = http_scope(
        method,
        path,
        [(b"host", b"testserver")],
        root_path=root_path,
        server=("testserver", 80),
        client=None,
    )
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(router(scope, receive, send))
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], sorted(start.get("headers", [])), body


def _paths(routes: list[BaseRoute]) -> list[str]:
    paths: set[str] = {"/", "//", "/nope", "/mimicking", "/mimicking/", "/api", "/api/v2/"}
    paths |= {"/identity/v2.0", "/identity/v2.0/", "/a/b/c", "/mimic/v1.1//tick"}
    values = itertools.cycle(["ORD", "tenant-1", "abc", "12", "x_y"])
    paths |= {"/fastly", "/fastly/", "/fastly/nope", "/fastly/service/x/nope"}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{[^}]*\}", lambda _: next(values), route.path)
        paths |= {path, path + "/", path + "//", path.rstrip("/"), path + "/extra", path + "x"}
        parent = path.rsplit("/", 1)[0]
        paths |= {parent or "/", parent + "/"}
    return sorted(paths)


def test_same_answers_as_starlette_router_for_every_route_and_method() -> None:
    routes = _clones(_app_routes())
    plain, indexed = Router(routes), IndexedRouter(routes)
    checked = 0
    for path in _paths(routes):
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
            assert _call(indexed, method, path) == _call(plain, method, path), (method, path)
            checked += 1
    assert checked > 3000


def test_same_answers_under_a_root_path() -> None:
    routes = _clones(_app_routes())
    plain, indexed = Router(routes), IndexedRouter(routes)
    for path in _paths(routes)[::7]:
        for method in ("GET", "POST"):
            full = "/base" + path
            expected = _call(plain, method, full, root_path="/base")
            assert _call(indexed, method, full, root_path="/base") == expected, (method, path)


def test_routes_added_later_are_found() -> None:
    router = IndexedRouter([Route("/a/b/{x}", _endpoint("first"))])
    assert _call(router, "GET", "/a/b/1")[2] == b"first [('x', '1')]"
    router.routes.append(Route("/a/b/{x}/c", _endpoint("later")))
    assert _call(router, "GET", "/a/b/1/c")[2] == b"later [('x', '1')]"
    router.routes = [Route("/a/b/{x}", _endpoint("replaced"))]
    assert _call(router, "GET", "/a/b/1")[2] == b"replaced [('x', '1')]"


def test_first_match_wins_across_shapes_and_unshaped_routes() -> None:
    routes: list[BaseRoute] = [
        Route("/{any}/b/c", _endpoint("unshaped")),  # no shape: tried for every path
        Route("/a/b/c", _endpoint("shaped")),
        Route("/a/b/{x:path}", _endpoint("path")),  # may match "/": no shape
    ]
    indexed = IndexedRouter(routes)
    assert _call(indexed, "GET", "/a/b/c")[2].startswith(b"unshaped")
    assert _call(indexed, "GET", "/a/b/c/d")[2].startswith(b"path")


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/mimicking/NovaApi/{region}/v2/{tenant}/servers", (("mimicking", "NovaApi"), 6)),
        ("/identity/v2.0/tokens", (("identity", "v2.0"), 3)),
        ("/identity/v2.0", (("identity", "v2.0"), 2)),
        ("/identity", None),
        ("/", None),
        ("/a{x}/b/c", None),
        ("/a/b{x}/c", None),
        ("/a/{x}/c", None),
        ("/a/b/{x:path}", None),
    ],
)
def test_route_shapes(path: str, shape: Any) -> None:
    assert route_shape(Route(path, _endpoint("x"))) == shape


def test_mounts_have_no_shape() -> None:
    assert route_shape(Mount("/a/b", routes=[])) is None


def test_path_prefix() -> None:
    assert path_prefix("/a/b/c") == ("a", "b")
    assert path_prefix("/a/b") == ("a", "b")
    assert path_prefix("/a") is None
    assert path_prefix("") is None
