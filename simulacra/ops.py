"""Operations: ``GET /health`` for probes, the log setup of ``simulacra serve``, and what the
access log says of a request (simulacra/server.py writes the lines)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulacra import __version__
from simulacra.config import MEMORY_URLS, is_postgres_url
from simulacra.dataplane.request import Request as PlainRequest
from simulacra.models import Health
from simulacra.openapi import Reply
from simulacra.web import operation

HEALTH_PATH = "/health"
# A probe must hear back well within its own timeout (Kubernetes: 1 s by default); a store
# slower than this is as good as unreachable for the requests that need it.
PING_TIMEOUT_S = 1.0
STARTED = time.monotonic()  # the process's start, near enough: imported as the app is built

ACCESS_LOGGER = "simulacra.access"
# Extra fields of an access-log record, written as keys of its JSON line.
ACCESS_FIELDS = ("client", "method", "path", "status", "duration_ms", "session", "tenant", "cause")


def store_kind(url: str) -> str:
    if is_postgres_url(url):
        return "postgresql"
    return "memory" if url in MEMORY_URLS else "sqlite"


@operation(
    replies={200: Reply(Health), 503: Reply(Health, "The store does not answer")},
    error_statuses=(),
)
async def health(request: Request) -> Response:
    """Health for probes: status, version, uptime, and whether the store answers (503 if not)."""
    state = request.app.state
    store: dict[str, Any] = {"reachable": False, "kind": store_kind(state.settings.store_url)}
    virtual = getattr(state, "virtual", None)
    try:
        if virtual is None:
            raise RuntimeError("the store is not open")
        await asyncio.wait_for(virtual.store.ping(), PING_TIMEOUT_S)
    except TimeoutError:
        store["error"] = f"no answer within {PING_TIMEOUT_S:g} s"
    except Exception as exc:  # whatever the driver raises: the store does not answer
        store["error"] = " ".join(str(exc).split())[:300] or type(exc).__name__
    else:
        store["reachable"] = True
    body = {
        "status": "ok" if store["reachable"] else "degraded",
        "version": __version__,
        "uptime_s": round(time.monotonic() - STARTED, 3),
        "store": store,
    }
    return Response(
        orjson.dumps(body),
        200 if store["reachable"] else 503,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


ROUTES = [Route(HEALTH_PATH, health, methods=["GET"])]


# The access log -------------------------------------------------------------------------


def request_labels(request: PlainRequest) -> tuple[str | None, str | None]:
    """(session, tenant) of a request, where the request itself says (no lookup): Mirage's
    ``session`` header or argument, the ``/virtual/{scenario}/{session}/`` prefix, the
    tenant segment of the cloud's ``/mimicking/{api}/{region}/{version}/{tenant}/`` paths."""
    session = request.header(b"session") or request.header(b"stubo-request-session")
    if session is not None:
        return session.decode("latin-1"), None
    path = request.path
    if path.startswith("/virtual/"):
        parts = path.split("/", 4)
        return (parts[3] if len(parts) > 3 else None), None
    if path.startswith("/stubo/api/") and b"session=" in request.query:
        query = request.query.decode("latin-1")
        return next((v for k, v in parse_qsl(query) if k == "session"), None), None
    if path.startswith("/mimicking/"):
        parts = path.split("/", 6)
        return None, (parts[5] or None) if len(parts) > 5 else None
    return None, None


def error_cause(body: bytes) -> str:
    """Why an error answer says it failed, in one line: the ``message`` (or ``msg``,
    ``detail``) of its JSON, found in any family's envelope, else the start of its text."""
    message = None
    if body[:1] in (b"{", b"["):
        with contextlib.suppress(orjson.JSONDecodeError):
            message = _message(orjson.loads(body))
    elif body[:1] == b"<":  # a console page: its alert says why, not its doctype
        found = _ALERT.search(bytes(body[:65536]))
        message = html.unescape(found[1].decode("utf-8", "replace")) if found else "HTML page"
    if message is None:
        message = bytes(body[:300]).decode("utf-8", "replace")  # an ASGI body may be a view
    return " ".join(message.split())[:300]


_ALERT = re.compile(rb'role="alert">([^<]*)<')


def _message(doc: object, depth: int = 0) -> str | None:
    if not isinstance(doc, dict):
        return None
    for key in ("message", "msg", "detail", "title", "error"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    if depth < 2:  # {"error": {"message"}}, {"itemNotFound": {"message"}}
        for value in doc.values():
            found = _message(value, depth + 1)
            if found is not None:
                return found
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, fmt: str) -> None:
    """Simulacra's loggers at ``level`` on stderr, as text or JSON lines. Other libraries stay
    at warning: at info httpx alone would add a line per proxied request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("simulacra").setLevel(level.upper())


__all__ = ["ROUTES", "configure_logging", "error_cause", "health", "request_labels"]
