"""Compute fault injection: the ``creation`` event and the server metadata presets.

Both compile to ``behaviors.Outcome`` values, so a server created with
``{"server_building": "120"}`` in its metadata and one matched by a registered
``build`` behavior with ``{"duration": 120}`` go through the same code.
Metadata presets take precedence over registered behaviors, as in Mimic.
"""

from __future__ import annotations

from typing import Any

import orjson

from simulacra.cloud.behaviors import (
    Event,
    Outcome,
    failure_parser,
    mapping_criterion,
    number,
    regex_criterion,
)
from simulacra.errors import DomainError, Invalid

DEFAULT_FAULT_MESSAGE = (
    "The server has either erred or is incapable of performing the requested operation"
)


class Fault(DomainError):
    """A Nova error with its own status and body key; ``kind == "string"`` is a raw-text body."""

    def __init__(self, message: str, code: int = 500, kind: str = "computeFault") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def fault_of(outcome: Outcome) -> Fault:
    """The error a ``fail``-like outcome answers with."""
    p = outcome.parameters
    return Fault(p["message"], p["code"], p["type"])


def _duration(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"duration": number(parameters, "duration")}


CREATION = Event(
    name="creation",
    criteria={"server_name": regex_criterion, "metadata": mapping_criterion},
    behaviors={
        "fail": failure_parser(500, DEFAULT_FAULT_MESSAGE, "computeFault"),
        "false-negative": failure_parser(500, DEFAULT_FAULT_MESSAGE, "computeFault"),
        "build": _duration,
        "error": lambda parameters: {},
        "active-then-error": _duration,
    },
)

# What GET /mimic/v1.0/presets shows under "servers" (Mimic's keys and values).
SERVER_PRESETS: dict[str, object] = {
    "create_server_failure": '{"message": "given message","code": given code}',
    "delete_server_failure": '{"code": given code,"times": returns given code that many times}',
    "invalid_image_ref": ["INVALID-IMAGE-ID", "1111", "image_ends_with_Z"],
    "invalid_flavor_ref": ["INVALID-FLAVOR-ID", "8888", "-4", "1"],
    "server_error": "sets server state to error on create",
    "server_building": "sets the server to be in building state for given time in seconds",
}

# Metadata keys whose values may be given as numbers or objects (normalized to strings).
PRESET_KEYS = frozenset(
    {"create_server_failure", "delete_server_failure", "server_building", "server_error"}
)


def normalize_preset_value(key: str, value: object) -> str | None:
    """A preset's value as the string stored in metadata; None if it cannot be one.

    The README's own example is ``{"server_building": 120}``, which Mimic refused
    because metadata values must be strings; numbers (and JSON objects for the
    ``*_failure`` presets) are accepted and stored in their JSON text form.
    """
    if isinstance(value, str):
        return value
    if key not in PRESET_KEYS or value is None:
        return None
    return orjson.dumps(value).decode()


def _json_preset(key: str, value: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise Invalid(f"metadata preset {key!r} must be a JSON object, e.g. {SERVER_PRESETS[key]}")
    return parsed


def _creation_outcomes(metadata: dict[str, str]) -> list[Outcome]:
    """Every creation preset present, validated, in precedence order."""
    outcomes: list[Outcome] = []
    if "create_server_failure" in metadata:
        parameters = _json_preset("create_server_failure", metadata["create_server_failure"])
        try:
            outcomes.append(Outcome("fail", CREATION.behaviors["fail"](parameters)))
        except Invalid as exc:
            raise Invalid(f"metadata preset 'create_server_failure': {exc.message}") from None
    if "server_building" in metadata:
        try:
            seconds = number({"duration": metadata["server_building"]}, "duration")
        except Invalid:
            raise Invalid(
                "metadata preset 'server_building' must be a non-negative number of seconds"
            ) from None
        outcomes.append(Outcome("build", {"duration": seconds}))
    if "server_error" in metadata:
        outcomes.append(Outcome("error", {}))
    return outcomes


def creation_preset(metadata: dict[str, str]) -> Outcome | None:
    """The outcome the metadata presets ask for at creation, or None (ask the behaviors)."""
    if not metadata:  # most creates: nothing to look for
        return None
    outcomes = _creation_outcomes(metadata)
    return outcomes[0] if outcomes else None


def deletion_preset(metadata: dict[str, str]) -> tuple[Outcome, int] | None:
    """``delete_server_failure``: the failure to answer and for how many DELETEs."""
    value = metadata.get("delete_server_failure")
    if value is None:
        return None
    parameters = _json_preset("delete_server_failure", value)
    times = parameters.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or times < 0:
        raise Invalid("metadata preset 'delete_server_failure': 'times' must be an integer >= 0")
    try:
        failure = CREATION.behaviors["fail"](parameters)
    except Invalid as exc:
        raise Invalid(f"metadata preset 'delete_server_failure': {exc.message}") from None
    return Outcome("fail", failure), times


def check_presets(metadata: dict[str, str]) -> None:
    """Refuse (400) metadata whose preset values could not be honoured later."""
    _creation_outcomes(metadata)
    deletion_preset(metadata)
