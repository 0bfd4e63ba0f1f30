"""The compute mock's HTTP edge: Nova v2 as Rackspace serves it, and its control plane.

Handlers translate HTTP to ``RegionCompute`` calls and its values or errors to Nova's
JSON; they hold no state. Nova errors are wrapped (``{"itemNotFound": {...}}``), the
control plane's are flat (``{"message", "code"}``), as in Mimic.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.cloud import control
from simulacra.cloud.behaviors import BehaviorRegistry
from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.compute import views
from simulacra.cloud.compute.faults import Fault
from simulacra.cloud.compute.model import RegionCompute
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import (
    backend_region,
    cloud,
    flat_errors,
    json_object,
    read_json_object,
    region_of,
    renders_errors,
    request_base_url,
    served_region,
    status_of,
)
from simulacra.dataplane.request import Answer, json_answer, text_answer
from simulacra.errors import DomainError
from simulacra.web import json_response

JSON = "application/json"

NOVA = ServiceSpec("NovaApi", "cloudServersOpenStack", "compute")
NOVA_CONTROL = ServiceSpec("NovaControlApi", "cloudServersBehavior", "compute")

# Nova's error body key for each status; anything else is a computeFault.
_ERROR_KINDS = {
    400: "badRequest",
    403: "forbidden",
    404: "itemNotFound",
    409: "conflictingRequest",
    413: "overLimit",
}

# Statuses of the server actions (Mimic's, which Rackspace answered at the time).
_ACTION_STATUS = {
    "resize": 202,
    "confirmResize": 204,
    "revertResize": 202,
    "rescue": 200,
    "unrescue": 200,
    "reboot": 202,
    "rebuild": 202,
    "changePassword": 202,
    "createImage": 202,
    "os-stop": 202,
    "os-start": 202,
}


def nova_error(exc: DomainError) -> Answer:
    """Nova's ``{kind: {"message", "code"}}``, or the bare message for ``kind == "string"``."""
    if isinstance(exc, Fault):
        code, kind = exc.code, exc.kind
    else:
        code = status_of(exc)
        kind = _ERROR_KINDS.get(code, "computeFault")
    if kind == "string":
        return text_answer(code, exc.message)
    return json_answer(code, orjson.dumps({kind: {"message": exc.message, "code": code}}))


nova_errors = renders_errors(nova_error)


def _region(core: CloudCore, spec: ServiceSpec, tenant: str, region: str) -> RegionCompute:
    return backend_region(core, spec, "compute", tenant, region)


def _region_of(request: Request, spec: ServiceSpec) -> RegionCompute:
    return region_of(request, spec, "compute")


def _check_region(request: Request, spec: ServiceSpec) -> None:
    served_region(cloud(request), spec, request.path_params["region"])


def _nova(request: Request) -> RegionCompute:
    return _region_of(request, NOVA)


def _registry(request: Request) -> BehaviorRegistry:
    return _region_of(request, NOVA_CONTROL).registry


def _urls_under(base_url: str, region: str, tenant: str) -> views.Urls:
    """Where a region's and tenant's links point, under ``base_url``."""
    return views.Urls(f"{base_url}/mimicking/{NOVA.service_id}/{region}", tenant)


def _urls(request: Request) -> views.Urls:
    params = request.path_params
    return _urls_under(request_base_url(request), params["region"], params.get("tenant", ""))


def _empty(status: int) -> Response:
    return Response(b"", status)


# Version discovery -----------------------------------------------------------------


@nova_errors
async def get_version(request: Request) -> Response:
    """The v2.0 version document (novaclient's discovery reads it at the endpoint)."""
    _check_region(request, NOVA)
    return json_response({"version": views.version(_urls(request))})


@nova_errors
async def list_versions(request: Request) -> Response:
    """The versions this compute endpoint offers: only v2.0."""
    _check_region(request, NOVA)
    return json_response({"versions": [views.version(_urls(request))]})


# Servers ---------------------------------------------------------------------------


