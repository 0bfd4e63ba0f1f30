"""The CLB mock's HTTP edge: Rackspace Cloud Load Balancers v1.0, and its control plane.

Handlers translate HTTP to ``RegionLoadBalancers`` calls and its values or errors to CLB's
JSON; they hold no state. CLB errors are flat (``{"message", "code"}``), with CLB's own
``validationErrors`` and schema bodies for bad requests, and XML on the Atom feed route.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.cloud import control
from simulacra.cloud.behaviors import BehaviorRegistry
from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import (
    backend_region,
    flat_answer,
    flat_error,
    json_object,
    read_json_object,
    region_of,
    renders_errors,
    status_of,
)
from simulacra.cloud.loadbalancer import views
from simulacra.cloud.loadbalancer.faults import SCHEMA_MESSAGE, ClbError
from simulacra.cloud.loadbalancer.model import (
    ALGORITHMS,
    PROTOCOLS,
    RegionLoadBalancers,
)
from simulacra.dataplane.request import Answer, json_answer, text_answer
from simulacra.errors import DomainError
from simulacra.web import json_response

CLB = ServiceSpec("LoadBalancerApi", "cloudLoadBalancers", "rax:load-balancer")
CLB_CONTROL = ServiceSpec("LoadBalancerControlApi", "cloudLoadBalancerControl", "rax:load-balancer")


def clb_error(exc: DomainError) -> Answer:
    """The body CLB answers for ``exc``: flat, validationErrors, schema or raw text."""
    if not isinstance(exc, ClbError):
        return flat_error(exc)
    if exc.kind == "string":
        return text_answer(exc.code, exc.message)
    if exc.kind == "validation":
        body = {
            "validationErrors": {"messages": exc.messages},
            "message": "Validation Failure",
            "code": exc.code,
            "details": "The object is not valid",
        }
        return json_answer(exc.code, orjson.dumps(body))
    if exc.kind == "schema":
        # CLB's (and Mimic's) body, plus what exactly did not match.
        body = {"message": [SCHEMA_MESSAGE], "details": exc.message}
        return json_answer(exc.code, orjson.dumps(body))
    return flat_answer(exc.code, exc.message)


clb_errors = renders_errors(clb_error)


def _region(core: CloudCore, spec: ServiceSpec, tenant: str, region: str) -> RegionLoadBalancers:
    return backend_region(core, spec, "loadbalancer", tenant, region)


def _region_of(request: Request, spec: ServiceSpec) -> RegionLoadBalancers:
    return region_of(request, spec, "loadbalancer")


def _clb(request: Request) -> RegionLoadBalancers:
    return _region_of(request, CLB)


def _registry(request: Request) -> BehaviorRegistry:
    return _region_of(request, CLB_CONTROL).registry


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["lb_id"], request.path_params["node_id"]


def _empty(status: int) -> Response:
    return Response(b"", status)


# Load balancers ----------------------------------------------------------------------


def create_load_balancer(core: CloudCore, tenant: str, region: str, body: bytes) -> Answer:
    """Create a load balancer; metadata presets and creation behaviors may fail or delay it."""
    lbs = _region(core, CLB, tenant, region)  # before the body: a bad region wins
    lb = lbs.create(json_object(body))
    return json_answer(202, views.load_balancer_json(lb))


@clb_errors
async def list_load_balancers(request: Request) -> Response:
    """List load balancers with their node counts; ``status`` and ``nodeaddress`` filters."""
    query = request.query_params
    lbs = _clb(request).list_load_balancers(query.get("status"), query.get("nodeaddress"))
    return json_response({"loadBalancers": [views.load_balancer_brief(lb) for lb in lbs]})


@clb_errors
async def get_load_balancer(request: Request) -> Response:
    """Show one load balancer, its status computed from the clock."""
    lb = _clb(request).get(request.path_params["lb_id"])
    return json_response({"loadBalancer": views.load_balancer_detail(lb)})


@clb_errors
async def delete_load_balancer(request: Request) -> Response:
    """Delete: PENDING-DELETE (``lb_pending_delete`` s), DELETED for an hour, then gone."""
    _clb(request).delete(request.path_params["lb_id"])
    return _empty(202)


@clb_errors
async def list_protocols(request: Request) -> Response:
    """The protocols a load balancer can balance, with their default ports."""
    _clb(request)
    protocols = [{"name": name, "port": port or 0} for name, port in PROTOCOLS.items()]
    return json_response({"protocols": protocols})


@clb_errors
async def list_algorithms(request: Request) -> Response:
    """The balancing algorithms."""
    _clb(request)
    return json_response({"algorithms": [{"name": name} for name in ALGORITHMS]})


# Health monitor ----------------------------------------------------------------------


@clb_errors
async def get_health_monitor(request: Request) -> Response:
    """A load balancer's health monitor (``{}`` when none is set)."""
    monitor = _clb(request).get_health_monitor(request.path_params["lb_id"])
    return json_response({"healthMonitor": monitor})


@clb_errors
async def set_health_monitor(request: Request) -> Response:
    """Set the health monitor (CONNECT, HTTP or HTTPS); new nodes then start OFFLINE."""
    region = _clb(request)
    region.set_health_monitor(request.path_params["lb_id"], await read_json_object(request))
    return _empty(202)


