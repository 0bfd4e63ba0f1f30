"""Builds the ASGI app: one port, every API family, the store's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from simulacra import console, metrics, openapi, ops
from simulacra.background import freeze_what_is_built
from simulacra.clock import RealClock, VirtualClock, parse_start
from simulacra.cloud import build_cloud
from simulacra.cloud.shared import SharedCloud, SharedCloudMiddleware
from simulacra.config import Settings, parse_bindings, parse_recordings, parse_regions
from simulacra.dataplane.asgi import DataPlaneApp
from simulacra.dataplane.cloud import CloudRoutes
from simulacra.dataplane.plane import DataPlane
from simulacra.dataplane.playback import INTERNAL_ERROR, PlaybackRoutes
from simulacra.dataplane.ports import Ports
from simulacra.dataplane.request import text_answer
from simulacra.errors import Unavailable
from simulacra.routing import IndexedRouter
from simulacra.store import open_store
from simulacra.virtual import api_v1, api_v2, api_v2_admin, api_v2_archive
from simulacra.virtual.archive import ArchiveLimits, read_archive
from simulacra.virtual.model import DORMANT, RECORD, qualify
from simulacra.virtual.recording import Upstream
from simulacra.virtual.service import VirtualService
from simulacra.virtual.tracking import Tracker
from simulacra.web import starlette_response

log = logging.getLogger("simulacra")

GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)

WELCOME = (
    "To get started with Mimic, POST an authentication request to:\n\n"
    "/identity/v2.0/tokens\n\n"
    "To virtualize a service (Mirage API v2), start at:\n\n"
    "/api/v2/scenarios\n"
)


async def welcome(request: Request) -> Response:
    """Welcome text: where a new user starts (a browser is sent to the console)."""
    if console.page.wants_html(request):
        return RedirectResponse(console.page.PREFIX, 303)
    return PlainTextResponse(WELCOME)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(("/api/", "/stubo/api/")):
        message = exc.detail
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 404:
            message = f"no such resource: {request.url.path}"
        return api_v2.error_response(exc.status_code, message)
    return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    if request.url.path.startswith(("/api/", "/stubo/api/")):
        return api_v2.error_response(500, INTERNAL_ERROR)
    return starlette_response(text_answer(500, "Internal Server Error"))


async def _start_listener(
    store: object, on_change: Callable[[str, str], Awaitable[None]]
) -> asyncio.Task[None] | None:
    """Run the store's change listener, if it has one, once it is listening."""
    listen = getattr(store, "listen", None)
    if listen is None:
        return None
    ready = asyncio.Event()
    task = asyncio.create_task(listen(on_change, ready.set))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # the listener failed to start: raise its error
    return task


