"""Mimic's control plane: the clock, presets, and the behaviors API routes."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.clock import iso8601
from simulacra.cloud.behaviors import BehaviorRegistry, number
from simulacra.cloud.http import cloud, flat_errors, read_json_object
from simulacra.errors import Invalid
from simulacra.web import json_response

# What GET /mimic/v1.0/presets shows; each preset is implemented by the service named.
PRESETS: dict[str, dict[str, object]] = {}


def register_presets(group: str, presets: dict[str, object]) -> None:
    PRESETS.setdefault(group, {}).update(presets)


@flat_errors
async def tick(request: Request) -> Response:
    """Advance the virtual clock by ``amount`` seconds, firing every due transition."""
    body = await read_json_object(request)
    if "amount" not in body:
        raise Invalid('body must be {"amount": <seconds>}')
    amount = number(body, "amount")
    now = cloud(request).clock.advance(amount)
    return json_response({"advanced": amount, "now": iso8601(now)})


async def presets(request: Request) -> Response:
    """The metadata presets and magic values each mock understands."""
    return json_response(PRESETS)


def behavior_routes(
    path: str, registry_of: Callable[[Request], BehaviorRegistry]
) -> list[BaseRoute]:
    """POST/GET ``path`` and DELETE ``path/{behavior_id}`` for one event's registry."""

    @flat_errors
    async def create(request: Request) -> Response:
        """Register a behavior: name, parameters and criteria."""
        rule = registry_of(request).add(await read_json_object(request))
        return json_response({"id": rule.id}, 201)

    @flat_errors
    async def listing(request: Request) -> Response:
        """List registered behaviors, first match first (Mimic had no listing)."""
        return json_response({"behaviors": registry_of(request).list()})

    @flat_errors
    async def delete(request: Request) -> Response:
        """Remove a behavior by id."""
        registry_of(request).remove(request.path_params["behavior_id"])
        return Response(status_code=204)

    return [
        Route(path, create, methods=["POST"]),
        Route(path, listing, methods=["GET"]),
        Route(path + "/{behavior_id}", delete, methods=["DELETE"]),
    ]


ROUTES: list[BaseRoute] = [
    Route("/mimic/v1.1/tick", tick, methods=["POST"]),
    Route("/mimic/v1.0/presets", presets, methods=["GET"]),
]