@clb_errors
async def delete_health_monitor(request: Request) -> Response:
    """Remove the health monitor."""
    _clb(request).delete_health_monitor(request.path_params["lb_id"])
    return _empty(202)


# Nodes -------------------------------------------------------------------------------


def add_nodes(core: CloudCore, tenant: str, region: str, lb_id: str, body: bytes) -> Answer:
    """Add a batch of nodes: 413 for duplicates or more than 25, 422 while immutable."""
    lbs = _region(core, CLB, tenant, region)
    nodes = lbs.add_nodes(lb_id, json_object(body))
    return json_answer(202, views.nodes_json(nodes))


@clb_errors
async def list_nodes(request: Request) -> Response:
    """List a load balancer's nodes (410 once it is DELETED)."""
    nodes = _clb(request).list_nodes(request.path_params["lb_id"])
    return json_response({"nodes": [views.node_view(node) for node in nodes]})


@clb_errors
async def delete_nodes(request: Request) -> Response:
    """Delete up to 10 nodes named by ``?id=``; all or nothing."""
    region = _clb(request)
    region.delete_nodes(request.path_params["lb_id"], request.query_params.getlist("id"))
    return _empty(202)


@clb_errors
async def get_node(request: Request) -> Response:
    """Show one node."""
    node = _clb(request).get_node(*_ids(request))
    return json_response({"node": views.node_view(node)})


@clb_errors
async def update_node(request: Request) -> Response:
    """Change a node's condition, weight or type (address, port and id are immutable)."""
    region = _clb(request)
    body = await read_json_object(request)
    region.update_node(*_ids(request), body)
    return _empty(202)


@clb_errors
async def delete_node(request: Request) -> Response:
    """Delete one node; the body is ``null``, as Mimic answered."""
    _clb(request).delete_node(*_ids(request))
    return json_response(None, 202)


async def node_feed(request: Request) -> Response:
    """A node's Atom feed of "Node successfully created/updated" entries."""
    try:
        node = _clb(request).get_node(*_ids(request))
    except DomainError as exc:
        code = exc.code if isinstance(exc, ClbError) else status_of(exc)
        return Response(views.xml_error(code, exc.message), code, media_type=views.ATOM_TYPE)
    return Response(views.node_feed(node), 200, media_type=views.ATOM_TYPE)


# Control plane -----------------------------------------------------------------------


@clb_errors
async def set_attributes(request: Request) -> Response:
    """Set a load balancer's status: ACTIVE, ERROR, PENDING_DELETE or PENDING_UPDATE."""
    region = _region_of(request, CLB_CONTROL)
    lb_id = request.path_params["lb_id"]
    region.require(lb_id)
    region.set_attributes(lb_id, await read_json_object(request))
    return _empty(204)


@clb_errors
async def set_node_status(request: Request) -> Response:
    """Set a node's status: ONLINE or OFFLINE."""
    region = _region_of(request, CLB_CONTROL)
    region.require(*_ids(request))
    region.set_node_status(*_ids(request), await read_json_object(request))
    return _empty(200)


def routes() -> list[BaseRoute]:
    """Every CLB route, mounted at the catalog's URL layout, but for the load balancer create
    and the node add: the data plane answers them (simulacra/dataplane/cloud.py)."""
    p = CLB.mount_path  # /mimicking/LoadBalancerApi-<hex>/{region}/v2/{tenant}
    lb = p + "/loadbalancers/{lb_id}"
    node = lb + "/nodes/{node_id}"
    c = CLB_CONTROL.mount_path
    node_status = c + "/loadbalancers/{lb_id}/nodes/{node_id}/status"
    return [
        Route(p + "/loadbalancers", list_load_balancers, methods=["GET"]),
        Route(p + "/loadbalancers/protocols", list_protocols, methods=["GET"]),
        Route(p + "/loadbalancers/algorithms", list_algorithms, methods=["GET"]),
        Route(lb, get_load_balancer, methods=["GET"]),
        Route(lb, delete_load_balancer, methods=["DELETE"]),
        Route(lb + "/healthmonitor", get_health_monitor, methods=["GET"]),
        Route(lb + "/healthmonitor", set_health_monitor, methods=["PUT"]),
        Route(lb + "/healthmonitor", delete_health_monitor, methods=["DELETE"]),
        Route(lb + "/nodes", list_nodes, methods=["GET"]),
        Route(lb + "/nodes", delete_nodes, methods=["DELETE"]),
        # Before the plain node route, which would take "<id>.atom" as a node id.
        Route(node + ".atom", node_feed, methods=["GET"]),
        Route(node, get_node, methods=["GET"]),
        Route(node, update_node, methods=["PUT"]),
        Route(node, delete_node, methods=["DELETE"]),
        *control.behavior_routes(c + "/behaviors/creation", _registry, "load_balancer_creation"),
        Route(c + "/loadbalancer/{lb_id}/attributes", set_attributes, methods=["PATCH"]),
        Route(node_status, set_node_status, methods=["PUT"]),
    ]
