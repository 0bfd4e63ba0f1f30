"""The one ASGI adapter: the data plane in front of the Starlette app, for granian, uvicorn
and in-process tests; it counts every answer for /metrics. The built-in server
(simulacra/server.py) skips it: it finds the data plane, the app and the metrics on this
object, and calls and counts them itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from simulacra.dataplane import Route
from simulacra.dataplane.plane import DataPlane
from simulacra.dataplane.request import Answer, Request, dribble_pieces, read_body
from simulacra.errors import DomainError

if TYPE_CHECKING:
    from simulacra.metrics import Metrics

ASGIApp = Any
Receive = Any
Send = Any

# A fault needs the connection itself, which ASGI does not give: the adapter answers this.
FAULT_NEEDS_THE_SERVER = (
    "fault {} needs the built-in server (simulacra serve --server simulacra);"
    " granian and uvicorn answer this instead"
)


class DataPlaneApp:
    """ASGI: what the data plane claims it answers; everything else goes to ``app``."""

    def __init__(self, dataplane: DataPlane, app: ASGIApp, metrics: Metrics) -> None:
        self.dataplane = dataplane
        self.app = app
        self.metrics = metrics
        self.state = app.state  # the app's state, for whoever holds this object
        dataplane.ports.app = self

    @property
    def routes(self) -> Any:
        return self.app.routes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request.from_scope(scope)
        route = self.dataplane.claim(request)
        status = 0

        async def send_seen(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if route is None:
                await self.app(scope, receive, send_seen)
            else:
                await send_answer(send_seen, await self._answer(route, request, receive))
        finally:  # once its answer is out, or as far as it got
            if status:
                self.metrics.count(request.path, route, status, request.started)

    async def _answer(self, route: Route, request: Request, receive: Receive) -> Answer:
        try:
            request.body = await read_body(
                _chunks(receive), self.dataplane.limit, request.header(b"content-length")
            )
        except DomainError as exc:
            return route.refuse(request, exc)
        answered = route.answer(request)
        return answered if isinstance(answered, Answer) else await answered


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise DomainError("the client went away")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def send_answer(send: Send, answer: Answer) -> None:
    if answer.fault is not None:
        from simulacra.virtual.api_v2 import error_answer

        answer = error_answer(500, FAULT_NEEDS_THE_SERVER.format(answer.fault))
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    if answer.dribble is None:
        await send({"type": "http.response.body", "body": answer.body})
        return
    chunks, seconds = answer.dribble
    pieces = dribble_pieces(answer.body, chunks)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        await send({"type": "http.response.body", "body": piece, "more_body": not last})
        if not last:
            await asyncio.sleep(seconds / len(pieces))
