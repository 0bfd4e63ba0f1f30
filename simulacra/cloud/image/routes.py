"""The image service's HTTP edge: Glance v2 as Rackspace's ``cloudImages`` served it.

Handlers translate HTTP to ``ImageService`` calls and its values or errors to Glance's
JSON; they hold no state. Errors are ``{"code", "title", "message"}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.http import base_url, cloud, status_of
from simulacra.cloud.image import views
from simulacra.cloud.image.model import ImageService
from simulacra.errors import DomainError, NotFound
from simulacra.web import json_response

GLANCE = ServiceSpec("GlanceApi", "cloudImages", "image")

Handler = Callable[[Request], Awaitable[Response]]

TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}


def glance_error(status: int, message: str) -> Response:
    title = TITLES.get(status, "Error")
    return json_response({"code": status, "title": title, "message": message}, status)


def glance_errors(handler: Handler) -> Handler:
    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except DomainError as exc:
            return glance_error(status_of(exc), exc.message)

    return wrapped


def _region(request: Request) -> str:
    region = request.path_params["region"]
    if not cloud(request).catalog.serves(GLANCE, region):
        raise NotFound(f"region {region} is not served by {GLANCE.name}")
    return region


def _service(request: Request) -> ImageService:
    return cloud(request).services["image"]


def _root(request: Request) -> str:
    base = base_url(request)
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
