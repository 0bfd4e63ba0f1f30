"""HAR import (issue 15): a browser's saved network log becomes a scenario's stubs, with the
recording rules (credentials never stored, repeated requests as sequences, binary bodies
byte for byte), and plays. Real server, real sockets; the last test records its HAR with a
real Chromium loading pages of a real upstream (a second ``simulacra serve``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser import require_chromium
from tests.mirage_helpers import (
    action_url,
    assert_data,
    assert_error,
    begin_ok,
    create_scenario,
    end_ok,
    list_stubs,
    put_stub_ok,
    scenario_url,
)
from tests.server import RunningServer, free_port

UPSTREAM = "https://api.example.test"
# The smallest valid PNG (a 1x1 transparent pixel): NUL bytes and all, never text.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SECRET = "s3cr3t-t0ken-value"


def entry(
    method: str,
    url: str,
    *,
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (),
    post: str | None = None,
    params: Sequence[tuple[str, str]] | None = None,
    response_headers: Sequence[tuple[str, str]] = (),
    text: str | None = None,
    binary: bytes | None = None,
    started: str = "2024-05-01T10:00:00.000Z",
) -> dict[str, Any]:
    """One HAR 1.2 entry, as a browser's developer tools save it."""
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "headers": [{"name": k, "value": v} for k, v in headers],
        "queryString": [],
        "cookies": [],
        "headersSize": -1,
        "bodySize": len(post or ""),
    }
    content_type = {k.lower(): v for k, v in headers}.get("content-type", "text/plain")
    if post is not None:
        request["postData"] = {"mimeType": content_type, "text": post}
    elif params is not None:  # a form post saved with its fields and no text
        fields = [{"name": k, "value": v} for k, v in params]
        request["postData"] = {"mimeType": content_type, "params": fields}
    content: dict[str, Any] = {"size": 0, "mimeType": "application/octet-stream"}
    if binary is not None:
        content.update(text=base64.b64encode(binary).decode(), encoding="base64")
    elif text is not None:
        content["text"] = text
    return {
        "startedDateTime": started,
        "time": 1.5,
        "request": request,
        "response": {
            "status": status,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": k, "value": v} for k, v in response_headers],
            "cookies": [],
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": 1, "receive": 0.5},
    }


def har(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    log = {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": list(entries)}
    return {"log": log, **top}


def har_url(base_url: str, scenario: str) -> str:
    return scenario_url(base_url, scenario) + "/har"


def import_har(http: requests.Session, base_url: str, scenario: str, document: Any) -> Any:
    return http.post(har_url(base_url, scenario), json=document)


def virtual(base_url: str, scenario: str, session: str, path: str) -> str:
    return f"{base_url}/virtual/{scenario}/{session}{path}"


def test_a_har_imports_and_plays(http: requests.Session, base_url: str, name: str) -> None:
    create_scenario(http, base_url, name)
    document = har(
        entry(
            "POST",
            f"{UPSTREAM}/orders",
            headers=[("Content-Type", "application/json"), ("Authorization", f"Bearer {SECRET}")],
            post='{"sku": "A-1", "qty": 2}',
            status=201,
            response_headers=[("Content-Type", "application/json"), ("Location", "/orders/7")],
            text='{"order": 7}',
        ),
        entry(
            "GET",
            f"{UPSTREAM}/search?q=red%20shoes&page=2",
            headers=[("Cookie", f"session={SECRET}"), ("X-Auth-Token", SECRET)],
            response_headers=[("Content-Type", "application/json")],
            text='{"hits": 3}',
        ),
        # The same poll twice: the answers replay in the order they were started, whatever
        # the order the browser wrote them in.
        entry(
            "GET",
            f"{UPSTREAM}/orders/7/status",
            text="SHIPPED",
            started="2024-05-01T10:00:02.000Z",
        ),
        entry(
            "GET",
            f"{UPSTREAM}/orders/7/status",
            text="PENDING",
            started="2024-05-01T10:00:01.000+00:00",
        ),
        entry(
            "GET",
            f"{UPSTREAM}/img/logo%20v2.png",
            response_headers=[("Content-Type", "image/png"), ("Content-Length", "999")],
            binary=PNG,
        ),
        # A form post saved with its fields only; the browser's one line per Set-Cookie.
        entry(
            "POST",
            f"{UPSTREAM}/login",
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            params=[("user", "ann"), ("lang", "en")],
            status=302,
            response_headers=[("Location", "/home"), ("Set-Cookie", "id=1\nlang=en")],
        ),
    )
    data = assert_data(import_har(http, base_url, name, document), 201)
    assert data["entries"] == 6 and data["skipped"] == 0, data
    assert data["stubs"] == {"created": 5, "updated": 1}, data
    assert data["scenario"].endswith(f":{name}"), data

    stored = json.dumps(list_stubs(http, base_url, name))
    assert SECRET not in stored
    for header in ("authorization", "cookie", "x-auth-token"):
        assert f'"{header}"' not in stored.lower(), header

    session = name + "-play"
    begin_ok(http, base_url, name, session, "playback")
    try:
        order = http.post(
            virtual(base_url, name, session, "/orders"), json={"qty": 2, "sku": "A-1"}
        )
        assert (order.status_code, order.json()) == (201, {"order": 7})
        assert order.headers["location"] == "/orders/7"
        miss = http.post(virtual(base_url, name, session, "/orders"), json={"sku": "B-2", "qty": 2})
        assert miss.status_code == 404

        found = http.get(virtual(base_url, name, session, "/search?q=red+shoes&page=2"))
        assert (found.status_code, found.json()) == (200, {"hits": 3})
        assert (
            http.get(virtual(base_url, name, session, "/search?q=blue&page=2")).status_code == 404
        )

        polls = [
            http.get(virtual(base_url, name, session, "/orders/7/status")).text for _ in range(3)
        ]
        assert polls == ["PENDING", "SHIPPED", "SHIPPED"]

        image = http.get(virtual(base_url, name, session, "/img/logo%20v2.png"))
        assert image.status_code == 200 and image.content == PNG
        assert image.headers["content-type"] == "image/png"
        assert image.headers["content-length"] == str(len(PNG))

        login = http.post(
            virtual(base_url, name, session, "/login"),
            data={"user": "ann", "lang": "en"},
            allow_redirects=False,
        )
        assert login.status_code == 302 and login.headers["location"] == "/home"
        assert login.raw.headers.getlist("set-cookie") == ["id=1", "lang=en"]
    finally:
        end_ok(http, base_url, name, session)


def test_what_cannot_play_is_skipped(http: requests.Session, base_url: str, name: str) -> None:
    create_scenario(http, base_url, name)
    document = har(
        entry("GET", f"{UPSTREAM}/blocked", status=0),  # failed, blocked or aborted
        entry("CONNECT", "api.example.test:443"),
        entry("GET", "data:image/png;base64,iVBORw0KGgo=", binary=PNG),
        entry("GET", "blob:https://api.example.test/1f0c", text="x"),
        entry("GET", "wss://api.example.test/socket", status=101),
        entry(
            "GET",
            f"{UPSTREAM}/h2",
            headers=[(":authority", "api.example.test"), (":method", "GET"), ("accept", "*/*")],
            response_headers=[
                (":status", "200"),
                ("content-type", "text/plain"),
                ("content-disposition", 'inline; filename="café.txt"'),
            ],
            text="over HTTP/2",
        ),
    )
    data = assert_data(import_har(http, base_url, name, document), 201)
    assert (data["entries"], data["skipped"], data["stubs"]) == (
        6,
        5,
        {"created": 1, "updated": 0},
    )
    (stub,) = list_stubs(http, base_url, name)
    assert stub["stub"]["request"]["urlPath"] == "/h2"
    assert ":" not in "".join(stub["stub"]["response"].get("headers", {}))
    # The browser showed the header's UTF-8 bytes as text; the stub keeps those bytes.
    disposition = stub["stub"]["response"]["headers"]["content-disposition"]
    assert disposition == 'inline; filename="café.txt"'.encode().decode("latin-1")
    # An empty log is a valid HAR: nothing to import.
    assert assert_data(import_har(http, base_url, name, har()), 201)["stubs"] == {
        "created": 0,
        "updated": 0,
    }


def test_record_rules_apply(http: requests.Session, base_url: str, name: str) -> None:
    create_scenario(http, base_url, name)
    document = har(
        entry(
            "GET",
            f"{UPSTREAM}/feed?ts=1714557600&limit=5",
            headers=[("X-Tenant", "acme"), ("X-Api-Key", SECRET)],
            response_headers=[("Set-Cookie", "id=9"), ("Content-Type", "text/plain")],
            text="feed",
        ),
        record={
            "ignoreQuery": ["ts"],
            "matchHeaders": ["X-Tenant", "X-Api-Key"],
            "keepSetCookie": False,
        },
    )
    assert_data(import_har(http, base_url, name, document), 201)
    (stub,) = list_stubs(http, base_url, name)
    assert "set-cookie" not in {k.lower() for k in stub["stub"]["response"].get("headers", {})}
    assert SECRET not in json.dumps(stub)
    session = name + "-play"
    begin_ok(http, base_url, name, session, "playback")
    try:
        url = virtual(base_url, name, session, "/feed?ts=99&limit=5")
        assert http.get(url, headers={"X-Tenant": "acme"}).text == "feed"
        assert http.get(url, headers={"X-Tenant": "other"}).status_code == 404
    finally:
        end_ok(http, base_url, name, session)


GOOD = entry("GET", f"{UPSTREAM}/ok", text="ok")


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["not an entry"], "entries[1]: an entry must be an object"),
        ([{"request": GOOD["request"]}], "entries[1]: response is missing"),
        ([{"response": GOOD["response"]}], "entries[1]: request is missing"),
        ([entry("GET", "")], "entries[1]: request.url"),
        ([entry("GET", "/relative/only")], "entries[1]: request.url must be an absolute"),
        ([entry("G ET", f"{UPSTREAM}/x")], "entries[1]: request.method"),
        ([GOOD | {"request": GOOD["request"] | {"method": None}}], "entries[1]: request.method"),
        ([GOOD | {"request": {"method": "GET"}}], "entries[1]: request.url"),
        (
            [GOOD | {"response": GOOD["response"] | {"status": "200"}}],
            "entries[1]: response.status",
        ),
        (
            [GOOD | {"response": GOOD["response"] | {"status": 200.5}}],
            "entries[1]: response.status",
        ),
        ([GOOD | {"response": GOOD["response"] | {"status": 777}}], "entries[1]: response.status"),
        (
            [
                GOOD
                | {
                    "response": GOOD["response"]
                    | {"content": {"text": "*%$", "encoding": "base64"}}
                }
            ],
            "entries[1]: response.content.text is not valid base64",
        ),
        (
            [
                GOOD
                | {"response": GOOD["response"] | {"content": {"text": "x", "encoding": "gzip"}}}
            ],
            "entries[1]: response.content.encoding",
        ),
        (
            [GOOD | {"response": GOOD["response"] | {"headers": [{"name": "a b", "value": "1"}]}}],
            "entries[1]: response.headers[0]",
        ),
        (
            [GOOD | {"request": GOOD["request"] | {"headers": {"accept": "*/*"}}}],
            "entries[1]: request.headers",
        ),
        (
            [GOOD | {"request": GOOD["request"] | {"postData": {"text": 7}}}],
            "entries[1]: request.postData.text",
        ),
        # Caught when the stub is checked as a PUT checks it, still named by its entry: a
        # lone CR in a header value would split the answer's head.
        (
            [entry("GET", f"{UPSTREAM}/cr", response_headers=[("X-Note", "a\rb")])],
            "entries[1]: response.headers['X-Note'] must not contain CR",
        ),
    ],
)
def test_a_malformed_har_is_a_400_naming_the_entry(
    http: requests.Session, base_url: str, name: str, entries: list[Any], fragment: str
) -> None:
    create_scenario(http, base_url, name)
    reply = import_har(http, base_url, name, har(GOOD, *entries))
    assert_error(reply, 400, fragment)
    assert list_stubs(http, base_url, name) == []  # all of a HAR, or nothing


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[]", "HAR is a JSON object"),
        (b'{"log": {}}', "log.entries"),
        (b'{"log": {"entries": {}}}', "log.entries"),
        (b'{"lgo": {"entries": []}}', "unknown key 'lgo'"),
        (b'{"log": {"entries": []}, "record": {"ignoreQuery": "ts"}}', "record.ignoreQuery"),
        (b'{"log": {"entries": []}, "record": {"nope": 1}}', "unknown record key"),
    ],
)
def test_a_body_that_is_not_a_har_is_a_400(
    http: requests.Session, base_url: str, name: str, body: bytes, fragment: str
) -> None:
    create_scenario(http, base_url, name)
    assert_error(http.post(har_url(base_url, name), data=body), 400, fragment)


