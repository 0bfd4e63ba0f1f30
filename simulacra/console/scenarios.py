"""The console's scenarios section: scenarios, their stubs and sessions, delay policies.

Pages read through ``VirtualService`` and write through the admin API's own functions
(``api_v2.begin_session``, ``end_sessions``, ``remove_scenario``; ``api_v2_archive``'s
``import_archives`` and ``record_har``), so a form does exactly what the API call does.
Forms are plain POSTs, answered by a redirect (``page.back``) carrying what happened; a
refusal is a message on the page. Every list is one page (``page.PAGE_SIZE``) and long texts
are cut with their size shown, so no page grows with a scenario's 100,000 stubs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.console import page
from simulacra.dataplane.playback import VIRTUAL_PREFIX
from simulacra.dataplane.ports import Ports
from simulacra.errors import DomainError, Invalid
from simulacra.virtual.api_v2 import begin_session, end_sessions, remove_scenario, scenario_ref
from simulacra.virtual.api_v2_admin import display_name
from simulacra.virtual.api_v2_archive import import_archives, parse_multipart, record_har
from simulacra.virtual.delays import split_name
from simulacra.virtual.model import (
    DORMANT,
    PLAYBACK,
    Scenario,
    Session,
    Stub,
    header_lines,
    qualify,
)
from simulacra.virtual.model import Response as StubResponse
from simulacra.virtual.recording import Upstream
from simulacra.virtual.service import VirtualService
from simulacra.virtual.templates import is_template
from simulacra.web import body_limit, read_body, request_host

BASE = page.PREFIX + "/scenarios"
POLICIES = BASE + "/delay-policies"
BODY_SHOWN = 1_000  # characters of a response body on the page; the rest is cut
MATCHERS_SHOWN = 2_000  # characters of a stub's matchers (indented JSON)
HEADERS_SHOWN = 300
RESPONSES_SHOWN = 5  # of a sequence; the rest are counted
NO_VALUE = "—"

# pure cores ---------------------------------------------------------------------------


def scenario_path(name: str) -> str:
    """The console page of scenario ``name`` (``host:name``)."""
    return f"{BASE}/objects/{quote(name, safe=':')}"


def export_path(name: str) -> str:
    """The admin API's export of scenario ``name``: the download link."""
    return scenario_ref(quote(name, safe=":")) + "/export"


def cut(text: str, limit: int) -> dict[str, Any]:
    """A text as a page shows it: at most ``limit`` characters, with its full size."""
    return {"text": text[:limit], "cut": len(text) > limit, "size": len(text.encode())}


def response_view(response: StubResponse) -> dict[str, Any]:
    """One response of a stub, as its table cell shows it."""
    if response.binary:
        try:
            size = len(base64.b64decode(response.body))
        except (binascii.Error, ValueError):
            size = len(response.body)
        body = {"text": "", "cut": False, "size": size}
    else:
        body = cut(response.body, BODY_SHOWN)
    headers = "\n".join(f"{k}: {v}" for k, v in header_lines(response.headers))
    return {
        "status": response.status,
        "body": body,
        "binary": response.binary,
        "template": not response.binary and is_template(response.body),
        "fault": response.fault,
        "dribble": response.dribble,
        "delay_policy": response.delay_policy,
        "headers": cut(headers, HEADERS_SHOWN) if headers else None,
    }


def stub_view(stub: Stub, number: int) -> dict[str, Any]:
    """A stub as its table row shows it: matchers, priority, its sequence of responses
    (the first ``RESPONSES_SHOWN``), templates, faults and delays."""
    matchers = orjson.dumps(stub.request, option=orjson.OPT_INDENT_2).decode()
    return {
        "number": number,
        "id": stub.id,
        "matchers": cut(matchers, MATCHERS_SHOWN),
        "priority": NO_VALUE if stub.priority is None else stub.priority,
        "sequence": len(stub.responses),
        "responses": [response_view(r) for r in stub.responses[:RESPONSES_SHOWN]],
        "more": max(0, len(stub.responses) - RESPONSES_SHOWN),
        "args": ", ".join(f"{k}={v}" for k, v in stub.args.items())[:HEADERS_SHOWN],
        "recorded": stub.recorded or NO_VALUE,
    }


def virtual_prefix(scenario: Scenario, session: str, host: str) -> str:
    """Where a session plays on the main port; the short scenario name in ``host``'s own
    namespace, else ``host:name``."""
    name = scenario.short_name if scenario.host == host else scenario.name
    return f"{VIRTUAL_PREFIX}{name}/{session}/"


def session_view(session: Session, scenario: Scenario, host: str, hostname: str) -> dict[str, Any]:
    """A session as its row shows it: its mode and where it answers (``hostname``: the
    server's, as the browser reached it)."""
    active = session.status != DORMANT
    return {
        "name": session.name,
        "mode": session.status,
        "active": active,
        "loaded": session.loaded or NO_VALUE,
        "last_used": session.last_used or NO_VALUE,
        "port_url": f"http://{hostname}:{session.port}" if session.serves_port else None,
        "prefix": virtual_prefix(scenario, session.name, host)
        if session.status == PLAYBACK or session.records_upstream
        else None,
        "upstream": session.upstream["url"] if session.upstream else None,
        "records_by_put": active and session.status != PLAYBACK and not session.records_upstream,
    }