def tune_gc() -> None:
    """Once a server process has started: fewer, cheaper collections for the rest of its life.

    What startup built (modules, routes, the stubs loaded from the store) lives as long as
    the process: frozen, it is out of the collector's sight, and a full collection scans
    only what came after (an empty server: 14 ms -> under 0.1 ms). A young collection
    costs about 0.2 us per object it finds, plus a fixed part that the default threshold
    (every 700 allocations) pays ~100 times a second under load: with 11,000 stubs loaded,
    0.39 ms per collection, 4 us per tracked playback; every 20,000, about 1.3 us
    (bench/README.md, "What tracking costs").
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    freeze_what_is_built()  # and what long work builds later (background.py)


def create_app(settings: Settings | None = None) -> DataPlaneApp:
    """The data plane in front of the Starlette app of the admin APIs and the cloud."""
    settings = settings or Settings()
    clock = RealClock() if settings.realtime else VirtualClock(parse_start(settings.clock_start))
    cloud, cloud_routes = build_cloud(clock, parse_regions(settings.regions))
    tracker = Tracker(cap=settings.tracker_cap, enabled=settings.tracking)
    # --shared-cloud: cloud state in the PostgreSQL store (simulacra/cloud/shared.py).
    shared = SharedCloud(cloud) if settings.shared_cloud else None
    playback = PlaybackRoutes(tracker, settings.max_body_bytes)
    ports = Ports(playback, settings.port, settings.host)
    dataplane = DataPlane(playback, CloudRoutes(cloud, shared), ports, settings.max_body_bytes)
    server_metrics = metrics.Metrics(tracker, ports)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        server_metrics.store = store
        if shared is not None:
            shared.attach(store)  # before open: refuses a store without shared state
        await store.open()
        virtual = VirtualService(store)

        async def on_change(kind: str, key: str) -> None:
            await virtual.on_change(kind, key)
            await ports.reconcile(virtual.bound_sessions())

        # A shared store tells every instance of changes (LISTEN/NOTIFY); listen before the
        # first load so that nothing committed in between is missed.
        listener = await _start_listener(store, on_change)
        await virtual.start()
        app.state.virtual = playback.playback.svc = virtual
        await ports.reconcile(virtual.bound_sessions())  # serve the bound sessions again
        await _preload(settings, virtual, ports)
        flusher = asyncio.create_task(_flush_periodically(virtual, settings.flush_interval_s))
        await tracker.start(store)
        if settings.tune_gc:
            tune_gc()
        warming = asyncio.create_task(virtual.warm())
        try:
            yield
        finally:
            warming.cancel()
            ports.close()
            await playback.playback.recorder.close()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:
                await virtual.flush()
            except Unavailable:  # stopping during a store outage: last_used stays as stored
                log.warning("session bookkeeping not written: the store is unavailable")
            await tracker.stop()  # every acknowledged call is recorded before the store closes
            if listener is not None:
                store.stop_listening()  # type: ignore[attr-defined]  # not cancelled: see listen
                await listener
            await store.close()

    app = Starlette(
        routes=[
            *api_v2.ROUTES,
            *api_v2_admin.ROUTES,
            *api_v2_archive.ROUTES,
            *api_v1.ROUTES,
            Route("/", welcome, methods=["GET"]),
            *ops.ROUTES,
            *metrics.ROUTES,
            *openapi.ROUTES,
            *console.routes(),
            *cloud_routes,
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # Same routes and answers, fewer routes tried per request (simulacra/routing.py).
    app.router = IndexedRouter(app.router.routes, lifespan=lifespan)
    if shared is not None:
        app.add_middleware(
            SharedCloudMiddleware, shared=shared, max_body_bytes=settings.max_body_bytes
        )
    app.state.settings = settings
    app.state.cloud = cloud
    app.state.tracker = tracker
    app.state.ports = ports
    app.state.shared = shared  # None unless --shared-cloud: resets run in its transaction
    app.state.metrics = server_metrics
    return DataPlaneApp(dataplane, app, server_metrics)


LOAD_HOST = "localhost"  # the host namespace of the scenarios ``--load`` loads


async def _preload(settings: Settings, virtual: VirtualService, ports: Ports) -> None:
    """``--load``: replace each archive's scenario and play it; ``--bind``: serve sessions
    on their ports; ``--record``: record upstreams on theirs. A failure stops the start,
    with what went wrong."""
    for path in filter(None, settings.load.split("\n")):
        data = await asyncio.to_thread(Path(path).read_bytes)
        archive = await asyncio.to_thread(read_archive, data, path, ArchiveLimits())
        name = qualify(archive.scenario, LOAD_HOST)
        if await virtual.store.get_scenario(name) is not None:
            await virtual.delete_scenario(name, force=True)
        await virtual.import_scenarios(LOAD_HOST, [archive])
        log.info("loaded %s: scenario %s, session %s", path, name, archive.session)
    for scenario, session, port in parse_bindings(settings.bind):
        name = qualify(scenario, LOAD_HOST)
        current = virtual.cached_session(name.rpartition(":")[0], session)
        if current is None or current.port != port:
            bound = await ports.reserve(port)
            try:
                await virtual.bind_session(name, session, bound)
            except BaseException:
                ports.release(bound)
                raise
    for scenario, session, port, url in parse_recordings(settings.record):
        name = qualify(scenario, LOAD_HOST)
        upstream = Upstream.parse(url, {}).to_dict()
        current = virtual.cached_session(name.rpartition(":")[0], session)
        if current is not None and (current.status, current.port) == (RECORD, port):
            continue  # recording there since before a restart: served again by reconcile
        if await virtual.store.get_scenario(name) is None:
            await virtual.create_scenario(name)
        bound = await ports.reserve(port)
        try:
            if current is not None and current.status != DORMANT:
                await virtual.end_session(name, session)
            await virtual.begin_session(
                name, session, RECORD, port=bound, append=True, upstream=upstream
            )
        except BaseException:
            ports.release(bound)
            raise
    await ports.reconcile(virtual.bound_sessions())


async def _flush_periodically(virtual: VirtualService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await virtual.flush()
        except Unavailable:
            pass  # kept for the next flush; the store logged the outage
        except Exception:
            log.exception("flushing session bookkeeping failed")


def create_app_from_env() -> DataPlaneApp:
    """Factory for the ASGI server process, which rebuilds settings from SIMULACRA_*."""
    settings = Settings.from_env()
    ops.configure_logging(settings.log_level, settings.log_format)  # its own process
    return create_app(settings)
