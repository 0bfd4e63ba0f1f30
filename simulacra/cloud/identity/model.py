"""Identity's state: users, tenants, tokens and the external APIs of the catalog.

Everything takes and returns plain values and raises ``simulacra.errors`` types;
nothing here sees a request. As in Mimic, every credential is accepted (secrets are
never checked) and unknown users, tenants and tokens are created on first use, so a
test can authenticate as anyone. What Mimic guaranteed is kept: a username keeps its
tenant, and asking for another tenant is refused.

Identity v3 reads the same state: a tenant is a v3 project, every user and project is
in the one ``Default`` domain, and a token is valid on both versions. A v3 token may be
scoped to that domain instead of the tenant, and v3 can revoke a token.

Ids: tokens are ``token_<uuid4>``, tenants random 15-digit numbers, user ids a
number derived from the username with SHA-256 (Mimic used Python's ``hash()``,
which changes with every process).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from simulacra.clock import AHEAD, Clock
from simulacra.cloud.behaviors import (
    BehaviorRegistry,
    Event,
    Outcome,
    failure_parser,
    regex_criterion,
)
from simulacra.cloud.identity import presets
from simulacra.errors import AlreadyExists, Conflict, DomainError, Invalid, NotFound

TOKEN_LIFETIME = 24 * 3600.0  # Mimic's sessions last one day

# Authentication (POST /tokens, impersonation), filtered on the credentials as sent.
AUTH_EVENT = Event(
    name="auth",
    criteria={"username": regex_criterion, "tenant_id": regex_criterion},
    behaviors={
        "fail": failure_parser(
            401, "Unable to authenticate user with credentials provided.", "unauthorized"
        )
    },
)


class Unauthorized(DomainError):
    """The credentials or token are refused (401)."""

    # The key of Identity's error envelope, ``{<envelope>: {"code", "message"}}``.
    envelope = "unauthorized"


class PresetUnauthorized(Unauthorized):
    """A fail-to-auth preset token: Mimic answers 401 inside an ``itemNotFound`` envelope."""

    envelope = "itemNotFound"


@dataclass(frozen=True)
class Domain:
    """A Keystone v3 domain. There is one, ``Default``: every user and tenant is in it."""

    id: str
    name: str


DEFAULT_DOMAIN = Domain("default", "Default")


@dataclass
class User:
    username: str
    id: str
    tenant_id: str
    created: float
    api_key: str
    token: str | None = None  # the token password and API-key logins answer


@dataclass
class Token:
    id: str
    username: str
    expires: float
    # PASSWORD or APIKEY (Rackspace's values); Mimic said PASSWORD for every token.
    authenticated_by: str = "PASSWORD"
    impersonator: str | None = None  # username of the impersonating user
    issued: float = 0.0
    # Identity v3 scope: a token is scoped to its user's tenant (project), or to the
    # Default domain when v3 asked for domain scope. v2.0 shows every token with its tenant.
    domain_scoped: bool = False
    # Keystone's audit id: 22 URL-safe characters, the same for the token's whole life.
    audit_id: str = field(default_factory=lambda: secrets.token_urlsafe(16)[:22])


@dataclass
class EndpointTemplate:
    """An OS-KSCATALOG endpoint template: one region of an external API."""

    id: str
    region: str
    type: str
    name: str
    enabled: bool = False  # enabled for every tenant, else only for those listed in ``tenants``
    public_url: str = ""
    internal_url: str = ""
    admin_url: str = ""
    tenant_alias: str = "%tenant_id%"  # replaced by the tenant id in the URLs
    version_id: str = ""
    version_info: str = ""
    version_list: str = ""
    tenants: set[str] = field(default_factory=set)

    # (JSON key, attribute) of the optional string fields.
    OPTIONAL = (
        ("publicURL", "public_url"),
        ("internalURL", "internal_url"),
        ("adminURL", "admin_url"),
        ("RAX-AUTH:tenantAlias", "tenant_alias"),
        ("versionId", "version_id"),
        ("versionInfo", "version_info"),
        ("versionList", "version_list"),
    )

    @classmethod
    def from_json(cls, document: object) -> EndpointTemplate:
        """Validate a template: ``id``, ``region``, ``type`` and ``name`` are required."""
        if not isinstance(document, dict):
            raise Invalid("an endpoint template must be a JSON object")
        missing = [key for key in ("id", "region", "type", "name") if key not in document]
        if missing:
            raise Invalid(
                "JSON body does not contain the required parameters: " + ", ".join(missing)
            )
        template_id = document["id"]
        # Rackspace's template ids are integers, Mimic's tests use strings: take both.
        if isinstance(template_id, bool) or not isinstance(template_id, str | int):
            raise Invalid("endpoint template 'id' must be a string or an integer")
        values: dict[str, Any] = {"id": str(template_id)}
        for key in ("region", "type", "name"):
            values[key] = _string(document, key)
        enabled = document.get("enabled", False)
        if not isinstance(enabled, bool):
            raise Invalid("endpoint template 'enabled' must be true or false")
        values["enabled"] = enabled
        for key, attribute in cls.OPTIONAL:
            if document.get(key) is not None:
                values[attribute] = _string(document, key)
        if not values.get("tenant_alias", "%tenant_id%"):
            raise Invalid("'RAX-AUTH:tenantAlias' must not be empty")
        return cls(**values)

    def url(self, url: str, tenant: str) -> str:
        return url.replace(self.tenant_alias, tenant)

    def describe(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.id,
            "region": self.region,
            "type": self.type,
            "name": self.name,
            "enabled": self.enabled,
        }
        for key, attribute in self.OPTIONAL:
            document[key] = getattr(self, attribute)
        return document

    def describe_for(self, tenant: str) -> dict[str, Any]:
        return {
            "tenantId": tenant,
            "id": self.id,
            "region": self.region,
            "type": self.type,
            "publicURL": self.url(self.public_url, tenant),
            "internalURL": self.url(self.internal_url, tenant),
            "adminURL": self.url(self.admin_url, tenant),
        }

    def serves(self, tenant: str) -> bool:
        return self.enabled or tenant in self.tenants


@dataclass
class ExternalService:
    """An OS-KSADM service: an API outside Simulacra, listed in the catalog by its templates."""

    id: str
    name: str
    type: str
    description: str = "External API referenced by Mimic"
    templates: dict[str, EndpointTemplate] = field(default_factory=dict)

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "type": self.type,
            "id": self.id,
            "description": self.description,
        }


def _string(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise Invalid(f"'{key}' must be a string")
    return value


class Identity:
    """The identity backend: ``core.services["identity"]``."""

    # --shared-cloud stores each member of these as a row of its own (simulacra/cloud/shared.py).
    SHARED_PARTS = ("_users", "_user_ids", "_tenants", "_tokens")

    def __init__(self, clock: Clock, default_region: str = "DFW") -> None:
        self.clock = clock
        self.default_region = default_region
        self.reset()

    def reset(self) -> None:
        self._users: dict[str, User] = {}  # username -> user
        self._user_ids: dict[str, str] = {}  # user id -> username
        self._tenants: dict[str, list[str]] = {}  # tenant -> usernames, first one primary
        self._tokens: dict[str, Token] = {}
        self._services: dict[str, ExternalService] = {}
        self._revoked: set[str] = set()
        self.behaviors = BehaviorRegistry(AUTH_EVENT)

    def auth_outcome(self, username: str | None, tenant: str | None) -> Outcome | None:
        """The registered behavior for this login; None means authenticate normally."""
        return self.behaviors.choose({"username": username, "tenant_id": tenant})

    # Users and tenants ------------------------------------------------------------

    def user(self, username: str, tenant: str | None = None) -> User:
        """The user named ``username``, created (in ``tenant`` or a new one) on first use.

        A known user asked for with another tenant is refused, as Mimic did.
        """
        user = self._users.get(username)
        if user is None:
            return self._new_user(username, tenant)
        if tenant is not None and tenant != user.tenant_id:
            raise Unauthorized(
                f"Tenant with Name/Id: '{tenant}' is not valid for User '{username}'"
                f" (id: '{user.id}')"
            )
        return user

    def user_by_id(self, user_id: str) -> User:
        username = self._user_ids.get(user_id)
        if username is None:
            raise NotFound(f"User {user_id} not found")
        return self._users[username]

    def users(self, tenant: str | None = None) -> list[User]:
        """Every user, or those of one tenant, in creation order."""
        if tenant is None:
            return list(self._users.values())
        return [self._users[name] for name in self._tenants.get(tenant, [])]

    def tenants(self) -> list[str]:
        """Every tenant a user belongs to, in creation order (v3 lists them as projects)."""
        return [tenant for tenant, usernames in self._tenants.items() if usernames]

    def has_tenant(self, tenant: str) -> bool:
        return bool(self._tenants.get(tenant))

    def domain(self, domain_id: str | None = None, name: str | None = None) -> Domain:
        """The domain with this id or name: only ``default`` / ``Default`` exists."""
        if domain_id is not None and domain_id != DEFAULT_DOMAIN.id:
            raise NotFound(f"Could not find domain: {domain_id}.")
        if name is not None and name != DEFAULT_DOMAIN.name:
            raise NotFound(f"Could not find domain: {name}.")
        return DEFAULT_DOMAIN

    def primary_user(self, tenant: str) -> User:
        """The first user of ``tenant``; an unknown tenant gets a generated user."""
        usernames = self._tenants.get(tenant)
        if usernames:
            return self._users[usernames[0]]
        return self._new_user(f"username_{uuid.uuid4()}", tenant)

    def _new_user(self, username: str, tenant: str | None) -> User:
        if tenant is None:
            tenant = self._new_tenant_id()
        user = User(
            username=username,
            id=self._user_id_for(username),
            tenant_id=tenant,
            created=self.clock.seconds(),
            api_key=secrets.token_hex(16),
        )
        self._users[username] = user
        self._user_ids[user.id] = username
        self._tenants.setdefault(tenant, []).append(username)
        return user

    def _new_tenant_id(self) -> str:
        while True:  # a collision is unlikely, but would merge two tenants' state
            tenant = str(uuid.uuid4().int % 10**15)
            if tenant not in self._tenants:
                return tenant

    def _user_id_for(self, username: str) -> str:
        """A number derived from the name: the same in every process, unlike ``hash()``."""
        salt = 0
        while True:
            seed = username if salt == 0 else f"{username}#{salt}"
            digest = hashlib.sha256(seed.encode()).digest()
            # 15 digits, like the tenant ids; well within JavaScript's safe integers.
            user_id = str(int.from_bytes(digest[:8], "big") % 10**15)
            if self._user_ids.get(user_id, username) == username:
                return user_id
            salt += 1

    # Tokens -------------------------------------------------------------------------

    def _mint(
        self,
        user: User,
        method: str,
        *,
        prefix: str = "token_",
        lifetime: float = TOKEN_LIFETIME,
        impersonator: str | None = None,
        domain_scoped: bool = False,
    ) -> Token:
        now = self.clock.seconds()
        token = Token(
            id=f"{prefix}{uuid.uuid4()}",
            username=user.username,
            expires=now + lifetime,
            authenticated_by=method,
            impersonator=impersonator,
            issued=now,
            domain_scoped=domain_scoped,
        )
        self._tokens[token.id] = token
        return token

    def authenticate(
        self, username: str, tenant: str | None = None, method: str = "PASSWORD"
    ) -> Token:
        """Password or API-key login: the user's current token, a new one once it expired."""
        user = self.user(username, tenant)
        current = self._tokens.get(user.token) if user.token else None
        if current is not None and current.expires > self.clock.seconds():
            return current
        token = self._mint(user, method)
        user.token = token.id
        return token

    def authenticate_domain(self, user: User, method: str = "PASSWORD") -> Token:
        """v3 domain scope: a new token of ``user``'s, scoped to the Default domain.

        It is not the user's current token (that one is scoped to the tenant), so a later
        password login still answers the tenant-scoped token.
        """
        return self._mint(user, method, domain_scoped=True)

    def authenticate_token(self, token_id: str, tenant: str) -> Token:
        """Token login: a known token must belong to ``tenant``; an unknown one is adopted."""
        token = self._tokens.get(token_id)
        if token is None:
            return self._adopt(token_id, tenant)
        if self.user_of(token).tenant_id != tenant:
            raise Unauthorized(f"Token doesn't belong to Tenant with Id/Name: '{tenant}'")
        return token

    def impersonate(
        self, username: str, expires_in: float, impersonator_token: str | None = None
    ) -> Token:
        """A RAX-AUTH impersonation token for ``username``, lasting ``expires_in`` seconds."""
        if not 0 < expires_in <= AHEAD:  # its expiry must stay a date the clock can show
            raise Invalid(
                f"'expire-in-seconds' must be a positive number of seconds, at most {AHEAD:.0f}"
            )
        impersonator = self._tokens.get(impersonator_token) if impersonator_token else None
        return self._mint(
            self.user(username),
            "PASSWORD",
            prefix="impersonated_token_",
            lifetime=expires_in,
            impersonator=impersonator.username if impersonator else None,
        )

    def validate(self, token_id: str, belongs_to: str | None = None) -> Token:
        """``GET /tokens/{id}``: any token is valid (Mimic never refused one) but the presets.

        An unknown token is adopted for ``belongs_to`` (or a new tenant); a known one
        must belong to ``belongs_to``.
        """
        if token_id in presets.FAIL_TO_AUTH_TOKENS:
            raise PresetUnauthorized("Invalid auth token")
        self._check_revoked(token_id)
        token = self.resolve(token_id, belongs_to)
        if belongs_to is not None and self.user_of(token).tenant_id != belongs_to:
            raise NotFound(f"Token doesn't belong to Tenant with Id/Name: '{belongs_to}'")
        return token

    def resolve(self, token_id: str, tenant: str | None = None) -> Token:
        """A known token, or an unknown one adopted (for ``tenant``, else a new tenant)."""
        token = self._tokens.get(token_id)
        return token if token is not None else self._adopt(token_id, tenant)

    def revoke(self, token_id: str) -> None:
        """v3 ``DELETE /auth/tokens``: forget the token; validating it is a 404 from now on."""
        self._check_revoked(token_id)
        token = self._tokens.pop(token_id, None)
        if token is None:
            raise NotFound(f"Could not find token: {token_id}.")
        self._revoked.add(token_id)
        user = self._users.get(token.username)
        if user is not None and user.token == token_id:
            user.token = None  # the next password login mints a new token

    def _check_revoked(self, token_id: str) -> None:
        if token_id in self._revoked:
            # A revoked token is a 404 (Keystone's answer), not adopted again.
            raise NotFound(f"Could not find token: {token_id}.")

    def existing_token(self, token_id: str | None) -> Token:
        """A token this server issued or adopted; anything else is a 401."""
        token = self._tokens.get(token_id) if token_id else None
        if token is None:
            raise Unauthorized(
                "No valid token provided. Please use the 'X-Auth-Token' header with a valid token."
            )
        return token

    def _adopt(self, token_id: str, tenant: str | None) -> Token:
        """Record a token made outside this server (services never check tokens)."""
        if token_id in self._revoked:
            raise Unauthorized("The token has been revoked.")
        if tenant is None:
            user = self._new_user(f"username_{uuid.uuid4()}", None)
        else:
            user = self.primary_user(tenant)
        now = self.clock.seconds()
        token = Token(token_id, user.username, now + TOKEN_LIFETIME, issued=now)
        self._tokens[token_id] = token
        if user.token is None:
            user.token = token_id
        return token

    def user_of(self, token: Token) -> User:
        return self._users[token.username]

    def impersonator_of(self, token: Token) -> User | None:
        return self._users.get(token.impersonator) if token.impersonator else None

    # External APIs (OS-KSADM services, OS-KSCATALOG endpoint templates) --------------

    def services(self) -> list[ExternalService]:
        return list(self._services.values())

    def service(self, service_id: str) -> ExternalService:
        service = self._services.get(service_id)
        if service is None:
            raise NotFound(f"Service {service_id} not found")
        return service

    def add_service(
        self, name: str, type_: str, service_id: str | None = None, description: str | None = None
    ) -> ExternalService:
        service_id = service_id or str(uuid.uuid4())
        if service_id in self._services:
            raise AlreadyExists("Conflict: Service with the same uuid already exists.")
        if any(s.name == name for s in self._services.values()):
            raise AlreadyExists("Conflict: Service with the same name already exists.")
        service = ExternalService(service_id, name, type_)
        if description is not None:
            service.description = description
        self._services[service_id] = service
        return service

    def remove_service(self, service_id: str) -> None:
        service = self._services.get(service_id)
        if service is None:
            raise NotFound("Service not found. Unable to remove.")
        if service.templates:
            raise Conflict("Service still has endpoint templates.")
        del self._services[service_id]

    def _owner(self, template_id: str) -> ExternalService | None:
        return next((s for s in self._services.values() if template_id in s.templates), None)

    def templates(self, service_id: str | None = None) -> list[EndpointTemplate]:
        """Every template, or those of one service."""
        chosen = [self.service(service_id)] if service_id else self._services.values()
        return [t for s in chosen for t in s.templates.values()]

    def add_template(
        self, template: EndpointTemplate, service_id: str | None = None
    ) -> EndpointTemplate:
        """Add to the service ``service_id``, else to the service named like the template."""
        if self._owner(template.id) is not None:
            raise AlreadyExists("ID value is already assigned to an existing template")
        if service_id is None:
            service = next((s for s in self._services.values() if s.name == template.name), None)
        else:
            service = self._services.get(service_id)
        if service is None:
            raise NotFound("Service API for endpoint template not found")
        if service.type != template.type:
            raise Conflict("Endpoint already exists or service type does not match.")
        service.templates[template.id] = template
        return template

    def update_template(
        self, template_id: str, template: EndpointTemplate, service_id: str | None = None
    ) -> EndpointTemplate:
        if template.id != template_id:
            raise Conflict("Template ID in URL does not match that of the JSON body")
        owner = self._owner(template_id)
        service = self._services.get(service_id) if service_id else owner
        if service is None:
            raise NotFound("Service API for endpoint template not found")
        if service is not owner:
            raise NotFound(
                "Unable to update non-existent template. Template must first be added"
                " before it can be updated."
            )
        if service.type != template.type:
            raise Conflict("Endpoint already exists and service id or service type does not match.")
        template.tenants = service.templates[template_id].tenants  # keep per-tenant grants
        service.templates[template_id] = template
        return template

    def remove_template(self, template_id: str, service_id: str | None = None) -> None:
        owner = self._owner(template_id)
        if owner is None or (service_id is not None and owner.id != service_id):
            raise NotFound("Unable to locate an External API with the given Template ID.")
        del owner.templates[template_id]

    def tenant_templates(
        self, tenant: str, service_id: str | None = None
    ) -> list[EndpointTemplate]:
        """Templates serving ``tenant``: enabled for all, or for it alone."""
        return [t for t in self.templates(service_id) if t.serves(tenant)]

    def enable_template(self, tenant: str, template_id: str) -> EndpointTemplate:
        owner = self._owner(template_id)
        if owner is None:
            raise NotFound("Unable to locate an External API with the given Template ID.")
        template = owner.templates[template_id]
        template.tenants.add(tenant)
        return template

    def disable_template(self, tenant: str, template_id: str) -> None:
        owner = self._owner(template_id)
        if owner is None:
            raise NotFound("Unable to locate an External API with the given Template ID.")
        template = owner.templates[template_id]
        if tenant not in template.tenants:
            raise NotFound("Template not enabled for tenant")
        template.tenants.discard(tenant)

    def external_entries(self, tenant: str) -> list[dict[str, Any]]:
        """serviceCatalog entries of the external APIs that have an endpoint for ``tenant``."""
        entries = []
        for service in self._services.values():
            endpoints = [
                {
                    "region": t.region,
                    "tenantId": tenant,
                    "publicURL": t.url(t.public_url, tenant),
                    "internalURL": t.url(t.internal_url, tenant),
                }
                for t in service.templates.values()
                if t.serves(tenant)
            ]
            if endpoints:  # Mimic also listed services with no endpoint at all
                entries.append({"name": service.name, "type": service.type, "endpoints": endpoints})
        return entries
