"""Identity v2.0's HTTP edge: parse the request, call the model, render Identity's JSON.

Errors use Identity's envelope, ``{"badRequest" | "unauthorized" | "itemNotFound" |
"conflict": {"code", "message"}}``; a missing or ill-typed field is a 400, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from simulacra.cloud.behaviors import Outcome
from simulacra.cloud.http import (
    Handler,
    cloud,
    read_json_object,
    renders_errors,
    request_base_url,
    status_of,
)
from simulacra.cloud.identity import documents
from simulacra.cloud.identity.model import EndpointTemplate, Identity, Unauthorized
from simulacra.dataplane.request import Answer, json_answer
from simulacra.errors import DomainError, Invalid
from simulacra.web import json_response

V2 = "/identity/v2.0"
ENVELOPES = {
    400: "badRequest",
    401: "unauthorized",
    404: "itemNotFound",
    409: "conflict",
    413: "overLimit",
}


def identity_error(exc: DomainError) -> Answer:
    """Identity's ``{envelope: {"code", "message"}}``; a refused login is a 401 in the
    envelope it names (``unauthorized``, or Mimic's ``itemNotFound`` for a preset)."""
    if isinstance(exc, Unauthorized):
        status, key = 401, exc.envelope
    else:
        status = status_of(exc)
        key = ENVELOPES.get(status, "badRequest")
    return json_answer(status, orjson.dumps({key: {"code": status, "message": exc.message}}))


identity_errors = renders_errors(identity_error)


def require_token(handler: Handler) -> Handler:
    """The admin routes need an X-Auth-Token header; like Mimic, any value will do."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        if not request.headers.get("x-auth-token"):
            raise Unauthorized("Authentication required")
        return await handler(request)

    return wrapped


def model(request: Request) -> Identity:
    return cloud(request).services["identity"]


def catalog(request: Request, tenant: str) -> list[dict[str, Any]]:
    """The tenant's catalog; its URLs point back where the client came from."""
    return cloud(request).catalog.entries(request_base_url(request), tenant)


# Parsing --------------------------------------------------------------------------


def _object(document: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise Invalid(f"'{where}' must be a JSON object")
    return value


def _string(document: dict[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = document.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise Invalid(f"'{where}' is required and must be a {'' if empty else 'non-empty '}string")
    return value


def _optional_string(document: dict[str, Any], key: str) -> str | None:
    if document.get(key) is None:
        return None
    return _string(document, key, key)


def _id(value: object, where: str) -> str:
    """Template ids: strings, or integers as Rackspace's are."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise Invalid(f"'{where}' is required and must be a string or an integer")
    return str(value)


@dataclass(frozen=True)
class Credentials:
    method: str  # PASSWORD, APIKEY or TOKEN
    name: str  # the username, or the token id
    tenant: str | None


# (key under "auth", the field naming who, the secret field or None, method)
CREDENTIAL_KINDS = (
    ("passwordCredentials", "username", "password", "PASSWORD"),
    ("RAX-KSKEY:apiKeyCredentials", "username", "apiKey", "APIKEY"),
    ("token", "id", None, "TOKEN"),
)


def parse_auth(body: dict[str, Any]) -> Credentials:
    """``{"auth": {<credentials>, "tenantName" | "tenantId"?}}``; the first kind present wins."""
    auth = body.get("auth")
    if not isinstance(auth, dict):
        raise Invalid('body must be {"auth": {<credentials>, "tenantName" or "tenantId"}}')
    tenant = None
    for key in ("tenantName", "tenantId"):  # Mimic: tenantName wins; both name the tenant id
        if auth.get(key) is not None:
            tenant = _string(auth, key, f"auth.{key}")
            break
    for key, who, secret, method in CREDENTIAL_KINDS:
        if key not in auth:
            continue
        credentials = _object(auth, key, f"auth.{key}")
        name = _string(credentials, who, f"auth.{key}.{who}")
        if secret is not None:  # required, though never checked
            _string(credentials, secret, f"auth.{key}.{secret}", empty=True)
        if method == "TOKEN" and tenant is None:
            raise Invalid("token authentication needs 'tenantId' or 'tenantName'")
        return Credentials(method, name, tenant)
    kinds = ", ".join(kind[0] for kind in CREDENTIAL_KINDS)
    raise Invalid(f"'auth' needs one of: {kinds}")


def parse_impersonation(body: dict[str, Any]) -> tuple[str, int]:
    """``{"RAX-AUTH:impersonation": {"user": {"username"}, "expire-in-seconds"?}}``."""
    document = _object(body, "RAX-AUTH:impersonation", "RAX-AUTH:impersonation")
    user = _object(document, "user", "RAX-AUTH:impersonation.user")
    username = _string(user, "username", "RAX-AUTH:impersonation.user.username")
    seconds = document.get("expire-in-seconds", 86400)
    # ASCII digits, few enough for int(): "²" and 5,000 digits were 500s
    if isinstance(seconds, str) and seconds.isascii() and seconds.isdigit() and len(seconds) < 20:
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise Invalid("'expire-in-seconds' must be a positive whole number of seconds")
    return username, seconds


def failure(outcome: Outcome) -> Response:
    """A ``fail`` behavior: ``{type: {message, code}}``, or the bare message for type "string"."""
    code, message, kind = (outcome.parameters[k] for k in ("code", "message", "type"))
    if kind == "string":
        return PlainTextResponse(message, code)
    return json_response({kind: {"message": message, "code": code}}, code)


# Discovery ------------------------------------------------------------------------


async def versions(request: Request) -> Response:
    """List Identity's versions, v3 and v2.0 (300, as Keystone), for discovery."""
    base = request_base_url(request)
    document = {"versions": {"values": [documents.version_v3(base), documents.version_v2(base)]}}
    return json_response(document, 300)


async def version(request: Request) -> Response:
    """The v2.0 version document that keystoneauth's discovery reads."""
    return json_response({"version": documents.version_v2(request_base_url(request))})


# Tokens ---------------------------------------------------------------------------


@identity_errors
async def create_token(request: Request) -> Response:
    """Authenticate (password, API key or token): token, user and service catalog."""
    credentials = parse_auth(await read_json_object(request))
    identity = model(request)
    username = None if credentials.method == "TOKEN" else credentials.name
    outcome = identity.auth_outcome(username, credentials.tenant)
    if outcome is not None:
        return failure(outcome)
    if credentials.method == "TOKEN":
        token = identity.authenticate_token(credentials.name, credentials.tenant or "")
    else:
        token = identity.authenticate(credentials.name, credentials.tenant, credentials.method)
    tenant = identity.user_of(token).tenant_id
    return json_response(documents.access(identity, token, catalog(request, tenant)))


@identity_errors
async def validate_token(request: Request) -> Response:
    """Validate a token (optionally ``?belongsTo=<tenant>``); unknown tokens are adopted."""
    identity = model(request)
    token = identity.validate(
        request.path_params["token_id"], request.query_params.get("belongsTo") or None
    )
    return json_response(documents.validation(identity, token))


@identity_errors
async def token_endpoints(request: Request) -> Response:
    """The catalog of a token's tenant as a flat endpoint list."""
    identity = model(request)
    token = identity.resolve(request.path_params["token_id"])
    tenant = identity.user_of(token).tenant_id
    return json_response(documents.endpoints(catalog(request, tenant)))


@identity_errors
async def impersonate(request: Request) -> Response:
    """Issue a RAX-AUTH impersonation token for a user (the X-Auth-Token impersonates)."""
    username, seconds = parse_impersonation(await read_json_object(request))
    identity = model(request)
    outcome = identity.auth_outcome(username, None)
    if outcome is not None:
        return failure(outcome)
    token = identity.impersonate(username, seconds, request.headers.get("x-auth-token"))
    return json_response(documents.impersonation(token))


# Users and tenants ----------------------------------------------------------------


@identity_errors
async def list_tenants(request: Request) -> Response:
    """The X-Auth-Token's tenant (one per user); 401 for an unknown token."""
    identity = model(request)
    token = identity.existing_token(request.headers.get("x-auth-token"))
    tenant = identity.user_of(token).tenant_id
    return json_response({"tenants": [{"id": tenant, "name": tenant, "enabled": True}]})


@identity_errors
async def get_user(request: Request) -> Response:
    """A user's details by ``?name=``; an unknown name is created."""
    name = request.query_params.get("name")
    if not name:
        raise Invalid("query parameter 'name' is required")
    identity = model(request)
    return json_response(documents.user_details(identity, identity.user(name)))


@identity_errors
async def list_credentials(request: Request) -> Response:
    """A user's credentials: its API key."""
    user = model(request).user_by_id(request.path_params["user_id"])
    return json_response({"credentials": [documents.api_key(user)], "credentials_links": []})


@identity_errors
async def get_api_key(request: Request) -> Response:
    """A user's API key (stable for the user)."""
    user = model(request).user_by_id(request.path_params["user_id"])
    return json_response(documents.api_key(user))


@identity_errors
async def mosso(request: Request) -> Response:
    """v1.1: the username of a tenant, answered with a 301 as Mimic does."""
    user = model(request).primary_user(request.path_params["tenant_id"])
    return json_response({"user": {"id": user.username}}, 301)


# OS-KSADM services ----------------------------------------------------------------


@identity_errors
@require_token
async def list_services(request: Request) -> Response:
    """OS-KSADM: list the external services."""
    services = [s.describe() for s in model(request).services()]
    return json_response({"OS-KSADM:services": services})


@identity_errors
@require_token
async def create_service(request: Request) -> Response:
    """OS-KSADM: add an external service (``name``, ``type``; ``id``, ``description``)."""
    body = await read_json_object(request)
    if "OS-KSADM:service" in body:  # OpenStack wraps the service; Mimic did not
        body = _object(body, "OS-KSADM:service", "OS-KSADM:service")
    service = model(request).add_service(
        _string(body, "name", "name"),
        _string(body, "type", "type"),
        _optional_string(body, "id"),
        _optional_string(body, "description"),
    )
    return json_response({"OS-KSADM:service": service.describe()}, 201)


@identity_errors
@require_token
async def delete_service(request: Request) -> Response:
    """OS-KSADM: remove an external service that has no endpoint template left."""
    model(request).remove_service(request.path_params["service_id"])
    return Response(status_code=204)


# OS-KSCATALOG endpoint templates --------------------------------------------------


def _service_header(request: Request) -> str | None:
    return request.headers.get("serviceid") or None


def _template_body(body: dict[str, Any]) -> EndpointTemplate:
    if "OS-KSCATALOG:endpointTemplate" in body:  # OpenStack wraps the template; Mimic did not
        body = _object(body, "OS-KSCATALOG:endpointTemplate", "OS-KSCATALOG:endpointTemplate")
    return EndpointTemplate.from_json(body)


@identity_errors
@require_token
async def list_templates(request: Request) -> Response:
    """OS-KSCATALOG: list endpoint templates (one service's with a ``serviceid`` header)."""
    templates = model(request).templates(_service_header(request))
    return json_response(
        {
            "OS-KSCATALOG": [t.describe() for t in templates],
            "OS-KSCATALOG:endpointsTemplates_links": [],
        }
    )


@identity_errors
@require_token
async def create_template(request: Request) -> Response:
    """OS-KSCATALOG: add an endpoint template to its service (``serviceid`` header or name)."""
    template = _template_body(await read_json_object(request))
    template = model(request).add_template(template, _service_header(request))
    return json_response({"OS-KSCATALOG:endpointTemplate": template.describe()}, 201)


@identity_errors
@require_token
async def update_template(request: Request) -> Response:
    """OS-KSCATALOG: replace an endpoint template (201, as Mimic)."""
    template = _template_body(await read_json_object(request))
    template = model(request).update_template(
        request.path_params["template_id"], template, _service_header(request)
    )
    return json_response({"OS-KSCATALOG:endpointTemplate": template.describe()}, 201)


@identity_errors
@require_token
async def delete_template(request: Request) -> Response:
    """OS-KSCATALOG: remove an endpoint template."""
    model(request).remove_template(request.path_params["template_id"], _service_header(request))
    return Response(status_code=204)


@identity_errors
@require_token
async def list_tenant_endpoints(request: Request) -> Response:
    """OS-KSCATALOG: the endpoints a tenant gets from external services."""
    tenant = request.path_params["tenant_id"]
    templates = model(request).tenant_templates(tenant, _service_header(request))
    return json_response(
        {"endpoints": [t.describe_for(tenant) for t in templates], "endpoints_links": []}
    )


@identity_errors
@require_token
async def enable_tenant_endpoint(request: Request) -> Response:
    """OS-KSCATALOG: enable an endpoint template for one tenant."""
    body = await read_json_object(request)
    reference = body.get("OS-KSCATALOG:endpointTemplate")
    if not isinstance(reference, dict) or "id" not in reference:
        raise Invalid("Invalid Content. OS-KSCATALOG:endpointTemplate:id is required.")
    template_id = _id(reference["id"], "OS-KSCATALOG:endpointTemplate.id")
    tenant = request.path_params["tenant_id"]
    template = model(request).enable_template(tenant, template_id)
    return json_response({"endpoint": template.describe_for(tenant)}, 201)


@identity_errors
@require_token
async def disable_tenant_endpoint(request: Request) -> Response:
    """OS-KSCATALOG: disable an endpoint template enabled for one tenant."""
    model(request).disable_template(
        request.path_params["tenant_id"], request.path_params["template_id"]
    )
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/identity", versions, methods=["GET"]),
    Route("/identity/", versions, methods=["GET"]),
    Route(V2, version, methods=["GET"]),
    Route(V2 + "/", version, methods=["GET"]),
    Route(V2 + "/tokens", create_token, methods=["POST"]),
    Route(V2 + "/tokens/{token_id}", validate_token, methods=["GET"]),
    Route(V2 + "/tokens/{token_id}/endpoints", token_endpoints, methods=["GET"]),
    Route(V2 + "/RAX-AUTH/impersonation-tokens", impersonate, methods=["POST"]),
    Route(V2 + "/tenants", list_tenants, methods=["GET"]),
    Route(V2 + "/users", get_user, methods=["GET"]),
    Route(V2 + "/users/{user_id}/OS-KSADM/credentials", list_credentials, methods=["GET"]),
    Route(
        V2 + "/users/{user_id}/OS-KSADM/credentials/RAX-KSKEY:apiKeyCredentials",
        get_api_key,
        methods=["GET"],
    ),
    Route("/identity/v1.1/mosso/{tenant_id}", mosso, methods=["GET"]),
    Route(V2 + "/services", list_services, methods=["GET"]),
    Route(V2 + "/services", create_service, methods=["POST"]),
    Route(V2 + "/services/{service_id}", delete_service, methods=["DELETE"]),
    Route(V2 + "/OS-KSCATALOG/endpointTemplates", list_templates, methods=["GET"]),
    Route(V2 + "/OS-KSCATALOG/endpointTemplates", create_template, methods=["POST"]),
    Route(V2 + "/OS-KSCATALOG/endpointTemplates/{template_id}", update_template, methods=["PUT"]),
    Route(
        V2 + "/OS-KSCATALOG/endpointTemplates/{template_id}", delete_template, methods=["DELETE"]
    ),
    Route(
        V2 + "/tenants/{tenant_id}/OS-KSCATALOG/endpoints", list_tenant_endpoints, methods=["GET"]
    ),
    Route(
        V2 + "/tenants/{tenant_id}/OS-KSCATALOG/endpoints",
        enable_tenant_endpoint,
        methods=["POST"],
    ),
    Route(
        V2 + "/tenants/{tenant_id}/OS-KSCATALOG/endpoints/{template_id}",
        disable_tenant_endpoint,
        methods=["DELETE"],
    ),
]
