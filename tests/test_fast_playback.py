"""The playback fast path (api_v2.FastPlayback) answers exactly as the Starlette route does.

Every request here is sent twice over ASGI, in-process: through the whole app (where
FastPlayback answers it) and straight to the router (Starlette's ``playback`` route); the
answers and the tracker captures must be the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect

from simulacra.app import create_app
from simulacra.config import Settings
from simulacra.errors import Invalid, TooLarge
from simulacra.virtual.api_v2 import (
    PlaybackHeaders,
    playback_name,
    playback_scenario,
)
from simulacra.web import receive_body
from tests.asgi import http_scope

PLAY = "/api/v2/scenarios/objects/shop/stubs"


scope_of = http_scope


class TestPlaybackName:
    @pytest.mark.parametrize(
        ("path", "name"),
        [
            ("/api/v2/scenarios/objects/shop/stubs", "shop"),
            ("/api/v2/scenarios/objects/h.example:shop/stubs", "h.example:shop"),
            ("/api/v2/scenarios/objects/shop/stubs/", None),  # Starlette redirects it
            ("/api/v2/scenarios/objects//stubs", None),
            ("/api/v2/scenarios/objects/stubs", None),
            ("/api/v2/scenarios/objects/a/b/stubs", None),
            ("/api/v2/scenarios/objects/shop/action", None),
            ("/api/v2/scenarios/objects/shop", None),
            ("/api/v2/matcher", None),
        ],
    )
    def test_paths(self, path: str, name: str | None) -> None:
        assert playback_name(scope_of("POST", path)) == name

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
    def test_only_post(self, method: str) -> None:
        assert playback_name(scope_of(method, PLAY)) is None

    def test_not_http_or_mounted(self) -> None:
        assert playback_name({**scope_of("POST", PLAY), "type": "websocket"}) is None
        assert playback_name(scope_of("POST", PLAY, root_path="/prefix")) is None


class TestPlaybackHeaders:
    def test_first_and_all(self) -> None:
        raw = [(b"host", b"a"), (b"session", b"s1"), (b"session", b"s2"), (b"x", b"\xe9")]
        headers = PlaybackHeaders(raw)
        assert headers.first("session") == "s1"  # as starlette's Headers.get
        assert headers.all["session"] == "s2"  # as dict(...) of the raw list
        assert headers.first("x") == "\xe9"  # latin-1
        assert headers.first("missing") is None

    def test_scenario(self) -> None:
        def scenario(name: str, *raw: tuple[bytes, bytes]) -> str:
            return playback_scenario(name, PlaybackHeaders(list(raw)))

        assert scenario("shop", (b"host", b"Example.COM:8001")) == "example.com:shop"
        assert scenario("shop") == "localhost:shop"
        assert scenario("shop", (b"host", b"h"), (b"target_host", b"T.Host")) == "t.host:shop"
        assert scenario("shop", (b"host", b"h"), (b"target_host", b"")) == "h:shop"
        assert scenario("Other.Host:shop", (b"host", b"h")) == "other.host:shop"
        for _ in range(2):  # refused every time, never remembered
            with pytest.raises(Invalid):
                scenario("bad name!", (b"host", b"h"))


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


def chunk(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


class TestReceiveBody:
    def run(self, receive: Any, limit: int = 10, declared: str | None = None) -> bytes:
        return asyncio.run(receive_body(receive, limit, declared))

    def test_one_message_and_chunks(self) -> None:
        assert self.run(receiver(chunk(b"abc"))) == b"abc"
        assert self.run(receiver(chunk(b"ab", True), chunk(b"", True), chunk(b"c"))) == b"abc"
        assert self.run(receiver({"type": "http.request"})) == b""

    def test_limits(self) -> None:
        with pytest.raises(TooLarge):
            self.run(receiver(chunk(b"x" * 11)))
        with pytest.raises(TooLarge):
            self.run(receiver(chunk(b"x" * 6, True), chunk(b"x" * 6)))
        with pytest.raises(TooLarge):
            self.run(receiver(chunk(b"")), declared="11")
        with pytest.raises(Invalid):
            self.run(receiver(chunk(b"")), declared="eleven")

    def test_disconnect(self) -> None:
        with pytest.raises(ClientDisconnect):
            self.run(receiver(chunk(b"ab", True), {"type": "http.disconnect"}))


# the fast path against the Starlette route ------------------------------------


async def call(
    target: Any, app: Starlette, scope: dict[str, Any], body: bytes = b""
) -> tuple[list[dict[str, Any]], tuple[Any, ...] | None]:
    """Send one request to ``target``; the messages sent back and the capture it queued."""
    scope = {**scope, "app": app, "headers": list(scope["headers"])}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    pending = app.state.tracker.queue._pending
    before = len(pending)
    await target(scope, receiver(chunk(body)), send)
    captured = pending[-1] if len(pending) > before else None
    return sent, captured


async def both(app: Starlette, scope: dict[str, Any], body: bytes = b"") -> tuple[Any, Any]:
    fast = await call(app, app, scope, body)
    slow = await call(app.router, app, scope, body)
    return fast, slow


def same_capture(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> None:
    assert a is not None and b is not None
    assert a[2:] == b[2:]  # all but the timings


@pytest.fixture
def running() -> Any:
    """An app on a memory store, scenario ``shop`` recorded and ``play`` in playback."""
    loop = asyncio.new_event_loop()
    app = create_app(Settings(store_url="memory://"))
    lifespan = app.router.lifespan_context(app)

    async def setup() -> None:
        await lifespan.__aenter__()
        base = "/api/v2/scenarios/objects/shop"
        host = [(b"host", b"localhost:8900")]

        async def put(method: str, path: str, doc: Any, headers: Any = ()) -> None:
            sent, _ = await call(
                app, app, scope_of(method, path, host + list(headers)), orjson.dumps(doc)
            )
            assert sent[0]["status"] in (200, 201), sent

        await put("PUT", "/api/v2/scenarios", {"scenario": "shop"})
        await put("POST", f"{base}/action", {"begin": None, "session": "rec", "mode": "record"})
        stubs = [
            {"request": {"bodyPatterns": {"contains": ["<a>1</a>"]}}, "response": "one"},
            {
                "request": {"bodyPatterns": {"contains": ["<seq/>"]}},
                "response": {"status": 202, "headers": {"X-Kind": "seq"}, "body": ["s1", "s2"]},
            },
            {
                "request": {"method": "POST", "headers": {"X-Want": "yes"}},
                "response": {"body": "wanted {{ request.headers['x-want'] }}"},
            },
        ]
        for doc in stubs:
            if isinstance(doc["response"], str):
                doc["response"] = {"body": doc["response"]}
            await put("PUT", f"{base}/stubs", doc, [(b"session", b"rec")])
        await put("POST", f"{base}/action", {"end": None, "session": "rec"})
        await put("POST", f"{base}/action", {"begin": None, "session": "play", "mode": "playback"})

    loop.run_until_complete(setup())
    yield app, loop
    loop.run_until_complete(lifespan.__aexit__(None, None, None))
    loop.close()


HOST = (b"host", b"localhost:8900")
SESSION = (b"session", b"play")


PLAY_CASES = pytest.mark.parametrize(
    ("headers", "body", "query"),
    [
        ([HOST, SESSION], b"<x> <a>1</a> </x>", b""),  # a match
        ([HOST, SESSION, (b"x-want", b"yes")], b"", b"a=1"),  # a template, a query
        ([HOST, SESSION], b"<b/>", b""),  # no match: E017
        ([HOST], b"<a>1</a>", b""),  # no session header
        ([HOST, (b"stubo-request-session", b"play")], b"<a>1</a>", b""),
        ([HOST, (b"session", b"nope")], b"<a>1</a>", b""),  # unknown session
        ([(b"host", b"elsewhere"), SESSION], b"<a>1</a>", b""),  # another host's namespace
        ([HOST, SESSION, (b"content-length", b"99999999999")], b"<a>1</a>", b""),
        ([HOST, SESSION, (b"content-length", b"x")], b"<a>1</a>", b""),
        ([HOST, SESSION, (b"stubo-request-path", b"/p")], b"<a>1</a>", b""),
        ([HOST, SESSION, (b"stubo-request-headers", b"{bad")], b"<a>1</a>", b""),
    ],
)


@PLAY_CASES
def test_same_answer_and_record(running: Any, headers: Any, body: bytes, query: bytes) -> None:
    app, loop = running
    scope = scope_of("POST", PLAY, headers, query)
    (fast, fast_capture), (slow, slow_capture) = loop.run_until_complete(both(app, scope, body))
    assert fast == slow
    same_capture(fast_capture, slow_capture)


@PLAY_CASES
def test_answer_now_agrees_with_the_route(
    running: Any, headers: Any, body: bytes, query: bytes
) -> None:
    """The built-in server's shortcut (``app.answer_now``) answers and records as the route."""
    app, loop = running
    scope = scope_of("POST", PLAY, headers, query)
    pending = app.state.tracker.queue._pending
    before = len(pending)
    answer = app.answer_now({**scope, "headers": list(scope["headers"])}, body)
    captured = pending[-1] if len(pending) > before else None
    slow, slow_capture = loop.run_until_complete(call(app.router, app, scope, body))
    if answer is None:  # left to the app: a session this process has not loaded
        assert captured is None and slow[0]["status"] == 404
        return
    status, raw_headers, sent = answer
    assert slow == [
        {"type": "http.response.start", "status": status, "headers": list(raw_headers)},
        {"type": "http.response.body", "body": sent},
    ]
    same_capture(captured, slow_capture)


