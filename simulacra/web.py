"""Small HTTP helpers for the admin APIs' edges (Starlette routes, public API only)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from simulacra.dataplane.request import Answer
from simulacra.dataplane.request import read_body as read_limited
from simulacra.errors import Invalid


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def starlette_response(answer: Answer) -> Response:
    """A data-plane ``Answer`` (an error renderer's, say) as a Starlette Response."""
    response = Response(answer.body, answer.status)
    response.raw_headers = list(answer.headers)
    return response


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    return await read_limited(request.stream(), limit, request.headers.get("content-length"))


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
