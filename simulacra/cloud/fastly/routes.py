"""The Fastly mock's HTTP edge, under ``/fastly`` (point a client's host there).

Parameters are read as Fastly and Mimic read them: form fields (what the fastly SDK sends),
query parameters, or a JSON object body, merged in that order of precedence (body first).
The customer is picked by the ``Fastly-Key`` header; errors are Fastly's
``{"msg", "detail"}`` with a real status, never a 500 for an unknown id, and so are the
answers to a path no route has (404) or a method a path does not take (405): see
``FastlyFallback``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from simulacra.cloud.fastly import views
from simulacra.cloud.fastly.model import (
    DOMAIN,
    KINDS,
    FastlyBackend,
    FastlyError,
    Kind,
    Params,
    bad_request,
)
from simulacra.cloud.http import Handler, cloud, renders_errors, status_of
from simulacra.dataplane.request import Answer, json_answer
from simulacra.errors import DomainError, shown
from simulacra.web import body_limit, json_response, read_body, starlette_response

PREFIX = "/fastly"


def fastly_error(exc: DomainError) -> Answer:
    """Fastly's ``{"msg", "detail"}``, with the error's own status."""
    if isinstance(exc, FastlyError):
        status, body = exc.status, {"msg": exc.msg, "detail": exc.detail}
    else:
        status, body = status_of(exc), {"msg": "Bad request", "detail": exc.message}
    return json_answer(status, orjson.dumps(body))


fastly_errors = renders_errors(fastly_error)


def _backend(request: Request) -> FastlyBackend:
    return cloud(request).services["fastly"]


def _token(request: Request) -> str:
    return request.headers.get("fastly-key", "")


async def _params(request: Request) -> Params:
    """Query parameters, overridden by form fields or a JSON object body."""
    params: Params = dict(request.query_params)
    body = await read_body(request, body_limit(request))
    if not body.strip():
        return params
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            document: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad_request("request body is not valid JSON") from None
        if not isinstance(document, dict):
            raise bad_request("request body must be a JSON object")
        params.update(document)
        return params
    try:
        fields = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("request body must be form fields (key=value&...)") from None
    params.update(fields)
    return params


def _path(request: Request) -> tuple[str, str]:
    return request.path_params["service_id"], request.path_params["version"]


# Account and services ------------------------------------------------------------------


async def health(request: Request) -> Response:
    """Health check: ``{"status": "ok"}`` (Mimic's)."""
    return json_response({"status": "ok"})


@fastly_errors
async def current_customer(request: Request) -> Response:
    """The customer of the ``Fastly-Key`` token (one per token; no token: a shared one)."""
    return json_response(views.customer_view(_backend(request).customer(_token(request))))


@fastly_errors
async def get_customer(request: Request) -> Response:
    """A customer by id (only the token's own)."""
    customer_id = request.path_params["customer_id"]
    customer = _backend(request).customer_by_id(_token(request), customer_id)
    return json_response(views.customer_view(customer))


@fastly_errors
async def create_service(request: Request) -> Response:
    """Create a service (name, comment, type) with an empty version 1."""
    service = _backend(request).create_service(_token(request), await _params(request))
    return json_response(views.service_view(service))


@fastly_errors
async def list_services(request: Request) -> Response:
    """List the customer's services."""
    services = _backend(request).list_services(_token(request))
    return json_response([views.service_list_entry(s) for s in services])


@fastly_errors
async def search_service(request: Request) -> Response:
    """Find a service by ``?name=``; 404 when there is none."""
    name = request.query_params.get("name")
    service = _backend(request).search_service(_token(request), name)
    return json_response(views.service_view(service))


@fastly_errors
async def get_service(request: Request) -> Response:
    """Show a service and its versions."""
    service = _backend(request).service(_token(request), request.path_params["service_id"])
    return json_response(views.service_view(service))


@fastly_errors
async def update_service(request: Request) -> Response:
    """Rename a service or change its comment."""
    backend = _backend(request)
    params = await _params(request)
    service = backend.update_service(_token(request), request.path_params["service_id"], params)
    return json_response(views.service_view(service))


@fastly_errors
async def delete_service(request: Request) -> Response:
    """Delete a service: ``{"status": "ok"}``."""
    _backend(request).delete_service(_token(request), request.path_params["service_id"])
    return json_response({"status": "ok"})


@fastly_errors
async def service_details(request: Request) -> Response:
    """A service with its active version's and one version's (``?version=``) configuration."""
    backend, token = _backend(request), _token(request)
    service = backend.service(token, request.path_params["service_id"])
    number = request.query_params.get("version")
    if number is not None:
        version = backend.version(token, service.id, number)
    else:
        version = service.active_version or service.latest_version
    return json_response(views.service_detail(service, version))


# Versions --------------------------------------------------------------------------


@fastly_errors
async def create_version(request: Request) -> Response:
    """Create the next version, empty: ``{"number", "service_id"}``."""
    version = _backend(request).create_version(_token(request), request.path_params["service_id"])
    return json_response(views.version_created(version))


@fastly_errors
async def list_versions(request: Request) -> Response:
    """List a service's versions."""
    versions = _backend(request).list_versions(_token(request), request.path_params["service_id"])
    return json_response([views.version_view(v) for v in versions])


@fastly_errors
async def get_version(request: Request) -> Response:
    """Show one version."""
    version = _backend(request).version(_token(request), *_path(request))
    return json_response(views.version_view(version))


@fastly_errors
async def update_version(request: Request) -> Response:
    """Change a version's comment."""
    backend = _backend(request)
    params = await _params(request)
    version = backend.update_version(_token(request), *_path(request), params)
    return json_response(views.version_view(version))


def _version_action(action: str, summary: str) -> Handler:
    @fastly_errors
    async def handler(request: Request) -> Response:
        backend = _backend(request)
        version = getattr(backend, action)(_token(request), *_path(request))
        return json_response(views.version_view(version))

    handler.__doc__ = summary
    handler.__name__ = handler.__qualname__ = f"{action}_version"
    return handler


activate_version = _version_action("activate", "Activate a version (and lock it); others stop.")
deactivate_version = _version_action("deactivate", "Deactivate a version.")
clone_version = _version_action("clone_version", "Copy a version's configuration to a new version.")
lock_version = _version_action("lock", "Lock a version.")


# Domains, backends, conditions, cache settings, response objects ---------------------


@fastly_errors
async def check_all_domains(request: Request) -> Response:
    """Check every domain's CNAME: ``[[domain, cname, ok], ...]``."""
    version, items = _backend(request).list_items(_token(request), *_path(request), DOMAIN)
    return json_response([views.domain_check(version, item) for item in items])


@fastly_errors
async def check_domain(request: Request) -> Response:
    """Check one domain's CNAME: ``[domain, cname, ok]``."""
    name = request.path_params["name"]
    version, item = _backend(request).get_item(_token(request), *_path(request), DOMAIN, name)
    return json_response(views.domain_check(version, item))


def _item_handlers(kind: Kind) -> dict[str, Handler]:
    """Create, list, get, update and delete handlers for one kind of configuration object."""

    @fastly_errors
    async def create(request: Request) -> Response:
        backend, params = _backend(request), await _params(request)
        version, item = backend.create_item(_token(request), *_path(request), kind, params)
        return json_response(views.item_view(kind, version, item))

    @fastly_errors
    async def listing(request: Request) -> Response:
        version, items = _backend(request).list_items(_token(request), *_path(request), kind)
        return json_response(views.items_view(kind, version, items))

    @fastly_errors
    async def get(request: Request) -> Response:
        name = request.path_params["name"]
        version, item = _backend(request).get_item(_token(request), *_path(request), kind, name)
        return json_response(views.item_view(kind, version, item))

    @fastly_errors
    async def update(request: Request) -> Response:
        backend, params = _backend(request), await _params(request)
        name = request.path_params["name"]
        version, item = backend.update_item(_token(request), *_path(request), kind, name, params)
        return json_response(views.item_view(kind, version, item))

    @fastly_errors
    async def delete(request: Request) -> Response:
        name = request.path_params["name"]
        _backend(request).delete_item(_token(request), *_path(request), kind, name)
        return json_response({"status": "ok"})

    label = kind.label.lower()
    handlers = {
        "create": (create, f"Create a {label} in a version."),
        "list": (listing, f"List a version's {label}s."),
        "get": (get, f"Show one {label} by name."),
        "update": (update, f"Update (or rename) a {label}."),
        "delete": (delete, f"Delete a {label}."),
    }
    for action, (handler, summary) in handlers.items():
        handler.__doc__ = summary
        handler.__name__ = handler.__qualname__ = f"{action}_{kind.segment}"
    return {action: handler for action, (handler, _) in handlers.items()}


# Settings ------------------------------------------------------------------------------


@fastly_errors
async def get_settings(request: Request) -> Response:
    """A version's general settings (default TTL, default host, stale-if-error)."""
    version = _backend(request).settings(_token(request), *_path(request))
    return json_response(views.settings_view(version))


@fastly_errors
async def update_settings(request: Request) -> Response:
    """Update a version's settings (``general.default_ttl``, ``general.default_host``...)."""
    backend, params = _backend(request), await _params(request)
    version = backend.update_settings(_token(request), *_path(request), params)
    return json_response(views.settings_view(version))


# Paths no route answers -----------------------------------------------------------------


class FastlyFallback(BaseRoute):
    """Every ``/fastly`` path that no Fastly route answered, in Fastly's ``{"msg", "detail"}``.

    Placed after the Fastly routes, so it sees only what they left: a method a path does not
    take (405, ``Allow`` naming every method it does take), a path that differs from a route's
    by a trailing slash (Starlette's 307 redirect, as before), anything else (404). Not a
    ``Route``: docs/implementation.md lists routes, and this is none.
    """

    def __init__(self, table: list[BaseRoute]) -> None:
        self.table = table

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path = scope["path"]
            if path == PREFIX or path.startswith(PREFIX + "/"):
                return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.response(scope)(scope, receive, send)

    def response(self, scope: Scope) -> Response:
        allowed: set[str] = set()
        for route in self.table:
            if isinstance(route, Route) and route.matches(scope)[0] is Match.PARTIAL:
                allowed.update(route.methods or ())
        method, path = scope["method"], scope["path"]
        if allowed:
            methods = ", ".join(sorted(allowed))
            detail = f"{method} is not allowed on {shown(path)}; allowed: {methods}"
            body = orjson.dumps({"msg": "Method not allowed", "detail": detail})
            return starlette_response(json_answer(405, body, [(b"allow", methods.encode())]))
        toggled = dict(scope, path=path.rstrip("/") if path.endswith("/") else path + "/")
        if any(route.matches(toggled)[0] is not Match.NONE for route in self.table):
            return RedirectResponse(str(URL(scope=toggled)))
        body = orjson.dumps(
            {"msg": "Record not found", "detail": f"No route for {method} {shown(path)}"}
        )
        return starlette_response(json_answer(404, body))


def routes() -> list[BaseRoute]:
    """Every Fastly route, under ``/fastly``, then the fallback for the paths they leave."""
    s = PREFIX + "/service/{service_id}"
    v = s + "/version/{version}"
    table: list[BaseRoute] = [
        Route(PREFIX, health, methods=["GET"]),
        Route(PREFIX + "/", health, methods=["GET"]),
        Route(PREFIX + "/current_customer", current_customer, methods=["GET"]),
        Route(PREFIX + "/customer/{customer_id}", get_customer, methods=["GET"]),
        Route(PREFIX + "/service", create_service, methods=["POST"]),
        Route(PREFIX + "/service", list_services, methods=["GET"]),
        Route(PREFIX + "/service/search", search_service, methods=["GET"]),
        Route(s, get_service, methods=["GET"]),
        Route(s, update_service, methods=["PUT"]),
        Route(s, delete_service, methods=["DELETE"]),
        Route(s + "/details", service_details, methods=["GET"]),
        Route(s + "/version", create_version, methods=["POST"]),
        Route(s + "/version", list_versions, methods=["GET"]),
        Route(v, get_version, methods=["GET"]),
        Route(v, update_version, methods=["PUT"]),
        Route(v + "/activate", activate_version, methods=["PUT"]),
        Route(v + "/deactivate", deactivate_version, methods=["PUT"]),
        Route(v + "/clone", clone_version, methods=["PUT"]),
        Route(v + "/lock", lock_version, methods=["PUT"]),
        # Before the domain routes, which would take "check_all" as a domain name.
        Route(v + "/domain/check_all", check_all_domains, methods=["GET"]),
        Route(v + "/domain/{name}/check", check_domain, methods=["GET"]),
        Route(v + "/settings", get_settings, methods=["GET"]),
        Route(v + "/settings", update_settings, methods=["PUT"]),
    ]
    for kind in KINDS:
        handlers = _item_handlers(kind)
        base = f"{v}/{kind.segment}"
        table += [
            Route(base, handlers["create"], methods=["POST"]),
            Route(base, handlers["list"], methods=["GET"]),
            Route(base + "/{name}", handlers["get"], methods=["GET"]),
            Route(base + "/{name}", handlers["update"], methods=["PUT"]),
            Route(base + "/{name}", handlers["delete"], methods=["DELETE"]),
        ]
    return [*table, FastlyFallback(table)]
