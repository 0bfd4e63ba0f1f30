"""Identity v3 (Keystone) beside v2.0, on the same users, tenants and tokens.

A tenant is a v3 project (its name is its id, as in v2.0), every user and project is in
the one ``Default`` domain, and a token from either version is valid on both. As in
v2.0, secrets are never checked and unknown users are created on first use.

Errors use Keystone's envelope, ``{"error": {"code", "title", "message"}}``; a missing or
ill-typed field is a 400, never a 500.
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
from simulacra.cloud.identity.model import Identity, Token, Unauthorized
from simulacra.cloud.identity.routes import model
from simulacra.dataplane.request import Answer, json_answer
from simulacra.errors import DomainError, Invalid, NotFound
from simulacra.web import json_response, starlette_response

V3 = "/identity/v3"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
}
# Keystone's answer to any failed authentication: it never says which part was wrong.
AUTH_REQUIRED = "The request you have made requires authentication."


def keystone_answer(status: int, message: str, title: str | None = None) -> Answer:
    """Keystone's ``{"error": {"code", "title", "message"}}``."""
    title = title or TITLES.get(status, "Error")
    error = {"code": status, "title": title, "message": message}
    return json_answer(status, orjson.dumps({"error": error}))


def keystone_error(exc: DomainError) -> Answer:
    """``exc`` in Keystone's envelope; a refused login is a 401."""
    status = 401 if isinstance(exc, Unauthorized) else status_of(exc)
    return keystone_answer(status, exc.message)


keystone_errors = renders_errors(keystone_error)


def require_token(handler: Handler) -> Handler:
    """Keystone's API needs an X-Auth-Token header; like Mimic's, any value will do."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        if not request.headers.get("x-auth-token"):
            raise Unauthorized(AUTH_REQUIRED)
        return await handler(request)

    return wrapped


def _caller(request: Request) -> Token:
    """The X-Auth-Token's token: it must be one this server issued or saw (401 otherwise)."""
    return model(request).existing_token(request.headers.get("x-auth-token"))


def catalog_v3(request: Request, token: Token) -> list[dict[str, Any]]:
    """Identity's own entry, then the tenant's services; a domain-scoped token gets only
    identity (Keystone drops the endpoints whose URL needs a project, and all of ours do)."""
    core = cloud(request)
    base = request_base_url(request)
    entries = [documents.identity_entry_v3(base, core.catalog.regions)]
    if not token.domain_scoped:
        entries += core.catalog.v3_entries(base, model(request).user_of(token).tenant_id)
    return entries


def failure(outcome: Outcome) -> Response:
    """A ``fail`` auth behavior in Keystone's envelope, or the bare message for "string"."""
    code, message, kind = (outcome.parameters[k] for k in ("code", "message", "type"))
    if kind == "string":
        return PlainTextResponse(message, code)
    return starlette_response(keystone_answer(code, message, TITLES.get(code, kind)))


# Parsing ----------------------------------------------------------------------------


