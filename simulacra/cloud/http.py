"""HTTP helpers for the cloud mocks' edges (Mimic's flat error bodies, JSON bodies)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from simulacra.cloud.core import CloudCore
from simulacra.errors import DomainError, Invalid
from simulacra.web import json_response, read_body


def cloud(request: Request) -> CloudCore:
    return request.app.state.cloud


_BASE_URLS: dict[tuple[Any, ...], str] = {}
_BASE_URLS_MAX = 1024  # the Host header is the client's: keep the cache bounded


def base_url(request: Request) -> str:
    """``str(request.base_url)`` without its trailing slash, the links' and catalog's base.

    Starlette builds it from the scheme, the server address, the Host header and the
    root path, parsing and re-joining a URL each time (~9% of a Nova create's CPU time,
    bench/peers.py); the answer is cached by those inputs.
    """
    scope = request.scope
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    server = scope.get("server")
    key = (
        scope.get("scheme", "http"),
        None if server is None else tuple(server),
        host,
        scope.get("app_root_path", scope.get("root_path", "")),
    )
    url = _BASE_URLS.get(key)
    if url is None:
        url = str(request.base_url).rstrip("/")
        if len(_BASE_URLS) >= _BASE_URLS_MAX:
            _BASE_URLS.clear()
        _BASE_URLS[key] = url
    return url


def flat_error(status: int, message: str) -> Response:
    """Mimic's control-plane and CLB error shape: ``{"message", "code"}``."""
    return json_response({"message": message, "code": status}, status)


async def read_json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; Invalid (400) for anything else."""
    body = await read_body(request, request.app.state.settings.max_body_bytes)
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


def status_of(exc: DomainError) -> int:
    from simulacra.errors import AlreadyExists, Conflict, NotFound, PreconditionFailed, TooLarge

    return {
        NotFound: 404,
        Conflict: 409,
        AlreadyExists: 409,
        PreconditionFailed: 412,
        TooLarge: 413,
    }.get(type(exc), 400)