def test_too_many_entries_is_a_400(http: requests.Session, base_url: str, name: str) -> None:
    create_scenario(http, base_url, name)
    tiny = {"request": {}, "response": {}}  # never read: the count is checked first
    reply = http.post(har_url(base_url, name), json=har(*[tiny] * 10_001))
    assert_error(reply, 400, "10001 entries", "10000")


def test_an_unknown_scenario_is_a_404(http: requests.Session, base_url: str, name: str) -> None:
    assert_error(import_har(http, base_url, name, har(GOOD)), 404)
    assert_error(http.post(har_url(base_url, name), data=b"{not json"), 404)


# A HAR that Chromium saved ------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>Orders</title></head>
<body>
<h1>Orders</h1>
<p id="status">loading</p>
<p id="echo">waiting</p>
<img id="logo" src="/static/logo.png" alt="logo">
<script>
fetch("/api/status.json")
  .then((r) => r.json())
  .then((d) => { document.getElementById("status").textContent = d.message; });
fetch("/api/echo", {method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({order: 42})})
  .then((r) => r.text())
  .then((t) => { document.getElementById("echo").textContent = t; });
</script>
</body></html>
"""
UPSTREAM_STUBS = [
    {
        "request": {"method": "GET", "urlPath": "/index.html"},
        "response": {
            "status": 200,
            "headers": {"Content-Type": "text/html; charset=utf-8"},
            "body": PAGE,
        },
    },
    {
        "request": {"method": "GET", "urlPath": "/api/status.json"},
        "response": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": {"message": "all shipped"},
        },
    },
    {
        "request": {
            "method": "POST",
            "urlPath": "/api/echo",
            "bodyPatterns": {"contains": ['"order":42']},
        },
        "response": {"status": 201, "headers": {"Content-Type": "text/plain"}, "body": "got 42"},
    },
    {
        "request": {"method": "GET", "urlPath": "/static/logo.png"},
        "response": {
            "status": 200,
            "headers": {"Content-Type": "image/png", "Cache-Control": "no-store"},
            "base64Body": base64.b64encode(PNG).decode(),
        },
    },
]


def load_page(chromium: str, url: str, har_path: Path | None = None) -> dict[str, Any]:
    """Load ``url`` in headless Chromium until its fetches and image are done; what it shows.
    With ``har_path``, the browser saves its network log there (Playwright's HAR recorder)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            options: dict[str, Any] = {}
            if har_path is not None:
                options = {"record_har_path": str(har_path), "record_har_content": "embed"}
            context = browser.new_context(**options)
            page = context.new_page()
            page.goto(url, timeout=20_000)
            page.wait_for_function(
                "document.getElementById('status').textContent !== 'loading'"
                " && document.getElementById('echo').textContent !== 'waiting'"
                " && document.getElementById('logo').complete",
                timeout=20_000,
            )
            shown = page.evaluate(
                "({status: document.getElementById('status').textContent,"
                " echo: document.getElementById('echo').textContent,"
                " logoWidth: document.getElementById('logo').naturalWidth,"
                " title: document.title})"
            )
            context.close()  # writes the HAR
            return shown
        finally:
            browser.close()


def test_a_har_saved_by_chromium_imports_and_plays(
    http: requests.Session, base_url: str, name: str, tmp_path: Path
) -> None:
    chromium = require_chromium()
    # The upstream: a second server of its own, its site served by a session bound to a port.
    upstream = RunningServer(store="memory://").start()
    site_port = free_port()
    try:
        create_scenario(http, upstream.url, "site")
        begin_ok(http, upstream.url, "site", "rec", "record")
        for stub in UPSTREAM_STUBS:
            put_stub_ok(http, upstream.url, "site", "rec", stub)
        end_ok(http, upstream.url, "site", "rec")
        begin = {"begin": None, "session": "live", "mode": "playback", "port": site_port}
        assert_data(http.post(action_url(upstream.url, "site"), json=begin))
        site = f"http://127.0.0.1:{site_port}"

        har_path = tmp_path / "site.har"
        seen = load_page(chromium, f"{site}/index.html", har_path)
        expected = {"status": "all shipped", "echo": "got 42", "logoWidth": 1, "title": "Orders"}
        assert seen == expected
        # What the upstream answers, to compare playback with (requests, not the browser).
        truth = {
            path: http.get(site + path)
            for path in ("/index.html", "/api/status.json", "/static/logo.png")
        }
        truth["/api/echo"] = http.post(site + "/api/echo", json={"order": 42})
    finally:
        upstream.stop()  # from here on nothing can reach it

    document = json.loads(har_path.read_text())
    assert document["log"]["creator"]["name"] == "Playwright"
    urls = {e["request"]["url"] for e in document["log"]["entries"]}
    assert {f"{site}{p}" for p in truth} <= urls, urls

    create_scenario(http, base_url, name)
    reply = http.post(
        har_url(base_url, name),
        data=har_path.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    data = assert_data(reply, 201)
    assert data["entries"] == len(document["log"]["entries"])
    assert data["stubs"]["created"] >= len(truth), data

    session = name + "-play"
    play_port = free_port()
    begin = {"begin": None, "session": session, "mode": "playback", "port": play_port}
    assert_data(http.post(action_url(base_url, name), json=begin))
    try:
        for path, original in truth.items():
            url = virtual(base_url, name, session, path)
            echo = path == "/api/echo"
            played = http.post(url, json={"order": 42}) if echo else http.get(url)
            assert played.status_code == original.status_code, (path, played.text)
            assert played.content == original.content, path
            assert played.headers["content-type"] == original.headers["content-type"], path
        # And the browser itself, on the playback session's own port: the same page, its
        # fetches and its image, served by the imported stubs alone.
        assert load_page(chromium, f"http://127.0.0.1:{play_port}/index.html") == expected
    finally:
        end_ok(http, base_url, name, session)
