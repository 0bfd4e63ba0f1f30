"""``simulacra serve``: one command, one port."""

from __future__ import annotations

import argparse
import os
import sys

from simulacra import __version__
from simulacra.clock import parse_start
from simulacra.config import (
    DEFAULT_LOG_LEVEL,
    DEFAULT_STORE,
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
    check_store_url,
    is_postgres_url,
    parse_bindings,
    parse_recordings,
    parse_regions,
)

APP_FACTORY = "simulacra.app:create_app_from_env"
GRANIAN_KILL_TIMEOUT_S = 5  # --server granian: how long a stopping worker gets
# How long the start waits for the PostgreSQL store to answer before giving up: a store
# that cannot be reached is reported at once, not after the pool's retries.
STORE_CONNECT_TIMEOUT_S = 3


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
        "--clock-start",
        default=os.environ.get("SIMULACRA_CLOCK_START", Settings.clock_start),
        metavar="epoch|now|DATE|SECONDS",
        help="where the virtual clock starts: epoch (the default, as Mimic), now, an ISO 8601"
        " date (2024-05-01T12:00:00Z) or seconds since the epoch (env SIMULACRA_CLOCK_START)",
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
        "--max-import-bytes",
        type=int,
        default=Settings.max_import_bytes,
        help="body limit of a bulk import of stubs (POST .../stubs/import; default 256 MiB)",
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
        "--log-level",
        choices=LOG_LEVELS,
        default=os.environ.get("SIMULACRA_LOG_LEVEL", DEFAULT_LOG_LEVEL).lower(),
        help="info: a line per request (the access log, logger simulacra.access); warning:"
        f" answers of 400 and above, with their cause (default {DEFAULT_LOG_LEVEL};"
        " env SIMULACRA_LOG_LEVEL)",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("SIMULACRA_LOG_FORMAT", "text").lower(),
        help="text lines, or one JSON object per line (default text; env SIMULACRA_LOG_FORMAT)",
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
            max_import_bytes=args.max_import_bytes,
            regions=args.regions,
            realtime=args.realtime,
            clock_start=args.clock_start,
            shared_cloud=args.shared_cloud,
            tracking=args.tracking,
            tracker_cap=args.tracker_cap,
            tune_gc=True,
            load="\n".join(args.load),
            bind="\n".join(args.bind),
            record="\n".join(args.record),
            log_level=args.log_level,
            log_format=args.log_format,
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
        parse_start(settings.clock_start)
        if settings.realtime and settings.clock_start.strip().lower() != "epoch":
            raise ValueError("--clock-start moves the virtual clock: drop it or --realtime")
        if settings.log_level not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if settings.log_format not in LOG_FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
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
        if settings.server == "uvicorn":
            _require("uvicorn", "pip install 'simulacra[uvicorn]'")
        elif settings.server == "granian":
            _require("granian", "pip install granian")
        if shared_store:
            _check_postgres(settings.store_url)
        if settings.server != "simulacra":  # the built-in server binds, then announces
            _check_port(settings.host, settings.port)
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
    if settings.server == "simulacra":
        return _serve_builtin(settings)
    _announce(settings)
    # Their own access logs, in their own format, at the same level (the lines of
    # simulacra.access are the built-in server's).
    access = settings.log_level in ("debug", "info")
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=access,
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
        log_level=settings.log_level,  # type: ignore[arg-type]
        log_access=access,
    ).serve()
    return 0


def _announce(settings: Settings) -> None:
    print(
        f"Simulacra {__version__} on http://{settings.host}:{settings.port}/"
        f" (store {_redacted(settings.store_url)}, server {settings.server},"
        f" workers {settings.workers}{', shared cloud' if settings.shared_cloud else ''})",
        flush=True,
    )


def _require(module: str, install: str) -> None:
    """ValueError, saying how to install it, when ``module`` cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"--server {module} needs {module}, which is not installed: {install}"
        ) from None


def _check_port(host: str, port: int) -> None:
    """ValueError when host:port cannot be bound (in use, privileged): said before the
    banner, as the built-in server does. The port is bound again by the server itself."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _check_postgres(url: str) -> None:
    """ValueError, in one line, when the PostgreSQL store does not answer within
    STORE_CONNECT_TIMEOUT_S: the pool would retry for 15 s, then fail with a traceback."""
    import psycopg

    from simulacra.config import split_url

    conninfo, _ = split_url(url)
    try:
        with psycopg.connect(conninfo, connect_timeout=STORE_CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot reach the store {_redacted(url)}: {reason}") from None


def _serve_builtin(settings: Settings) -> int:
    """The built-in server (simulacra/server.py): the app runs in this process, or in
    ``settings.workers`` processes forked from it."""
    from simulacra import server
    from simulacra.app import create_app
    from simulacra.ops import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return server.serve(
        lambda: create_app(settings),
        settings.host,
        settings.port,
        settings.workers,
        announce=lambda: _announce(settings),
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
