"""The one ASGI adapter: the data plane in front of the Starlette app, for granian, uvicorn
and in-process tests. The built-in server (simulacra/server.py) skips it: it finds the data
plane on this object and calls it directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from simulacra.dataplane.plane import DataPlane
from simulacra.dataplane.request import Answer, Request, dribble_pieces, read_body
from simulacra.errors import DomainError

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

    def __init__(self, dataplane: DataPlane, app: ASGIApp) -> None:
        self.dataplane = dataplane
        self.app = app
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
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            request.body = await read_body(
                _chunks(receive), self.dataplane.limit, request.header(b"content-length")
            )
        except DomainError as exc:
            answer = route.refuse(request, exc)
        else:
            answered = route.answer(request)
            answer = answered if isinstance(answered, Answer) else await answered
        await send_answer(send, answer)


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