def create_server(core: CloudCore, base_url: str, tenant: str, region: str, body: bytes) -> Answer:
    """Create a server; metadata presets and creation behaviors may fail or delay it."""
    compute = _region(core, NOVA, tenant, region)  # before the body: a bad region wins, as in Mimic
    server = compute.create_server(json_object(body))
    urls = _urls_under(base_url, region, tenant)
    return json_answer(202, views.server_created_json(server, urls))


def _list(request: Request, detail: bool) -> Response:
    region = _nova(request)
    query = request.query_params
    page = region.list_servers(
        name=query.get("name"),
        limit=query.get("limit"),
        marker=query.get("marker"),
        changes_since=query.get("changes-since"),
        status=query.get("status"),
        image=query.get("image"),
        flavor=query.get("flavor"),
    )
    urls = _urls(request)
    now = region.clock.seconds()
    extra: dict[str, Any] = {}
    if page.next_marker is not None:
        params = {"limit": query["limit"], "marker": page.next_marker}
        if query.get("name"):
            params["name"] = query["name"]
        path = "servers/detail" if detail else "servers"
        href = f"{urls.root}/v2/{urls.tenant}/{path}?{urlencode(params)}"
        extra["servers_links"] = [{"href": href, "rel": "next"}]
    if detail:
        # Each server's JSON is cached on it (views.server_detail_json): join, don't rebuild.
        items = [views.server_detail_json(s, urls, now) for s in page.servers]
        return Response(views.json_list("servers", items, extra), media_type=JSON)
    servers = [views.server_brief(s, urls) for s in page.servers]
    return json_response({"servers": servers, **extra})


@nova_errors
async def list_servers(request: Request) -> Response:
    """List servers (id, name, links); name, limit, marker, changes-since, status filters."""
    return _list(request, detail=False)


@nova_errors
async def list_servers_detail(request: Request) -> Response:
    """List servers with details; the same filters as the plain list."""
    return _list(request, detail=True)


@nova_errors
async def get_server(request: Request) -> Response:
    """Show one server, its status computed from the clock."""
    region = _nova(request)
    server = region.get_server(request.path_params["server_id"])
    detail = views.server_detail_json(server, _urls(request), region.clock.seconds())
    return Response(b'{"server":' + detail + b"}", media_type=JSON)


@nova_errors
async def delete_server(request: Request) -> Response:
    """Delete a server (``delete_server_failure`` may refuse the first deletes)."""
    _nova(request).delete_server(request.path_params["server_id"])
    return _empty(204)


@nova_errors
async def get_ips(request: Request) -> Response:
    """A server's addresses by network (private, public)."""
    addresses = _nova(request).addresses(request.path_params["server_id"])
    return json_response({"addresses": addresses})


@nova_errors
async def get_network_ips(request: Request) -> Response:
    """A server's addresses on one network."""
    params = request.path_params
    return json_response(_nova(request).addresses(params["server_id"], params["network"]))


# Metadata --------------------------------------------------------------------------


@nova_errors
async def get_metadata(request: Request) -> Response:
    """A server's metadata."""
    metadata = _nova(request).get_metadata(request.path_params["server_id"])
    return json_response({"metadata": metadata})


@nova_errors
async def replace_metadata(request: Request) -> Response:
    """Replace a server's metadata with ``{"metadata": {...}}``."""
    region = _nova(request)
    body = await read_json_object(request)
    metadata = region.replace_metadata(request.path_params["server_id"], body)
    return json_response({"metadata": metadata})


@nova_errors
async def update_metadata(request: Request) -> Response:
    """Merge ``{"metadata": {...}}`` into a server's metadata."""
    region = _nova(request)
    body = await read_json_object(request)
    metadata = region.update_metadata(request.path_params["server_id"], body)
    return json_response({"metadata": metadata})


@nova_errors
async def get_metadata_item(request: Request) -> Response:
    """One metadata item as ``{"meta": {key: value}}``."""
    params = request.path_params
    value = _nova(request).get_metadata_item(params["server_id"], params["key"])
    return json_response({"meta": {params["key"]: value}})