def test_answer_now_leaves_other_requests_to_the_app(running: Any) -> None:
    app, _ = running
    assert app.answer_now(scope_of("GET", PLAY, [HOST, SESSION]), b"") is None
    assert app.answer_now(scope_of("POST", "/api/v2/matcher", [HOST, SESSION]), b"") is None


def test_answer_now_delays_by_the_policy(running: Any) -> None:
    """A delayed stub: an awaitable of the answer, which waits out the policy."""
    app, loop = running
    svc = app.state.virtual
    response = svc._indexes["localhost:shop"].stubs[0].responses[0]
    policy = {"name": "slow", "delay_type": "fixed", "milliseconds": 50}
    sent, _ = loop.run_until_complete(
        call(app, app, scope_of("PUT", "/api/v2/delay-policy", [HOST]), orjson.dumps(policy))
    )
    assert sent[0]["status"] in (200, 201)
    response.delay_policy = "slow"
    answer = app.answer_now(scope_of("POST", PLAY, [HOST, SESSION]), b"<a>1</a>")
    assert not isinstance(answer, tuple) and answer is not None
    started = loop.time()
    status, _, body = loop.run_until_complete(answer)
    assert (status, body) == (200, b"one") and loop.time() - started >= 0.045


def test_bad_scenario_name(running: Any) -> None:
    app, loop = running
    scope = scope_of("POST", "/api/v2/scenarios/objects/bad name/stubs", [HOST, SESSION])
    (fast, a), (slow, b) = loop.run_until_complete(both(app, scope, b"<a>1</a>"))
    assert fast == slow and fast[0]["status"] == 400
    same_capture(a, b)


