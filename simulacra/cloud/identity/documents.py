"""The JSON documents Identity answers, built from the model's plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from simulacra.clock import iso8601
from simulacra.cloud.catalog import stable_id
from simulacra.cloud.identity import presets
from simulacra.cloud.identity.model import DEFAULT_DOMAIN, Domain, Identity, Token, User

MEDIA_TYPE = "application/vnd.openstack.identity-v2.0+json"


def timestamp(seconds: float) -> str:
    """Rackspace's ``2014-12-23T21:17:26.025Z``: UTC, milliseconds."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def version_v2(base_url: str) -> dict[str, Any]:
    """The v2.0 entry of a version document; its self link is where clients authenticate."""
    return {
        "status": "stable",
        "updated": "2014-04-17T00:00:00Z",
        "media-types": [{"base": "application/json", "type": MEDIA_TYPE}],
        "id": "v2.0",
        "links": [
            {"href": f"{base_url}/identity/v2.0", "rel": "self"},
            {"href": "http://docs.openstack.org/", "type": "text/html", "rel": "describedby"},
        ],
    }


def token_block(token: Token, tenant: str) -> dict[str, Any]:
    return {
        "id": token.id,
        "expires": timestamp(token.expires),
        "tenant": {"id": tenant, "name": tenant},
        "RAX-AUTH:authenticatedBy": [token.authenticated_by],
    }


def user_block(identity: Identity, user: User) -> dict[str, Any]:
    return {
        "RAX-AUTH:defaultRegion": identity.default_region,
        "id": user.id,
        "name": user.username,
        "roles": presets.roles_for_tenant(user.tenant_id),
    }


def access(
    identity: Identity, token: Token, catalog: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"access": {token, user[, serviceCatalog]}}``; validation answers no catalog."""
    user = identity.user_of(token)
    body: dict[str, Any] = {
        "token": token_block(token, user.tenant_id),
        "user": user_block(identity, user),
    }
    if catalog is not None:
        body["serviceCatalog"] = catalog
    return {"access": body}


def validation(identity: Identity, token: Token) -> dict[str, Any]:
    """``GET /tokens/{id}``: the access document with the impersonator and presets applied."""
    document = access(identity, token)
    body = document["access"]
    fixed = presets.FIXED_IDENTITIES.get(token.id)
    if fixed is not None:
        body["token"]["tenant"] = {"id": fixed.tenant, "name": fixed.tenant}
        body["user"] = {**fixed.user, "roles": [dict(r) for r in fixed.user["roles"]]}
        if fixed.impersonator_roles is not None:
            body["RAX-AUTH:impersonator"] = _impersonator(
                fixed.user["id"], fixed.user["name"], fixed.impersonator_roles
            )
        return document
    impersonator = identity.impersonator_of(token)
    if impersonator is not None:
        body["RAX-AUTH:impersonator"] = _impersonator(
            impersonator.id, impersonator.username, presets.IMPERSONATION_ROLES
        )
    preset = presets.IMPERSONATOR_TOKENS.get(token.id)
    if preset is not None:
        # Mimic shows the token's own user as its impersonator.
        user = identity.user_of(token)
        body["RAX-AUTH:impersonator"] = _impersonator(user.id, user.username, preset[1])
    return document


def _impersonator(user_id: str, name: str, roles: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": user_id, "name": name, "roles": [dict(r) for r in roles]}


def impersonation(token: Token) -> dict[str, Any]:
    return {"access": {"token": {"id": token.id, "expires": timestamp(token.expires)}}}


def endpoints(catalog: list[dict[str, Any]]) -> dict[str, Any]:
    """The catalog flattened to ``{"endpoints": [...]}``, each with its entry's name and type."""
    return {
        "endpoints": [
            {
                **endpoint,
                "name": entry["name"],
                "type": entry["type"],
                # Stable per URL (Mimic drew a new uuid4 on every request).
                "id": str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{entry['name']} {endpoint['publicURL']}")
                ),
            }
            for entry in catalog
            for endpoint in entry["endpoints"]
        ]
    }


