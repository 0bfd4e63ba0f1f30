"""Compute mock: Nova v2 as Rackspace serves it (Mimic's NovaApi and NovaControlApi).

``model`` holds the state machine, ``faults`` the creation event and metadata presets,
``catalog_data`` the canned images and flavors, ``views`` the JSON shapes and ``routes``
the HTTP edge.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.cloud import control
from simulacra.cloud.compute.faults import SERVER_PRESETS
from simulacra.cloud.compute.model import ComputeBackend
from simulacra.cloud.compute.routes import NOVA, NOVA_CONTROL, routes
from simulacra.cloud.core import CloudCore

__all__ = ["NOVA", "NOVA_CONTROL", "install"]


def install(core: CloudCore) -> list[BaseRoute]:
    """Register this service's catalog entries, backend and presets; return its routes."""
    core.catalog.register(NOVA)
    core.catalog.register(NOVA_CONTROL)
    core.services["compute"] = ComputeBackend(core.clock)
    control.register_presets("servers", SERVER_PRESETS)
    return routes()
