"""The image service's HTTP edge: Glance v2 as Rackspace's ``cloudImages`` served it.

Handlers translate HTTP to ``ImageService`` calls and its values or errors to Glance's
JSON; they hold no state. Errors are ``{"code", "title", "message"}``.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.http import (
    cloud,
    renders_errors,
    request_base_url,
    served_region,
    status_of,
)
from simulacra.cloud.image import views
from simulacra.cloud.image.model import ImageService
from simulacra.dataplane.request import Answer, json_answer
from simulacra.errors import DomainError
from simulacra.web import json_response

GLANCE = ServiceSpec("GlanceApi", "cloudImages", "image")

TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}


def glance_error(exc: DomainError) -> Answer:
    """Glance's ``{"code", "title", "message"}``."""
    status = status_of(exc)
    title = TITLES.get(status, "Error")
    return json_answer(
        status, orjson.dumps({"code": status, "title": title, "message": exc.message})
    )


glance_errors = renders_errors(glance_error)


def _region(request: Request) -> str:
    return served_region(cloud(request), GLANCE, request.path_params["region"])


def _service(request: Request) -> ImageService:
    return cloud(request).services["image"]


def _root(request: Request) -> str:
    base = request_base_url(request)
    return f"{base}/mimicking/{GLANCE.service_id}/{request.path_params['region']}"


@glance_errors
async def list_versions(request: Request) -> Response:
    """Glance's versions (300, as Glance answers at its root): only v2.0."""
    _region(request)
    return json_response(views.versions(_root(request)), 300)


@glance_errors
async def list_images(request: Request) -> Response:
    """List images (25 a page, ``next`` link), compute's images and snapshots; Glance filters."""
    region = _region(request)
    query = request.query_params
    grouped = {key: query.getlist(key) for key in query}
    page = _service(request).list_images(request.path_params["tenant"], region, grouped)
    return json_response(views.listing(page, query.multi_items()))


@glance_errors
async def get_image(request: Request) -> Response:
    """Show one image by id (the same ids as compute's ``/images``)."""
    region = _region(request)
    params = request.path_params
    image = _service(request).get_image(params["tenant"], region, params["image_id"])
    return json_response(views.image_view(image))


def routes() -> list[BaseRoute]:
    """Every image route, mounted at the catalog's URL layout, and discovery at the root."""
    p = GLANCE.mount_path  # /mimicking/GlanceApi-<hex>/{region}/v2/{tenant}
    root = f"/mimicking/{GLANCE.service_id}/{{region}}"
    return [
        # keystoneauth looks for the version list at the region root (the catalog URL
        # less its tenant and version), and may try the versioned URLs first.
        Route(root, list_versions, methods=["GET"]),
        Route(root + "/", list_versions, methods=["GET"]),
        Route(root + "/versions", list_versions, methods=["GET"]),
        Route(root + "/v2", list_versions, methods=["GET"]),
        Route(root + "/v2/", list_versions, methods=["GET"]),
        Route(p, list_versions, methods=["GET"]),
        Route(p + "/", list_versions, methods=["GET"]),
        Route(p + "/images", list_images, methods=["GET"]),
        Route(p + "/images/{image_id}", get_image, methods=["GET"]),
        # novaclient's image lookup (and glanceclient) take the catalog URL for Glance's
        # unversioned root and add /v2 themselves; openstacksdk uses it as it is.
        Route(p + "/v2/images", list_images, methods=["GET"]),
        Route(p + "/v2/images/{image_id}", get_image, methods=["GET"]),
    ]
