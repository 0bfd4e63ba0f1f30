"""The cloud's bulk POSTs dispatched without Starlette's per-request machinery.

``ExceptionMiddleware`` (a Request, wrappers), the indexed router and Starlette's router
cost about as much as a server create's own work (bench/profile_cloud.md, sections 7-8).
``FastCloud`` recognises exactly the requests the router would send to the three bulk
``JsonEndpoint``s (server create, load balancer create, node add), sets the ``path_params``
the router would set, and calls the endpoint itself; everything else goes on unchanged.

Matching uses each ``Route``'s own regex and parameter convertors, so a path the fast path
takes is one that route matches fully. No earlier route matches those paths with POST
(each is the first route of its shape, routes.py), so the router would pick the same one;
tests/test_cloud_fast_dispatch.py compares every sent message with the router's. It sits
inside ServerErrorMiddleware (an unexpected error is still the logged 500) and inside
``SharedCloudMiddleware`` (``--shared-cloud`` still wraps these requests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from simulacra.cloud.compute.routes import create_server
from simulacra.cloud.loadbalancer.routes import add_nodes, create_load_balancer

FAST_ENDPOINTS = (create_server, create_load_balancer, add_nodes)

# (the route's regex, its convertors, the endpoint) by the path's last segment.
_Entry = tuple[Any, dict[str, Any], Any]


def fast_routes(routes: Sequence[BaseRoute]) -> dict[str, _Entry]:
    """The bulk POST routes among ``routes``, keyed by their path's last literal segment."""
    found: dict[str, _Entry] = {}
    for route in routes:
        if type(route) is Route and route.endpoint in FAST_ENDPOINTS:
            assert route.methods == {"POST"}, route.path
            last = route.path.rpartition("/")[2]
            assert "{" not in last and last not in found, route.path
            found[last] = (route.path_regex, route.param_convertors, route.endpoint)
    return found


class FastCloud:
    """ASGI middleware: the bulk cloud POSTs answered here, every other request passed on."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = fast_routes(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A mounted app (root_path) is left to Starlette, as FastPlayback does.
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            entry = self.routes.get(path[path.rfind("/") + 1 :])
            if entry is not None:
                regex, convertors, endpoint = entry
                match = regex.match(path)
                if match is not None:
                    # What Route.matches puts in the scope for the endpoint.
                    params = match.groupdict()
                    for key, value in params.items():
                        params[key] = convertors[key].convert(value)
                    if "path_params" in scope:  # an outer router's params, kept as Route does
                        params = {**scope["path_params"], **params}
                    scope["endpoint"] = endpoint
                    scope["path_params"] = params
                    await endpoint(scope, receive, send)
                    return
        await self.app(scope, receive, send)