def last_used(sessions: Sequence[Session]) -> str:
    """When any of the sessions last played a request (``YYYY-MM-DD HH:MM:SS`` sorts)."""
    return max((s.last_used for s in sessions if s.last_used), default=NO_VALUE)


def port_field(text: str) -> object:
    """The begin form's port: blank is none; digits an integer; anything else is passed on
    as it is, for ``parse_port`` to refuse in the API's words."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else text


# edges ----------------------------------------------------------------------------------


def _service(request: Request) -> VirtualService:
    return request.app.state.virtual


def _ports(request: Request) -> Ports:
    return request.app.state.ports


def _path_scenario(request: Request) -> str:
    return qualify(request.path_params["name"], request_host(request))


@page.console_page
async def list_page(request: Request) -> Response:
    """Every host's scenarios, filtered by name, one page at a time."""
    svc = _service(request)
    query = request.query_params.get("q", "").strip()[:200]
    number = page.parse_page(request.query_params.get("page"))
    scenarios = await svc.list_scenarios()
    if query:
        scenarios = [s for s in scenarios if query.lower() in s.name.lower()]
    scenarios.sort(key=lambda s: s.name)
    shown_page = page.paginate(scenarios, number)
    rows = []
    for scenario in shown_page.items:
        detail = await svc.describe(scenario)  # one count per scenario shown
        sessions = svc.sessions_of(scenario.name)
        rows.append(
            {
                "name": scenario.name,
                "short_name": scenario.short_name,
                "host": scenario.host,
                "path": scenario_path(scenario.name),
                "stubs": detail["stub_count"],
                "sessions": len(sessions),
                "active": sum(1 for s in sessions if s.status != DORMANT),
                "last_used": last_used(sessions),
            }
        )
    return page.render(
        request,
        "scenarios.html",
        title="Scenarios",
        rows=rows,
        paged=shown_page,
        paging=page.pager(request, shown_page, "page", "scenarios"),
        query=query,
        host=request_host(request),
        base=BASE,
        policies=POLICIES,
    )


@page.console_page
async def create(request: Request) -> Response:
    """The new scenario form: a scenario in this host's namespace (or ``host:name``)."""
    try:
        form = await page.read_form(request)
        name = qualify(form.get("name", "").strip(), request_host(request))
        await _service(request).create_scenario(name)
    except DomainError as exc:
        return page.back(BASE, error=exc.message)
    return page.back(scenario_path(name), notice=f"Created scenario {name}")


@page.console_page
async def upload(request: Request) -> Response:
    """The upload form: zip archives, as ``POST /api/v2/scenarios/upload`` takes them."""
    try:
        body = await read_body(request, body_limit(request))
        parts = parse_multipart(request.headers.get("content-type", ""), body)
        results = await import_archives(
            _service(request), request_host(request), parts, body_limit(request)
        )
    except DomainError as exc:
        return page.back(BASE, error=exc.message)
    names = ", ".join(r["name"] for r in results)
    notice = f"Uploaded {names}: " + "; ".join(
        f"{r['stub_count']} stubs, session {r['session']}"
        + ("" if r.get("status") else " in playback")
        for r in results
    )
    where = scenario_path(results[0]["name"]) if len(results) == 1 else BASE
    return page.back(where, notice=notice)


@page.console_page
async def scenario_page(request: Request) -> Response:
    """One scenario: its counts, sessions (with where each answers), a page of its stubs."""
    svc = _service(request)
    scenario = await svc.get_scenario(_path_scenario(request))
    number = page.parse_page(request.query_params.get("page"))
    detail = await svc.describe(scenario)
    sessions = svc.sessions_of(scenario.name)
    host = request_host(request)
    hostname = request.url.hostname or "127.0.0.1"
    # One page read from the store: a scenario may hold 100,000 stubs.
    stubs = page.page_of(detail["stub_count"], number)
    stubs = replace(stubs, items=await svc.list_stubs(scenario.name, stubs.first, page.PAGE_SIZE))
    return page.render(
        request,
        "scenarios_detail.html",
        title=scenario.name,
        scenario=scenario,
        detail=detail,
        last_used=last_used(sessions),
        sessions=[session_view(s, scenario, host, hostname) for s in sessions],
        any_active=any(s.status != DORMANT for s in sessions),
        stubs=[stub_view(s, stubs.first + 1 + i) for i, s in enumerate(stubs.items)],
        paged=stubs,
        paging=page.pager(request, stubs, "page", "stubs"),
        path=scenario_path(scenario.name),
        export=export_path(scenario.name),
        stubs_api=scenario_ref(scenario.name) + "/stubs",
        base=BASE,
    )


