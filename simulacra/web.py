"""Small HTTP helpers for the admin APIs' edges (Starlette routes, public API only)."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from functools import wraps
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from simulacra.dataplane.request import Answer
from simulacra.dataplane.request import read_body as read_limited
from simulacra.errors import Invalid
from simulacra.models import convert
from simulacra.openapi import Operation, Reply


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def starlette_response(answer: Answer) -> Response:
    """A data-plane ``Answer`` (an error renderer's, say) as a Starlette Response."""
    response = Response(answer.body, answer.status)
    response.raw_headers = list(answer.headers)
    return response


def body_limit(request: Request) -> int:
    """How many bytes a request body may have (``--max-body-bytes``)."""
    limit: int = request.app.state.settings.max_body_bytes
    return limit


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


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_not_json)
_SPACE = re.compile(r"[ \t\n\r]*")


def json_items(body: bytes, ndjson: bool) -> Iterator[object]:
    """The values of a JSON array, or of NDJSON (one value per line), parsed one at a time
    as they are taken: a body of 100,000 stubs is parsed in slices of the loop's time (one
    ``orjson.loads`` of 20 MB took a second). ``Invalid`` names where a value is wrong."""
    if ndjson:
        yield from _ndjson_items(body)
    else:
        yield from _ArrayText(body).items()


# Body bytes decoded at a time: decoding a 236 MiB body at once held the loop 0.18 s.
_DECODE_CHUNK = 1 << 20


class _ArrayText:
    """A JSON array's text, decoded from the body a chunk at a time as it is parsed."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.read = 0  # body bytes decoded so far
        self.text = ""  # what is decoded and not yet parsed starts at ``at``
        self.at = 0
        # The stdlib's decoder takes escaped lone surrogates ("\\ud800"), which nothing can
        # write back as UTF-8; where the body has escapes, orjson checks each value again.
        self.escapes = b"\\u" in body

    def more(self, chars: int) -> bool:
        """Decode at least ``chars`` more characters (or the rest); False at the end."""
        body = self.body
        if self.read >= len(body):
            return False
        parts, got = [self.text[self.at :]], 0
        while got < chars and self.read < len(body):
            piece = body[self.read : self.read + _DECODE_CHUNK]
            self.read += len(piece)
            try:
                parts.append(self.decoder.decode(piece, self.read >= len(body)))
            except UnicodeDecodeError as exc:
                raise Invalid(f"request body is not UTF-8: {exc}") from None
            got += len(parts[-1])
        self.text, self.at = "".join(parts), 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end), ``at`` on it."""
        while True:
            self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]
            if self.at < len(self.text) or not self.more(_DECODE_CHUNK):
                return self.text[self.at : self.at + 1]

    def value(self) -> object:
        """The value at ``at``, decoded further while it may run on past what is decoded
        (each time twice as far, so a long value costs its length, not its square)."""
        while True:
            try:
                value, end = _JSON.raw_decode(self.text, self.at)
            except ValueError as exc:
                if self.more(len(self.text) - self.at + _DECODE_CHUNK):
                    continue
                raise Invalid(f"request body is not valid JSON: {exc}") from None
            except RecursionError:  # the stdlib's decoder recurses once per level
                raise Invalid("request body is not valid JSON: nested too deeply") from None
            if end == len(self.text) and self.more(_DECODE_CHUNK):
                continue  # a number or a word may go on
            if self.escapes:
                try:
                    value = orjson.loads(self.text[self.at : end])
                except orjson.JSONDecodeError as exc:
                    raise Invalid(f"request body is not valid JSON: {exc}") from None
            self.at = end
            return value

    def items(self) -> Iterator[object]:
        if self.peek() != "[":
            raise Invalid("request body is not a JSON array (or NDJSON: one stub per line)")
        self.at += 1
        if self.peek() == "]":
            self.at += 1
        else:
            count = 0
            while True:
                yield self.value()
                count += 1
                following = self.peek()
                self.at += 1
                if following == "]":
                    break
                if following != ",":
                    raise Invalid(
                        f"request body is not valid JSON: ',' or ']' expected after {count} values"
                    )
                self.peek()
        if self.peek():
            raise Invalid("request body is not valid JSON: text after the array")


def _ndjson_items(body: bytes) -> Iterator[object]:
    view, start, line = memoryview(body), 0, 1
    while start < len(body):
        end = body.find(b"\n", start)
        end = len(body) if end < 0 else end
        if body[start:end].strip():
            try:
                yield orjson.loads(view[start:end])
            except orjson.JSONDecodeError as exc:
                raise Invalid(f"line {line} is not valid JSON: {exc}") from None
        start, line = end + 1, line + 1


def request_host(request: Request) -> str:
    from simulacra.virtual.model import normalize_host

    return normalize_host(request.headers.get("host") or "localhost")


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


Handler = Callable[..., Awaitable[Response]]


def operation(
    *,
    replies: dict[int, Reply],
    body: Any = None,
    query: Any = None,
    headers: Any = None,
    name: str | None = None,
    converts: bool = True,
    **options: Any,
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Declare what a handler takes and answers (its OpenAPI operation), and give it its
    input converted: ``body=`` the JSON body as ``body``'s type, ``query=`` and
    ``headers=`` the query string and headers likewise (from text). A conversion that fails
    raises ``Invalid``, which the family's error renderer (an outer decorator) answers.
    ``converts=False``: the handler reads its input itself, as the types describe it (say
    why where it is used)."""

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        summary = (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""
        spec = Operation(
            summary=summary,
            operation_id=name or handler.__name__,
            replies=replies,
            body=body,
            query=query,
            headers=headers,
            **options,
        )

        @wraps(handler)
        async def converted(request: Request) -> Response:
            given: dict[str, Any] = {}
            if not converts:
                return await handler(request)
            if body is not None:
                given["body"] = convert(await read_json(request, body_limit(request)), body)
            if query is not None:
                given["query"] = convert(
                    dict(request.query_params), query, "query string", strict=False
                )
            if headers is not None:
                given["headers"] = convert(dict(request.headers), headers, "headers", strict=False)
            return await handler(request, **given)

        converted.operation = spec  # type: ignore[attr-defined]
        return converted

    return decorate
