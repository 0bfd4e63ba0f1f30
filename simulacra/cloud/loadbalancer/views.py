"""CLB's JSON (and Atom) shapes for the model's values, in Mimic's key order.

A load balancer's detail shows ``nodes`` and ``metadata`` only when it has some, as Mimic
did; the list shows a ``nodeCount`` instead of nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

import orjson

from simulacra.clock import iso8601
from simulacra.cloud.loadbalancer.model import LoadBalancer, Node, VirtualIp, source_addresses

ATOM_TYPE = "application/atom+xml"
_CLB_XMLNS = "http://docs.openstack.org/loadbalancers/api/v1.0"


def node_view(node: Node) -> dict[str, Any]:
    return {
        "address": node.address,
        "port": node.port,
        "type": node.type,
        "weight": node.weight,
        "condition": node.condition,
        "id": node.id,
        "status": node.status,
    }


def nodes_json(nodes: Iterable[Node]) -> bytes:
    """``{"nodes": [...]}`` as JSON, the answer to a node add."""
    return orjson.dumps({"nodes": [node_view(node) for node in nodes]})


def _virtual_ip(vip: VirtualIp) -> dict[str, Any]:
    return {"address": vip.address, "id": vip.id, "type": vip.type, "ipVersion": vip.ip_version}


def load_balancer_brief(lb: LoadBalancer) -> dict[str, Any]:
    """An entry of ``GET /loadbalancers``."""
    return {
        "name": lb.name,
        "protocol": lb.protocol,
        "id": lb.id,
        "port": lb.port,
        "algorithm": lb.algorithm,
        "status": lb.status,
        "timeout": lb.timeout,
        "created": {"time": iso8601(lb.created)},
        "virtualIps": [_virtual_ip(vip) for vip in lb.virtual_ips],
        "updated": {"time": iso8601(lb.updated)},
        "nodeCount": len(lb.nodes),
    }


def load_balancer_detail(lb: LoadBalancer) -> dict[str, Any]:
    """``{"loadBalancer": ...}`` of a create or a GET."""
    options = lb.options
    detail: dict[str, Any] = {
        "name": lb.name,
        "id": lb.id,
        "protocol": lb.protocol,
        "port": lb.port,
        "algorithm": lb.algorithm,
        "status": lb.status,
        "cluster": {"name": "test-cluster"},
        "timeout": lb.timeout,
        "created": {"time": iso8601(lb.created)},
        "virtualIps": [_virtual_ip(vip) for vip in lb.virtual_ips],
        "sourceAddresses": source_addresses(lb.region),
        "httpsRedirect": options["httpsRedirect"],
        "updated": {"time": iso8601(lb.updated)},
        "halfClosed": options["halfClosed"],
        "connectionLogging": dict(options["connectionLogging"]),
        "contentCaching": dict(options["contentCaching"]),
    }
    for key in ("sessionPersistence", "connectionThrottle"):
        if key in options:
            detail[key] = dict(options[key])
    if lb.health_monitor:
        detail["healthMonitor"] = dict(lb.health_monitor)
    if lb.metadata:
        detail["metadata"] = [
            {"id": item.id, "key": item.key, "value": item.value} for item in lb.metadata
        ]
    if lb.nodes:
        detail["nodes"] = [node_view(node) for node in lb.nodes.values()]
    return detail


def load_balancer_json(lb: LoadBalancer) -> bytes:
    """``{"loadBalancer": ...}`` as JSON, the answer to a create."""
    return orjson.dumps({"loadBalancer": load_balancer_detail(lb)})


def node_feed(node: Node) -> str:
    """The node's Atom feed, as Mimic served it (oldest entry first)."""
    entries = "".join(
        f"<entry><summary>{escape(summary)}</summary><updated>{iso8601(at)}</updated></entry>"
        for summary, at in node.feed
    )
    return f'<feed xmlns="http://www.w3.org/2005/Atom">{entries}</feed>'


def xml_error(code: int, message: str) -> str:
    """CLB's XML errors for the Atom route: ``itemNotFound`` for 404, a bare message else."""
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    if code == 404:
        return (
            f'{head}<itemNotFound xmlns="{_CLB_XMLNS}" code="404">'
            f"<message>{escape(message)}</message></itemNotFound>"
        )
    return f'{head}<message xmlns="{_CLB_XMLNS}" code="{code}">{escape(message)}</message>'
