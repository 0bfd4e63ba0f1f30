"""HTTP helpers for the cloud mocks' edges (Mimic's flat error bodies, JSON bodies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from simulacra.cloud.core import CloudCore
from simulacra.errors import DomainError, Invalid, TooLarge
from simulacra.web import declared_length, json_response, read_body
from simulacra.web import receive_body as web_receive_body


def cloud(request: Request) -> CloudCore:
    return request.app.state.cloud


def scope_cloud(scope: Scope) -> CloudCore:
    """``cloud(request)`` for an endpoint that has the ASGI scope only."""
    return scope["app"].state.cloud


_BASE_URLS: dict[tuple[Any, ...], str] = {}
_BASE_URLS_MAX = 1024  # the Host header is the client's: keep the cache bounded


def base_url(request: Request) -> str:
    """``str(request.base_url)`` without its trailing slash, the links' and catalog's base.

    Starlette builds it from the scheme, the server address, the Host header and the
    root path, parsing and re-joining a URL each time (~9% of a Nova create's CPU time,
    bench/peers.py); the answer is cached by those inputs.
    """
    return scope_base_url(request.scope)


def base_url_key(scope: Scope) -> tuple[Any, ...]:
    """What the base URL is built from: scheme, server, Host header, root path (hashable)."""
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    server = scope.get("server")
    return (
        scope.get("scheme", "http"),
        None if server is None else tuple(server),  # granian gives a list: no dict key
        host,
        scope.get("app_root_path", scope.get("root_path", "")),
    )


def scope_base_url(scope: Scope, key: tuple[Any, ...] | None = None) -> str:
    """``base_url`` from the ASGI scope (a ``Request`` is built only on a cache miss).

    ``key`` is ``base_url_key(scope)`` when the caller has it already.
    """
    if key is None:
        key = base_url_key(scope)
    url = _BASE_URLS.get(key)
    if url is None:
        url = str(Request(scope).base_url).rstrip("/")
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


def status_of(exc: DomainError) -> int:
    from simulacra.errors import AlreadyExists, Conflict, NotFound, PreconditionFailed

    return {
        NotFound: 404,
        Conflict: 409,
        AlreadyExists: 409,
        PreconditionFailed: 412,
        TooLarge: 413,
    }.get(type(exc), 400)


# Hot routes without Starlette's Request and Response ---------------------------------
#
# A function endpoint costs a Request, an exception-handling wrapper with its own send
# wrapper, a Response and its header list per request: ~10 us, a fifth of a server create
# in-process (bench/profile_cloud.md). ``JsonEndpoint`` is a plain ASGI endpoint for the
# few routes a client calls in bulk (creates, node adds); every other route keeps the
# function form. Answers and error bodies are the same as the function form's.

_JSON_CONTENT_TYPE = (b"content-type", b"application/json")

JsonHandler = Callable[[Scope, Receive], Awaitable[tuple[int, bytes]]]
ErrorRenderer = Callable[[DomainError], Response]


class JsonEndpoint:
    """An ASGI endpoint answering ``handler``'s ``(status, JSON bytes)``.

    A ``DomainError`` from the handler is answered with ``errors(exc)``, as the function
    routes' error decorators do; anything else propagates to the app's error middleware.
    The headers are the ones ``json_response`` sends (content-length, content-type).
    """

    def __init__(self, handler: JsonHandler, errors: ErrorRenderer) -> None:
        self.handler = handler
        self.errors = errors
        # What a function endpoint shows: the Route's name, and the handler's module and
        # docstring for docs/implementation.md (simulacra/coverage.py).
        self.__name__ = handler.__name__.lstrip("_")
        self.__module__ = handler.__module__
        self.__doc__ = handler.__doc__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self.handler(scope, receive)
        except DomainError as exc:
            await self.errors(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"%d" % len(body)), _JSON_CONTENT_TYPE],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def receive_json_object(scope: Scope, receive: Receive) -> dict[str, Any]:
    """``read_json_object`` for a ``JsonEndpoint``: the same limits, errors and answers."""
    body = await receive_body(scope, receive, scope["app"].state.settings.max_body_bytes)
    return json_object(body)


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """``simulacra.web.read_body`` over the ASGI ``receive`` channel, without a Request."""
    return await web_receive_body(receive, limit, declared_length(scope))
