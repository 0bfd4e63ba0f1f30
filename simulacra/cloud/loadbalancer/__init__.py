"""Load balancer mock: Rackspace Cloud Load Balancers v1.0 (Mimic's LoadBalancerApi and
LoadBalancerControlApi).

``model`` holds the state machine, ``faults`` the creation event, metadata presets and
CLB's error bodies, ``views`` the JSON and Atom shapes and ``routes`` the HTTP edge.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.cloud import control
from simulacra.cloud.core import CloudCore
from simulacra.cloud.loadbalancer.faults import LB_PRESETS
from simulacra.cloud.loadbalancer.model import LoadBalancerBackend
from simulacra.cloud.loadbalancer.routes import CLB, CLB_CONTROL, routes

__all__ = ["CLB", "CLB_CONTROL", "install"]


def install(core: CloudCore) -> list[BaseRoute]:
    """Register this service's catalog entries, backend and presets; return its routes."""
    core.catalog.register(CLB)
    core.catalog.register(CLB_CONTROL)
    core.services["loadbalancer"] = LoadBalancerBackend(core.clock)
    control.register_presets("loadbalancers", LB_PRESETS)
    return routes()