@page.console_page
async def delete(request: Request) -> Response:
    """The delete form (``force`` ends active sessions too)."""
    where = BASE
    try:
        name = _path_scenario(request)
        where = scenario_path(name)
        force = (await page.read_form(request)).get("force") == "on"
        await remove_scenario(_service(request), _ports(request), name, force=force)
    except DomainError as exc:
        return page.back(where, error=exc.message)
    return page.back(BASE, notice=f"Deleted scenario {name}")


@page.console_page
async def begin(request: Request) -> Response:
    """The begin form: a session in playback or record mode, on a port of its own or not,
    recording an upstream or not."""
    name = _path_scenario(request)
    where = scenario_path(name)
    try:
        form = await page.read_form(request)
        session = form.get("session", "").strip()
        url = form.get("upstream", "").strip()
        upstream = Upstream.parse(url, {}).to_dict() if url else None
        begun = await begin_session(
            _service(request),
            _ports(request),
            name,
            session,
            form.get("mode", ""),
            port=port_field(form.get("port", "")),
            append=form.get("append") == "on",
            upstream=upstream,
        )
    except DomainError as exc:
        return page.back(where, error=exc.message)
    on = f" on port {begun['port']}" if "port" in begun else ""
    return page.back(where, notice=f"Session {session} begun in {begun['status']} mode{on}")


@page.console_page
async def end(request: Request) -> Response:
    """The end forms: one session (``session``), or every active one (``every``)."""
    name = _path_scenario(request)
    where = scenario_path(name)
    try:
        form = await page.read_form(request)
        every = form.get("every") == "on"
        session = form.get("session", "")
        await end_sessions(_service(request), _ports(request), name, session, every=every)
    except DomainError as exc:
        return page.back(where, error=exc.message)
    return page.back(where, notice="Ended every session" if every else f"Ended session {session}")


@page.console_page
async def import_har(request: Request) -> Response:
    """The HAR form: a browser's saved network log as the scenario's stubs, as
    ``POST /api/v2/scenarios/objects/{name}/har`` imports it."""
    name = _path_scenario(request)
    where = scenario_path(name)
    try:
        scenario = await _service(request).get_scenario(name)
        body = await read_body(request, body_limit(request))
        parts = parse_multipart(request.headers.get("content-type", ""), body)
        files = [p for p in parts if p.filename is not None and p.data]
        if len(files) != 1:
            raise Invalid("choose one HAR file (.har: a browser's saved network log)")
        imported = await record_har(_service(request), scenario.name, bytes(files[0].data))
    except DomainError as exc:
        return page.back(where, error=exc.message)
    stubs = imported["stubs"]
    notice = (
        f"Imported {imported['entries']} HAR entries ({imported['skipped']} skipped):"
        f" {stubs['created']} stubs created, {stubs['updated']} extended"
    )
    return page.back(where, notice=notice)


@page.console_page
async def policies_page(request: Request) -> Response:
    """This host's delay policies (read-only; each with a delete)."""
    host = request_host(request)
    policies = _service(request).delay_policies(host)
    shown_page = page.paginate(policies, page.parse_page(request.query_params.get("page")))
    rows = [
        {
            "name": display_name(p, host),
            "type": p.delay_type,
            "parameters": ", ".join(f"{k}={v}" for k, v in p.parameters.items())[:500],
        }
        for p in shown_page.items
    ]
    return page.render(
        request,
        "scenarios_policies.html",
        title="Delay policies",
        rows=rows,
        paged=shown_page,
        paging=page.pager(request, shown_page, "page", "delay policies"),
        host=host,
        base=BASE,
        policies=POLICIES,
    )


@page.console_page
async def delete_policy(request: Request) -> Response:
    """A delay policy's delete form; stubs naming it then play without delay."""
    try:
        raw = (await page.read_form(request)).get("name", "")
        host, name = split_name(raw, request_host(request))
        await _service(request).delete_delay_policy(host, name)
    except DomainError as exc:
        return page.back(POLICIES, error=exc.message)
    return page.back(POLICIES, notice=f"Deleted delay policy {raw}")


ROUTES: list[BaseRoute] = [
    Route(BASE, list_page, methods=["GET"]),
    Route(BASE, create, methods=["POST"]),
    Route(BASE + "/upload", upload, methods=["POST"]),
    Route(POLICIES, policies_page, methods=["GET"]),
    Route(POLICIES + "/delete", delete_policy, methods=["POST"]),
    Route(BASE + "/objects/{name}", scenario_page, methods=["GET"]),
    Route(BASE + "/objects/{name}/delete", delete, methods=["POST"]),
    Route(BASE + "/objects/{name}/sessions", begin, methods=["POST"]),
    Route(BASE + "/objects/{name}/sessions/end", end, methods=["POST"]),
    Route(BASE + "/objects/{name}/har", import_har, methods=["POST"]),
]
