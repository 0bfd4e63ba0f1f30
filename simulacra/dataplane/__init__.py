"""The data plane: the hot path, written once, called by every server.

A server turns what arrived into a ``Request`` and asks ``DataPlane.claim`` whether the data
plane answers it (playback in all its forms, the cloud's bulk POSTs); if so it reads the whole
body within ``DataPlane.limit`` and calls the claimed route's ``answer``, else it hands the
request to the Starlette app (the admin APIs and the cloud's other routes). docs/architecture.md
follows a request from socket to store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simulacra.dataplane.request import Answer, Later, Request
from simulacra.errors import DomainError


class Route(Protocol):
    """What the data plane does with one request it claimed."""

    def answer(self, request: Request) -> Answer | Later:
        """The answer, or an awaitable of it when it has to wait (the store, a delay)."""

    def refuse(self, request: Request, error: DomainError) -> Answer:
        """``error`` (a body over the limit, say) in the route's own envelope, tracked."""


@dataclass(frozen=True)
class Declared:
    """A data-plane route as docs/implementation.md lists it (simulacra/coverage.py)."""

    methods: str  # "POST", or "any" for a bound session's port
    path: str
    endpoint: Callable[..., object]  # its module names the family, its docstring the row


class Claimer(Protocol):
    def claim(self, request: Request) -> Route | None: ...

    declared: list[Declared]
