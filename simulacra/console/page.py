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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from simulacra import __version__
from simulacra.errors import DomainError, Invalid, shown
from simulacra.virtual.api_v2 import STATUS_OF
from simulacra.web import read_body

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
T = TypeVar("T")


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
    admin API gives it (a form's handler may catch it first and ``back`` with ``error=``).
    A form posted from another site is refused (``cross_site``)."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        if request.method == "POST" and cross_site(request):
            message = "a console form must be posted from the console itself"
            return render(request, "error.html", title="Refused", status=403, message=message)
        try:
            return await handler(request)
        except DomainError as exc:
            status = STATUS_OF.get(type(exc), 400)
            return render(
                request, "error.html", title="Refused", status=status, message=exc.message
            )

    return page


def cross_site(request: Request) -> bool:
    """Whether a browser sent this from another site's page. The console has no login, so
    a page elsewhere could otherwise post its forms (delete a scenario) through the
    browser of anyone who can reach the server; the admin API's JSON and DELETE calls cannot
    be sent cross-site without CORS, which the server never grants. Browsers say where a
    request comes from in ``Sec-Fetch-Site``, older ones in ``Origin``; a client that sends
    neither (curl, a script) is not a browser on another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("host", "")
    return origin.partition("://")[2] != host


# Forms and pages of lists -------------------------------------------------------------

FORM_LIMIT = 16 * 1024  # bytes of a console form of fields (an upload is read on its own)
PAGE_SIZE = 50  # rows of a paged list


async def read_form(request: Request) -> dict[str, str]:
    """A console form's fields (``application/x-www-form-urlencoded``): each field's first
    value. Read bounded; a body that is not a form is a clear refusal."""
    body = await read_body(request, FORM_LIMIT)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise Invalid("the form could not be read; send it from the console's page") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


@dataclass(frozen=True)
class Paged(Generic[T]):
    """One page of a list: its items, which page (from 1) of how many, of how many items."""

    items: Sequence[T]
    number: int
    pages: int
    total: int

    @property
    def first(self) -> int:
        """The 0-based position of the page's first item in the list."""
        return (self.number - 1) * PAGE_SIZE


def parse_page(raw: str | None) -> int:
    """A ``page`` query value: a positive integer (absent: 1)."""
    if raw is None or raw == "":
        return 1
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) < 1:
        raise Invalid(f"page must be a positive integer, got {shown(raw)}")
    return int(raw)


def page_of(total: int, number: int) -> Paged[Any]:
    """Where page ``number`` of a list of ``total`` is (its items still to be read: a store's
    page); a number past the end is the last page."""
    pages = max(1, -(-total // PAGE_SIZE))
    return Paged((), min(number, pages), pages, total)


def paginate(items: Sequence[T], number: int) -> Paged[T]:
    """Page ``number`` of ``items`` held in memory."""
    where = page_of(len(items), number)
    return replace(where, items=items[where.first : where.first + PAGE_SIZE])


def pager(request: Request, paged: Paged[Any], key: str, label: str) -> dict[str, Any]:
    """What ``pager.html`` shows: where the page is, and links to the pages around it that
    keep the rest of this page's query (``key`` is the list's page parameter)."""

    def href(number: int) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in ("notice", "error")}
        params[key] = str(number)
        return f"{request.url.path}?{urlencode(params)}"

    return {
        "label": label,
        "number": paged.number,
        "pages": paged.pages,
        "total": paged.total,
        "previous": href(paged.number - 1) if paged.number > 1 else "",
        "next": href(paged.number + 1) if paged.number < paged.pages else "",
    }


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
