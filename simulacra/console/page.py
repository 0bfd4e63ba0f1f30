"""What every console page shares: the templates, the layout, errors, the static files.

The console is an edge like the admin API: its pages read and write through the same domain
objects (``VirtualService``, ``Tracker``, ``CloudCore``) the API's handlers call, and hold no
state of their own. Templates are ours only (never a user's), autoescaped, and every list
they show is bounded (paged), so a render cannot hold the event loop. Pages carry a
Content-Security-Policy that allows only this server's own script and stylesheet: a stub's
body shown on a page can never run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from simulacra import __version__
from simulacra.errors import DomainError
from simulacra.virtual.api_v2 import STATUS_OF

PREFIX = "/console"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
# The sections of the navigation bar: (path, label).
SECTIONS = (
    ("/console/scenarios", "Scenarios"),
    ("/console/tracker", "Tracker"),
    ("/console/analytics", "Analytics"),
    ("/console/cloud", "Cloud"),
)

templates = Environment(
    loader=PackageLoader("simulacra.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

Handler = Callable[[Request], Awaitable[Response]]


def render(
    request: Request, template: str, *, title: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """``template`` in the layout (``base.html``): the navigation, the page's ``title``, and
    the ``notice`` or ``error`` a form's redirect carried in its query string."""
    html = templates.get_template(template).render(
        request=request,
        title=title,
        sections=SECTIONS,
        current=request.url.path,
        version=__version__,
        notice=request.query_params.get("notice", "")[:500],
        error=request.query_params.get("error", "")[:500],
        **context,
    )
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


def back(path: str, *, notice: str = "", error: str = "") -> RedirectResponse:
    """After a form: to ``path`` (303, so a reload does not post again), with what happened."""
    query = urlencode({k: v for k, v in (("notice", notice), ("error", error)) if v})
    return RedirectResponse(f"{path}?{query}" if query else path, 303)


def console_page(handler: Handler) -> Handler:
    """A console route: a domain error is a page saying what went wrong, with the status the
    admin API gives it (a form's handler may catch it first and ``back`` with ``error=``)."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        try:
            return await handler(request)
        except DomainError as exc:
            status = STATUS_OF.get(type(exc), 400)
            return render(request, "error.html", title="Refused", status=status, message=exc.message)

    return page


_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_STATIC = {
    name: resources.files("simulacra.console").joinpath("static", name).read_bytes()
    for name in ("console.css", "console.js")
}


async def static(request: Request) -> Response:
    """The console's one stylesheet and one script (no CDN, no build step)."""
    name = request.path_params["name"]
    body = _STATIC.get(name)
    if body is None:
        return Response("not found", 404, media_type="text/plain")
    suffix = name[name.rfind(".") :]
    return Response(
        body, media_type=_STATIC_TYPES[suffix], headers={"cache-control": "max-age=300"}
    )


async def home(request: Request) -> Response:
    """The console: its first page is the scenarios."""
    return RedirectResponse(SECTIONS[0][0], 303)


def wants_html(request: Request) -> bool:
    """A browser asking for ``/`` (``Accept: text/html``); curl's ``*/*`` is not one."""
    return "text/html" in request.headers.get("accept", "")


ROUTES = [
    Route(PREFIX, home, methods=["GET"]),
    Route(PREFIX + "/", home, methods=["GET"]),
    Route(PREFIX + "/static/{name}", static, methods=["GET"]),
]
