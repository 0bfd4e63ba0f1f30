"""``GET /metrics``: what the server has answered, in Prometheus's text format.

The request path only adds to plain numbers (``Metrics.count``: a dict of counts, a list of
histogram buckets), once per answered request at each server's edge: the built-in server's
``HttpConnection.exchange_done`` and the ASGI adapter. prometheus_client's own metrics would
take a lock and look up their labels per request; here that work happens per scrape, when
``Metrics.collect`` turns the numbers into metric families and reads the gauges (tracker,
bound ports, store) from the objects that hold them.

Each process counts its own requests: with ``--workers N`` a scrape reaches one worker.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulacra.dataplane.cloud import ClaimedPost
from simulacra.openapi import Reply
from simulacra.web import operation

if TYPE_CHECKING:
    from simulacra.dataplane import Route as DataPlaneRoute
    from simulacra.dataplane.ports import Ports
    from simulacra.store.base import Store
    from simulacra.virtual.tracking import Tracker

METRICS_PATH = "/metrics"

# API families, the ``family`` label of simulacra_requests_total.
PLAYBACK = "playback"  # whatever the data plane plays: every door, bound ports included
MIRAGE_V2 = "mirage_v2"
MIRAGE_V1 = "mirage_v1"
CONTROL = "control"  # Mimic's control plane
CLOUD = "cloud"
OPS = "ops"
CONSOLE = "console"  # the web console's pages and its tracker tail
OTHER = "other"

# The families of the app's paths, by their first one or two segments. The data plane's
# requests are told apart by the route that answered them (on a bound port a path may be
# anything).
APP_FAMILIES = {
    "/api/v2": MIRAGE_V2,
    "/stubo/api": MIRAGE_V1,
    "/mimic": CONTROL,
    "/mimicking": CLOUD,
    "/identity": CLOUD,
    "/fastly": CLOUD,
    "/health": OPS,
    METRICS_PATH: OPS,
    "/console": CONSOLE,
}

# Upper bounds (seconds) of simulacra_playback_seconds's buckets: a playback takes well
# under a millisecond of server time; delay policies and dribbled answers take seconds.
PLAYBACK_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def family(path: str, route: DataPlaneRoute | None) -> str:
    """The API family of a request: by the data-plane route that answered it, else (the
    app answered) by the first segments of its path."""
    if route is not None:
        return CLOUD if type(route) is ClaimedPost else PLAYBACK
    end = path.find("/", 1)
    name = APP_FAMILIES.get(path if end < 0 else path[:end])
    if name is None and end > 0:
        end = path.find("/", end + 1)
        name = APP_FAMILIES.get(path if end < 0 else path[:end])
    return name or OTHER


class Metrics(Collector):
    """Counts of answered requests and playback times, and the collector that reports them
    with the gauges it reads at scrape time, in a registry of this app's own (tests build
    several apps in one process)."""

    def __init__(self, tracker: Tracker, ports: Ports) -> None:
        self.tracker = tracker
        self.ports = ports
        self.store: Store | None = None  # set once the app has opened it
        self.requests: dict[tuple[str, int], int] = {}  # (family, status) -> requests
        # Playbacks by the first bucket whose bound holds their time; the last is +Inf.
        self.playback_buckets = [0] * (len(PLAYBACK_BUCKETS) + 1)
        self.playback_seconds = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files: read per scrape

    def count(self, path: str, route: DataPlaneRoute | None, status: int, started: float) -> None:
        """One request answered with ``status``; ``started``: when it arrived (perf_counter)."""
        name = family(path, route)
        if name == PLAYBACK:
            seconds = time.perf_counter() - started
            self.playback_buckets[bisect_left(PLAYBACK_BUCKETS, seconds)] += 1
            self.playback_seconds += seconds
        key = (name, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "simulacra_requests",
            "Requests answered, by API family and HTTP status.",
            labels=("family", "status"),
        )
        for (name, status), value in sorted(self.requests.items()):
            requests.add_metric((name, str(status)), value)
        yield requests

        buckets = []
        total = 0
        for bound, value in zip((*PLAYBACK_BUCKETS, math.inf), self.playback_buckets, strict=True):
            total += value
            buckets.append(("+Inf" if bound == math.inf else str(bound), total))
        yield HistogramMetricFamily(
            "simulacra_playback_seconds",
            "Playbacks by the time from their arrival to their answer written.",
            buckets=buckets,
            sum_value=self.playback_seconds,
        )

        tracker = self.tracker
        pending = tracker.pending
        yield GaugeMetricFamily(
            "simulacra_tracker_queue_depth",
            "Calls noted by the tracker and not yet written to the store.",
            value=pending,
        )
        yield CounterMetricFamily(
            "simulacra_store_errors",
            "Store operations that failed (PostgreSQL out of reach; other stores: none).",
            value=getattr(self.store, "failures", 0),
        )
        yield GaugeMetricFamily(
            "simulacra_bound_ports",
            "Ports open for sessions of their own (played or recorded there).",
            value=self.ports.open_count,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


@operation(
    replies={200: Reply(schema={"type": "string"}, media="text/plain", description="Metrics")},
    error_statuses=(),
)
async def scrape(request: Request) -> Response:
    """Prometheus metrics of this process: requests, playback times, tracker, store, ports."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route(METRICS_PATH, scrape, methods=["GET"])]

__all__ = ["METRICS_PATH", "ROUTES", "Metrics", "family"]
