"""CLB fault injection and errors: the ``creation`` event, the metadata presets, CLB's bodies.

Presets and registered behaviors compile to the same ``behaviors.Outcome`` values: a load
balancer created with ``{"key": "lb_building", "value": 30}`` in its metadata and one
matched by a ``building`` behavior with ``{"duration": 30}`` go through the same code.
Metadata presets take precedence over registered behaviors, as for servers.

The error texts are Mimic's, which it noted as verified against Rackspace in 2015-2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulacra.cloud.behaviors import (
    Event,
    Outcome,
    failure_parser,
    mapping_criterion,
    number,
    regex_criterion,
)
from simulacra.errors import DomainError, Invalid, shown

DEFAULT_FAULT_MESSAGE = "The load balancer could not be created"

# Mimic's fallback when lb_building or lb_pending_delete is given a falsy value (0, "", null).
FALSY_PRESET_SECONDS = 10.0

SCHEMA_MESSAGE = "JSON does not match the expected schema"


class ClbError(DomainError):
    """A CLB error: its status and which of CLB's body shapes it is rendered in.

    ``kind`` is ``"flat"`` (``{"message", "code"}``), ``"validation"`` (CLB's
    ``validationErrors`` document, ``messages`` listing each problem), ``"schema"``
    (``{"message": ["JSON does not match the expected schema"]}``) or ``"string"`` (a raw
    text body, for behaviors that ask for one).
    """

    def __init__(
        self, message: str, code: int = 400, kind: str = "flat", messages: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.messages = messages or [message]


def validation_error(*messages: str) -> ClbError:
    """CLB's 400 "Validation Failure" listing every problem found."""
    return ClbError("Validation Failure", 400, "validation", list(messages))


def schema_error(detail: str) -> ClbError:
    """CLB's 400 for a body of the wrong structure; ``detail`` says what was wrong."""
    return ClbError(detail, 400, "schema")


def immutable_error(lb_id: int, status: str) -> ClbError:
    if status == "DELETED":
        # The text CLB answers for a deleted load balancer (otter matches it); Mimic showed
        # the generic message with status DELETED, which clients could not tell apart.
        return ClbError("The load balancer is deleted and considered immutable.", 422)
    return ClbError(
        f"Load Balancer '{lb_id}' has a status of '{status}' and is considered immutable.", 422
    )


def fault_of(outcome: Outcome) -> ClbError:
    """The error a ``fail``-like outcome answers with."""
    p = outcome.parameters
    return ClbError(p["message"], p["code"], "string" if p["type"] == "string" else "flat")


def _duration(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"duration": number(parameters, "duration")}


CREATION = Event(
    name="creation",
    criteria={"loadbalancer_name": regex_criterion, "metadata": mapping_criterion},
    behaviors={
        "fail": failure_parser(500, DEFAULT_FAULT_MESSAGE, "flat"),
        # The client is told the create failed, but the load balancer exists (as for servers).
        "false-negative": failure_parser(500, DEFAULT_FAULT_MESSAGE, "flat"),
        "building": _duration,
        "error": lambda parameters: {},
    },
)

# What GET /mimic/v1.0/presets shows under "loadbalancers" (Mimic's keys, clearer texts).
LB_PRESETS: dict[str, object] = {
    "lb_building": "On create load balancer, keeps the load balancer in building state for "
    "given seconds",
    "lb_error_state": "Puts the LB in error state after its first change, and such an LB can "
    "only be deleted",
    "lb_pending_update": "Changes the load balancer to PENDING-UPDATE state for the given "
    "number of seconds after each change of its nodes or health monitor",
    "lb_pending_delete": "Changes the load balancer to PENDING-DELETE state for the given "
    "seconds, when deleted",
}


@dataclass(frozen=True)
class Presets:
    """What a load balancer's metadata asks for, compiled once at creation.

    ``creation`` is a ``building`` outcome or None (then the behaviors decide); ``change``
    is ``error`` or ``pending-update`` (after each change of nodes or health monitor), and
    ``deletion`` is ``pending-delete`` (how long DELETE keeps it PENDING-DELETE).
    """

    creation: Outcome | None = None
    change: Outcome | None = None
    deletion: Outcome | None = None


def _seconds(key: str, value: object, *, falsy_default: bool) -> float:
    # Mimic read lb_building and lb_pending_delete as "value or 10": 0, "" and null mean
    # 10 s. The string "0" is not falsy there, so it means no wait at all.
    falsy = value is None or value == "" or value is False
    falsy = falsy or (isinstance(value, int | float) and not isinstance(value, bool) and value == 0)
    if falsy_default and falsy:
        return FALSY_PRESET_SECONDS
    try:
        return number({"seconds": value}, "seconds")
    except Invalid:
        raise Invalid(
            f"metadata preset {shown(key)} must be a non-negative number of seconds,"
            f" got {shown(value)}"
        ) from None


_NO_PRESETS = Presets()  # immutable: every load balancer without metadata shares it


def compile_presets(metadata: dict[str, object]) -> Presets:
    """The presets in ``{key: value}`` metadata; Invalid (400) for a value that is no time."""
    if not metadata:
        return _NO_PRESETS
    creation = change = deletion = None
    if "lb_building" in metadata:
        seconds = _seconds("lb_building", metadata["lb_building"], falsy_default=True)
        creation = Outcome("building", {"duration": seconds})
    # lb_error_state wins over lb_pending_update when both are given, as in Mimic.
    if "lb_error_state" in metadata:
        change = Outcome("error", {})
    elif "lb_pending_update" in metadata:
        seconds = _seconds("lb_pending_update", metadata["lb_pending_update"], falsy_default=False)
        change = Outcome("pending-update", {"duration": seconds})
    if "lb_pending_delete" in metadata:
        seconds = _seconds("lb_pending_delete", metadata["lb_pending_delete"], falsy_default=True)
        deletion = Outcome("pending-delete", {"duration": seconds})
    return Presets(creation, change, deletion)
