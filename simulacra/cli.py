"""``simulacra serve``: one command, one port."""

from __future__ import annotations

import argparse
import os
import sys

from simulacra import __version__
from simulacra.config import (
    DEFAULT_STORE,
    Settings,
    check_store_url,
    is_postgres_url,
    parse_bindings,
    parse_recordings,
    parse_regions,
)

APP_FACTORY = "simulacra.app:create_app_from_env"
GRANIAN_KILL_TIMEOUT_S = 5  # --server granian: how long a stopping worker gets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulacra", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simulacra {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8900, help="port (default 8900)")
    serve.add_argument(
        "--store",
        default=os.environ.get("SIMULACRA_STORE", DEFAULT_STORE),
        help="sqlite:///relative.db, sqlite:////absolute.db, memory://, or"
        " postgresql://user@host:port/db[?schema=name] shared by several instances"
        f" (env SIMULACRA_STORE; default {DEFAULT_STORE}, a file in the current directory)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on this port (default 1); more than one needs a PostgreSQL store",
    )
    serve.add_argument(
        "--server",
        choices=("simulacra", "granian", "uvicorn"),
        default="simulacra",
        help="HTTP server: simulacra (built in, the default and fastest), granian, or uvicorn"
        " (needs the 'uvicorn' extra)",
    )
    serve.add_argument(
        "--regions",
        default=Settings.regions,
        help="cloud regions in the service catalog (default ORD,DFW,IAD)",
    )
    serve.add_argument(
        "--realtime",
        action="store_true",
        help="run the cloud mocks on the wall clock instead of the virtual clock (no tick)",
    )
    serve.add_argument(
        "--shared-cloud",
        action="store_true",
        default=os.environ.get("SIMULACRA_SHARED_CLOUD", "").strip().lower()
        in ("1", "true", "yes", "on"),
        help="keep the cloud mocks' state and clock in the PostgreSQL store, shared by every"
        " instance and worker (env SIMULACRA_SHARED_CLOUD=1; see docs/scaling.md)",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=Settings.max_body_bytes, help="request body limit"
    )
    serve.add_argument(
        "--no-tracking",
        dest="tracking",
        action="store_false",
        help="do not record calls in the tracker (/api/v2/tracker/records)",
    )
    serve.add_argument(
        "--tracker-cap",
        type=int,
        default=Settings.tracker_cap,
        help=f"tracker records kept, the oldest deleted first (default {Settings.tracker_cap:,})",
    )
    serve.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="ARCHIVE.zip",
        help="load a scenario archive (an export zip) at start and play it: its scenario is"
        " replaced, its session begun in playback (repeatable)",
    )
    serve.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="SCENARIO/SESSION=PORT",
        help="serve a playback session on a port of its own: every request there plays it"
        " (repeatable; with --load, for a docker-compose or CI service)",
    )
    serve.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="SCENARIO/SESSION=PORT=UPSTREAM",
        help="record an upstream through a port of its own: every request there is forwarded"
        " to UPSTREAM and stored as a stub of SCENARIO (created if missing; repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        settings = Settings(
            host=args.host,
            port=args.port,
            store_url=args.store,
            server=args.server,
            workers=args.workers,
            max_body_bytes=args.max_body_bytes,
            regions=args.regions,
            realtime=args.realtime,
            shared_cloud=args.shared_cloud,
            tracking=args.tracking,
            tracker_cap=args.tracker_cap,
            tune_gc=True,
            load="\n".join(args.load),
            bind="\n".join(args.bind),
            record="\n".join(args.record),
        )
        return serve(settings)
    return 2


def serve(settings: Settings) -> int:
    try:  # fail fast on bad settings, before the server process starts
        check_store_url(settings.store_url)
        parse_regions(settings.regions)
        parse_bindings(settings.bind)
        parse_recordings(settings.record)
        for path in filter(None, settings.load.split("\n")):
            if not os.path.isfile(path):
                raise ValueError(f"--load {path}: no such file")
        if settings.tracker_cap < 1:
            raise ValueError(f"--tracker-cap must be 1 or more, got {settings.tracker_cap}")
        if settings.workers < 1:
            raise ValueError(f"--workers must be 1 or more, got {settings.workers}")
        shared_store = is_postgres_url(settings.store_url)
        if settings.workers > 1 and not shared_store:
            # Workers learn of each other's changes through LISTEN/NOTIFY, which only the
            # shared store has: SQLite workers would serve stale stubs and sessions.
            raise ValueError(
                "--workers above 1 needs a shared store: use --store postgresql://..."
                " (see docs/scaling.md)"
            )
        if settings.shared_cloud and not shared_store:
            raise ValueError(
                "--shared-cloud keeps the cloud state in the shared store: use --store"
                " postgresql://... (see docs/scaling.md)"
            )
    except ValueError as exc:
        print(f"simulacra: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1 and not settings.shared_cloud:
        print(
            f"simulacra: warning: cloud-mock state (servers, tokens, load balancers, the clock)"
            f" is per worker process: each of the {settings.workers} workers has its own; add"
            " --shared-cloud to share it (see docs/scaling.md)",
            file=sys.stderr,
            flush=True,
        )
    os.environ.update(settings.to_env())
    print(
        f"Simulacra {__version__} on http://{settings.host}:{settings.port}/"
        f" (store {_redacted(settings.store_url)}, server {settings.server},"
        f" workers {settings.workers}{', shared cloud' if settings.shared_cloud else ''})",
        flush=True,
    )
    if settings.server == "simulacra":
        return _serve_builtin(settings)
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
            workers=settings.workers,
        )
        return 0
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        APP_FACTORY,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        # A worker that does not stop is killed after this: every acknowledged write is
        # already committed. (The stops once seen hanging were the store's listener,
        # cancelled inside psycopg's wait; it now ends on stop_listening().)
        workers_kill_timeout=GRANIAN_KILL_TIMEOUT_S,
        log_level="warning",  # type: ignore[arg-type]
    ).serve()
    return 0


def _serve_builtin(settings: Settings) -> int:
    """The built-in server (simulacra/server.py): the app runs in this process, or in
    ``settings.workers`` processes forked from it."""
    import logging

    from simulacra import server
    from simulacra.app import create_app

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return server.serve(
        lambda: create_app(settings), settings.host, settings.port, settings.workers
    )


def _redacted(url: str) -> str:
    """The store URL without its password, fit for a log."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["main"]
