"""The console's analytics: requests per second and latency percentiles per scenario over
the last minutes, drawn as inline SVG by the template (no chart library, no script needed;
console.js refreshes the chart's fragment).

Computed from the tracker's records (the admin API's reads, no second copy): read newest
first in pages by id, back to the window's start or the tracker's cap, each page an await
on the store; then ``aggregate``, a pure function over plain (scenario, start, duration)
samples, runs on a thread, as 100,000 of them take longer than a request may hold the loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from simulacra.console import page
from simulacra.console.page import PREFIX, console_page, render
from simulacra.errors import Invalid, shown
from simulacra.virtual.api_v2_admin import tracker as tracker_of
from simulacra.virtual.tracker import parse_query, started_of
from simulacra.virtual.tracking import Tracker

DEFAULT_MINUTES = 5
MAX_MINUTES = 60
BUCKETS = 30  # per chart: 10 s buckets over 5 minutes
MIN_BUCKET_S = 10
PAGE = 5_000  # records per read: one store call holds the loop a few ms at most
MAX_SCENARIOS = 12  # charts on the page, the busiest first
NO_SCENARIO = "(no scenario)"
# The chart's drawing area, in SVG user units (CSS scales it to the page's width).
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 600, 140, 44, 18, 8

Sample = tuple[str | None, float, int]  # scenario, start (epoch s), duration ms


@dataclass(frozen=True)
class Bucket:
    start: float  # epoch seconds
    count: int
    rps: float
    p50: int | None  # ms; None: no request in the bucket
    p95: int | None
    p99: int | None


@dataclass(frozen=True)
class Series:
    """One scenario over the window: totals, and its buckets oldest first."""

    scenario: str
    count: int
    rps: float
    p50: int
    p95: int
    p99: int
    buckets: tuple[Bucket, ...]


def percentile(ordered: list[int], p: float) -> int:
    """The nearest-rank percentile of an ascending, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def aggregate(
    samples: Iterable[Sample], now: float, window_s: float, bucket_s: float
) -> list[Series]:
    """Per scenario, busiest first: requests per second and p50/p95/p99 latency over the
    ``window_s`` seconds before ``now``, and per ``bucket_s`` bucket (the last ends at now)."""
    start = now - window_s
    n = max(1, round(window_s / bucket_s))
    durations: dict[str, list[list[int]]] = defaultdict(lambda: [[] for _ in range(n)])
    for scenario, started, duration in samples:
        if start <= started < now:
            at = min(int((started - start) / bucket_s), n - 1)
            durations[scenario or NO_SCENARIO][at].append(duration)
    series = []
    for scenario, per_bucket in durations.items():
        buckets = []
        for i, values in enumerate(per_bucket):
            values.sort()
            p = (percentile(values, q) if values else None for q in (50, 95, 99))
            buckets.append(Bucket(start + i * bucket_s, len(values), len(values) / bucket_s, *p))
        every = sorted(d for values in per_bucket for d in values)
        series.append(
            Series(
                scenario,
                len(every),
                len(every) / window_s,
                percentile(every, 50),
                percentile(every, 95),
                percentile(every, 99),
                tuple(buckets),
            )
        )
    series.sort(key=lambda s: (-s.count, s.scenario))
    return series


async def read_samples(tracker: Tracker, since: float, most: int) -> tuple[list[Sample], bool]:
    """The (scenario, start, duration) of the newest records back to ``since`` (at most
    ``most`` of them), and whether the tracker held records older than ``since`` (else the
    window reaches past what it keeps)."""
    query = parse_query(None)
    samples: list[Sample] = []
    before: int | None = None
    while len(samples) < most:
        page_query = query if before is None else query.older_than(before)
        _, records = await tracker.records(page_query, 0, min(PAGE, most - len(samples)))
        if not records:
            return samples, False
        samples += [(r.scenario, started_of(r.detail), r.duration_ms) for r in records]
        if samples[-1][1] < since:
            return samples, True
        before = records[-1].id
        if before is None:
            break
        await asyncio.sleep(0)  # a store read need not suspend: let requests run between pages
    return samples, False


