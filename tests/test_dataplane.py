"""The data plane's pure parts: which route a request takes, what a stub's response sends,
and the request value's body limits."""

from __future__ import annotations

import asyncio

import pytest

from simulacra.dataplane.plane import DataPlane
from simulacra.dataplane.playback import PlaybackRoutes, build_wire
from simulacra.dataplane.ports import Ports
from simulacra.dataplane.request import Request, check_declared, dribble_pieces, read_body
from simulacra.errors import Invalid, TooLarge
from simulacra.virtual.model import Response
from simulacra.virtual.tracking import Tracker


class Cloud:
    declared: list = []

    def claim(self, request: Request) -> str | None:
        return "cloud" if request.path.endswith("/servers") else None


def plane() -> tuple[DataPlane, PlaybackRoutes]:
    routes = PlaybackRoutes(Tracker(enabled=False))
    return DataPlane(routes, Cloud(), Ports(routes, 8900, "127.0.0.1"), 1000), routes  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v2/scenarios/objects/orders/stubs", "stubs"),
        ("POST", "/api/v2/scenarios/objects/h.x:orders/stubs", "stubs"),
        ("PUT", "/api/v2/scenarios/objects/orders/stubs", None),  # the admin API's
        ("POST", "/api/v2/scenarios/objects/a/b/stubs", None),
        ("POST", "/api/v2/scenarios/objects//stubs", None),
        ("POST", "/api/v2/scenarios/objects/orders/action", None),
        ("POST", "/api/v2/matcher", "matcher"),
        ("GET", "/api/v2/matcher", "post_only"),
        ("POST", "/stubo/api/get/response", "v1"),
        ("POST", "/stubo/api/get/response/any/thing", "v1"),
        ("POST", "/stubo/api/get/responses", None),
        ("DELETE", "/stubo/api/get/response", "post_only"),
        ("GET", "/virtual/orders/s/users/1", "prefix"),
        ("POST", "/virtual/orders/s/servers", "prefix"),  # the prefix wins over the cloud
        ("POST", "/mimicking/NovaApi/ORD/v2/t/servers", "cloud"),
        ("GET", "/mimicking/NovaApi/ORD/v2/t/servers", None),
        ("GET", "/", None),
    ],
)
def test_claim(method: str, path: str, expected: str | None) -> None:
    dataplane, routes = plane()
    request = Request(method, path, local=("127.0.0.1", 8900))
    claimed = dataplane.claim(request)
    if expected is None or expected == "cloud":
        assert claimed == expected
    else:
        assert claimed is getattr(routes, expected)


def test_a_bound_port_claims_every_request() -> None:
    dataplane, routes = plane()
    routes.bind(9001, "localhost", "s")
    for method, path in (("GET", "/"), ("PUT", "/api/v2/scenarios"), ("POST", "/api/v2/matcher")):
        route = dataplane.claim(Request(method, path, local=("127.0.0.1", 9001)))
        assert route is routes.bound[9001]
    assert dataplane.claim(Request("GET", "/", local=("127.0.0.1", 8900))) is None
    routes.unbind(9001)
    assert dataplane.claim(Request("GET", "/", local=("127.0.0.1", 9001))) is None


def test_what_a_stub_response_sends() -> None:
    answer, block, start = build_wire(Response(200, "héllo", {"X-Kind": "a"}))
    assert answer.headers == [(b"x-kind", b"a"), (b"content-length", b"6")]
    assert (answer.body, block, start) == (
        "héllo".encode(),
        b"x-kind\0a\0content-length\x006",
        answer.body,
    )
    assert answer.plain
    no_body, _, _ = build_wire(Response(204, ""))
    assert no_body.headers == []
    # A stub's own framing would hang or cut a client: the server frames the body itself.
    given, _, _ = build_wire(
        Response(200, "abc", {"Content-Length": "100", "Transfer-Encoding": "chunked"})
    )
    assert given.headers == [(b"content-length", b"3")]
    slow, _, _ = build_wire(Response(200, "abcd", dribble=(2, 1500)))
    assert slow.dribble == (2, 1.5) and not slow.plain
    fault, _, _ = build_wire(Response(fault="EMPTY_RESPONSE"))
    assert fault.fault == "EMPTY_RESPONSE"


def test_dribble_pieces() -> None:
    assert dribble_pieces(b"abcdefgh", 3) == [b"abc", b"def", b"gh"]
    assert dribble_pieces(b"ab", 5) == [b"a", b"b"]
    assert dribble_pieces(b"", 4) == [b""]


def test_body_limits() -> None:
    check_declared(b"1000", 1000)
    check_declared(None, 1000)
    with pytest.raises(TooLarge, match="104857600"):
        check_declared(b"104857600", 1000)
    with pytest.raises(Invalid):
        check_declared(b"ten", 1000)

    async def chunks(*parts: bytes):  # type: ignore[no-untyped-def]
        for part in parts:
            yield part

    assert asyncio.run(read_body(chunks(b"ab", b"cd"), 4, None)) == b"abcd"
    with pytest.raises(TooLarge):
        asyncio.run(read_body(chunks(b"ab", b"cde"), 4, None))