def test_a_sequence_continues_across_both_paths(running: Any) -> None:
    app, loop = running
    scope = scope_of("POST", PLAY, [HOST, SESSION])
    (fast, _), (slow, _) = loop.run_until_complete(both(app, scope, b"<seq/>"))
    assert (fast[1]["body"], slow[1]["body"]) == (b"s1", b"s2")
    assert fast[0]["status"] == 202 and (b"x-kind", b"seq") in fast[0]["headers"]
    again, _ = loop.run_until_complete(call(app, app, scope, b"<seq/>"))
    assert again[1]["body"] == b"s2"


def test_an_unexpected_error_is_a_500_envelope(running: Any) -> None:
    app, loop = running
    svc = app.state.virtual

    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    svc.playback = broken
    scope = scope_of("POST", PLAY, [HOST, SESSION])
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app({**scope}, receiver(chunk(b"<a>1</a>")), send)

    with pytest.raises(RuntimeError):
        loop.run_until_complete(run())
    assert sent[0]["status"] == 500
    assert orjson.loads(sent[1]["body"])["error"]["code"] == 500
    assert app.state.tracker.queue._pending[-1][10] == 500


def test_no_capture_when_tracking_is_off(running: Any) -> None:
    app, loop = running
    app.state.tracker.enabled = False
    scope = scope_of("POST", PLAY, [HOST, SESSION])
    sent, captured = loop.run_until_complete(call(app, app, scope, b"<a>1</a>"))
    assert sent[1]["body"] == b"one" and captured is None


def test_playback_never_reaches_the_router(running: Any) -> None:
    app, loop = running
    routes = list(app.router.routes)
    app.router.routes.clear()  # Starlette would now answer 404
    try:
        scope = scope_of("POST", PLAY, [HOST, SESSION])
        sent, _ = loop.run_until_complete(call(app, app, scope, b"<a>1</a>"))
        assert (sent[0]["status"], sent[1]["body"]) == (200, b"one")
        sent, _ = loop.run_until_complete(call(app, app, scope_of("GET", PLAY, [HOST])))
        assert sent[0]["status"] == 404
    finally:
        app.router.routes[:] = routes


def test_last_used_timestamp_follows_the_clock() -> None:
    from datetime import UTC, datetime, timedelta

    from simulacra.virtual.service import VirtualService

    svc = VirtualService(object())  # type: ignore[arg-type]
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = datetime.strptime(svc._timestamp(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
    assert svc._timestamp() == svc._timestamp()
    clock = [datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)]
    injected = VirtualService(object(), now=lambda: clock[0])  # type: ignore[arg-type]
    assert injected._timestamp() == "2030-01-02 03:04:05"
    clock[0] += timedelta(seconds=1)
    assert injected._timestamp() == "2030-01-02 03:04:06"