def _object(document: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise Invalid(f"Expecting to find '{where}' (a JSON object) in the request body")
    return value


def _string(document: dict[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = document.get(key)
    if not isinstance(value, str) or (not empty and not value):
        kind = "a string" if empty else "a non-empty string"
        raise Invalid(f"Expecting to find '{where}' ({kind}) in the request body")
    return value


def _domain(document: dict[str, Any], where: str, identity: Identity) -> None:
    """``{"id"}`` or ``{"name"}`` of a domain: only Default exists, any other is a 401."""
    domain = _object(document, "domain", f"{where}.domain")
    if domain.get("id") is not None:
        domain_id, name = _string(domain, "id", f"{where}.domain.id"), None
    else:
        domain_id, name = None, _string(domain, "name", f"{where}.domain.name")
    try:
        identity.domain(domain_id, name)
    except NotFound as exc:
        raise Unauthorized(exc.message) from None


@dataclass(frozen=True)
class AuthRequest:
    method: str  # "password" or "token"
    username: str | None  # password login by name
    user_id: str | None  # ... or by id
    token_id: str | None  # token login
    project: str | None  # project scope: the tenant
    domain_scoped: bool


SUPPORTED_METHODS = ("password", "token")


def parse_auth(body: dict[str, Any], identity: Identity) -> AuthRequest:
    """``{"auth": {"identity": {"methods", "password" | "token"}, "scope"?}}``."""
    auth = _object(body, "auth", "auth")
    ident = _object(auth, "identity", "auth.identity")
    methods = ident.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise Invalid("Expecting to find 'auth.identity.methods' (a list of strings)")
    unsupported = [m for m in methods if m not in SUPPORTED_METHODS]
    if unsupported:
        raise Unauthorized(
            f"Attempted to authenticate with an unsupported method: {', '.join(unsupported)}."
        )
    username = user_id = token_id = None
    if "password" in methods:  # with both, the password names the user
        method = "password"
        password = _object(ident, "password", "auth.identity.password")
        user = _object(password, "user", "auth.identity.password.user")
        _string(user, "password", "auth.identity.password.user.password", empty=True)
        if user.get("id") is not None:
            user_id = _string(user, "id", "auth.identity.password.user.id")
        else:
            username = _string(user, "name", "auth.identity.password.user.name")
            _domain(user, "auth.identity.password.user", identity)
    else:
        method = "token"
        token = _object(ident, "token", "auth.identity.token")
        token_id = _string(token, "id", "auth.identity.token.id")
    project, domain_scoped = _scope(auth, identity)
    return AuthRequest(method, username, user_id, token_id, project, domain_scoped)


def _scope(auth: dict[str, Any], identity: Identity) -> tuple[str | None, bool]:
    """(project, domain_scoped) of ``auth.scope``; none means the user's default project."""
    scope = auth.get("scope")
    # Keystone's explicit "unscoped" gets the default project too: tokens here always
    # carry a scope.
    if scope is None or scope == "unscoped":
        return None, False
    if not isinstance(scope, dict):
        raise Invalid("'auth.scope' must be a JSON object")
    if "project" in scope:
        project = _object(scope, "project", "auth.scope.project")
        if project.get("id") is not None:
            return _string(project, "id", "auth.scope.project.id"), False
        name = _string(project, "name", "auth.scope.project.name")
        _domain(project, "auth.scope.project", identity)
        return name, False
    if "domain" in scope:
        _domain(scope, "auth.scope", identity)
        return None, True
    kinds = ", ".join(sorted(scope)) or "none"
    raise Invalid(f"unsupported scope ({kinds}): Simulacra scopes tokens to a project or domain")


def _username(identity: Identity, auth: AuthRequest) -> str | None:
    """The user a password login names; None for a token login or an unknown user id."""
    if auth.user_id is None:
        return auth.username
    try:
        return identity.user_by_id(auth.user_id).username
    except NotFound:
        return None


def _login(identity: Identity, auth: AuthRequest) -> Token:
    """The token for a parsed login (project, domain or the user's default project)."""
    if auth.method == "token":
        # An unknown token is adopted, for the project asked for (as v2.0 does).
        token = identity.resolve(auth.token_id or "", auth.project)
        user = identity.user_of(token)
        if auth.domain_scoped:
            if token.domain_scoped:
                return token
            return identity.authenticate_domain(user, token.authenticated_by)
        if auth.project is not None:
            token = identity.authenticate_token(token.id, auth.project)
        if token.domain_scoped:  # rescoped to the project: the user's tenant token
            return identity.authenticate(user.username, auth.project, token.authenticated_by)
        return token
    username = _username(identity, auth)
    if username is None:  # Keystone does not create users; a name is created, an id must exist
        raise Unauthorized(AUTH_REQUIRED)
    if auth.domain_scoped:
        return identity.authenticate_domain(identity.user(username))
    return identity.authenticate(username, auth.project)


def _wants_catalog(request: Request) -> bool:
    return "nocatalog" not in request.query_params


# Discovery --------------------------------------------------------------------------


async def version(request: Request) -> Response:
    """The v3 version document that keystoneauth's discovery reads."""
    return json_response({"version": documents.version_v3(request_base_url(request))})


# Tokens -----------------------------------------------------------------------------


@keystone_errors
async def create_token(request: Request) -> Response:
    """Authenticate (password or token; project or domain scope): token in X-Subject-Token."""
    identity = model(request)
    auth = parse_auth(await read_json_object(request), identity)
    outcome = identity.auth_outcome(_username(identity, auth), auth.project)
    if outcome is not None:
        return failure(outcome)
    token = _login(identity, auth)
    catalog = catalog_v3(request, token) if _wants_catalog(request) else None
    return json_response(
        documents.token_v3(identity, token, catalog), 201, {"X-Subject-Token": token.id}
    )


def _subject(request: Request) -> str:
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise Invalid("The X-Subject-Token header names the token and is required")
    return subject


@keystone_errors
@require_token
async def validate_token(request: Request) -> Response:
    """Validate the X-Subject-Token (any token is valid, as in Mimic, but revoked ones)."""
    identity = model(request)
    token = identity.validate(_subject(request))
    catalog = catalog_v3(request, token) if _wants_catalog(request) else None
    return json_response(
        documents.token_v3(identity, token, catalog), 200, {"X-Subject-Token": token.id}
    )


@keystone_errors
@require_token
async def revoke_token(request: Request) -> Response:
    """Revoke the X-Subject-Token: validating it is a 404 from then on."""
    model(request).revoke(_subject(request))
    return Response(status_code=204)


@keystone_errors
async def auth_catalog(request: Request) -> Response:
    """The X-Auth-Token's service catalog."""
    catalog = catalog_v3(request, _caller(request))
    url = f"{request_base_url(request)}{V3}/auth/catalog"
    return json_response({"catalog": catalog, "links": documents.links(url)})


@keystone_errors
async def auth_projects(request: Request) -> Response:
    """The projects the X-Auth-Token's user can scope to: its tenant."""
    identity = model(request)
    tenant = identity.user_of(_caller(request)).tenant_id
    base = request_base_url(request)
    return json_response(
        {
            "projects": [documents.project_v3(base, tenant)],
            "links": documents.links(f"{base}{V3}/auth/projects"),
        }
    )


@keystone_errors
async def auth_domains(request: Request) -> Response:
    """The domains the X-Auth-Token's user can scope to: Default."""
    _caller(request)
    base = request_base_url(request)
    return json_response(
        {
            "domains": [documents.domain_v3(base)],
            "links": documents.links(f"{base}{V3}/auth/domains"),
        }
    )


# Projects, users, domains -----------------------------------------------------------


def _filtered(
    items: list[dict[str, Any]], request: Request, keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Keystone's exact-match list filters (``?name=``, ``?domain_id=``, ...)."""
    query = request.query_params
    for key in keys:
        if key in query:
            items = [item for item in items if str(item.get(key)) == query[key]]
    if "enabled" in query:
        wanted = query["enabled"].lower() not in ("0", "false", "no", "off")
        items = [item for item in items if item["enabled"] is wanted]
    return items


def _listing(request: Request, key: str, items: list[dict[str, Any]]) -> Response:
    url = str(request.url)
    return json_response({key: items, "links": documents.links(url)})


@keystone_errors
@require_token
async def list_projects(request: Request) -> Response:
    """List projects (every tenant with a user); ``name``, ``domain_id``, ``enabled`` filters."""
    base = request_base_url(request)
    projects = [documents.project_v3(base, t) for t in model(request).tenants()]
    return _listing(
        request, "projects", _filtered(projects, request, ("id", "name", "domain_id", "parent_id"))
    )


@keystone_errors
@require_token
async def get_project(request: Request) -> Response:
    """Show a project (a tenant); 404 for a tenant no user belongs to."""
    tenant = request.path_params["project_id"]
    if not model(request).has_tenant(tenant):
        raise NotFound(f"Could not find project: {tenant}.")
    return json_response({"project": documents.project_v3(request_base_url(request), tenant)})


@keystone_errors
@require_token
async def list_users(request: Request) -> Response:
    """List users; ``name``, ``domain_id``, ``enabled`` filters (nobody is created here)."""
    base = request_base_url(request)
    users = [documents.user_v3(base, u) for u in model(request).users()]
    return _listing(request, "users", _filtered(users, request, ("id", "name", "domain_id")))


@keystone_errors
@require_token
async def get_user(request: Request) -> Response:
    """Show a user by id."""
    try:
        user = model(request).user_by_id(request.path_params["user_id"])
    except NotFound:
        raise NotFound(f"Could not find user: {request.path_params['user_id']}.") from None
    return json_response({"user": documents.user_v3(request_base_url(request), user)})


@keystone_errors
@require_token
async def user_projects(request: Request) -> Response:
    """The projects of a user: its tenant."""
    try:
        user = model(request).user_by_id(request.path_params["user_id"])
    except NotFound:
        raise NotFound(f"Could not find user: {request.path_params['user_id']}.") from None
    return _listing(
        request, "projects", [documents.project_v3(request_base_url(request), user.tenant_id)]
    )


@keystone_errors
@require_token
async def list_domains(request: Request) -> Response:
    """List domains: only Default; ``name``, ``enabled`` filters."""
    domains = [documents.domain_v3(request_base_url(request))]
    return _listing(request, "domains", _filtered(domains, request, ("id", "name")))


@keystone_errors
@require_token
async def get_domain(request: Request) -> Response:
    """Show a domain by id: only ``default`` exists."""
    domain = model(request).domain(request.path_params["domain_id"])
    return json_response({"domain": documents.domain_v3(request_base_url(request), domain)})


ROUTES: list[BaseRoute] = [
    Route(V3, version, methods=["GET"]),
    Route(V3 + "/", version, methods=["GET"]),
    Route(V3 + "/auth/tokens", create_token, methods=["POST"]),
    Route(V3 + "/auth/tokens", validate_token, methods=["GET"]),
    Route(V3 + "/auth/tokens", revoke_token, methods=["DELETE"]),
    Route(V3 + "/auth/catalog", auth_catalog, methods=["GET"]),
    Route(V3 + "/auth/projects", auth_projects, methods=["GET"]),
    Route(V3 + "/auth/domains", auth_domains, methods=["GET"]),
    Route(V3 + "/projects", list_projects, methods=["GET"]),
    Route(V3 + "/projects/{project_id}", get_project, methods=["GET"]),
    Route(V3 + "/users", list_users, methods=["GET"]),
    Route(V3 + "/users/{user_id}", get_user, methods=["GET"]),
    Route(V3 + "/users/{user_id}/projects", user_projects, methods=["GET"]),
    Route(V3 + "/domains", list_domains, methods=["GET"]),
    Route(V3 + "/domains/{domain_id}", get_domain, methods=["GET"]),
]
