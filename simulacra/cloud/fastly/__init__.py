"""Fastly CDN mock (Mimic's ``/fastly``): services, versions and their configuration.

``model`` holds the state (per customer, picked by the ``Fastly-Key`` token), ``views`` the
JSON shapes the fastly SDK validates and ``routes`` the HTTP edge. Fastly is not in the
service catalog, as in Mimic: clients are pointed at ``<base>/fastly`` directly.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.cloud.core import CloudCore
from simulacra.cloud.fastly.model import FastlyBackend
from simulacra.cloud.fastly.routes import PREFIX, routes

__all__ = ["PREFIX", "install"]


def install(core: CloudCore) -> list[BaseRoute]:
    """Register this service's backend; return its routes."""
    core.services["fastly"] = FastlyBackend(core.clock)
    return routes()
