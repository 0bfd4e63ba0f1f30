"""The console's tracker: a live tail of tracked calls, filtered with the tracker's ``q``
language, and one record in full (why a request missed: its near misses).

The tail adds nothing to playback: it never hooks the request path. Each open stream reads
what the tracker has written, from its own loop, every ``TAIL_PERIOD_S``: at most
``TAIL_BATCH`` records newer than the last it sent (the newest of them), and how many newer
ones it skipped. So a browser gets one bounded batch per period however fast the server
plays, and the page inserts a batch at once. Rows are rendered by one template
(``tracker_rows.html``) for the page and for the stream's batches alike.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from simulacra.console import page
from simulacra.console.page import PREFIX, console_page, render
from simulacra.console.scenarios import MATCHERS_SHOWN, cut, scenario_path
from simulacra.errors import Invalid, NotFound, shown
from simulacra.virtual.api_v2_admin import tracker as tracker_of
from simulacra.virtual.tracker import (
    BODY_CAPTURE_BYTES,
    TrackerQuery,
    TrackerRecord,
    decode_headers,
    int64,
    parse_query,
)
from simulacra.virtual.tracking import Tracker

TAIL_BATCH = 50  # records per batch (and on the page when it opens): the newest of them
TAIL_PERIOD_S = 0.5  # how often an open stream reads the tracker
# A stream ends after this long and the browser's EventSource reconnects at once, naming the
# last record it had (Last-Event-ID), so nothing is lost. Why: the server cannot tell an app
# that it is stopping (it waits up to STOP_GRACE_S for answers in progress), so a stream
# that ended only when its client left would hold every stop for the whole grace period.
STREAM_SECONDS = 3.0
RECONNECT_MS = 250
MAX_STREAMS = 20  # open tails per server process; one more is a 503
SHOWN_ROWS = 200  # the page keeps the newest this many rows (console.js drops the rest)

_rows = page.templates.get_template("tracker_rows.html")


def tail_row(record: TrackerRecord) -> dict[str, Any]:
    """What a row of the tail shows of a record."""
    call = record.details()
    return {
        "id": record.id,
        "time": call.start_time[11:],  # the date is today's, or the detail page says it
        "method": call.request_method,
        "function": record.function,
        "query": call.query,
        "scenario": record.scenario or "",
        "session": record.session or "",
        "status": record.return_code,
        "duration_ms": record.duration_ms,
        "delay": record.delay,
    }


def render_rows(records: list[TrackerRecord]) -> str:
    return _rows.render(rows=[tail_row(r) for r in records])


def _query_of(request: Request) -> tuple[str, TrackerQuery]:
    q = request.query_params.get("q", "")[:1000]
    return q, parse_query(q)


@console_page
async def tracker_page(request: Request) -> Response:
    """The tail: the newest records now (usable without a script), then the live stream."""
    q = request.query_params.get("q", "")[:1000]
    try:
        query = parse_query(q)
    except Invalid as exc:  # the form stays, with the message, and no stream
        return render(
            request, "tracker.html", title="Tracker", status=400, q=q, bad_query=exc.message
        )
    total, records = await tracker_of(request).records(query, 0, TAIL_BATCH)
    return render(
        request,
        "tracker.html",
        title="Tracker",
        q=q,
        total=total,
        rows_html=render_rows(records),
        after=records[0].id if records else await _newest_id(tracker_of(request)),
        shown_rows=SHOWN_ROWS,
    )


async def _newest_id(tracker: Tracker) -> int:
    _, newest = await tracker.records(parse_query(None), 0, 1)
    return (newest[0].id or 0) if newest else 0


# the stream -------------------------------------------------------------------


class OpenStreams:
    """How many tails an app has open: the cap's count (one per app, on its state)."""

    def __init__(self) -> None:
        self.count = 0


def open_streams(request: Request) -> OpenStreams:
    state = request.app.state
    streams = getattr(state, "console_tails", None)
    if streams is None:
        streams = state.console_tails = OpenStreams()
    return streams


class TailResponse(StreamingResponse):
    """A tail's event stream; counted open from its creation until its last byte (or its
    client leaving), so the count cannot leak."""

    def __init__(self, content: AsyncIterator[bytes], streams: OpenStreams, **options: Any):
        super().__init__(content, **options)
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.streams.count -= 1