@dataclass(frozen=True)
class Chart:
    """A series as the template draws it: SVG points and labels."""

    series: Series
    rps_bars: tuple[tuple[float, float, float, float], ...]  # x, y, width, height
    lines: tuple[tuple[str, str], ...]  # (p50|p95|p99, "x,y x,y ...")
    rps_max: float
    ms_max: int


def chart(series: Series) -> Chart:
    """Where each bar and point goes: requests per second on one chart, latency on another,
    each scaled to its own maximum."""
    buckets = series.buckets
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(buckets), 1)
    rps_max = max((b.rps for b in buckets), default=0.0) or 1.0
    bars = tuple(
        (
            round(LEFT + i * step + 1, 1),
            round(TOP + plot_h - plot_h * b.rps / rps_max, 1),
            round(max(step - 2, 1), 1),
            round(plot_h * b.rps / rps_max, 1),
        )
        for i, b in enumerate(buckets)
        if b.count
    )
    ms_max = max((b.p99 or 0 for b in buckets), default=0) or 1
    lines = []
    for name in ("p50", "p95", "p99"):
        points = " ".join(
            f"{LEFT + (i + 0.5) * step:.1f},{TOP + plot_h - plot_h * value / ms_max:.1f}"
            for i, b in enumerate(buckets)
            if (value := getattr(b, name)) is not None
        )
        if points and " " not in points:
            points = f"{points} {points}"  # one bucket: a segment of no length, drawn as a dot
        lines.append((name, points))
    return Chart(series, bars, tuple(lines), rps_max, ms_max)


def _minutes_of(request: Request) -> int:
    raw = request.query_params.get("minutes", "")
    if not raw:
        return DEFAULT_MINUTES
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_MINUTES):
        raise Invalid(f"minutes must be a whole number from 1 to {MAX_MINUTES}, got {shown(raw)}")
    return int(raw)


async def _context(request: Request) -> dict[str, Any]:
    minutes = _minutes_of(request)
    window_s = minutes * 60
    bucket_s = max(MIN_BUCKET_S, window_s // BUCKETS)
    now = time.time()
    tracker = tracker_of(request)
    samples, whole = await read_samples(tracker, now - window_s, tracker.cap)
    series = await asyncio.to_thread(aggregate, samples, now, window_s, bucket_s)
    # The oldest record read is where the charts' data begins when the tracker's cap cut the
    # window short (whole: it reaches back past the window's start).
    covered_from = None if whole or not samples else samples[-1][1]
    return {
        "minutes": minutes,
        "bucket_s": bucket_s,
        "charts": [chart(s) for s in series[:MAX_SCENARIOS]],
        "more": max(0, len(series) - MAX_SCENARIOS),
        "counted": len(samples),
        "covered_from": time.strftime("%H:%M:%S", time.gmtime(covered_from))
        if covered_from and covered_from > now - window_s
        else None,
        "updated": time.strftime("%H:%M:%S", time.gmtime(now)),
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
    }


@console_page
async def analytics_page(request: Request) -> Response:
    """The charts, and a choice of window."""
    return render(
        request,
        "analytics.html",
        title="Analytics",
        choices=(1, 5, 15, 60),
        **await _context(request),
    )


@console_page
async def analytics_chart(request: Request) -> Response:
    """The charts alone: what console.js fetches to refresh them."""
    html = page.templates.get_template("analytics_chart.html").render(**await _context(request))
    return HTMLResponse(html, headers=page.SECURITY_HEADERS)


ROUTES: list[BaseRoute] = [
    Route(PREFIX + "/analytics", analytics_page, methods=["GET"]),
    Route(PREFIX + "/analytics/chart", analytics_chart, methods=["GET"]),
]
