"""The data plane's two values: the request as it arrived, and the answer to write.

Every server builds a ``Request`` (the built-in one from httptools' callbacks, the ASGI
adapter from a scope) and writes an ``Answer``; nothing past this module sees a socket, an
ASGI scope or a framework object. Both are plain: slots, bytes and strings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Coroutine, Iterable, Mapping
from typing import Any, TypeAlias

from simulacra.errors import Invalid, TooLarge

Headers = list[tuple[bytes, bytes]]  # names lower-case, as received or as sent

# What the connection does instead of (or while) answering: WireMock's fault names.
CONNECTION_RESET_BY_PEER = "CONNECTION_RESET_BY_PEER"
EMPTY_RESPONSE = "EMPTY_RESPONSE"
MALFORMED_RESPONSE_CHUNK = "MALFORMED_RESPONSE_CHUNK"
RANDOM_DATA_THEN_CLOSE = "RANDOM_DATA_THEN_CLOSE"
FAULTS = (
    CONNECTION_RESET_BY_PEER,
    EMPTY_RESPONSE,
    MALFORMED_RESPONSE_CHUNK,
    RANDOM_DATA_THEN_CLOSE,
)


class Request:
    """One HTTP request: what a client sent and where it arrived.

    ``path`` is percent-decoded, ``query`` the raw query string; ``local`` is the address
    and port the connection was accepted on (a bound session's port selects it);
    ``origin`` the ``scheme://host[:port]`` of a request in absolute form (sent to a proxy).
    """

    __slots__ = (
        "body",
        "client",
        "headers",
        "http_version",
        "local",
        "method",
        "origin",
        "path",
        "query",
        "raw_path",
        "scheme",
        "started",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: bytes = b"",
        headers: Headers | None = None,
        body: bytes = b"",
        client: tuple[str, int] | None = None,
        local: tuple[str, int] | None = None,
        raw_path: bytes | None = None,
        scheme: str = "http",
        http_version: str = "1.1",
        started: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers if headers is not None else []
        self.body = body
        self.client = client
        self.local = local
        self.raw_path = raw_path if raw_path is not None else path.encode("utf-8")
        self.scheme = scheme
        self.http_version = http_version
        self.origin = origin
        # When its head arrived (time.perf_counter): the tracker's durations start here.
        self.started = time.perf_counter() if started is None else started

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def text_header(self, name: bytes) -> str | None:
        value = self.header(name)
        return None if value is None else value.decode("latin-1")

    @property
    def port(self) -> int:
        """The port the request arrived on (0 when the server does not say)."""
        return self.local[1] if self.local else 0

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], body: bytes = b"") -> Request:
        """The request of an ASGI HTTP scope (granian, uvicorn, or an admin route's)."""
        client, server = scope.get("client"), scope.get("server")
        raw_path = scope.get("raw_path")
        return cls(
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            [(bytes(k).lower(), bytes(v)) for k, v in scope["headers"]],
            body,
            (client[0], int(client[1])) if client else None,
            (server[0], int(server[1] or 0)) if server else None,
            raw_path=bytes(raw_path) if raw_path is not None else None,
            scheme=scope.get("scheme", "http"),
            http_version=scope.get("http_version", "1.1"),
        )


class Answer:
    """What to send: status, headers (content-length included), body; and, for a fault,
    what the connection does instead (``fault``), or a body sent slowly (``dribble``:
    the number of chunks and the seconds they are spread over)."""

    __slots__ = ("body", "dribble", "fault", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        fault: str | None = None,
        dribble: tuple[int, float] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.fault = fault
        self.dribble = dribble

    @property
    def plain(self) -> bool:
        """Written as one whole response, as every server can."""
        return self.fault is None and self.dribble is None


def dribble_pieces(body: bytes, chunks: int) -> list[bytes]:
    """``body`` cut into ``chunks`` pieces of about one size (one empty piece if no body)."""
    if not body:
        return [b""]
    size = -(-len(body) // chunks)
    return [body[at : at + size] for at in range(0, len(body), size)]


JSON_CONTENT_TYPE = (b"content-type", b"application/json")
TEXT_CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")


def json_answer(status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> Answer:
    """A JSON answer with the headers every JSON route sends."""
    return Answer(status, [(b"content-length", b"%d" % len(body)), JSON_CONTENT_TYPE, *extra], body)


def text_answer(status: int, text: str) -> Answer:
    body = text.encode()
    return Answer(status, [(b"content-length", b"%d" % len(body)), TEXT_CONTENT_TYPE], body)


# What a route answers when it must wait (the store, a delay): a coroutine, which a server
# runs as a task; or a future, answered from a callback with no task (a sequence's position,
# every playback of an in-sequence stub on a shared store). Either can be awaited.
Later: TypeAlias = "asyncio.Future[Answer] | Coroutine[Any, Any, Answer]"


# Request bodies within the limit ---------------------------------------------------
#
# Every reader of a request body (the built-in server buffering one for the data plane,
# the ASGI adapter, the admin routes) applies these two checks, so a body over the limit
# is refused alike wherever it arrives.


def check_declared(declared: bytes | str | None, limit: int) -> None:
    """Refuse (413) a declared Content-Length over ``limit`` before any of the body is read."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise Invalid("Content-Length is not a number") from None
    if size > limit:
        shown = declared.decode("latin-1") if isinstance(declared, bytes) else declared
        raise TooLarge(f"request body of {shown[:20]} bytes is over the {limit} byte limit")


def check_size(size: int, limit: int) -> None:
    """Refuse (413) a body once ``size`` bytes of it have arrived, past ``limit``."""
    if size > limit:
        raise TooLarge(f"request body is over the {limit} byte limit")


async def read_body(
    chunks: AsyncIterable[bytes], limit: int, declared: bytes | str | None
) -> bytes:
    """A whole request body from its chunks, refusing (413) one over ``limit`` bytes.

    After the limit, the chunks are read and dropped up to twice the limit: closing on
    unread bytes makes the kernel reset the connection, and the client never sees the 413.
    """
    check_declared(declared, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            parts.clear()
            if size > 2 * limit:
                break
        elif chunk:
            parts.append(chunk)
    check_size(size, limit)
    return parts[0] if len(parts) == 1 else b"".join(parts)
