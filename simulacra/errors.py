"""Typed domain errors, and how a message quotes a value.

Domain code raises these; each API family renders them in its own envelope and
maps the kind to an HTTP status (see ``virtual/api_v2.py``).
"""

import reprlib
from typing import Any


class DomainError(Exception):
    """Base class: ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(DomainError):
    """The request is malformed or breaks a rule of the API (400)."""


class NotFound(DomainError):
    """A named object does not exist (404)."""


class AlreadyExists(DomainError):
    """A create collided with an existing object (422 in Mirage)."""


class Conflict(DomainError):
    """The object exists but is in a state that forbids the operation (409)."""


class PreconditionFailed(DomainError):
    """A precondition of the operation does not hold (412)."""


class NoMatch(DomainError):
    """Playback found no stub for the request; ``near_misses``, when already found (a
    ``matching.NearMiss`` list), the stubs that came closest."""

    def __init__(self, message: str, near_misses: list[Any] | None = None) -> None:
        super().__init__(message)
        self.near_misses = near_misses


class TooLarge(DomainError):
    """A request body is over the configured limit (413)."""


class Unavailable(DomainError):
    """A backing service (the shared store) cannot be reached right now (503)."""


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 3  # nesting shown: a value 1,000 deep is cut, never recursed into
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 4


def shown(value: object, limit: int = 80) -> str:
    """``value`` as an error message may quote it: a short prefix of its repr, whatever its
    size or depth (a message must never be the size of the input, nor recurse through it)."""
    text = _SHOWN.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
