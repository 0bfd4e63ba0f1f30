"""The admin API's OpenAPI document (issue 16): served, valid, browsable, and true.

schemathesis draws requests for every operation of the document (built from the same
routes the server runs) and sends them to a real server over a socket: no answer may be a
5xx, have a status the document does not list, or a body its schema refuses. A stateful run
follows the document's links (a created scenario to its routes, a behavior to its delete).
Derandomized and bounded, so CI tries the same examples every run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from simulacra.app import create_app
from simulacra.models import StubDocument, convert
from simulacra.openapi import DOCS_PATH, OPENAPI_PATH, build
from tests.browser import chromium_page
from tests.server import RunningServer

DOCUMENT = build(create_app().routes)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# SIMULACRA_FUZZ_EXAMPLES=500 explores further, from a random start each run (not in CI).
EXPLORE = int(os.environ.get("SIMULACRA_FUZZ_EXAMPLES", "0"))
BOUNDED = settings(
    max_examples=EXPLORE or 40,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def admin() -> Iterator[RunningServer]:
    """A server of its own: the run creates and deletes what it likes."""
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


@SCHEMA.parametrize()
@BOUNDED
def test_every_operation_keeps_to_the_document(case: schemathesis.Case, admin: RunningServer):
    try:
        case.call_and_validate(base_url=admin.url, checks=CHECKS, timeout=30)
    except AssertionError:
        print(admin.output()[-3000:])  # a 5xx's traceback, if it was one
        raise


def test_the_document_follows_its_links(admin: RunningServer):
    """Stateful: a scenario created, then shown, listed and deleted through its links."""
    Base = SCHEMA.as_state_machine()

    class Links(Base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"base_url": admin.url, "timeout": 30}

        def validate_response(self, response, case, **kwargs) -> None:  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS)

    Links.run(
        settings=settings(
            max_examples=EXPLORE or 15,
            stateful_step_count=6,
            deadline=None,
            derandomize=not EXPLORE,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_the_document_is_served_and_covers_the_admin_api(admin: RunningServer):
    reply = requests.get(admin.url + OPENAPI_PATH, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    document = reply.json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    for path, method in [
        ("/api/v2/scenarios", "put"),
        ("/api/v2/scenarios/objects/{name}/action", "post"),
        ("/api/v2/scenarios/objects/{name}/stubs", "put"),
        ("/api/v2/reset", "post"),
        ("/api/v2/reset/virtual", "post"),
        ("/api/v2/reset/cloud", "post"),
        ("/api/v2/tracker/records", "get"),
        ("/stubo/api/begin/session", "get"),
        ("/stubo/api/begin/session", "post"),
        ("/mimic/v1.1/tick", "post"),
        ("/mimic/v1.0/presets", "get"),
        ("/mimic/v1.1/IdentityControlAPI/behaviors/auth", "post"),
        ("/health", "get"),
    ]:
        assert method in paths.get(path, {}), (path, method)
    # The cloud mocks' own APIs are their vendors' (Nova, Keystone...), not this document's.
    assert not any(path.startswith("/identity/") for path in paths)


def test_the_document_is_what_the_handlers_check():
    """The stub's schema in the document is the type PUT .../stubs converts its body to."""
    put_stub = DOCUMENT["paths"]["/api/v2/scenarios/objects/{name}/stubs"]["put"]
    schema = put_stub["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/StubDocument"}
    stub = DOCUMENT["components"]["schemas"]["StubDocument"]
    assert stub["additionalProperties"] is False
    assert set(stub["properties"]) == {f for f in StubDocument.__struct_fields__}
    with pytest.raises(Exception, match="unknown key 'reponse'"):
        convert({"request": {}, "reponse": {}}, StubDocument)


def test_unknown_keys_are_refused_alike(admin: RunningServer):
    """A misspelt key is a 400 naming the known ones, in every JSON body of the API."""
    url = admin.url
    requests.put(url + "/api/v2/scenarios", json={"scenario": "keys"}, timeout=10)
    cases = [
        ("put", "/api/v2/scenarios", {"scenario": "k2", "sceanrio": "x"}, {}),
        (
            "post",
            "/api/v2/scenarios/objects/keys/action",
            {"begin": None, "session": "s", "mode": "playback", "prot": 1},
            {},
        ),
        (
            "put",
            "/api/v2/scenarios/objects/keys/stubs",
            {"request": {}, "response": {"status": 200, "bdy": "x"}},
            {"session": "s"},
        ),
        ("put", "/api/v2/delay-policy", {"name": "p", "delay_type": "fixed", "ms": 1}, {}),
        ("post", "/mimic/v1.1/tick", {"amount": 1, "amnt": 2}, {}),
        ("post", "/mimic/v1.1/IdentityControlAPI/behaviors/auth", {"name": "fail", "x": 1}, {}),
    ]
    for method, path, body, headers in cases:
        reply = requests.request(method, url + path, json=body, headers=headers, timeout=10)
        assert reply.status_code == 400, (path, reply.text)
        assert "unknown" in reply.text and "known:" in reply.text, (path, reply.text)


def test_the_page_renders_the_document_in_a_browser(admin: RunningServer):
    """The page needs nothing from the internet: Chromium shows every operation."""
    with chromium_page() as page:
        page.goto(admin.url + DOCS_PATH)
        page.wait_for_selector("details.op")
        count = page.locator("details.op").count()
        assert count == sum(len(methods) for methods in DOCUMENT["paths"].values())
        page.fill("#filter", "/mimic/v1.1/tick")
        visible = page.locator("details.op:not([hidden])")
        assert visible.count() == 1
        visible.first.locator("summary").click()
        visible.first.locator("textarea").fill('{"amount": 5}')
        visible.first.locator("button").click()
        page.wait_for_function(
            "document.querySelector('details.op:not([hidden]) .result').textContent.length > 0"
        )
        result = visible.first.locator(".result").text_content() or ""
        assert result.startswith("200"), result
        assert '"advanced":5' in result.replace(" ", "")