def _after_of(request: Request) -> int:
    """The last record the client has: a reconnecting EventSource's Last-Event-ID, else
    ``after`` (the page's newest row)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    after = int64(raw.strip())
    if after is None or after < 0:
        raise Invalid(f"after must be a record id (0 or more), got {shown(raw)}")
    return after


async def events(request: Request) -> Response:
    """``text/event-stream``: one event per batch of new records, ``{html, skipped, last}``."""
    try:
        _, query = _query_of(request)
        after = _after_of(request)
    except Invalid as exc:
        return PlainTextResponse(exc.message, 400, headers=page.SECURITY_HEADERS)
    streams = open_streams(request)
    if streams.count >= MAX_STREAMS:
        return PlainTextResponse(
            f"{MAX_STREAMS} tracker tails are open already: close one and retry",
            503,
            headers={**page.SECURITY_HEADERS, "retry-after": "5"},
        )
    streams.count += 1  # no await between the check and this: the cap holds
    return TailResponse(
        tail(tracker_of(request), query, after),
        streams,
        media_type="text/event-stream",
        headers={**page.SECURITY_HEADERS, "x-accel-buffering": "no"},
    )


async def tail(
    tracker: Tracker, query: TrackerQuery, after: int, seconds: float = STREAM_SECONDS
) -> AsyncIterator[bytes]:
    """The stream's events for ``seconds``: each period, the newest TAIL_BATCH records
    matching ``query`` with an id above the last sent, and the count of the others."""
    loop = asyncio.get_running_loop()
    yield b"retry: %d\n\n" % RECONNECT_MS
    end = loop.time() + seconds
    while True:
        total, records = await tracker.records(query.newer_than(after), 0, TAIL_BATCH)
        if records:
            after = records[0].id or after
            data = {"html": render_rows(records), "skipped": total - len(records), "last": after}
            yield b"id: %d\ndata: %b\n\n" % (after, orjson.dumps(data))
        elif after and await _newest_id(tracker) < after:
            after = 0  # a reset: ids may start again from 1 (SQLite)
        if loop.time() + TAIL_PERIOD_S >= end:
            return
        await asyncio.sleep(TAIL_PERIOD_S)


# one record ----------------------------------------------------------------------


def near_misses_of(body: str) -> tuple[list[dict[str, Any]], bool]:
    """The near misses a no-match answer names (its body's ``error.nearMisses``), and
    whether some were cut off: the tracker keeps the first BODY_CAPTURE_BYTES of a body,
    so the list is read one stub at a time, as far as it goes."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        misses = error.get("nearMisses") if isinstance(error, dict) else None
        if isinstance(misses, list):
            return [m for m in misses if isinstance(m, dict)], False
        return [], False
    key = body.find('"nearMisses":[')
    if key < 0:
        return [], False
    decoder = json.JSONDecoder()
    at = key + len('"nearMisses":[')
    found: list[dict[str, Any]] = []
    while True:
        while at < len(body) and body[at] in " ,\n\r\t":
            at += 1
        if at >= len(body) or body[at] == "]":
            return found, at >= len(body)
        try:
            miss, at = decoder.raw_decode(body, at)
        except ValueError:
            return found, True
        if isinstance(miss, dict):
            found.append(miss)


def _pretty(text: str) -> str:
    """A JSON body indented; anything else as it is."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


@console_page
async def record_page(request: Request) -> Response:
    """One record: the request, the answer, and for a miss the stubs that came closest."""
    raw = request.path_params["id"]
    record = None
    if raw.isascii() and raw.isdigit() and len(raw) < 19:
        record = await tracker_of(request).record(int(raw))
    if record is None:
        raise NotFound(f"Tracker record {shown(raw)} not found")
    call = record.details()
    misses, cut_off = near_misses_of(call.body_start) if record.return_code == 404 else ([], False)
    body_cut = call.response_size > len(call.body_start.encode())
    return render(
        request,
        "tracker_record.html",
        title=f"Tracker record {record.id}",
        record=record,
        full=record.full(),
        call=call,
        request_headers=decode_headers(call.request_headers),
        response_headers=decode_headers(call.response_headers),
        body=call.body_start if body_cut else _pretty(call.body_start),
        body_cut=body_cut,
        capture_bytes=BODY_CAPTURE_BYTES,
        misses=[
            {
                "id": str(m.get("id", "")),
                "failed": [str(f) for f in m.get("failed", []) if isinstance(f, str)],
                "request": orjson.dumps(m.get("request"), option=orjson.OPT_INDENT_2).decode(),
            }
            for m in misses
        ],
        misses_cut=cut_off,
        stub=await _answering_stub(request, record),
    )


async def _answering_stub(request: Request, record: TrackerRecord) -> dict[str, Any] | None:
    """The stub that answered a playback: its id, its scenario's page and, while it still
    exists, its matchers (one stub read by id: an indexed row, however large the scenario)."""
    if record.stub_id is None:
        return None
    found = None
    if record.scenario:
        found = await request.app.state.virtual.store.get_stub(record.scenario, record.stub_id)
    return {
        "id": record.stub_id,
        "scenario": record.scenario,
        "scenario_path": scenario_path(record.scenario) if record.scenario else None,
        "matchers": (
            cut(orjson.dumps(found.request, option=orjson.OPT_INDENT_2).decode(), MATCHERS_SHOWN)
            if found is not None
            else None
        ),
    }


ROUTES: list[BaseRoute] = [
    Route(PREFIX + "/tracker", tracker_page, methods=["GET"]),
    Route(PREFIX + "/tracker/events", events, methods=["GET"]),
    Route(PREFIX + "/tracker/{id}", record_page, methods=["GET"]),
]
