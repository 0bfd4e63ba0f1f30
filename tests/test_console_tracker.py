"""The console's tracker (live tail, a record's detail) and analytics, through the real server
and, where it matters, real Chromium: watch played requests arrive in the tail, open one that
missed and see why."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import requests

from simulacra.app import tune_gc
from simulacra.console.analytics import aggregate, percentile, read_samples
from simulacra.console.tracker import MAX_STREAMS, near_misses_of, tail
from simulacra.store.memory import MemoryStore
from simulacra.virtual.tracker import TrackerRecord, pack_detail, parse_query
from simulacra.virtual.tracking import Tracker
from tests.browser import chromium_page
from tests.mirage_helpers import playback_of, stub
from tests.server import RunningServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

EVENTS = "/console/tracker/events"


@pytest.fixture(scope="module")
def console() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with chromium_page() as page:
        yield page


def shop(url: str) -> tuple[str, str]:
    """A scenario in playback with two stubs: (scenario, session)."""
    name = f"shop{uuid.uuid4().hex[:8]}"
    session = playback_of(
        requests.Session(),
        url,
        name,
        [
            stub("hello", method="GET", urlPath="/users/1"),
            stub(
                "made",
                status=201,
                method="POST",
                urlPath="/users",
                bodyPatterns={"contains": ["x"]},
            ),
        ],
    )
    return name, session


def read_events(response: requests.Response, count: int) -> list[dict[str, Any]]:
    """The first ``count`` data events of a stream, decoded."""
    found: list[dict[str, Any]] = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            found.append(orjson.loads(line[6:]))
            if len(found) == count:
                break
    return found


# the stream ------------------------------------------------------------------------


def test_the_tail_sends_a_bounded_batch_and_counts_what_it_skipped(console):
    name, session = shop(console.url)
    http = requests.Session()
    first = http.get(console.url + "/api/v2/tracker/records", params={"limit": 1}).json()
    after = first["data"][0]["id"]
    for _ in range(70):
        assert http.get(f"{console.url}/virtual/{name}/{session}/users/1").status_code == 200
    with http.get(console.url + EVENTS, params={"after": after}, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        (batch,) = read_events(r, 1)
    assert batch["html"].count("<tr>") == 50 and batch["skipped"] == 20
    assert f'href="/console/tracker/{batch["last"]}"' in batch["html"]


def test_each_batch_is_sent_as_it_is_read(console):
    """Played while the stream is open, a request arrives within a period or two (the
    response is flushed per batch, not held until the stream ends)."""
    name, session = shop(console.url)
    http = requests.Session()
    last = http.get(console.url + "/api/v2/tracker/records", params={"limit": 1}).json()
    url = f"{console.url}{EVENTS}?after={last['data'][0]['id']}&q={name}+sc:404"
    with http.get(url, stream=True, timeout=10) as r:
        time.sleep(0.3)
        started = time.monotonic()
        http.get(f"{console.url}/virtual/{name}/{session}/users/1")  # filtered out: 200
        http.get(f"{console.url}/virtual/{name}/{session}/nowhere")
        (batch,) = read_events(r, 1)
        waited = time.monotonic() - started
    assert "/nowhere" in batch["html"] and "/users/1" not in batch["html"]
    assert batch["skipped"] == 0 and waited < 1.5


def test_bad_input_is_a_clear_4xx(console):
    http = requests.Session()
    r = http.get(console.url + EVENTS, params={"q": "sc:>>1"})
    assert r.status_code == 400 and "sc:>>1" in r.text
    r = http.get(console.url + EVENTS, headers={"last-event-id": "-4"})
    assert r.status_code == 400 and "after must be a record id" in r.text
    r = http.get(console.url + "/console/tracker", params={"q": "rt:fast"})
    assert r.status_code == 400 and "rt:fast" in r.text and 'id="tail"' not in r.text
    for path in (
        "/console/tracker/abc",
        "/console/tracker/99999999",
        "/console/tracker/" + "9" * 30,
    ):
        assert http.get(console.url + path).status_code == 404
    for minutes in ("0", "61", "x", "9" * 30):
        r = http.get(console.url + "/console/analytics/chart", params={"minutes": minutes})
        assert r.status_code == 400 and "minutes must be" in r.text


def test_open_tails_are_capped_with_a_503(console):
    # A connection each: a stream holds its own until it ends.
    opened = [
        requests.get(console.url + EVENTS, stream=True, timeout=10) for _ in range(MAX_STREAMS)
    ]
    try:
        assert all(r.status_code == 200 for r in opened)
        refused = requests.get(console.url + EVENTS, timeout=10)
        assert refused.status_code == 503 and "close one" in refused.text
    finally:
        for r in opened:
            r.close()
    # A stream ends when its client goes: released well before its STREAM_SECONDS are up.
    deadline = time.monotonic() + 1.5
    while True:
        with requests.get(console.url + EVENTS, stream=True, timeout=10) as again:
            if again.status_code == 200:
                break
        assert time.monotonic() < deadline, "closed tails were not released"
        time.sleep(0.1)


def test_a_stop_with_a_tail_open_is_prompt():
    server = RunningServer(store="memory://").start()
    try:
        stream = requests.get(server.url + EVENTS, stream=True, timeout=10)
        assert stream.status_code == 200
        threading.Thread(target=lambda: list(stream.iter_content(1024)), daemon=True).start()
        time.sleep(0.5)
        started = time.monotonic()
        assert server.stop() == 0
        # The stop waits up to STOP_GRACE_S (10 s) for answers in progress: a stream ends
        # within STREAM_SECONDS (3 s), so the stop takes no more than that.
        assert time.monotonic() - started < 5
    finally:
        server.stop()


def test_tail_reads_from_its_own_loop_only():
    """``tail`` itself, on a tracker with no server: a batch per period, and a reset (ids
    starting again) noticed rather than waited past."""

    async def main() -> list[dict[str, Any]]:
        tracker = Tracker()
        store = MemoryStore()
        await tracker.start(store)
        try:
            await store.add_tracker_records([_record("/a", 1.0)] * 3, tracker.cap)
            events: list[dict[str, Any]] = []
            async for chunk in tail(tracker, parse_query(None), 10**6, seconds=1.2):
                if chunk.startswith(b"id:"):
                    events.append(orjson.loads(chunk.split(b"data: ", 1)[1]))
            return events
        finally:
            await tracker.stop()

    (batch,) = asyncio.run(main())
    assert batch["html"].count("<tr>") == 3 and batch["last"] == 3


# a record ------------------------------------------------------------------------


def test_near_misses_are_read_even_from_a_cut_body():
    misses = [
        {"id": f"s{i}", "request": {"urlPath": "/x" * 40}, "failed": ["urlPath"]} for i in range(9)
    ]
    body = orjson.dumps({"error": {"code": 404, "message": "m", "nearMisses": misses}}).decode()
    assert near_misses_of(body) == (misses, False)
    found, cut = near_misses_of(body[:1024])
    assert cut and 1 <= len(found) < 9 and found == misses[: len(found)]
    assert near_misses_of('{"error":{"code":404,"message":"m"}}') == ([], False)
    assert near_misses_of("not json") == ([], False)


def test_a_miss_shows_the_stubs_that_came_closest(console):
    name, session = shop(console.url)
    http = requests.Session()
    assert http.get(f"{console.url}/virtual/{name}/{session}/users/2?a=b").status_code == 404
    data = http.get(console.url + "/api/v2/tracker/records", params={"q": f"{name} sc:404"}).json()
    html = http.get(f"{console.url}/console/tracker/{data['data'][0]['id']}").text
    assert "Why it missed" in html and html.count('class="badge bad">urlPath<') == 2
    assert 'class="badge bad">method<' in html and "bodyPatterns.contains" in html
    assert "/users/2?a=b" in html


def test_a_playback_shows_the_stub_that_answered(console):
    name, session = shop(console.url)
    http = requests.Session()
    stubs = http.get(f"{console.url}/api/v2/scenarios/objects/{name}/stubs").json()["data"]
    [listed] = [s for s in stubs if s["stub"]["request"].get("urlPath") == "/users/1"]
    assert http.get(f"{console.url}/virtual/{name}/{session}/users/1").text == "hello"
    data = http.get(console.url + "/api/v2/tracker/records", params={"q": f"{name} sc:200"}).json()
    html = http.get(f"{console.url}/console/tracker/{data['data'][0]['id']}").text
    assert "The stub that answered" in html and f'<dd class="mono">{listed["id"]}</dd>' in html
    assert f'href="/console/scenarios/objects/127.0.0.1:{name}"' in html
    assert "&#34;/users/1&#34;" in html or '"/users/1"' in html  # its matchers


# analytics -------------------------------------------------------------------------


def test_aggregate_buckets_rates_and_percentiles():
    now = 1000.0
    samples = [("a", now - 5, d) for d in range(1, 101)]  # the last bucket: 100 calls
    samples += [("a", now - 25, 7), ("b", now - 15, 3), (None, now - 1, 4)]
    samples += [("a", now - 31, 999), ("a", now, 999)]  # outside [now - 30, now)
    series = aggregate(samples, now, window_s=30, bucket_s=10)
    assert [s.scenario for s in series] == ["a", "(no scenario)", "b"]
    a = series[0]
    assert a.count == 101 and a.rps == pytest.approx(101 / 30)
    assert [b.count for b in a.buckets] == [1, 0, 100]
    assert (a.buckets[2].p50, a.buckets[2].p95, a.buckets[2].p99) == (50, 95, 99)
    assert a.buckets[1].p50 is None and a.buckets[0].p99 == 7
    assert a.buckets[2].rps == 10.0
    assert percentile([5], 99) == 5


def _record(path: str, started: float, duration: int = 1, scenario: str = "h:sc") -> TrackerRecord:
    detail = pack_detail(started, "GET", "", 1, "", b"", b"", b"", b"", 0, b"")
    return TrackerRecord(None, path, scenario, None, "h", 200, duration, 0, detail)


def test_reading_a_full_tracker_never_holds_the_loop_100_ms():
    """100,000 records (the default cap) read for the charts: the longest the loop is
    held between two of its turns stays well under 100 ms; aggregation runs on a thread."""

    async def main() -> tuple[float, int]:
        tracker = Tracker()
        store = MemoryStore()
        await tracker.start(store)
        now = time.time()
        records = [_record(f"/p{i % 7}", now - 100 + i / 1000, i % 50) for i in range(100_000)]
        await store.add_tracker_records(records, tracker.cap)
        del records
        tune_gc()  # as a server process does (its startup's objects frozen)
        longest = 0.0
        done = False

        async def watch() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                at = time.perf_counter()
                longest = max(longest, at - last)
                last = at

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        samples, _ = await read_samples(tracker, now - 300, tracker.cap)
        series = await asyncio.to_thread(aggregate, samples, now, 300, 10)
        done = True
        await watcher
        await tracker.stop()
        return longest, series[0].count

    threshold = gc.get_threshold()
    try:
        longest, count = asyncio.run(main())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert count == 100_000
    assert longest < 0.1, f"the loop was held {longest * 1000:.0f} ms"


def test_analytics_draws_each_scenario(console):
    name, session = shop(console.url)
    http = requests.Session()
    for _ in range(5):
        http.get(f"{console.url}/virtual/{name}/{session}/users/1")
    r = http.get(console.url + "/console/analytics", params={"minutes": "1"})
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    assert f":{name}</strong>" in r.text and '<rect class="bar"' in r.text
    assert 'class="line p99"' in r.text
    fragment = http.get(console.url + "/console/analytics/chart").text
    assert "<html" not in fragment and f":{name}</strong>" in fragment


# in the browser --------------------------------------------------------------------


def test_watch_requests_arrive_and_open_one_that_missed(console, page):
    name, session = shop(console.url)
    http = requests.Session()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{console.url}/console/tracker?q={name}+/virtual/")
    page.wait_for_selector("#tail-pause:not([hidden])")
    page.wait_for_function("document.getElementById('tail-state').textContent.startsWith('Live')")
    http.get(f"{console.url}/virtual/{name}/{session}/users/1")
    http.get(f"{console.url}/virtual/{name}/{session}/users/9")
    page.wait_for_selector("#tail-rows tr:has-text('/users/9')")
    assert page.locator("#tail-rows tr").count() == 2
    # Pause by keyboard: nothing more arrives until resumed.
    page.focus("#tail-pause")
    page.keyboard.press("Enter")
    assert page.get_attribute("#tail-pause", "aria-pressed") == "true"
    http.get(f"{console.url}/virtual/{name}/{session}/users/8")
    time.sleep(1.2)
    assert page.locator("#tail-rows tr").count() == 2
    page.keyboard.press("Enter")
    page.wait_for_selector("#tail-rows tr:has-text('/users/8')")
    # The miss: its row links to the record, which says which matchers failed.
    page.click("#tail-rows tr:has-text('/users/9') a")
    page.wait_for_selector("h2#misses")
    assert page.locator("table .badge.bad", has_text="urlPath").count() == 2
    # Readable on a narrow window: nothing wider than the viewport but the table's own scroll.
    page.set_viewport_size({"width": 380, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 380


def test_a_bad_filter_shows_its_message_in_the_browser(console, page):
    page.goto(f"{console.url}/console/tracker")
    page.fill("input[name=q]", "sc:>=abc")
    page.keyboard.press("Enter")
    page.wait_for_selector("#tail-error")
    assert "sc:>=abc" in page.inner_text("#tail-error")


def test_analytics_in_the_browser_refreshes(console, page):
    name, session = shop(console.url)
    requests.get(f"{console.url}/virtual/{name}/{session}/users/1")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{console.url}/console/analytics")
    page.wait_for_selector("figure.chart svg rect.bar")
    before = page.inner_text("#analytics p.muted")
    page.wait_for_function(
        "(before) => document.querySelector('#analytics p.muted').textContent !== before",
        arg=before,
        timeout=12_000,
    )