@nova_errors
async def set_metadata_item(request: Request) -> Response:
    """Set one metadata item from ``{"meta": {key: value}}``."""
    params = request.path_params
    region = _nova(request)
    body = await read_json_object(request)
    value = region.set_metadata_item(params["server_id"], params["key"], body)
    return json_response({"meta": {params["key"]: value}})


@nova_errors
async def delete_metadata_item(request: Request) -> Response:
    """Remove one metadata item."""
    params = request.path_params
    _nova(request).delete_metadata_item(params["server_id"], params["key"])
    return _empty(204)


# Actions ---------------------------------------------------------------------------


@nova_errors
async def server_action(request: Request) -> Response:
    """Server actions: resize, confirm/revertResize, (un)rescue, reboot, rebuild, password..."""
    region = _nova(request)
    body = await read_json_object(request)
    result = region.perform_action(request.path_params["server_id"], body)
    status = _ACTION_STATUS[result.action]
    urls = _urls(request)
    if result.action == "rescue":
        return json_response({"adminPass": result.admin_pass}, status)
    if result.action == "rebuild":
        detail = views.server_detail(result.server, urls, region.clock.seconds())
        detail["adminPass"] = result.admin_pass
        return json_response({"server": detail}, status)
    if result.action == "createImage" and result.image is not None:
        location = urls.self_link("images", result.image.id)
        return Response(b"", status, headers={"Location": location})
    return _empty(status)


# Images, flavors, limits -------------------------------------------------------------


@nova_errors
async def list_images(request: Request) -> Response:
    """List images (id, name, links): Rackspace's public images and this tenant's snapshots."""
    query = request.query_params
    images = _nova(request).list_images(query.get("limit"), query.get("marker"))
    urls = _urls(request)
    return json_response({"images": [views.image_brief(i, urls) for i in images]})


@nova_errors
async def list_images_detail(request: Request) -> Response:
    """List images with details."""
    query = request.query_params
    images = _nova(request).list_images(query.get("limit"), query.get("marker"))
    urls = _urls(request)
    return json_response({"images": [views.image_detail(i, urls) for i in images]})


@nova_errors
async def get_image(request: Request) -> Response:
    """Show one image; the ``invalid_image_ref`` preset ids are a 404."""
    image = _nova(request).get_image(request.path_params["image_id"])
    return json_response({"image": views.image_detail(image, _urls(request))})


@nova_errors
async def list_flavors(request: Request) -> Response:
    """List flavors (id, name, links); OnMetal flavors only in IAD."""
    query = request.query_params
    flavors = _nova(request).list_flavors(query.get("limit"), query.get("marker"))
    urls = _urls(request)
    return json_response({"flavors": [views.flavor_brief(f, urls) for f in flavors]})


@nova_errors
async def list_flavors_detail(request: Request) -> Response:
    """List flavors with details."""
    query = request.query_params
    flavors = _nova(request).list_flavors(query.get("limit"), query.get("marker"))
    urls = _urls(request)
    return json_response({"flavors": [views.flavor_detail(f, urls) for f in flavors]})


@nova_errors
async def get_flavor(request: Request) -> Response:
    """Show one flavor."""
    flavor = _nova(request).get_flavor(request.path_params["flavor_id"])
    return json_response({"flavor": views.flavor_detail(flavor, _urls(request))})


@nova_errors
async def get_limits(request: Request) -> Response:
    """Absolute limits, with the instances, cores and RAM in use."""
    return json_response({"limits": {"absolute": _nova(request).limits(), "rate": []}})


# Keypairs ----------------------------------------------------------------------------


@nova_errors
async def list_keypairs(request: Request) -> Response:
    """List keypairs."""
    keypairs = _nova(request).list_keypairs()
    return json_response({"keypairs": [{"keypair": views.keypair_view(k)} for k in keypairs]})


