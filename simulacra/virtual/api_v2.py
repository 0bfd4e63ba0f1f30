"""Mirage REST API v2: the HTTP edge only (parse, call the domain, render the envelope).

Every error is ``{"version", "error": {"code", "message"}}`` with the HTTP status
equal to ``code``. Deliberate differences from Mirage are in docs/compatibility.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from simulacra import __version__
from simulacra.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    Invalid,
    NoMatch,
    NotFound,
    PreconditionFailed,
    TooLarge,
    Unavailable,
)
from simulacra.virtual.matching import PlaybackRequest
from simulacra.virtual.model import Response as ModelResponse
from simulacra.virtual.model import Session, check_name, normalize_host, qualify
from simulacra.virtual.service import VirtualService
from simulacra.virtual.tracker import BODY_CAPTURE_BYTES, capture, capture_sent, join_headers
from simulacra.virtual.tracking import DELAY_KEY, SESSION_KEY, Tracker, track
from simulacra.web import (
    check_declared_length,
    json_response,
    read_body,
    read_json,
    receive_body,
    request_host,
    truthy,
)

log = logging.getLogger("simulacra")

VERSION_HEADER = {"x-stubo-version": __version__}

STATUS_OF: dict[type[DomainError], int] = {
    Invalid: 400,
    NotFound: 404,
    AlreadyExists: 422,
    Conflict: 409,
    PreconditionFailed: 412,
    NoMatch: 400,  # Mirage's E017 is a 400; clients test for it
    TooLarge: 413,
    Unavailable: 503,  # the shared store is unreachable: retry, the instance recovers
}

Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, message: str) -> Response:
    body = {"version": __version__, "error": {"code": status, "message": message}}
    return json_response(body, status, VERSION_HEADER)


def envelope(data: object, status: int = 200) -> Response:
    return json_response({"version": __version__, "data": data}, status, VERSION_HEADER)


def endpoint(overrides: dict[type[DomainError], int] | None = None) -> Callable[[Handler], Handler]:
    """Render domain errors in the v2 envelope; ``overrides`` remaps a kind for one route.

    Also hands every outcome to the tracker, which keeps playback, stub and session calls.
    """

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except DomainError as exc:
                status = (overrides or {}).get(type(exc)) or STATUS_OF.get(type(exc), 400)
                response = error_response(status, exc.message)
            except Exception:
                track(request.scope, None, t0)  # the app's error handler answers 500
                raise
            track(request.scope, response, t0)
            return response

        return wrapped

    return decorate


def service(request: Request) -> VirtualService:
    return request.app.state.virtual


def limit(request: Request) -> int:
    return request.app.state.settings.max_body_bytes


def scenario_ref(name: str) -> str:
    return f"/api/v2/scenarios/objects/{name}"


def path_scenario(request: Request) -> str:
    host = request.headers.get("target_host") or request_host(request)
    return qualify(request.path_params["name"], host.lower())


def forced(request: Request) -> bool:
    return truthy(request.headers.get("force")) or truthy(request.query_params.get("force"))


# scenarios -----------------------------------------------------------------


@endpoint()
async def put_scenario(request: Request) -> Response:
    """Create a scenario (201; 422 when it exists)."""
    body = await read_json(request, limit(request))
    if not isinstance(body, dict) or "scenario" not in body:
        raise Invalid('body must be {"scenario": "<name>"}')
    name = qualify(body["scenario"], request_host(request))
    scenario = await service(request).create_scenario(name)
    # Mirage answers the bare object here, without the envelope; clients read it so.
    return json_response(
        {"name": scenario.name, "scenarioRef": scenario_ref(scenario.name)}, 201, VERSION_HEADER
    )


@endpoint()
async def list_scenarios(request: Request) -> Response:
    """List scenarios with their scenarioRef."""
    scenarios = await service(request).list_scenarios(_host_filter(request))
    data = [{"name": s.name, "scenarioRef": scenario_ref(s.name)} for s in scenarios]
    return envelope(data)


def _host_filter(request: Request) -> str | None:
    all_hosts = request.query_params.get("all-hosts", "true").lower() != "false"
    return None if all_hosts else request_host(request)


@endpoint()
async def scenario_details(request: Request) -> Response:
    """List scenarios with stub counts, sizes and sessions."""
    svc = service(request)
    data = []
    for scenario in await svc.list_scenarios(_host_filter(request)):
        detail = await svc.describe(scenario)
        detail["scenarioRef"] = scenario_ref(scenario.name)
        data.append(detail)
    return envelope(data)


@endpoint()
async def get_scenario(request: Request) -> Response:
    """Show one scenario: stubs, size, sessions."""
    svc = service(request)
    scenario = await svc.get_scenario(path_scenario(request))
    detail = await svc.describe(scenario)
    detail["stubs"] = detail["stub_count"]  # Mirage's docs name it so, its code stub_count
    detail["scenarioRef"] = scenario_ref(scenario.name)
    return json_response(detail, 200, VERSION_HEADER)


@endpoint()
async def delete_scenario(request: Request) -> Response:
    """Delete a scenario with its stubs and sessions (409 while active unless forced)."""
    name = path_scenario(request)
    await service(request).delete_scenario(name, force=forced(request))
    return envelope({"message": f"Deleted scenario {name}"})


# sessions ------------------------------------------------------------------


@endpoint()
async def scenario_action(request: Request) -> Response:
    """Begin a session (record or playback), end one, end all, or link to an export."""
    name = path_scenario(request)
    body = await read_json(request, limit(request))
    if not isinstance(body, dict):
        raise Invalid("action body must be a JSON object")
    request.scope[SESSION_KEY] = body.get("session")  # for the tracker record
    svc = service(request)
    if "begin" in body:
        data = await svc.begin_session(name, body.get("session"), body.get("mode"))
        data["scenarioRef"] = scenario_ref(name)
        return envelope(data)
    if "end" in body:
        if body["end"] == "sessions":
            return envelope(await svc.end_all_sessions(name))
        return envelope(await svc.end_session(name, body.get("session")))
    if "export" in body:
        # Imported here: api_v2_archive builds on this module's helpers.
        from simulacra.virtual.api_v2_archive import export_action

        return envelope(await export_action(request, name, body))
    raise Invalid(
        'unknown action: send {"begin": null, "session": s, "mode": "record|playback"},'
        ' {"end": null, "session": s}, {"end": "sessions"} or {"export": null}'
    )


# stubs ---------------------------------------------------------------------


def _session_header(request: Request) -> str:
    name = request.headers.get("session") or request.headers.get("stubo-request-session")
    if not name:
        raise Invalid("the 'session' header is missing")
    return name


@endpoint()
async def put_stub(request: Request) -> Response:
    """Add a stub while recording; the same matchers again append a response."""
    headers = request.headers
    document = await read_json(request, limit(request))
    stateful = headers.get("stateful")
    result = await service(request).put_stub(
        host=request_host_of_path(request),
        session_name=_session_header(request),
        scenario_name=path_scenario(request),
        document=document,
        priority=headers.get("priority"),
        stateful=True if stateful is None else truthy(stateful),
        args=dict(request.query_params),
        delay_policy=headers.get("delay_policy"),
        recorded=headers.get("stub_created_date"),
    )
    status = 201 if result.status == "created" else 200
    data = {"message": result.message, "status": result.status, "key": result.stub.id}
    return envelope(data, status)


def request_host_of_path(request: Request) -> str:
    """Sessions live in their scenario's host namespace."""
    return path_scenario(request).rpartition(":")[0]


