"""Mirage REST API v2: the HTTP edge only (parse, call the domain, render the envelope).

Every error is ``{"version", "error": {"code", "message"}}`` with the HTTP status
equal to ``code``. Deliberate differences from Mirage are in docs/compatibility.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import wraps
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from simulacra import __version__
from simulacra.dataplane.ports import Ports, parse_port
from simulacra.dataplane.request import Answer, json_answer
from simulacra.dataplane.request import Request as RequestValue
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
    shown,
)
from simulacra.models import (
    NDJSON,
    UNSET,
    ForceArgs,
    Message,
    ScenarioCreate,
    ScenarioDetail,
    ScenarioQuery,
    ScenarioRef,
    SessionAction,
    StubDocument,
    StubHeaders,
    StubListed,
    StubPage,
    StubsImported,
    StubStored,
    convert,
    plain,
)
from simulacra.openapi import Reply
from simulacra.virtual.model import MODES, Stub, qualify
from simulacra.virtual.recording import Upstream
from simulacra.virtual.service import STUB_PAGE, VirtualService
from simulacra.virtual.tracker import BODY_CAPTURE_BYTES, is_tracked, join_headers
from simulacra.web import (
    json_items,
    json_response,
    operation,
    read_body,
    request_host,
    starlette_response,
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


def error_answer(status: int, message: str, **extra: Any) -> Answer:
    """Mirage's v2 error envelope, for the admin routes and every playback route alike;
    ``extra`` keys join ``code`` and ``message`` (a 404's ``nearMisses``)."""
    body = {"version": __version__, "error": {"code": status, "message": message, **extra}}
    return json_answer(status, orjson.dumps(body), _VERSION_RAW)


_VERSION_RAW = [(b"x-stubo-version", __version__.encode())]


def error_response(status: int, message: str) -> Response:
    return starlette_response(error_answer(status, message))


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
                track(request, None, t0)  # the app's error handler answers 500
                raise
            track(request, response, t0)
            return response

        return wrapped

    return decorate


def note_session(request: Request, name: object) -> None:
    """The session a handler found in a body or argument, for the tracker's record."""
    request.state.tracked_session = name


def track(request: Request, response: Response | None, t0: float) -> None:
    """Queue a tracked call (stub and session calls, API v1) for the tracker; ``response``
    None is a failure, answered 500 by the app's error handler."""
    tracker = request.app.state.tracker
    if not tracker.enabled or not is_tracked(request.scope["path"]):
        return
    if response is None:
        status, header_block, body = 500, b"", b"internal error"
    else:
        # A streamed answer (a listing of every stub) is tracked without its body.
        streamed = isinstance(response, StreamingResponse)
        status, header_block, body = (
            response.status_code,
            join_headers(response.raw_headers),
            b"" if streamed else bytes(response.body),
        )
    tracker.note(
        RequestValue.from_scope(request.scope),
        status,
        header_block,
        len(body) if response is not None else 0,
        body[:BODY_CAPTURE_BYTES],
        t0,
        session=getattr(request.state, "tracked_session", None),
    )


def service(request: Request) -> VirtualService:
    return request.app.state.virtual


def scenario_ref(name: str) -> str:
    return f"/api/v2/scenarios/objects/{name}"


def path_scenario(request: Request) -> str:
    host = request.headers.get("target_host") or request_host(request)
    return qualify(request.path_params["name"], host.lower())


def forced(request: Request, query: ForceArgs) -> bool:
    """``force`` as a header (Mirage's) or in the query string."""
    return truthy(request.headers.get("force")) or truthy(query.force or None)


# scenarios -----------------------------------------------------------------


# Links for stateful tests of the document: a created scenario's own routes.
_SCENARIO_LINKS = {
    target: {"name": "$response.body#/name"}
    for target in ("get_scenario", "list_stubs", "delete_scenario")
}


@endpoint()
@operation(
    body=ScenarioCreate,
    replies={201: Reply(ScenarioRef, "Created (422: it exists)", links=_SCENARIO_LINKS)},
)
async def put_scenario(request: Request, body: ScenarioCreate) -> Response:
    """Create a scenario (201; 422 when it exists)."""
    name = qualify(body.scenario, request_host(request))
    scenario = await service(request).create_scenario(name)
    # Mirage answers the bare object here, without the envelope; clients read it so.
    return json_response(
        {"name": scenario.name, "scenarioRef": scenario_ref(scenario.name)}, 201, VERSION_HEADER
    )


@endpoint()
@operation(query=ScenarioQuery, replies={200: Reply(list[ScenarioRef], enveloped=True)})
async def list_scenarios(request: Request, query: ScenarioQuery) -> Response:
    """List scenarios with their scenarioRef."""
    scenarios = await service(request).list_scenarios(_host_filter(request, query))
    data = [{"name": s.name, "scenarioRef": scenario_ref(s.name)} for s in scenarios]
    return envelope(data)


def _host_filter(request: Request, query: ScenarioQuery) -> str | None:
    """None (every host's) unless ``all-hosts=false``: then the Host header's."""
    return None if query.all_hosts.lower() != "false" else request_host(request)


@endpoint()
@operation(query=ScenarioQuery, replies={200: Reply(list[ScenarioDetail], enveloped=True)})
async def scenario_details(request: Request, query: ScenarioQuery) -> Response:
    """List scenarios with stub counts, sizes and sessions."""
    svc = service(request)
    data = []
    for scenario in await svc.list_scenarios(_host_filter(request, query)):
        detail = await svc.describe(scenario)
        detail["scenarioRef"] = scenario_ref(scenario.name)
        data.append(detail)
    return envelope(data)


@endpoint()
@operation(replies={200: Reply(ScenarioDetail)})
async def get_scenario(request: Request) -> Response:
    """Show one scenario: stubs, size, sessions."""
    svc = service(request)
    scenario = await svc.get_scenario(path_scenario(request))
    detail = await svc.describe(scenario)
    detail["stubs"] = detail["stub_count"]  # Mirage's docs name it so, its code stub_count
    detail["scenarioRef"] = scenario_ref(scenario.name)
    return json_response(detail, 200, VERSION_HEADER)


@endpoint()
@operation(query=ForceArgs, replies={200: Reply(Message, enveloped=True)})
async def delete_scenario(request: Request, query: ForceArgs) -> Response:
    """Delete a scenario with its stubs and sessions (409 while active unless forced)."""
    name = path_scenario(request)
    force = forced(request, query)
    await remove_scenario(service(request), request.app.state.ports, name, force=force)
    return envelope({"message": f"Deleted scenario {name}"})


async def remove_scenario(svc: VirtualService, ports: Ports, name: str, *, force: bool) -> None:
    """Delete a scenario with its stubs and sessions, and close the ports they served."""
    await svc.delete_scenario(name, force=force)
    await ports.reconcile(svc.bound_sessions())


# sessions ------------------------------------------------------------------


@endpoint()
@operation(body=SessionAction, replies={200: Reply(dict[str, Any], enveloped=True)})
async def scenario_action(request: Request, body: SessionAction) -> Response:
    """Begin a session (record or playback), end one, end all, or link to an export."""
    name = path_scenario(request)
    session = body.session or None
    note_session(request, session)
    svc = service(request)
    ports: Ports = request.app.state.ports
    if body.begin is not UNSET:
        mode = body.mode or None
        if mode is not None and mode not in MODES:  # None: the domain's "missing" message
            raise Invalid(f"mode must be 'record' or 'playback', got {shown(mode)}")
        upstream = None
        if body.upstream:
            upstream = Upstream.parse(body.upstream, plain(body)).to_dict()
        data = await begin_session(
            svc,
            ports,
            name,
            session,
            mode,
            port=body.port if isinstance(body.port, int) else None,
            append=body.append is True,
            upstream=upstream,
        )
        data["scenarioRef"] = scenario_ref(name)
        return envelope(data)
    if body.end is not UNSET:
        return envelope(await end_sessions(svc, ports, name, session, every=body.end == "sessions"))
    if body.export is not UNSET:
        # Imported here: api_v2_archive builds on this module's helpers.
        from simulacra.virtual.api_v2_archive import export_action

        runnable = body.runnable if body.runnable is not UNSET else None
        return envelope(await export_action(request, name, session, runnable))
    raise Invalid(
        'unknown action: send {"begin": null, "session": s, "mode": "record|playback"},'
        ' {"end": null, "session": s}, {"end": "sessions"} or {"export": null}'
    )


async def begin_session(
    svc: VirtualService,
    ports: Ports,
    scenario: str,
    session: object,
    mode: object,
    *,
    port: object = None,
    append: bool = False,
    upstream: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Begin a session; with ``port`` (0: any free one) on a port of its own.

    The port is bound before the session is stored, so a port that cannot be bound leaves
    nothing behind; it is released again if the session cannot begin.
    """
    bound = await ports.reserve(parse_port(port)) if port is not None else None
    try:
        data = await svc.begin_session(
            scenario, session, mode, port=bound, append=append, upstream=upstream
        )
    except BaseException:
        if bound is not None:
            ports.release(bound)
        raise
    await ports.reconcile(svc.bound_sessions())
    return data


async def end_sessions(
    svc: VirtualService, ports: Ports, scenario: str, session: object, *, every: bool = False
) -> dict[str, Any]:
    """End ``session`` (``every``: all the scenario's active ones); close their ports."""
    if every:
        ended = await svc.end_all_sessions(scenario)
    else:
        ended = await svc.end_session(scenario, session)
    await ports.reconcile(svc.bound_sessions())
    return ended


# stubs ---------------------------------------------------------------------


@endpoint()
@operation(
    body=StubDocument,
    headers=StubHeaders,
    replies={
        201: Reply(StubStored, "Created", enveloped=True),
        200: Reply(StubStored, "Added to the sequence of a stub with equal matchers", True),
    },
)
async def put_stub(request: Request, body: StubDocument, headers: StubHeaders) -> Response:
    """Add a stub while recording; the same matchers again append a response."""
    session = headers.session or headers.stubo_request_session
    if not session:
        raise Invalid("the 'session' header is missing")
    result = await service(request).put_stub(
        host=request_host_of_path(request),
        session_name=session,
        scenario_name=path_scenario(request),
        document=plain(body),
        priority=headers.priority or None,
        stateful=True if headers.stateful is UNSET else truthy(headers.stateful),
        args=dict(request.query_params),
        delay_policy=headers.delay_policy or None,
        recorded=headers.stub_created_date or None,
    )
    status = 201 if result.status == "created" else 200
    data = {"message": result.message, "status": result.status, "key": result.stub.id}
    return envelope(data, status)


def request_host_of_path(request: Request) -> str:
    """Sessions live in their scenario's host namespace."""
    return path_scenario(request).rpartition(":")[0]


# Converted here: one element at a time, as it is parsed (web.json_items).
@endpoint()
@operation(
    body=list[StubDocument],
    headers=StubHeaders,
    converts=False,
    replies={201: Reply(StubsImported, "Imported", enveloped=True)},
)
async def import_stubs(request: Request) -> Response:
    """Add many stubs at once (a JSON array, or NDJSON: one per line), all or nothing."""
    headers = convert(dict(request.headers), StubHeaders, "headers", strict=False)
    svc = service(request)
    scenario = await svc.get_scenario(path_scenario(request))  # 404 before a body is read
    body = await read_body(request, request.app.state.settings.max_import_bytes)
    ndjson = request.headers.get("content-type", "").startswith(NDJSON)
    documents = (
        plain(convert(item, StubDocument, f"stub {i}"))
        for i, item in enumerate(json_items(body, ndjson))
    )
    counts = await svc.import_stubs(
        scenario.name,
        documents,
        host=scenario.host,
        session_name=(headers.session or headers.stubo_request_session) or None,
        priority=headers.priority or None,
        stateful=True if headers.stateful is UNSET else truthy(headers.stateful),
        args=dict(request.query_params),
        delay_policy=headers.delay_policy or None,
        recorded=headers.stub_created_date or None,
    )
    return envelope(asdict(counts), 201)


@endpoint()
@operation(query=StubPage, replies={200: Reply(list[StubListed], enveloped=True)})
async def list_stubs(request: Request, query: StubPage) -> Response:
    """List a scenario's stubs: a page of them (offset, limit), or all of them, streamed."""
    svc = service(request)
    name = path_scenario(request)
    if query.offset is not UNSET or query.limit is not UNSET:
        offset = 0 if query.offset is UNSET else query.offset
        limit = STUB_PAGE_MAX if query.limit is UNSET else query.limit
        return envelope([stub_listed(s) for s in await svc.list_stubs(name, offset, limit)])
    await svc.get_scenario(name)  # 404 before the stream starts
    pages = svc.stub_pages(name)
    first: list[Stub] = await anext(pages, [])
    if len(first) < STUB_PAGE:  # all of them: answered as one body (and tracked with it)
        await pages.aclose()
        return envelope([stub_listed(s) for s in first])
    return StreamingResponse(
        _streamed_stubs(first, pages), headers=VERSION_HEADER, media_type="application/json"
    )


STUB_PAGE_MAX = 10_000


async def _streamed_stubs(
    first: list[Stub], rest: AsyncIterator[list[Stub]]
) -> AsyncIterator[bytes]:
    """The envelope of every stub, a page at a time: 100,000 stubs are 37 MB of JSON, never
    held whole, and each page is serialized between two of the loop's turns."""
    yield b'{"version":' + orjson.dumps(__version__) + b',"data":['
    yield b",".join(orjson.dumps(stub_listed(s)) for s in first)
    async for page in rest:
        yield b"," + b",".join(orjson.dumps(stub_listed(s)) for s in page)
    yield b"]}"


def stub_listed(stub: Stub) -> dict[str, Any]:
    return {
        "id": stub.id,
        "stub": stub.document(),
        "matchers_hash": stub.matchers_hash,
        "space_used": stub.space_used,
        "recorded": stub.recorded,
        "scenario": stub.scenario,
    }


@endpoint()
@operation(query=ForceArgs, replies={200: Reply(str, enveloped=True)})
async def delete_stubs(request: Request, query: ForceArgs) -> Response:
    """Delete a scenario's stubs (409 while sessions are active unless forced)."""
    force = forced(request, query)
    count = await service(request).delete_stubs(path_scenario(request), force=force)
    return envelope(f"Deleted stubs count: {count}")


ROUTES = [
    Route("/api/v2/scenarios", put_scenario, methods=["PUT"]),
    Route("/api/v2/scenarios", list_scenarios, methods=["GET"]),
    Route("/api/v2/scenarios/detail", scenario_details, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}", get_scenario, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}", delete_scenario, methods=["DELETE"]),
    Route("/api/v2/scenarios/objects/{name}/action", scenario_action, methods=["POST"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", put_stub, methods=["PUT"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", list_stubs, methods=["GET"]),
    Route("/api/v2/scenarios/objects/{name}/stubs", delete_stubs, methods=["DELETE"]),
    Route("/api/v2/scenarios/objects/{name}/stubs/import", import_stubs, methods=["POST"]),
]
