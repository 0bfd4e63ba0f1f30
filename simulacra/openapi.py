"""The admin API's OpenAPI 3.1 document, generated from the routes and the types their
handlers convert their input to (``simulacra/models.py``), and a page to browse it.

A handler declares its operation with ``web.operation``: the types of its body, query
string and headers (converted before the handler runs, so the document cannot say other
than what is checked) and its replies. Routes without a declaration (the cloud mocks, whose
shapes are their vendors') are left out. Built once per app, on the first request for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from simulacra import __version__
from simulacra.coverage import FAMILIES
from simulacra.models import ErrorEnvelope

OPENAPI_PATH = "/api/v2/openapi.json"
DOCS_PATH = "/api/v2/docs"
REF = "#/components/schemas/{name}"
_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")


@dataclass(frozen=True)
class Reply:
    """One answer of an operation: ``model`` its JSON body's type (None: no body, or one
    described by ``schema``), ``enveloped`` in Mirage's ``{"version", "data"}``."""

    model: Any = None
    description: str = "OK"
    enveloped: bool = False
    media: str = "application/json"
    schema: dict[str, Any] | None = None
    # OpenAPI links: operationId -> {parameter: runtime expression}, for stateful tests.
    links: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """What a handler takes and answers; ``web.operation`` converts its input to these."""

    summary: str
    operation_id: str
    replies: dict[int, Reply]
    body: Any = None  # the type the JSON body is converted to
    body_schema: dict[str, Any] | None = None  # a body of another kind: (media, schema)
    body_media: str = "application/json"
    body_required: bool = True
    query: Any = None
    headers: Any = None
    error: Any = ErrorEnvelope  # the error body of this API family
    error_statuses: tuple[str, ...] = ("4XX", "503")


def declared(route: BaseRoute) -> Operation | None:
    endpoint = getattr(route, "endpoint", None)
    operation = getattr(endpoint, "operation", None)
    return operation if isinstance(operation, Operation) else None


def build(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route."""
    found: list[tuple[Route, Operation]] = [
        (route, op)
        for route in routes
        if isinstance(route, Route) and (op := declared(route)) is not None
    ]
    types: list[Any] = []
    for _, op in found:
        types += [t for t in (op.body, op.query, op.headers, op.error) if t is not None]
        types += [reply.model for reply in op.replies.values() if reply.model is not None]
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=REF)
    schema_of = dict(zip(unique, refs, strict=True))

    def parameters(model: Any, where: str) -> list[dict[str, Any]]:
        if model is None:
            return []
        name = schema_of[model]["$ref"].rpartition("/")[2]
        component = components[name]
        required = set(component.get("required", ()))
        return [
            {
                "name": key,
                "in": where,
                "required": key in required,
                "schema": {k: v for k, v in schema.items() if k != "description"},
                **({"description": schema["description"]} if "description" in schema else {}),
            }
            for key, schema in component.get("properties", {}).items()
        ]

    def reply_body(reply: Reply) -> dict[str, Any] | None:
        if reply.model is None and reply.schema is None:
            return None
        schema = reply.schema if reply.schema is not None else schema_of[reply.model]
        if reply.enveloped:
            schema = {
                "type": "object",
                "properties": {"version": {"type": "string"}, "data": schema},
                "required": ["version", "data"],
            }
        return {reply.media: {"schema": schema}}

    _describe_matchers(components)
    paths: dict[str, dict[str, Any]] = {}
    for route, op in found:
        path = _PARAMETER.sub(r"{\1}", route.path)
        path_parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAMETER.findall(route.path)
        ]
        methods = sorted(m for m in (route.methods or ()) if m != "HEAD")
        for method in methods:
            responses: dict[str, Any] = {}
            for status, reply in op.replies.items():
                entry: dict[str, Any] = {"description": reply.description}
                content = reply_body(reply)
                if content is not None:
                    entry["content"] = content
                if reply.links:
                    entry["links"] = {
                        target: {"operationId": target, "parameters": values}
                        for target, values in reply.links.items()
                    }
                responses[str(status)] = entry
            for statuses in op.error_statuses:
                responses[statuses] = {
                    "description": "Refused, with the reason",
                    "content": {"application/json": {"schema": schema_of[op.error]}},
                }
            module = getattr(route.endpoint, "__module__", "")
            entry = {
                "operationId": op.operation_id
                if len(methods) == 1
                else f"{op.operation_id}_{method.lower()}",
                "summary": op.summary,
                "tags": [FAMILIES.get(module, module)],
                "parameters": path_parameters
                + parameters(op.query, "query")
                + parameters(op.headers, "header"),
                "responses": responses,
            }
            if op.body is not None or op.body_schema is not None:
                schema = op.body_schema if op.body_schema is not None else schema_of[op.body]
                entry["requestBody"] = {
                    "required": op.body_required,
                    "content": {op.body_media: {"schema": schema}},
                }
            paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Simulacra admin API",
            "version": __version__,
            "description": "Mirage's REST API v2 and v1, Mimic's control plane, resets and"
            " health. Unknown keys of a JSON body are refused (400) everywhere but in a HAR"
            " file's ``_`` keys.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


def _describe_matchers(components: dict[str, Any]) -> None:
    """The stub's ``request`` object is open (its matchers compile in virtual/matching.py):
    its description lists them, read from there."""
    from simulacra.virtual.matching import BODY_MATCHERS, REQUEST_MATCHERS

    stub = components.get("StubDocument")
    if stub is None:
        return
    stub["properties"]["request"]["description"] = (
        f"Request matchers: {', '.join(REQUEST_MATCHERS)}, and bodyPatterns"
        f" ({', '.join(BODY_MATCHERS)}, namespaces); a key prefixed with '!' negates its"
        " matcher. Unknown matchers are refused."
    )


async def openapi_json(request: Request) -> Response:
    """The admin API's OpenAPI 3.1 document."""
    state = request.app.state
    document = getattr(state, "openapi", None)
    if document is None:
        document = state.openapi = orjson.dumps(build(request.app.routes))
    return Response(document, media_type="application/json")


# Read once, as the console's static files are: the page is the same for every request.
_DOCS_PAGE = (
    resources.files("simulacra")
    .joinpath("static/api.html")
    .read_text("utf-8")
    .replace("{{OPENAPI_PATH}}", OPENAPI_PATH)
)


async def docs_page(request: Request) -> Response:
    """A page to browse the OpenAPI document (no CDN: it is all in the page)."""
    return HTMLResponse(_DOCS_PAGE)


ROUTES = [
    Route(OPENAPI_PATH, openapi_json, methods=["GET"]),
    Route(DOCS_PATH, docs_page, methods=["GET"]),
]
