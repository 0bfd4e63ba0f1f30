"""Image service: Glance v2 as Rackspace's ``cloudImages`` (Mimic's GlanceApi) served it.

It has no state of its own: ``model`` reads the compute backend's images (the region's
public images and the tenant's snapshots) and filters, sorts and pages them as Glance
does; ``views`` holds the JSON shapes and ``routes`` the HTTP edge.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.cloud.core import CloudCore
from simulacra.cloud.image.model import ImageService
from simulacra.cloud.image.routes import GLANCE, routes

__all__ = ["GLANCE", "install"]


def install(core: CloudCore) -> list[BaseRoute]:
    """Register the catalog entry and the service (over compute's images); return routes."""
    core.catalog.register(GLANCE)
    # Looked up per request, so it is the compute backend installed before this service.
    core.services["image"] = ImageService(
        lambda tenant, region: core.services["compute"].region(tenant, region)
    )
    return routes()
