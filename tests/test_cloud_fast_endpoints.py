"""``JsonEndpoint`` (cloud/http.py) answers exactly as the function endpoints it replaces.

The bulk cloud routes (server create, load balancer create, node add) are plain ASGI
endpoints that read the body from ``receive`` and send their own response messages. Here
the same handler runs in both forms, a function endpoint with ``read_json_object`` and an
error decorator, and a ``JsonEndpoint`` with ``receive_json_object``, and every ASGI
message either sends, every ``receive`` call and every exception must be the same, for
good bodies and each way a body can be wrong.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from simulacra.cloud.compute.routes import nova_error, nova_errors
from simulacra.cloud.http import JsonEndpoint, read_json_object, receive_json_object
from simulacra.cloud.loadbalancer.model import canonical_address
from simulacra.errors import NotFound
from simulacra.web import json_response

LIMIT = 64


async def function_form(request: Request) -> Response:
    if request.path_params["region"] != "ORD":
        raise NotFound("region is not served")
    body = await read_json_object(request)
    return json_response({"got": body}, 202)


async def endpoint_form(scope: Scope, receive: Receive) -> tuple[int, bytes]:
    if scope["path_params"]["region"] != "ORD":
        raise NotFound("region is not served")
    body = await receive_json_object(scope, receive)
    return 202, orjson.dumps({"got": body})


def make_app(endpoint: Any) -> Starlette:
    app = Starlette(routes=[Route("/r/{region}/things", endpoint, methods=["POST"])])
    app.state.settings = SimpleNamespace(max_body_bytes=LIMIT)
    return app


APPS = {
    "function": make_app(nova_errors(function_form)),
    "endpoint": make_app(JsonEndpoint(endpoint_form, nova_error)),
}


def run(app: Starlette, messages: list[dict[str, Any]], headers, region: str = "ORD"):
    """Every message the app sends, how many it received, and what it raised."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8900),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "path": f"/r/{region}/things",
        "raw_path": f"/r/{region}/things".encode(),
        "query_string": b"",
        "headers": headers,
    }
    queue = list(messages)
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raised = None
    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:  # the ServerErrorMiddleware re-raises after its 500
        raised = type(exc)
    return sent, received, raised


def body(*chunks: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


def length(n: int | str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"h"), (b"content-length", str(n).encode())]


CASES = {
    "object": (body(b'{"a": 1}'), length(8)),
    "no content-length": (body(b'{"a": [1, 2]}'), [(b"host", b"h")]),
    "chunks": (body(b'{"a"', b"", b': "x"}'), []),
    "chunks then an empty last one": (body(b'{"a": 1', b"}", b""), []),
    "invalid JSON": (body(b'{"a": '), length(6)),
    "an array": (body(b"[1, 2]"), length(6)),
    "empty": (body(b""), length(0)),
    "blank": (body(b"  \n "), length(4)),
    "declared too large": (body(b"{}"), length(LIMIT + 1)),
    "declared length not a number": (body(b"{}"), length("twelve")),
    "first content-length wins": (body(b"{}"), [*length(2), (b"content-length", b"999")]),
    "one message over the limit": (body(b" " * (LIMIT + 1)), []),
    "chunks over the limit": (body(b"{" * 40, b"}" * 40), []),
    "chunks over twice the limit": (body(*[b" " * 50] * 5), []),
    "disconnect mid-body": ([{"type": "http.request", "body": b"{", "more_body": True}], []),
    "other messages are skipped": (
        [{"type": "http.other"}, *body(b"{}")],
        [],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_json_endpoint_answers_as_the_function_endpoint(case):
    messages, headers = CASES[case]
    function = run(APPS["function"], messages, headers)
    endpoint = run(APPS["endpoint"], messages, headers)
    assert endpoint == function
    sent = endpoint[0]
    if case == "object":
        assert sent[0]["status"] == 202
        assert sent[0]["headers"] == [
            (b"content-length", str(len(sent[1]["body"])).encode()),
            (b"content-type", b"application/json"),
        ]
        assert orjson.loads(sent[1]["body"]) == {"got": {"a": 1}}


def test_json_endpoint_checks_before_the_body_as_the_function_endpoint():
    messages, headers = CASES["invalid JSON"]
    function = run(APPS["function"], messages, headers, region="XYZ")
    endpoint = run(APPS["endpoint"], messages, headers, region="XYZ")
    assert endpoint == function
    sent, received, _ = endpoint
    assert received == 0  # the region's 404 came first
    assert orjson.loads(sent[1]["body"]) == {
        "itemNotFound": {"message": "region is not served", "code": 404}
    }


def test_canonical_address_is_what_ipaddress_writes():
    rng = random.Random(11)
    texts = [
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4\n",
        "\u0661.2.3.4",  # an Arabic-Indic digit one: a digit, but not ASCII
        "1.2.3.+4",
        "::1",
        "2001:DB8::1",
        "2001:db8:0:0:0:0:0:1",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
        "",
        "host",
    ]
    texts += [".".join(str(rng.randrange(300)) for _ in range(4)) for _ in range(3000)]
    octets = ["0", "00", "7", "010", "99", "199", "249", "255"]
    texts += [".".join(rng.choice(octets) for _ in "abcd") for _ in range(500)]
    for text in texts:
        try:
            expected: str | type = str(ipaddress.ip_address(text))
        except ValueError:
            expected = ValueError
        try:
            got: str | type = canonical_address(text)
        except ValueError:
            got = ValueError
        assert got == expected, text