@endpoint()
async def list_stubs(request: Request) -> Response:
    """List a scenario's stubs."""
    stubs = await service(request).list_stubs(path_scenario(request))
    data = [
        {
            "id": stub.id,
            "stub": stub.document(),
            "matchers_hash": stub.matchers_hash,
            "space_used": stub.space_used,
            "recorded": stub.recorded,
            "scenario": stub.scenario,
        }
        for stub in stubs
    ]
    return envelope(data)


@endpoint()
async def delete_stubs(request: Request) -> Response:
    """Delete a scenario's stubs (409 while sessions are active unless forced)."""
    count = await service(request).delete_stubs(path_scenario(request), force=forced(request))
    return envelope(f"Deleted stubs count: {count}")


def _playback_request(request: Request, body: bytes) -> PlaybackRequest:
    # Read the ASGI scope directly: request.url and request.headers cost more than
    # the matching itself on this path (bench/profile_playback.md).
    scope = request.scope
    return PlaybackRequest.from_proxy_headers(
        scope["method"],
        scope["path"],
        scope["query_string"].decode("latin-1"),
        {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        body.decode("utf-8", errors="replace"),
    )


@endpoint()
async def playback(request: Request) -> Response:
    """Play back: the matching stub's status, headers and body."""
    svc = service(request)
    scenario = path_scenario(request)
    session = await svc.find_session(scenario.rpartition(":")[0], _session_header(request))
    if session.scenario != scenario:
        raise Invalid(f"Session {session.name} plays scenario {session.scenario}, not {scenario}")
    body = await read_body(request, limit(request))
    response = await svc.playback(session, _playback_request(request, body))
    if response.delay_policy:
        await _delay(request, svc, session.host, response.delay_policy)
    return Response(response.body, response.status, response.headers)


async def _delay(request: Request, svc: VirtualService, host: str, policy: str) -> None:
    await _delay_scope(request.scope, svc, host, policy)


async def _delay_scope(scope: Scope, svc: VirtualService, host: str, policy: str) -> None:
    """Hold the response for its delay policy; sleeping lets other requests run meanwhile."""
    ms = svc.delay_ms(host, policy)
    if ms:
        scope[DELAY_KEY] = ms  # for the tracker record
        await asyncio.sleep(ms / 1000)


# playback without the framework ---------------------------------------------
#
# Playback is the hot path, and Starlette's middleware, router, Request and Response cost
# about as much as playback itself (bench/profile_playback.md). ``FastPlayback`` answers
# exactly the requests Starlette would route to ``playback`` (the first route), from the
# ASGI scope, with the same answers, errors and tracker records; everything else goes on
# to Starlette. It sits inside ServerErrorMiddleware, so an unexpected error is still a
# logged 500 envelope.

PLAYBACK_PREFIX = "/api/v2/scenarios/objects/"
_STUBS = "/stubs"


def playback_name(scope: Scope) -> str | None:
    """The ``{name}`` of a request that Starlette would route to ``playback``, else None.

    ``POST /api/v2/scenarios/objects/{name}/stubs`` with ``{name}`` one non-empty segment;
    a mounted app (``root_path``) is left to Starlette.
    """
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(PLAYBACK_PREFIX) or not path.endswith(_STUBS):
        return None
    name = path[len(PLAYBACK_PREFIX) : -len(_STUBS)]
    if not name or "/" in name:
        return None
    return name


class PlaybackHeaders:
    """The headers playback reads, from ASGI's raw list, as starlette's Headers gives them.

    ``all`` maps every (lowercase) name to its last value, as ``_playback_request`` passes
    them to matching; ``first`` gives a name's first value, as ``Headers.get`` does.
    """

    __slots__ = ("all", "raw", "unique")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self.all = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        self.unique = len(self.all) == len(raw)  # no name repeats: first is last

    def first(self, name: str) -> str | None:
        if self.unique:
            return self.all.get(name)
        key = name.encode("latin-1")
        return next((v.decode("latin-1") for k, v in self.raw if k == key), None)


_scenarios: dict[tuple[str, str | None, str | None], str] = {}


def playback_scenario(name: str, headers: PlaybackHeaders) -> str:
    """``path_scenario`` for the fast path, memoized: a run plays a few scenarios many times."""
    target_host, host = headers.first("target_host"), headers.first("host")
    key = (name, target_host, host)
    scenario = _scenarios.get(key)
    if scenario is None:
        where = target_host or normalize_host(host or "localhost")
        scenario = qualify(name, where.lower())  # Invalid is raised, never remembered
        if len(_scenarios) >= 1024:  # invented Host headers must not grow it forever
            _scenarios.clear()
        _scenarios[key] = scenario
    return scenario


def wire(response: ModelResponse) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes, bytes]:
    """What playback sends for ``response``: status, raw headers and body as starlette's
    ``Response`` builds them, plus the tracker's header block and body start; built once
    per stub response (a rendered template is new each time)."""
    sent = response.wire
    if sent is None:
        built = Response(response.body, response.status, response.headers)
        body = bytes(built.body)
        sent = (
            built.status_code,
            built.raw_headers,
            body,
            join_headers(built.raw_headers),
            body[:BODY_CAPTURE_BYTES],
        )
        response.wire = sent
    return sent


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, raw headers, body


