"""Mirage's legacy API v1 (``/stubo/api/...``): the HTTP edge only, over the v2 domain.

Arguments come from the query string and, on a form-encoded POST, the form body (Mirage
read them with Tornado's ``get_argument``, which reads both; the body's value wins);
``put/stub`` and ``get/response`` take their payload in the body, so only their query
string holds arguments. Success is
``{"version", "data"}``, every error the v2 envelope with the HTTP status equal to
``error.code``. Scenario and delay policy names live in the Host header's namespace, as
in v2 (``host:name`` names another host's, and a ``host`` argument where Mirage had one).
Deliberate differences from Mirage are in docs/compatibility.md ("API v1").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulacra import __version__
from simulacra.errors import Conflict, DomainError, Invalid, NotFound, shown
from simulacra.models import StubDocument, V1Args
from simulacra.openapi import Reply
from simulacra.virtual.api_v2 import (
    endpoint,
    envelope,
    note_session,
    scenario_ref,
    service,
)
from simulacra.virtual.api_v2_admin import POLICY_OBJECTS, display_name, policy_view
from simulacra.virtual.delays import ALL_PARAMETERS, parse_policy, split_name
from simulacra.virtual.model import HOST_RE, PLAYBACK, RECORD, Stub, normalize_host, qualify
from simulacra.web import body_limit, operation, read_body, request_host, truthy

PREFIX = "/stubo/api/"
# put/stub arguments that configure the stub; any other argument is kept in stub.args.
PUT_STUB_OPTIONS = frozenset(
    {
        "session",
        "delay_policy",
        "stateful",
        "priority",
        "ext_module",
        "stubbedSystem",
        "stub_created_date",
        "stubbedSystemDate",
        "tracking_level",
    }
)


FORM = "application/x-www-form-urlencoded"

Handler = Callable[[Request], Awaitable[Response]]


async def load_args(request: Request) -> None:
    """Gather the arguments once: the query string, then a form body's (Tornado's order)."""
    args = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type.split(";", 1)[0].strip().lower() == FORM:
        body = await read_body(request, body_limit(request))
        args += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    request.state.v1_args = args


def v1_endpoint(
    overrides: dict[type[DomainError], int] | None = None, *, form: bool = True
) -> Callable[[Handler], Handler]:
    """``endpoint()`` (the v2 envelope, the tracker) with the arguments loaded first.

    ``form=False`` for the routes whose body is their payload (put/stub, get/response).
    The OpenAPI document lists the arguments of ``V1Args``; they are read as Mirage read
    them (query string or form body, the last value wins), all text, so nothing is
    converted.
    """
    declared = operation(
        query=V1Args,
        body=None if form else StubDocument,
        converts=False,
        replies={200: Reply(Any, enveloped=True)},
    )

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def with_args(request: Request) -> Response:
            if form:
                await load_args(request)
            else:
                request.state.v1_args = list(request.query_params.multi_items())
            return await handler(request)

        return endpoint(overrides)(declared(with_args))

    return decorate


def args_of(request: Request) -> list[tuple[str, str]]:
    return request.state.v1_args


def arg_list(request: Request, name: str) -> list[str]:
    return [v for k, v in args_of(request) if k == name]


def arg(request: Request, name: str, required: bool = False) -> str | None:
    values = arg_list(request, name)
    value = values[-1] if values else None  # Tornado's get_argument: the last one
    if required and not value:
        raise Invalid(f"the '{name}' argument is missing")
    return value or None


def session_arg(value: str | None) -> str | None:
    """Mirage strips a ``,…`` suffix from the session argument (command files add one)."""
    return value.split(",", 1)[0] if value else value


def parse_json(body: bytes) -> object:
    if not body.strip():
        raise Invalid("request body is empty; a JSON document is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"request body is not valid JSON: {exc}") from None


def host_of(request: Request) -> str:
    """The namespace: the ``host`` argument where given, else the Host header."""
    host = arg(request, "host")
    if host is None:
        return request_host(request)
    if host == "all":
        raise Invalid("host=all is not supported: name one host (or leave 'host' out)")
    host = normalize_host(host)
    if not HOST_RE.match(host):
        raise Invalid(f"host {shown(host)} is illegal")
    return host


def scenario_arg(request: Request) -> str:
    """The full ``host:name`` of the ``scenario`` argument."""
    return qualify(arg(request, "scenario", required=True), host_of(request))


# sessions ------------------------------------------------------------------


@v1_endpoint()
async def begin_session(request: Request) -> Response:
    """Begin a session; record mode creates the scenario (400 if it already has stubs)."""
    name = scenario_arg(request)
    session = session_arg(arg(request, "session", required=True))
    note_session(request, session)
    mode = arg(request, "mode", required=True)
    svc = service(request)
    if mode == RECORD:
        data = await svc.begin_record_creating(name, session)
    elif mode == PLAYBACK:
        data = await svc.begin_session(name, session, mode)
    else:
        raise Invalid(f"mode must be 'record' or 'playback', got {shown(mode)}")
    data["scenarioRef"] = scenario_ref(name)
    return envelope(data)


@v1_endpoint()
async def end_session(request: Request) -> Response:
    """End a session (it turns dormant); its scenario is found from the session."""
    name = session_arg(arg(request, "session", required=True)) or ""
    note_session(request, name)
    svc = service(request)
    session = await svc.find_session(request_host(request), name)
    return envelope(await svc.end_session(session.scenario, session.name))


@v1_endpoint()
async def end_sessions(request: Request) -> Response:
    """End every active session of a scenario."""
    return envelope(await service(request).end_all_sessions(scenario_arg(request)))


# stubs ---------------------------------------------------------------------


@v1_endpoint(form=False)
async def put_stub(request: Request) -> Response:
    """Add a stub to the session recording (JSON body; query args become stub.args)."""
    session = session_arg(arg(request, "session", required=True))
    note_session(request, session)
    body = await read_body(request, body_limit(request))
    if body.lstrip().startswith(b"||"):
        raise Invalid(
            "the legacy '||textMatcher||...||response||...' body is not supported:"
            ' send the stub as JSON {"request": {...}, "response": {...}}'
        )
    document = parse_json(body)
    stateful = arg(request, "stateful")
    result = await service(request).put_stub(
        host=request_host(request),
        session_name=session or "",
        scenario_name=None,  # v1 finds the scenario from the session
        document=document,
        priority=arg(request, "priority"),
        stateful=True if stateful is None else truthy(stateful),
        args={k: v for k, v in args_of(request) if k not in PUT_STUB_OPTIONS},
        delay_policy=arg(request, "delay_policy"),
        recorded=arg(request, "stub_created_date"),
    )
    # Mirage answers 200 whatever happened, with the outcome in data.message.
    message = {"status": result.status, "msg": result.message, "key": result.stub.id}
    return envelope({"message": message})


@v1_endpoint({Conflict: 400})  # Mirage's v1 answers active sessions with 400 (v2: 409)
async def delete_stubs(request: Request) -> Response:
    """Delete a scenario's stubs (400 while sessions are active unless force=true)."""
    name = scenario_arg(request)
    try:
        count = await service(request).delete_stubs(name, force=truthy(arg(request, "force")))
    except NotFound:  # Mirage: deleting the stubs of a missing scenario is fine
        return envelope(f"Deleted stubs count: 0 (no scenario {name})")
    return envelope(f"Deleted stubs count: {count}")


