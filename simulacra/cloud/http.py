"""HTTP helpers for the cloud mocks' edges: the base URL, JSON bodies, errors in envelopes.

Each API family has one error renderer, ``DomainError -> Answer``; its Starlette routes use
it through ``renders_errors``, and the data plane's routes (simulacra/dataplane/cloud.py)
call it directly, so an error reads the same whichever way the request came.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response

from simulacra.cloud.catalog import ServiceSpec
from simulacra.cloud.core import CloudCore
from simulacra.dataplane.request import Answer, json_answer
from simulacra.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    PreconditionFailed,
    TooLarge,
    Unavailable,
)
from simulacra.web import body_limit, read_body, starlette_response

Handler = Callable[[Request], Awaitable[Response]]
Renderer = Callable[[DomainError], Answer]


def cloud(request: Request) -> CloudCore:
    return request.app.state.cloud


# The base URL ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)  # the Host header is the client's: the cache is bounded
def base_url(
    scheme: str, host: bytes | None, server: tuple[str, int] | None, root_path: str
) -> str:
    """The base of the links and catalogs, ``str(request.base_url)`` without its last slash.

    Built from the scheme, the first Host header, the address the server accepted the
    connection on (when the Host header is missing or invalid) and the root path, as
    Starlette builds it: its ``URL`` does the parsing, so an odd Host reads the same. Cached,
    as it parses and re-joins a URL (~9% of a Nova create's CPU time, bench/peers.py).
    """
    path = root_path if root_path.endswith("/") else root_path + "/"
    headers = [] if host is None else [(b"host", host)]
    scope = {"scheme": scheme, "server": server, "path": path, "headers": headers}
    return str(URL(scope=scope)).rstrip("/")


def request_base_url(request: Request) -> str:
    """``base_url`` of a Starlette request."""
    scope = request.scope
    host = next((value for name, value in request.headers.raw if name == b"host"), None)
    server = scope.get("server")
    return base_url(
        scope.get("scheme", "http"),
        host,
        None if server is None else (server[0], server[1]),  # granian's is a list
        scope.get("app_root_path", scope.get("root_path", "")),
    )


# Bodies and regions ------------------------------------------------------------------


async def read_json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; Invalid (400) for anything else."""
    body = await read_body(request, body_limit(request))
    return json_object(body, required=required)


def json_object(body: bytes, *, required: bool = True) -> dict[str, Any]:
    """A request body as a JSON object; Invalid (400) for anything else."""
    if not body.strip():
        if required:
            raise Invalid("request body is empty; a JSON object is expected")
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid("Invalid JSON request body") from None
    if not isinstance(value, dict):
        raise Invalid("request body must be a JSON object")
    return value


def served_region(core: CloudCore, spec: ServiceSpec, region: str) -> str:
    """``region``, if ``spec`` is served there; NotFound (404) otherwise."""
    if not core.catalog.serves(spec, region):
        raise NotFound(f"region {region} is not served by {spec.name}")
    return region


def backend_region(
    core: CloudCore, spec: ServiceSpec, service: str, tenant: str, region: str
) -> Any:
    """A tenant's region of ``service``'s backend, once ``spec`` is served there (else 404)."""
    served_region(core, spec, region)
    return core.services[service].region(tenant, region)


def region_of(request: Request, spec: ServiceSpec, service: str) -> Any:
    """``backend_region`` for a Starlette route with ``{tenant}`` and ``{region}``."""
    params = request.path_params
    return backend_region(cloud(request), spec, service, params["tenant"], params["region"])


# Errors ------------------------------------------------------------------------------

_STATUSES: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    AlreadyExists: 409,
    PreconditionFailed: 412,
    TooLarge: 413,
    Unavailable: 503,  # the shared cloud's store is out of reach (cloud/shared.py)
}


def status_of(exc: DomainError) -> int:
    return _STATUSES.get(type(exc), 400)


def flat_answer(status: int, message: str) -> Answer:
    """Mimic's control-plane and CLB error shape: ``{"message", "code"}``."""
    return json_answer(status, orjson.dumps({"message": message, "code": status}))


def flat_error(exc: DomainError) -> Answer:
    """``exc`` in Mimic's flat shape (the control plane's renderer)."""
    return flat_answer(status_of(exc), exc.message)


def renders_errors(render: Renderer) -> Callable[[Handler], Handler]:
    """A decorator answering a route's ``DomainError`` with ``render(error)``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except DomainError as exc:
                return starlette_response(render(exc))

        return wrapped

    return decorate


flat_errors = renders_errors(flat_error)