class PlaybackCall:
    """A playback request's scenario and session, read from the scope (Invalid if unusable)."""

    __slots__ = ("headers", "host", "scenario", "session_name")

    def __init__(self, scope: Scope, name: str) -> None:
        self.headers = PlaybackHeaders(scope["headers"])
        self.scenario = playback_scenario(name, self.headers)
        session_name = self.headers.first("session") or self.headers.first("stubo-request-session")
        if not session_name:
            raise Invalid("the 'session' header is missing")
        self.session_name = session_name
        self.host = self.scenario.rpartition(":")[0]

    def check(self, session: Session) -> None:
        """The session plays this scenario."""
        if session.scenario != self.scenario:
            raise Invalid(
                f"Session {session.name} plays scenario {session.scenario}, not {self.scenario}"
            )

    def check_body(self, body: bytes, limit: int) -> None:
        """A body read whole is within ``limit``, as ``receive_body`` would have found."""
        check_declared_length(self.headers.first("content-length"), limit)
        if len(body) > limit:
            raise TooLarge(f"request body is over the {limit} byte limit")

    def request(self, scope: Scope, body: bytes) -> PlaybackRequest:
        return PlaybackRequest.from_proxy_headers(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            self.headers.all,
            body.decode("utf-8", errors="replace"),
        )