@nova_errors
async def create_keypair(request: Request) -> Response:
    """Import a public key, or generate a pair when none is given."""
    region = _nova(request)
    keypair = region.create_keypair(await read_json_object(request))
    view = views.keypair_view(keypair)
    if keypair.private_key is not None:
        view["private_key"] = keypair.private_key
    return json_response({"keypair": view})


@nova_errors
async def get_keypair(request: Request) -> Response:
    """Show one keypair."""
    keypair = _nova(request).get_keypair(request.path_params["name"])
    return json_response({"keypair": views.keypair_view(keypair, full=True)})


@nova_errors
async def delete_keypair(request: Request) -> Response:
    """Delete a keypair."""
    _nova(request).delete_keypair(request.path_params["name"])
    return _empty(202)


# Control plane -----------------------------------------------------------------------


@flat_errors
async def set_attributes(request: Request) -> Response:
    """Set server statuses: ``{"status": {server_id: STATUS}}``; 400 if any id is unknown."""
    _region_of(request, NOVA_CONTROL).set_statuses(await read_json_object(request))
    return _empty(201)


def routes() -> list[BaseRoute]:
    """Every compute route, mounted at the catalog's URL layout, but for the server create:
    the data plane answers it (simulacra/dataplane/cloud.py)."""
    p = NOVA.mount_path  # /mimicking/NovaApi-<hex>/{region}/v2/{tenant}
    region_root = f"/mimicking/{NOVA.service_id}/{{region}}"
    server = p + "/servers/{server_id}"
    c = NOVA_CONTROL.mount_path
    return [
        Route(region_root, list_versions, methods=["GET"]),
        Route(region_root + "/", list_versions, methods=["GET"]),
        Route(region_root + "/v2", get_version, methods=["GET"]),
        Route(region_root + "/v2/", get_version, methods=["GET"]),
        Route(p, get_version, methods=["GET"]),
        Route(p + "/", get_version, methods=["GET"]),
        Route(p + "/servers", list_servers, methods=["GET"]),
        Route(p + "/servers/detail", list_servers_detail, methods=["GET"]),
        Route(server, get_server, methods=["GET"]),
        Route(server, delete_server, methods=["DELETE"]),
        Route(server + "/ips", get_ips, methods=["GET"]),
        Route(server + "/ips/{network}", get_network_ips, methods=["GET"]),
        Route(server + "/metadata", get_metadata, methods=["GET"]),
        Route(server + "/metadata", replace_metadata, methods=["PUT"]),
        Route(server + "/metadata", update_metadata, methods=["POST"]),
        Route(server + "/metadata/{key}", get_metadata_item, methods=["GET"]),
        Route(server + "/metadata/{key}", set_metadata_item, methods=["PUT"]),
        Route(server + "/metadata/{key}", delete_metadata_item, methods=["DELETE"]),
        Route(server + "/action", server_action, methods=["POST"]),
        Route(p + "/images", list_images, methods=["GET"]),
        Route(p + "/images/detail", list_images_detail, methods=["GET"]),
        Route(p + "/images/{image_id}", get_image, methods=["GET"]),
        Route(p + "/flavors", list_flavors, methods=["GET"]),
        Route(p + "/flavors/detail", list_flavors_detail, methods=["GET"]),
        Route(p + "/flavors/{flavor_id}", get_flavor, methods=["GET"]),
        Route(p + "/limits", get_limits, methods=["GET"]),
        Route(p + "/os-keypairs", list_keypairs, methods=["GET"]),
        Route(p + "/os-keypairs", create_keypair, methods=["POST"]),
        Route(p + "/os-keypairs/{name}", get_keypair, methods=["GET"]),
        Route(p + "/os-keypairs/{name}", delete_keypair, methods=["DELETE"]),
        *control.behavior_routes(c + "/behaviors/creation", _registry, "server_creation"),
        Route(c + "/attributes", set_attributes, methods=["POST"]),
        Route(c + "/attributes/", set_attributes, methods=["POST"]),
    ]