def user_details(identity: Identity, user: User) -> dict[str, Any]:
    return {
        "user": {
            "RAX-AUTH:domainId": user.tenant_id,
            "id": user.id,
            "enabled": True,
            "username": user.username,
            "email": "thisisrandom@email.com",
            "RAX-AUTH:defaultRegion": identity.default_region,
            "created": iso8601(user.created),
            "updated": iso8601(user.created),
        }
    }


def api_key(user: User) -> dict[str, Any]:
    return {"RAX-KSKEY:apiKeyCredentials": {"username": user.username, "apiKey": user.api_key}}


# Identity v3 (Keystone) -------------------------------------------------------------

V3_MEDIA_TYPE = "application/vnd.openstack.identity-v3+json"
# Keystone's API version since Ussuri; clients read the major version only.
V3_VERSION = "v3.14"

# How v3 names the way a token was obtained (Rackspace's API key is a password of sorts).
V3_METHODS = {"PASSWORD": "password", "APIKEY": "password", "TOKEN": "token"}


def version_v3(base_url: str) -> dict[str, Any]:
    """The v3 entry of a version document; its self link is where clients authenticate."""
    return {
        "id": V3_VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "media-types": [{"base": "application/json", "type": V3_MEDIA_TYPE}],
        "links": [{"href": f"{base_url}/identity/v3", "rel": "self"}],
    }


def domain_ref(domain: Domain = DEFAULT_DOMAIN) -> dict[str, str]:
    return {"id": domain.id, "name": domain.name}


def project_ref(tenant: str) -> dict[str, Any]:
    """A tenant as v3 names it in a token: the project's name is its id, as in v2.0."""
    return {"id": tenant, "name": tenant, "domain": domain_ref()}


def token_v3(
    identity: Identity, token: Token, catalog: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"token": {...}}``: scoped to the user's tenant (project) or the Default domain."""
    user = identity.user_of(token)
    body: dict[str, Any] = {
        "methods": [V3_METHODS.get(token.authenticated_by, "password")],
        "user": {
            "id": user.id,
            "name": user.username,
            "domain": domain_ref(),
            "password_expires_at": None,
        },
        "audit_ids": [token.audit_id],
        "expires_at": iso8601(token.expires),
        "issued_at": iso8601(token.issued),
        "roles": [
            {"id": role["id"], "name": role["name"]}
            for role in presets.roles_for_tenant(user.tenant_id)
        ],
    }
    if token.domain_scoped:
        body["domain"] = domain_ref()
    else:
        body["project"] = project_ref(user.tenant_id)
        body["is_domain"] = False
    if catalog is not None:
        body["catalog"] = catalog
    return {"token": body}


def identity_entry_v3(base_url: str, regions: tuple[str, ...]) -> dict[str, Any]:
    """Identity's own catalog entry (v3 only): the unversioned root, so clients discover v3.

    Listed in every region, since clients look the identity endpoint up in theirs.
    """
    url = f"{base_url}/identity"
    return {
        "id": stable_id("keystone", "identity"),
        "name": "keystone",
        "type": "identity",
        "endpoints": [
            {
                "id": stable_id("keystone", interface, region, url),
                "interface": interface,
                "region": region,
                "region_id": region,
                "url": url,
            }
            for region in regions
            for interface in ("public", "internal", "admin")
        ],
    }


def links(url: str) -> dict[str, str | None]:
    return {"self": url, "previous": None, "next": None}


def project_v3(base_url: str, tenant: str) -> dict[str, Any]:
    return {
        "id": tenant,
        "name": tenant,
        "domain_id": DEFAULT_DOMAIN.id,
        "parent_id": DEFAULT_DOMAIN.id,
        "description": "",
        "enabled": True,
        "is_domain": False,
        "tags": [],
        "options": {},
        "links": {"self": f"{base_url}/identity/v3/projects/{tenant}"},
    }


def user_v3(base_url: str, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.username,
        "domain_id": DEFAULT_DOMAIN.id,
        "default_project_id": user.tenant_id,
        "enabled": True,
        "email": "thisisrandom@email.com",
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base_url}/identity/v3/users/{user.id}"},
    }


def domain_v3(base_url: str, domain: Domain = DEFAULT_DOMAIN) -> dict[str, Any]:
    return {
        "id": domain.id,
        "name": domain.name,
        "description": "The default domain",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": {"self": f"{base_url}/identity/v3/domains/{domain.id}"},
    }
