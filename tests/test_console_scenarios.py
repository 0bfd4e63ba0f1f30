"""The console's scenarios section (issue 17) in a real Chromium against a real server:
upload a scenario and see its stubs, begin sessions and play requests on them, end them,
delete, import a HAR, download the export (which uploads again), the filter, paging,
refused form values, the keyboard and a narrow window."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.browser import chromium_page
from tests.server import RunningServer
from tests.zip_helpers import UPLOAD, scenario_zip

if TYPE_CHECKING:
    from playwright.sync_api import Page

HOST = "127.0.0.1"  # the namespace of everything the browser and requests create here
SCENARIOS = "/console/scenarios"
DASH = "\N{EN DASH}"  # the pages write ranges so: "Stubs 1-50 of 120"

HELLO = {
    "priority": 7,
    "request": {"method": "GET", "urlPath": "/hello"},
    "response": {"status": 200, "body": ["hi {{ request.path }}", "second"]},
}
BOOM = {
    "request": {"method": "GET", "urlPath": "/boom"},
    "response": {"status": 200, "fault": "EMPTY_RESPONSE", "delayPolicy": "slow"},
}
LONG = {
    "request": {"method": "GET", "urlPath": "/long"},
    "response": {"status": 200, "body": "x" * 5000},
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser_page(server: RunningServer) -> Iterator[Page]:
    """One browser for the module (each test starts from its own page); confirmations
    (``data-confirm``) are accepted unless a test says otherwise."""
    with chromium_page() as page:
        page.set_default_timeout(5_000)
        page.on("dialog", _accept)
        yield page


def _accept(dialog: Any) -> None:
    dialog.accept()


@pytest.fixture
def page(browser_page: Page) -> Page:
    browser_page.set_viewport_size({"width": 1280, "height": 900})
    return browser_page


def zip_file(name: str, archive: bytes) -> dict[str, Any]:
    return {"name": f"{name}.zip", "mimeType": "application/zip", "buffer": archive}


def upload_api(server: RunningServer, archive: bytes) -> requests.Response:
    files = [("files", ("a.zip", archive, "application/zip"))]
    return requests.post(server.url + UPLOAD, files=files, timeout=10)


def scenario_page(server: RunningServer, name: str) -> str:
    return f"{server.url}{SCENARIOS}/objects/{HOST}:{name}"


def session_row(page: Page, session: str) -> Any:
    return page.locator("table.session-list tr", has=page.locator(f"td:text-is('{session}')"))


def notice(page: Page) -> str:
    return page.locator("p.notice").inner_text()


def alert(page: Page) -> str:
    return page.locator("p.error").inner_text()


def test_a_browser_asking_for_the_root_is_sent_to_the_console(server: RunningServer) -> None:
    answer = requests.get(
        server.url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=5
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    console = requests.get(server.url + "/console", headers={"Accept": "text/html"}, timeout=5)
    assert console.url == server.url + SCENARIOS
    assert "<h1>Scenarios</h1>" in console.text
    assert "script-src" not in console.headers["content-security-policy"]  # 'self' only
    curl = requests.get(server.url + "/", headers={"Accept": "*/*"}, timeout=5)
    assert curl.status_code == 200
    assert curl.headers["content-type"].startswith("text/plain")


def test_upload_a_scenario_see_its_stubs_begin_sessions_and_play(
    server: RunningServer, page: Page
) -> None:
    page.goto(server.url + SCENARIOS)
    page.set_input_files("input[name=files]", zip_file("shop", shop_zip("shop")))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/objects/127\.0\.0\.1:shop\?"))
    assert "3 stubs, session shop_s in playback" in notice(page)

    stubs = page.locator("table.stub-list")
    assert f"Stubs 1{DASH}3 of 3" in page.locator("#stubs + p").inner_text()
    hello = stubs.locator("tbody tr").nth(0)
    assert '"urlPath": "/hello"' in hello.locator("pre").first.inner_text()
    assert hello.locator("td").nth(2).inner_text() == "7"  # priority
    assert "sequence of 2" in hello.inner_text()
    assert "template" in hello.inner_text()
    boom = stubs.locator("tbody tr").nth(1).inner_text()
    assert "fault: EMPTY_RESPONSE" in boom and "delay: slow" in boom
    long = stubs.locator("tbody tr").nth(2).inner_text()
    assert "cut: the body is 5000 bytes" in long and "x" * 5000 not in long

    # The uploaded session plays under the /virtual/ prefix of the main port.
    assert "prefix: /virtual/shop/shop_s/" in session_row(page, "shop_s").inner_text()

    # A session on a port of its own (0: any free one), and one on the prefix.
    begin_session(page, "own", port="0")
    assert re.search(r"Session own begun in playback mode on port \d+", notice(page))
    port_link = session_row(page, "own").locator("a")
    port_url = port_link.inner_text()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", port_url)
    begin_session(page, "shared")
    prefix = f"{server.url}/virtual/shop/shared"
    assert "prefix: /virtual/shop/shared/" in session_row(page, "shared").inner_text()
    assert session_row(page, "shared").locator("td").nth(4).inner_text() == "—"

    first = requests.get(port_url + "/hello", timeout=5)
    assert (first.status_code, first.text) == (200, "hi /hello")
    assert requests.get(port_url + "/hello", timeout=5).text == "second"
    assert requests.get(prefix + "/hello", timeout=5).text == "hi /hello"  # its own sequence

    page.reload()
    for session in ("own", "shared"):
        used = session_row(page, session).locator("td").nth(4).inner_text()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", used), used
    assert session_row(page, "shop_s").locator("td").nth(4).inner_text() == "—"

    page.goto(server.url + SCENARIOS + "?q=shop")
    row = page.locator("table.scenario-list tbody tr", has=page.locator("a:text-is('shop')"))
    cells = row.locator("td").all_inner_texts()
    assert cells[1:4] == [HOST, "3", "3 3 active"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[4])


def begin_session(page: Page, session: str, *, mode: str = "playback", port: str = "") -> None:
    page.get_by_label("Session", exact=True).fill(session)
    page.locator("select[name=mode]").select_option(mode)
    page.get_by_label("Own port").fill(port)
    page.get_by_role("button", name="Begin").click()
    page.wait_for_load_state()


def shop_zip(name: str) -> bytes:
    return scenario_zip(name, f"{name}_s", [HELLO, BOOM, LONG])


def test_the_filter_and_the_pages_of_a_large_scenario(server: RunningServer, page: Page) -> None:
    many = [
        {"request": {"method": "GET", "urlPath": f"/item/{i}"}, "response": {"body": f"item {i}"}}
        for i in range(120)
    ]
    assert upload_api(server, scenario_zip("bulk", "bulk_s", many)).status_code == 200
    for name in ("alpha_one", "alpha_two", "beta"):
        requests.put(server.url + "/api/v2/scenarios", json={"scenario": name}, timeout=5)

    page.goto(server.url + SCENARIOS)
    page.fill("input[name=q]", "ALPHA")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=ALPHA"))
    names = page.locator("table.scenario-list tbody td:first-child").all_inner_texts()
    assert names == ["alpha_one", "alpha_two"]
    assert "of 2 matching “ALPHA”" in page.locator("main").inner_text()

    page.goto(scenario_page(server, "bulk"))
    counts = page.locator("#stubs + p")
    assert f"Stubs 1{DASH}50 of 120" in counts.inner_text()
    assert page.locator("table.stub-list tbody > tr").count() == 50
    page.get_by_role("link", name="Next →").click()
    page.wait_for_url(re.compile(r"page=2"))
    assert f"Stubs 51{DASH}100 of 120" in counts.inner_text()
    assert "/item/50" in page.locator("table.stub-list tbody > tr").first.inner_text()
    page.get_by_role("link", name="Next →").click()
    page.wait_for_url(re.compile(r"page=3"))
    assert f"Stubs 101{DASH}120 of 120" in counts.inner_text()
    assert page.get_by_role("link", name="Next →").count() == 0
    page.get_by_role("link", name="← Previous").click()
    page.wait_for_url(re.compile(r"page=2"))
    assert "Page 2 of 3" in page.locator("nav.pager").inner_text()


def test_end_a_session_delete_a_scenario_and_a_delay_policy(
    server: RunningServer, page: Page
) -> None:
    assert upload_api(server, shop_zip("doomed")).status_code == 200
    page.goto(scenario_page(server, "doomed"))
    begin_session(page, "bound", port="0")
    port_url = session_row(page, "bound").locator("a").inner_text()
    assert requests.get(port_url + "/hello", timeout=5).status_code == 200

    session_row(page, "bound").get_by_role("button", name="End").click()
    page.wait_for_url(re.compile(r"notice=Ended"))
    assert notice(page) == "Ended session bound"
    assert "dormant" in session_row(page, "bound").inner_text()
    with pytest.raises(requests.ConnectionError):  # its port is closed
        requests.get(port_url + "/hello", timeout=5)

    # Refused while a session plays; a dismissed confirmation sends nothing.
    page.get_by_role("button", name="Delete scenario").click()
    page.wait_for_url(re.compile(r"error="))
    assert "has active sessions (doomed_s)" in alert(page)
    page.remove_listener("dialog", _accept)
    page.once("dialog", lambda dialog: dialog.dismiss())
    try:
        page.check("input[name=force]")
        page.get_by_role("button", name="Delete scenario").click()
        page.wait_for_timeout(300)
        assert requests.get(api_scenario(server, "doomed"), timeout=5).status_code == 200
    finally:
        page.on("dialog", _accept)
    page.get_by_role("button", name="Delete scenario").click()
    page.wait_for_url(re.compile(r"/console/scenarios\?notice="))
    assert notice(page) == f"Deleted scenario {HOST}:doomed"
    assert requests.get(api_scenario(server, "doomed"), timeout=5).status_code == 404

    policy = {"name": "slowish", "delay_type": "fixed", "milliseconds": 20}
    requests.put(server.url + "/api/v2/delay-policy", json=policy, timeout=5).raise_for_status()
    page.get_by_role("link", name="Delay policies").click()
    row = page.locator("tr", has=page.locator("td:text-is('slowish')"))
    assert row.locator("td").all_inner_texts()[:3] == ["slowish", "fixed", "milliseconds=20"]
    row.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"notice="))
    assert notice(page) == "Deleted delay policy slowish"
    gone = requests.get(server.url + "/api/v2/delay-policy/objects/slowish", timeout=5)
    assert gone.status_code == 404


def api_scenario(server: RunningServer, name: str) -> str:
    return f"{server.url}/api/v2/scenarios/objects/{name}"


def test_create_a_scenario_and_import_a_har(server: RunningServer, page: Page) -> None:
    page.goto(server.url + SCENARIOS)
    page.fill("input[name=name]", "from_har")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/objects/127\.0\.0\.1:from_har\?"))
    assert notice(page) == f"Created scenario {HOST}:from_har"
    assert "No stubs" in page.locator("#stubs + p").inner_text()

    page.set_input_files(
        "input[name=har]",
        {"name": "site.har", "mimeType": "application/json", "buffer": har_document()},
    )
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(re.compile(r"notice="))
    assert notice(page) == "Imported 2 HAR entries (0 skipped): 1 stubs created, 1 extended"
    row = page.locator("table.stub-list tbody > tr").first
    assert '"urlPath": "/orders"' in row.inner_text()
    assert "sequence of 2" in row.inner_text()

    # Not a HAR: the same message the API gives, on the page.
    page.set_input_files(
        "input[name=har]", {"name": "x.har", "mimeType": "text/plain", "buffer": b"not json"}
    )
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(re.compile(r"error="))
    assert "request body is not valid JSON" in alert(page)


def har_document() -> bytes:
    def entry(body: str) -> dict[str, Any]:
        return {
            "startedDateTime": "2024-05-01T10:00:00.000Z",
            "time": 1,
            "request": {
                "method": "GET",
                "url": "https://api.example.test/orders",
                "httpVersion": "HTTP/1.1",
                "headers": [],
                "queryString": [],
                "cookies": [],
                "headersSize": -1,
                "bodySize": 0,
            },
            "response": {
                "status": 200,
                "statusText": "OK",
                "httpVersion": "HTTP/1.1",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "cookies": [],
                "content": {"size": len(body), "mimeType": "application/json", "text": body},
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": -1,
            },
            "cache": {},
            "timings": {"send": 0, "wait": 1, "receive": 0},
        }

    log = {"version": "1.2", "creator": {"name": "test", "version": "1"}}
    log["entries"] = [entry('{"orders": []}'), entry('{"orders": [1]}')]
    return json.dumps({"log": log}).encode()


def test_the_export_downloads_and_uploads_again(server: RunningServer, page: Page) -> None:
    assert upload_api(server, shop_zip("exported")).status_code == 200
    page.goto(scenario_page(server, "exported"))
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download export (.zip)").click()
    download = download_info.value
    assert download.suggested_filename == "exported.zip"
    with open(download.path(), "rb") as stream:
        archive = stream.read()

    deleted = requests.delete(api_scenario(server, "exported") + "?force=true", timeout=5)
    assert deleted.status_code == 200
    again = upload_api(server, archive)
    assert again.status_code == 200, again.text
    assert again.json()["stub_count"] == 3
    page.goto(scenario_page(server, "exported"))
    assert f"Stubs 1{DASH}3 of 3" in page.locator("#stubs + p").inner_text()


def test_bad_form_values_are_messages_on_the_page(server: RunningServer, page: Page) -> None:
    assert upload_api(server, shop_zip("strict")).status_code == 200
    page.goto(scenario_page(server, "strict"))
    begin_session(page, "s1", port="abc")
    assert alert(page) == "port must be an integer (0 picks a free port), got 'abc'"
    begin_session(page, "s1", port="80")
    assert alert(page) == "port must be 0 (any free port) or 1024-65535, got 80"
    begin_session(page, "strict_s")
    assert "already exists in playback mode" in alert(page)
    assert page.locator("table.session-list tbody tr").count() == 1  # nothing begun

    page.goto(server.url + SCENARIOS)
    page.fill("input[name=name]", "no spaces allowed")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"error="))
    assert "is illegal: use letters, digits, '_' and '-' only" in alert(page)
    page.fill("input[name=name]", "strict")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"error="))
    assert alert(page) == f"Scenario {HOST}:strict already exists"

    page.set_input_files(
        "input[name=files]", {"name": "x.zip", "mimeType": "application/zip", "buffer": b"no"}
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"error="))
    assert "x.zip" in alert(page)

    # Bad query values and missing scenarios: the error page, with the API's status.
    answer = page.goto(server.url + SCENARIOS + "?page=-2")
    assert answer is not None and answer.status == 400
    assert alert(page) == "page must be a positive integer, got '-2'"
    answer = page.goto(scenario_page(server, "never_made"))
    assert answer is not None and answer.status == 404
    assert alert(page) == f"Scenario {HOST}:never_made not found"


def test_the_list_by_keyboard(server: RunningServer, page: Page) -> None:
    requests.put(server.url + "/api/v2/scenarios", json={"scenario": "keyed"}, timeout=5)
    page.goto(server.url + SCENARIOS + "?q=keyed")
    for _ in range(20):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        if focused == "keyed":
            break
    else:
        pytest.fail("Tab never reached the scenario's link")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/objects/127\.0\.0\.1:keyed$"))
    assert page.locator("h1").inner_text() == f"{HOST}:keyed"


def test_a_narrow_window_scrolls_only_inside_tables(server: RunningServer, page: Page) -> None:
    upload_api(server, shop_zip("narrow_with_a_rather_long_scenario_name_to_wrap_somewhere"))
    page.set_viewport_size({"width": 400, "height": 800})
    for path in (
        SCENARIOS,
        f"{SCENARIOS}/objects/{HOST}:narrow_with_a_rather_long_scenario_name_to_wrap_somewhere",
        f"{SCENARIOS}/delay-policies",
    ):
        page.goto(server.url + path)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 400, (path, widths)