def _tracker(state: Any) -> Tracker | None:
    tracker: Tracker | None = getattr(state, "tracker", None)
    return tracker if tracker is not None and tracker.enabled else None


def _answered(scope: Scope, response: ModelResponse, tracker: Tracker | None, t0: float) -> Answer:
    """What playback sends for ``response``, recorded by the tracker."""
    status, raw_headers, body, header_block, body_start = wire(response)
    if tracker is not None:
        t1 = time.perf_counter()
        tracker.queue.add(capture_sent(scope, status, header_block, len(body), body_start, t0, t1))
    return status, raw_headers, body


def _refused(scope: Scope, exc: DomainError, tracker: Tracker | None, t0: float) -> Response:
    """The error envelope for ``exc``, recorded by the tracker."""
    error = error_response(STATUS_OF.get(type(exc), 400), exc.message)
    if tracker is not None:
        tracker.queue.add(capture(scope, error, t0, time.perf_counter()))
    return error


class FastPlayback:
    """ASGI middleware: playback answered here, every other request passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = playback_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = scope["app"].state
        tracker = _tracker(state)
        try:
            response = await self._playback(scope, receive, state, name)
        except DomainError as exc:
            await _refused(scope, exc, tracker, t0)(scope, receive, send)
            return
        except Exception:
            if tracker is not None:
                tracker.queue.add(capture(scope, None, t0, time.perf_counter()))
            raise  # ServerErrorMiddleware logs it and answers the 500 envelope
        status, raw_headers, body = _answered(scope, response, tracker, t0)
        # A copy: the cached list must survive whatever a server or middleware does to it.
        headers = list(raw_headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _playback(scope: Scope, receive: Receive, state: Any, name: str) -> ModelResponse:
        """``playback`` on the scope: the same steps, in the same order, the same errors."""
        svc: VirtualService = state.virtual
        call = PlaybackCall(scope, name)
        session = svc.cached_session(call.host, call.session_name)
        if session is None:
            session = await svc.find_session(call.host, call.session_name)
        call.check(session)
        limit = state.settings.max_body_bytes
        body = await receive_body(receive, limit, call.headers.first("content-length"))
        response = await svc.playback(session, call.request(scope, body))
        if response.delay_policy:
            await _delay_scope(scope, svc, session.host, response.delay_policy)
        return response


class PlaybackShortcut:
    """Playback for a server that has the whole body in hand: ``app.answer_now``.

    The built-in server (simulacra/server.py) calls it before any ASGI message or task.
    The same steps, answers, errors and tracker records as ``FastPlayback``: the answer, or
    an awaitable of it when a delay policy holds it back. None (nothing done) for any other
    request, and for a playback that would wait for the store (a session or stub index not
    loaded here yet): the app then serves it. What it reads of the app's state is bound
    once (starlette's ``State`` is a dict behind ``__getattr__``).
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self.tracker: Tracker = state.tracker
        self.limit: int = state.settings.max_body_bytes
        self.svc: VirtualService | None = None  # the app's startup makes it

    def __call__(self, scope: Scope, body: bytes) -> Answer | Awaitable[Answer] | None:
        name = playback_name(scope)
        if name is None:
            return None
        t0 = time.perf_counter()
        tracker: Tracker | None = self.tracker
        if not tracker.enabled:  # type: ignore[union-attr]
            tracker = None
        svc = self.svc
        if svc is None:
            svc = self.svc = self.state.virtual
        try:
            call = PlaybackCall(scope, name)
            session = svc.cached_session(call.host, call.session_name)
            if session is None:
                return None
            call.check(session)
            call.check_body(body, self.limit)
            response = svc.playback_now(session, call.request(scope, body))
            if response is None:
                return None
        except DomainError as exc:
            error = _refused(scope, exc, tracker, t0)
            return error.status_code, error.raw_headers, bytes(error.body)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if tracker is not None:
                tracker.queue.add(capture(scope, None, t0, time.perf_counter()))
            error = error_response(500, "internal error; the server log has the details")
            return error.status_code, error.raw_headers, bytes(error.body)
        if response.delay_policy:
            return _delayed(scope, svc, session.host, response, tracker, t0)
        return _answered(scope, response, tracker, t0)


async def _delayed(
    scope: Scope,
    svc: VirtualService,
    host: str,
    response: ModelResponse,
    tracker: Tracker | None,
    t0: float,
) -> Answer:
    assert response.delay_policy is not None
    await _delay_scope(scope, svc, host, response.delay_policy)
    return _answered(scope, response, tracker, t0)


@endpoint({NoMatch: 404})
async def matcher(request: Request) -> Response:
    """Play back, answering the stub's response as JSON parts for a proxy."""
    key = request.headers.get("session")
    parts = key.split(":") if key else []
    usage = "the 'session' header must be 'scenario:session' (or 'host:scenario:session')"
    if len(parts) not in (2, 3) or not all(parts):
        raise Invalid(usage)
    *scenario_part, session_name = parts
    try:
        scenario = qualify(":".join(scenario_part), request_host(request))
        check_name("session", session_name)
    except Invalid as exc:
        raise Invalid(f"{usage}: {exc.message}") from None
    svc = service(request)
    session = await svc.find_session(scenario.rpartition(":")[0], session_name)
    if session.scenario != scenario:
        raise NotFound(f"Session {session_name} not found in scenario {scenario}")
    body = await read_body(request, limit(request))
    response = await svc.playback(session, _playback_request(request, body))
    if response.delay_policy:  # Mirage never delayed the matcher; a proxy wants the delay too
        await _delay(request, svc, session.host, response.delay_policy)
    return json_response(
        {"body": response.body, "headers": response.headers, "statusCode": response.status}
    )


ROUTES = [
    # Playback first: the router scans in order, and this is the hot path.
    Route("/api/v2/scenarios/objects/{name}/stubs", playback, methods=["POST"]),
    Route("/api/v2/scenarios", put_scenario, methods=["PUT"]),
    Route("/api/v2/scenarios", list_scenarios, methods=["GET"]),
    Route("/api/v2/scenarios/detail", scenario_details, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}", get_scenario, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}", delete_scenario, methods=["DELETE"]),
    Route("/api/v2/scenarios/objects/{name}/action", scenario_action, methods=["POST"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", put_stub, methods=["PUT"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", list_stubs, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", delete_stubs, methods=["DELETE"]),
    Route("/api/v2/matcher", matcher, methods=["POST"]),
]
