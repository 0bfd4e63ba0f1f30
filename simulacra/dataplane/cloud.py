"""The cloud's bulk POSTs on the data plane: server create, load balancer create, node add.

Clients call these three in bulk (bench/peers.py, bench/cloud.py), and Starlette's request,
router and response cost about as much as a create's own work (bench/profile_cloud.md), so
the data plane answers them; every other cloud route, GETs on the same paths included, is
the Starlette app's. The handlers are the services' own (compute and loadbalancer
routes.py), called with plain values, and their errors are rendered by the service's one
renderer, the one its Starlette routes use too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.compute.routes import NOVA, create_server, nova_error
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import Renderer, base_url, flat_error, served_region
from simulacra.cloud.loadbalancer.routes import CLB, add_nodes, clb_error, create_load_balancer
from simulacra.cloud.shared import SharedCloud
from simulacra.dataplane import Declared
from simulacra.dataplane.request import Answer, Later, Request
from simulacra.errors import DomainError, Unavailable

Params = dict[str, str]  # the path's parameters, by name: region, tenant, lb_id


def _create_server(core: CloudCore, request: Request, params: Params) -> Answer:
    # The data plane is never mounted: the root path is always "".
    base = base_url(request.scheme, request.header(b"host"), request.local, "")
    return create_server(core, base, params["tenant"], params["region"], request.body)


def _create_load_balancer(core: CloudCore, request: Request, params: Params) -> Answer:
    return create_load_balancer(core, params["tenant"], params["region"], request.body)


def _add_nodes(core: CloudCore, request: Request, params: Params) -> Answer:
    return add_nodes(core, params["tenant"], params["region"], params["lb_id"], request.body)


def path_pattern(template: str) -> re.Pattern[str]:
    """The paths ``template`` stands for: each ``{name}`` is one non-empty path segment, as
    under Starlette's default convertor."""
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


@dataclass(frozen=True)
class BulkPost:
    """One of the bulk POSTs: where it is, who answers it, and its errors' envelope."""

    path: str  # the template, as docs/implementation.md shows it
    spec: ServiceSpec  # whose regions the path's region must be one of
    handle: Callable[[CloudCore, Request, Params], Answer]  # raises DomainError
    render: Renderer
    endpoint: Callable[..., object]  # the service's handler: its module and docstring


class CloudRoutes:
    """Recognises the cloud's bulk POSTs among the data plane's requests (``claim``).

    ``shared`` (``--shared-cloud`` only) runs each answer in the shared state's transaction.
    """

    def __init__(self, core: CloudCore, shared: SharedCloud | None = None) -> None:
        self.core = core
        self.shared = shared
        servers = NOVA.mount_path + "/servers"
        lbs = CLB.mount_path + "/loadbalancers"
        nodes = lbs + "/{lb_id}/nodes"
        posts = [
            BulkPost(servers, NOVA, _create_server, nova_error, create_server),
            BulkPost(lbs, CLB, _create_load_balancer, clb_error, create_load_balancer),
            BulkPost(nodes, CLB, _add_nodes, clb_error, add_nodes),
        ]
        # By the path's last segment, a literal in each: one dict lookup rules most paths out.
        self._posts = {
            post.path.rpartition("/")[2]: (path_pattern(post.path), post) for post in posts
        }
        self.declared = [Declared("POST", post.path, post.endpoint) for post in posts]

    def claim(self, request: Request) -> ClaimedPost | None:
        """The route answering ``request``, if it is one of the bulk POSTs."""
        if request.method != "POST":
            return None
        path = request.path
        entry = self._posts.get(path[path.rfind("/") + 1 :])
        if entry is None:
            return None
        pattern, post = entry
        match = pattern.fullmatch(path)
        return None if match is None else ClaimedPost(self, post, match.groupdict())


class ClaimedPost:
    """A bulk POST claimed, with its path's parameters (a ``simulacra.dataplane.Route``)."""

    __slots__ = ("params", "post", "routes")

    def __init__(self, routes: CloudRoutes, post: BulkPost, params: Params) -> None:
        self.routes = routes
        self.post = post
        self.params = params

    def answer(self, request: Request) -> Answer | Later:
        if self.routes.shared is None:
            return self._answer(request)
        return self._shared_answer(self.routes.shared, request)

    def refuse(self, request: Request, error: DomainError) -> Answer:
        try:  # a bad region wins over a bad body (one over the limit, say), as in Mimic
            served_region(self.routes.core, self.post.spec, self.params["region"])
        except DomainError as exc:
            error = exc
        return self.post.render(error)

    def _answer(self, request: Request) -> Answer:
        try:
            return self.post.handle(self.routes.core, request, self.params)
        except DomainError as exc:
            return self.post.render(exc)

    async def _shared_answer(self, shared: SharedCloud, request: Request) -> Answer:
        # The error answers too are rendered inside the transaction: a failed create may have
        # changed the state (a behavior's sequence moved on), and that is committed.
        async def work() -> Answer:
            return self._answer(request)

        try:
            return await shared.run(work)
        except Unavailable as exc:
            return flat_error(exc)  # the shared state's 503, in every service's routes alike