def stub_view(stub: Stub) -> dict[str, object]:
    return {
        "id": stub.id,
        "stub": stub.document(),
        "matchers_hash": stub.matchers_hash,
        "recorded": stub.recorded,
        "space_used": stub.space_used,
    }


@v1_endpoint()
async def get_stublist(request: Request) -> Response:
    """List a scenario's stubs."""
    name = scenario_arg(request)
    stubs = await service(request).all_stubs(name)
    return envelope({"scenario": name, "stubs": [stub_view(s) for s in stubs]})


@v1_endpoint()
async def get_stubcount(request: Request) -> Response:
    """Count a scenario's stubs (without 'scenario': all of the host's)."""
    svc = service(request)
    if arg(request, "scenario") is not None:
        scenarios = [await svc.get_scenario(scenario_arg(request))]
    else:
        scenarios = await svc.list_scenarios(host_of(request))
    count = sum([(await svc.describe(s))["stub_count"] for s in scenarios])
    return envelope({"count": count})


@v1_endpoint()
async def get_scenarios(request: Request) -> Response:
    """List the host's scenarios with their stub counts and sessions."""
    svc = service(request)
    host = host_of(request)
    scenarios = [await svc.describe(s) for s in await svc.list_scenarios(host)]
    return envelope({"host": host, "scenarios": scenarios})


