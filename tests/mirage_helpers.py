"""Shared helpers for the Mirage API v2 contract tests (talking to the real server)."""

from __future__ import annotations

import re
from typing import Any

import requests

# Tests connect to 127.0.0.1, so that is the host namespace of every scenario they create.
HOST = "127.0.0.1"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def full(scenario: str) -> str:
    """The ``host:name`` key of a scenario the tests created by its short name."""
    return scenario if ":" in scenario else f"{HOST}:{scenario}"


def ref(scenario: str) -> str:
    return f"/api/v2/scenarios/objects/{full(scenario)}"


def scenario_url(base_url: str, scenario: str) -> str:
    return f"{base_url}/api/v2/scenarios/objects/{scenario}"


def action_url(base_url: str, scenario: str) -> str:
    return scenario_url(base_url, scenario) + "/action"


def stubs_url(base_url: str, scenario: str) -> str:
    return scenario_url(base_url, scenario) + "/stubs"


def stubs_path(scenario: str) -> str:
    """The URL path a playback request is matched against (no Stubo-Request-Path)."""
    return f"/api/v2/scenarios/objects/{scenario}/stubs"


def assert_error(response: requests.Response, status: int, *fragments: str) -> str:
    """The response is the v2 error envelope with HTTP status == error.code; returns message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"version", "error"}, body
    assert isinstance(body["version"], str) and body["version"]
    assert body["error"]["code"] == status, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message.strip(), body
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def assert_data(response: requests.Response, status: int = 200) -> Any:
    """The response is the v2 success envelope; returns ``data``."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"version", "data"}, body
    assert isinstance(body["version"], str) and body["version"]
    return body["data"]


def create_scenario(http: requests.Session, base_url: str, scenario: str) -> dict[str, Any]:
    response = http.put(base_url + "/api/v2/scenarios", json={"scenario": scenario})
    assert response.status_code == 201, response.text
    return response.json()


def begin(
    http: requests.Session, base_url: str, scenario: str, session: str, mode: str
) -> requests.Response:
    body = {"begin": None, "session": session, "mode": mode}
    return http.post(action_url(base_url, scenario), json=body)


def begin_ok(
    http: requests.Session, base_url: str, scenario: str, session: str, mode: str
) -> dict[str, Any]:
    return assert_data(begin(http, base_url, scenario, session, mode))


def end(http: requests.Session, base_url: str, scenario: str, session: str) -> requests.Response:
    return http.post(action_url(base_url, scenario), json={"end": None, "session": session})


def end_ok(http: requests.Session, base_url: str, scenario: str, session: str) -> None:
    assert assert_data(end(http, base_url, scenario, session)) == {"message": "Session ended"}


def put_stub(
    http: requests.Session,
    base_url: str,
    scenario: str,
    session: str | None,
    stub: Any,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> requests.Response:
    all_headers = dict(headers or {})
    if session is not None:
        all_headers["session"] = session
    return http.put(stubs_url(base_url, scenario), json=stub, headers=all_headers, params=params)


def put_stub_ok(
    http: requests.Session,
    base_url: str,
    scenario: str,
    session: str,
    stub: Any,
    headers: dict[str, str] | None = None,
    status: int = 201,
) -> dict[str, Any]:
    return assert_data(put_stub(http, base_url, scenario, session, stub, headers), status)


def stub(
    body: str | list[str] = "",
    *,
    status: int = 200,
    response_headers: dict[str, str] | None = None,
    priority: int | None = None,
    **request: Any,
) -> dict[str, Any]:
    """A stub document: other keyword arguments are the request matchers (``headers`` too)."""
    response: dict[str, Any] = {"status": status, "body": body}
    if response_headers is not None:
        response["headers"] = response_headers
    doc: dict[str, Any] = {"request": request, "response": response}
    if priority is not None:
        doc["priority"] = priority
    return doc


def contains(*patterns: str, method: str | None = None, **kw: Any) -> dict[str, Any]:
    """Request matchers with a bodyPatterns.contains list (and any other matchers)."""
    request: dict[str, Any] = {"bodyPatterns": {"contains": list(patterns)}, **kw}
    if method is not None:
        request["method"] = method
    return request


def list_stubs(http: requests.Session, base_url: str, scenario: str) -> list[dict[str, Any]]:
    return assert_data(http.get(stubs_url(base_url, scenario)))


def record(
    http: requests.Session,
    base_url: str,
    scenario: str,
    stubs: list[tuple[dict[str, Any], dict[str, str] | None] | dict[str, Any]],
    session: str | None = None,
) -> None:
    """Create ``scenario`` and record ``stubs`` into it (a stub or (stub, headers)), then end."""
    create_scenario(http, base_url, scenario)
    session = session or scenario + "_rec"
    begin_ok(http, base_url, scenario, session, "record")
    for item in stubs:
        doc, headers = item if isinstance(item, tuple) else (item, None)
        response = put_stub(http, base_url, scenario, session, doc, headers)
        assert response.status_code in (200, 201), response.text
    end_ok(http, base_url, scenario, session)


def playback_of(
    http: requests.Session,
    base_url: str,
    scenario: str,
    stubs: list[tuple[dict[str, Any], dict[str, str] | None] | dict[str, Any]],
) -> str:
    """Record ``stubs`` into a new ``scenario`` and begin playback; returns the session."""
    record(http, base_url, scenario, stubs)
    session = scenario + "_play"
    begin_ok(http, base_url, scenario, session, "playback")
    return session


def play(
    http: requests.Session,
    base_url: str,
    scenario: str,
    session: str | None,
    body: str | bytes = "",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | str | None = None,
) -> requests.Response:
    all_headers = dict(headers or {})
    if session is not None:
        all_headers["session"] = session
    data = body.encode() if isinstance(body, str) else body
    return http.post(stubs_url(base_url, scenario), data=data, headers=all_headers, params=params)


def scenario_detail(http: requests.Session, base_url: str, scenario: str) -> dict[str, Any]:
    """The scenario's entry in GET /api/v2/scenarios/detail."""
    data = assert_data(http.get(base_url + "/api/v2/scenarios/detail"))
    [entry] = [d for d in data if d["name"] == full(scenario)]
    return entry
