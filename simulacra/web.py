"""Small HTTP helpers shared by every API family's edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from simulacra.errors import Invalid, TooLarge


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def declared_length(scope: Scope) -> str | None:
    """The request's Content-Length header, decoded, or None.

    ASGI header names are lower-case bytes: the one header is looked up without building
    starlette's Headers (as Headers.get does, the first one wins).
    """
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)


def check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse (413) a declared Content-Length over ``limit`` before reading anything."""
    if declared is not None:
        try:
            if int(declared) > limit:
                raise TooLarge(f"request body of {declared} bytes is over the {limit} byte limit")
        except ValueError:
            raise Invalid("Content-Length is not a number") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    check_declared_length(declared_length(request.scope), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in _chunks(request):
        size += len(chunk)
        if size > limit:
            chunks.clear()
            # Keep reading (and dropping) a while: closing on unread bytes makes the
            # kernel reset the connection, and the client never sees the 413.
            if size > 2 * limit:
                break
            continue
        chunks.append(chunk)
    if size > limit:
        raise TooLarge(f"request body is over the {limit} byte limit")
    return b"".join(chunks)


async def receive_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    """``read_body`` straight from ASGI ``receive`` (no Request): the same limits and errors.

    ``declared`` is the first Content-Length header, decoded, or None.
    """
    check_declared_length(declared, limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: the whole body at once
        if len(body) > limit:
            raise TooLarge(f"request body is over the {limit} byte limit")
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                chunks.clear()
                if size > 2 * limit:  # read and drop a while, as read_body does
                    break
            elif chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
        message = await receive()
    if size > limit:
        raise TooLarge(f"request body is over the {limit} byte limit")
    return b"".join(chunks)


class _Chunks:
    """``request.stream()`` as an iterator object instead of an async generator.

    The same messages, in the same way (``Request.stream``'s loop), minus the async
    generator's setup and asyncio's bookkeeping of it, a few microseconds of every
    request with a body. A request whose body was read already, or a Starlette without
    the attributes used here, is left to ``request.stream()``.
    """

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        request = self.request
        while not request._stream_consumed:
            message = await request._receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if not message.get("more_body", False):
                    request._stream_consumed = True
                if body:
                    return body
            elif message["type"] == "http.disconnect":
                request._is_disconnected = True
                raise ClientDisconnect()
        raise StopAsyncIteration


def _chunks(request: Request) -> AsyncIterator[bytes]:
    if (
        hasattr(request, "_body")
        or getattr(request, "_stream_consumed", True)
        or not hasattr(request, "_receive")
    ):
        return request.stream()
    return _Chunks(request)


async def read_json(request: Request, limit: int, *, required: bool = True) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        if required:
            raise Invalid("request body is empty; a JSON document is expected")
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"request body is not valid JSON: {exc}") from None


def request_host(request: Request) -> str:
    from simulacra.virtual.model import normalize_host

    return normalize_host(request.headers.get("host") or "localhost")


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
