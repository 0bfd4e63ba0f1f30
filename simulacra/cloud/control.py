"""Mimic's control plane: the clock, presets, and the behaviors API routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.clock import iso8601
from simulacra.cloud.behaviors import BehaviorRegistry, number
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import cloud, flat_errors
from simulacra.errors import Invalid, shown
from simulacra.models import (
    BehaviorCreated,
    BehaviorDocument,
    Behaviors,
    FlatError,
    Tick,
    Ticked,
    plain,
)
from simulacra.openapi import Reply
from simulacra.web import json_response, operation

# Mimic's control plane answers its errors flat (``{"message", "code"}``).
FLAT: dict[str, Any] = {"error": FlatError, "error_statuses": ("4XX", "503")}

# What GET /mimic/v1.0/presets shows; each preset is implemented by the service named.
PRESETS: dict[str, dict[str, object]] = {}


def register_presets(group: str, presets: dict[str, object]) -> None:
    PRESETS.setdefault(group, {}).update(presets)


def tick_clock(core: CloudCore, amount: object) -> tuple[float, float]:
    """Advance ``core``'s clock by ``amount`` seconds (a number, or its text: the console's
    form sends text): ``(seconds advanced, the new now)``. Invalid for anything but a
    non-negative number; Conflict on the real clock. The tick route and the console call it."""
    try:
        seconds = number({"amount": amount}, "amount")
    except Invalid:
        raise Invalid(
            f"'amount' must be a non-negative number of seconds, got {shown(amount)}"
        ) from None
    return seconds, core.clock.advance(seconds)


@flat_errors
@operation(body=Tick, replies={200: Reply(Ticked)}, **FLAT)
async def tick(request: Request, body: Tick) -> Response:
    """Advance the virtual clock by ``amount`` seconds, firing every due transition."""
    amount, now = tick_clock(cloud(request), body.amount)
    return json_response({"advanced": amount, "now": iso8601(now)})


@operation(replies={200: Reply(dict[str, Any])}, error_statuses=())
async def presets(request: Request) -> Response:
    """The metadata presets and magic values each mock understands."""
    return json_response(PRESETS)


def behavior_routes(
    path: str, registry_of: Callable[[Request], BehaviorRegistry], name: str
) -> list[BaseRoute]:
    """POST/GET ``path`` and DELETE ``path/{behavior_id}`` for one event's registry
    (``name``: the event's, in the operations' ids)."""
    create_id, delete_id = f"add_{name}_behavior", f"delete_{name}_behavior"

    @flat_errors
    @operation(
        body=BehaviorDocument,
        replies={
            201: Reply(
                BehaviorCreated,
                "Registered",
                links={delete_id: {"behavior_id": "$response.body#/id"}},
            )
        },
        name=create_id,
        **FLAT,
    )
    async def create(request: Request, body: BehaviorDocument) -> Response:
        """Register a behavior: name, parameters and criteria."""
        rule = registry_of(request).add(plain(body))
        return json_response({"id": rule.id}, 201)

    @flat_errors
    @operation(replies={200: Reply(Behaviors)}, name=f"list_{name}_behaviors", **FLAT)
    async def listing(request: Request) -> Response:
        """List registered behaviors, first match first (Mimic had no listing)."""
        return json_response({"behaviors": registry_of(request).list()})

    @flat_errors
    @operation(replies={204: Reply(description="Removed")}, name=delete_id, **FLAT)
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
