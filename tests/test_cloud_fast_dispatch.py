"""The bulk cloud POSTs' fast dispatch (cloud/fast.py) answers exactly as the router does.

Two apps get the same requests, in the same order, over ASGI in-process: one as built
(``FastCloud`` calls the three bulk ``JsonEndpoint``s itself) and one whose ``FastCloud``
knows no routes (every request goes through ``ExceptionMiddleware`` and the routers). Their
rngs are seeded alike, so every sent message, and any exception, must be equal.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette

from simulacra.app import create_app
from simulacra.cloud.compute.routes import NOVA, create_server
from simulacra.cloud.fast import FastCloud
from simulacra.cloud.loadbalancer.routes import CLB, add_nodes, create_load_balancer
from simulacra.config import Settings
from tests.asgi import http_scope

LIMIT = 1024


def nova(region: str = "ORD", tenant: str = "t1") -> str:
    return NOVA.mount_path.format(region=region, tenant=tenant)


def clb(region: str = "ORD", tenant: str = "t1") -> str:
    return CLB.mount_path.format(region=region, tenant=tenant)


def scope_of(method: str, path: str, headers: list[tuple[bytes, bytes]], root_path: str = ""):
    return http_scope(method, path, [(b"host", b"localhost:8900"), *headers], root_path=root_path)


def fast_cloud(app: Starlette) -> FastCloud:
    layer: Any = app.middleware_stack
    while not isinstance(layer, FastCloud):
        layer = layer.app
    return layer


def make_app(fast: bool) -> tuple[Starlette, asyncio.AbstractEventLoop, Any]:
    app = create_app(Settings(store_url="memory://", max_body_bytes=LIMIT))
    if not fast:
        for middleware in app.user_middleware:
            if middleware.cls is FastCloud:
                middleware.kwargs["routes"] = []
    app.state.cloud.services["compute"].rng = random.Random(1234)
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    return app, loop, lifespan


@pytest.fixture
def apps() -> Iterator[tuple[Any, Any]]:
    made = [make_app(True), make_app(False)]
    yield made[0][:2], made[1][:2]
    for _, loop, lifespan in made:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


def send_one(
    app: Starlette, loop: asyncio.AbstractEventLoop, scope: dict[str, Any], chunks: list[bytes]
) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """The messages sent back, the exception raised (if any) and the scope afterwards."""
    scope = {**scope, "headers": list(scope["headers"])}
    sent: list[dict[str, Any]] = []
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    error = None
    try:
        loop.run_until_complete(app(scope, receive, send))
    except Exception as exc:  # the same error must escape both ways
        error = f"{type(exc).__name__}: {exc}"
    return sent, error, scope


def request(
    method: str,
    path: str,
    body: bytes | list[bytes] = b"",
    root_path: str = "",
    declared: int | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    chunks = body if isinstance(body, list) else [body]
    size = sum(map(len, chunks)) if declared is None else declared
    headers = [(b"content-type", b"application/json")]
    if not isinstance(body, list):  # a list is sent chunked, without a Content-Length
        headers.append((b"content-length", b"%d" % size))
    return scope_of(method, path, headers, root_path), chunks


SERVER = orjson.dumps({"server": {"name": "s", "imageRef": "i", "flavorRef": "2"}})
LB = orjson.dumps(
    {
        "loadBalancer": {
            "name": "lb",
            "port": 80,
            "protocol": "HTTP",
            "virtualIps": [{"type": "PUBLIC"}],
        }
    }
)
NODES = orjson.dumps(
    {"nodes": [{"address": "10.0.0.1", "port": 80, "condition": "ENABLED", "type": "PRIMARY"}]}
)


def cases(lb_id: str) -> list[tuple[dict[str, Any], list[bytes]]]:
    servers, lbs = nova() + "/servers", clb() + "/loadbalancers"
    nodes = f"{lbs}/{lb_id}/nodes"
    return [
        request("POST", servers, SERVER),
        request("POST", nova(tenant="other-tenant") + "/servers", SERVER),
        request("POST", nova(region="NOWHERE") + "/servers", SERVER),
        request("POST", nova(region="NOWHERE") + "/servers", b"{not json"),
        request("POST", servers, b"{not json"),
        request("POST", servers, b""),
        request("POST", servers, b"[1, 2]"),
        request("POST", servers, orjson.dumps({"server": {}})),
        request("POST", servers, [SERVER[:10], SERVER[10:]]),
        request("POST", servers, b"x" * (LIMIT + 1)),
        request("POST", servers, b"{}", declared=LIMIT + 1),
        request("POST", servers, [b"x" * LIMIT, b"x" * LIMIT, b"x"]),
        request("POST", servers + "/", SERVER),  # the router's slash redirect
        request("POST", servers + "/detail", SERVER),  # 405
        request("PUT", servers, SERVER),  # 405
        request("GET", servers),
        request("POST", servers, SERVER, root_path="/mounted"),
        request("POST", "/mimicking/NovaApi-nothing/ORD/v2/t1/servers", SERVER),  # 404
        request("POST", lbs, LB),
        request("POST", clb(tenant="t2") + "/loadbalancers", LB),
        request("POST", clb(region="NOWHERE") + "/loadbalancers", LB),
        request("POST", lbs, b"{not json"),
        request("POST", lbs, orjson.dumps({"loadBalancer": {"name": "x"}})),
        request("POST", lbs, b"y" * (LIMIT + 1)),
        request("POST", lbs + "/", LB),
        request("DELETE", lbs, LB),
        request("GET", lbs),
        request("POST", nodes, NODES),
        request("POST", nodes, NODES),  # a duplicate: 413 (CLB's answer)
        request("POST", nodes, b"{not json"),
        request("POST", nodes, orjson.dumps({"nodes": []})),
        request("POST", f"{lbs}/999999/nodes", NODES),
        request("POST", f"{lbs}/not-an-id/nodes", NODES),
        request("POST", clb(region="NOWHERE") + f"/loadbalancers/{lb_id}/nodes", NODES),
        request("POST", clb(tenant="t3") + f"/loadbalancers/{lb_id}/nodes", NODES),
        request("POST", nodes + "/", NODES),
        request("POST", nodes, b"z" * (LIMIT + 1)),
        request("GET", nodes),
        request("PATCH", nodes, NODES),
        request("POST", f"{lbs}//nodes", NODES),  # an empty id: no route
        request("POST", "/identity/v2.0/tokens", b"{not json"),  # not a cloud bulk route
    ]


def test_fast_dispatch_answers_as_the_router(apps: Any) -> None:
    (fast, fast_loop), (slow, slow_loop) = apps
    scope, chunks = request("POST", clb() + "/loadbalancers", LB)
    created = [send_one(app, loop, scope, chunks) for app, loop in apps]
    assert created[0][:2] == created[1][:2]
    lb_id = str(orjson.loads(created[0][0][1]["body"])["loadBalancer"]["id"])
    assert len(fast_cloud(fast).routes) == 3 and not fast_cloud(slow).routes
    statuses = set()
    for scope, chunks in cases(lb_id):
        fast_sent, fast_error, fast_scope = send_one(fast, fast_loop, scope, chunks)
        slow_sent, slow_error, slow_scope = send_one(slow, slow_loop, scope, chunks)
        assert (fast_sent, fast_error) == (slow_sent, slow_error), scope["path"]
        assert fast_scope.get("path_params") == slow_scope.get("path_params"), scope["path"]
        statuses.add(fast_sent[0]["status"])
    # The cases reach every kind of answer: created, redirect, errors, 405, 413.
    assert {202, 307, 400, 404, 405, 413} <= statuses


def test_bulk_posts_never_reach_the_router(apps: Any) -> None:
    (fast, loop), _ = apps
    routes = list(fast.router.routes)
    fast.router.routes.clear()  # Starlette would now answer 404
    try:
        scope, chunks = request("POST", nova() + "/servers", SERVER)
        sent, error, after = send_one(fast, loop, scope, chunks)
        assert error is None and sent[0]["status"] == 202
        assert after["endpoint"] is create_server
        assert after["path_params"] == {"region": "ORD", "tenant": "t1"}
        scope, chunks = request("POST", clb() + "/loadbalancers", LB)
        sent, error, after = send_one(fast, loop, scope, chunks)
        assert error is None and sent[0]["status"] == 202
        assert after["endpoint"] is create_load_balancer
        lb_id = str(orjson.loads(sent[1]["body"])["loadBalancer"]["id"])
        scope, chunks = request("POST", f"{clb()}/loadbalancers/{lb_id}/nodes", NODES)
        sent, error, after = send_one(fast, loop, scope, chunks)
        assert error is None and sent[0]["status"] == 202
        assert after["endpoint"] is add_nodes
        assert after["path_params"] == {"region": "ORD", "tenant": "t1", "lb_id": lb_id}
        # Anything else reaches the (now empty) router.
        scope, chunks = request("POST", nova() + "/servers/", SERVER)
        sent, error, _ = send_one(fast, loop, scope, chunks)
        assert sent[0]["status"] == 404
    finally:
        fast.router.routes[:] = routes


def test_an_unexpected_error_is_the_logged_500(apps: Any, monkeypatch: Any) -> None:
    (fast, loop), _ = apps

    async def broken(*args: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(create_server, "handler", broken)
    scope, chunks = request("POST", nova() + "/servers", SERVER)
    sent, error, _ = send_one(fast, loop, scope, chunks)
    assert error == "RuntimeError: broken"  # re-raised for the server, after the answer
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b"Internal Server Error"