@v1_endpoint()
async def get_export(request: Request) -> Response:
    """Link to a scenario's export zip (the same link as the v2 export action)."""
    from simulacra.virtual.api_v2_archive import export_action

    session, runnable = arg(request, "session_id"), arg(request, "runnable")
    return envelope(await export_action(request, scenario_arg(request), session, runnable))


# delay policies --------------------------------------------------------------


@v1_endpoint()
async def put_delay_policy(request: Request) -> Response:
    """Create or replace a delay policy from its args (name, delay_type, parameters)."""
    host = request_host(request)
    doc: dict[str, str | None] = {k: v for k, v in args_of(request) if k in ALL_PARAMETERS}
    doc["name"] = arg(request, "name")
    doc["delay_type"] = arg(request, "delay_type")
    if doc["delay_type"] is None:
        del doc["delay_type"]  # the domain's "missing" message (Mirage: a 500 KeyError)
    policy = parse_policy(doc, host)
    created = await service(request).put_delay_policy(policy)
    name = display_name(policy, host)
    return envelope(
        {
            "status": "new" if created else "updated",
            "message": "Put Delay Policy Finished",
            "name": name,
            "delay_type": policy.delay_type,
            "delayPolicyRef": POLICY_OBJECTS + name,
        }
    )


@v1_endpoint()
async def get_delay_policy(request: Request) -> Response:
    """Show one delay policy by name (404 when missing), or all of the host's."""
    host = request_host(request)
    svc = service(request)
    name = arg(request, "name")
    if name is None:
        return envelope([policy_view(p, host) for p in svc.delay_policies(host)])
    return envelope([policy_view(svc.delay_policy(*split_name(name, host)), host)])


@v1_endpoint()
async def delete_delay_policy(request: Request) -> Response:
    """Delete the named delay policies (404 when one is missing)."""
    host = request_host(request)
    names = arg_list(request, "name")
    if not names:
        raise Invalid("the 'name' argument is missing")
    svc = service(request)
    keys = [split_name(n, host) for n in names]
    for key in keys:
        svc.delay_policy(*key)  # all exist, or none is deleted
    for key in keys:
        await svc.delete_delay_policy(*key)
    return envelope({"message": f"Deleted {len(keys)} delay policies from {names!r}"})


# status --------------------------------------------------------------------


@v1_endpoint()
async def get_version(request: Request) -> Response:
    """The server version."""
    return envelope({"version": __version__})


@v1_endpoint()
async def get_status(request: Request) -> Response:
    """Store reachability, and the sessions of a scenario (or one session) when asked."""
    svc = service(request)
    scenario = arg(request, "scenario")
    name = scenario_arg(request) if scenario is not None else None
    # One lookup by key: cheap, and it fails (503) when the store is unreachable.
    found = await svc.store.get_scenario(name or f"{request_host(request)}:status")
    data: dict[str, object] = {"status": "ok", "store": "ok"}
    if name is not None:
        if found is None:
            raise NotFound(f"Scenario {name} not found")
        data["scenario"] = name
        data["sessions"] = [s.summary() for s in svc.sessions_of(name)]
    session = session_arg(arg(request, "session"))
    if session is not None:
        data["session"] = (await svc.find_session(request_host(request), session)).summary()
    return envelope(data)


BOTH = ["GET", "POST"]

ROUTES = [
    # Playback first: the router scans in order, and this is v1's hot path.
    Route(PREFIX + "begin/session", begin_session, methods=BOTH),
    Route(PREFIX + "end/session", end_session, methods=BOTH),
    Route(PREFIX + "end/sessions", end_sessions, methods=BOTH),
    Route(PREFIX + "put/stub", put_stub, methods=["POST"]),
    Route(PREFIX + "delete/stubs", delete_stubs, methods=BOTH),
    Route(PREFIX + "get/stublist", get_stublist, methods=BOTH),
    Route(PREFIX + "get/stubcount", get_stubcount, methods=BOTH),
    Route(PREFIX + "get/scenarios", get_scenarios, methods=BOTH),
    Route(PREFIX + "get/export", get_export, methods=BOTH),
    Route(PREFIX + "put/delay_policy", put_delay_policy, methods=BOTH),
    Route(PREFIX + "get/delay_policy", get_delay_policy, methods=BOTH),
    Route(PREFIX + "delete/delay_policy", delete_delay_policy, methods=BOTH),
    Route(PREFIX + "get/version", get_version, methods=BOTH),
    Route(PREFIX + "get/status", get_status, methods=BOTH),
]
