"""Identity's magic values (Mimic's ``get_presets["identity"]``), as data tables.

Mimic applied these in a long if-chain inside its token validation. Here each
kind of preset is one table, and ``LISTING`` (shown by ``GET /mimic/v1.0/presets``)
is derived from the tables, so the listing and the behaviour cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Role = dict[str, str]

DEFAULT_ROLES: list[Role] = [
    {"id": "3", "description": "User Admin Role.", "name": "identity:user-admin"}
]

# Validating these tokens is refused with a 401 (clients use it to test their
# "auth failed" path without ever caching a token).
FAIL_TO_AUTH_TOKENS = ("never-cache-this-and-fail-to-auth",)

# Users of these tenants get these roles instead of identity:user-admin.
_OBSERVER = {"id": "observer", "description": "Global Observer Role.", "name": "observer"}
_CREATOR = {"id": "creator", "description": "Global Creator Role.", "name": "creator"}
_ADMIN = {"id": "admin", "description": "Global Admin Role.", "name": "admin"}
ROLE_TENANTS: dict[str, tuple[str, list[Role]]] = {
    # tenant: (Mimic's preset name, roles)
    "09876": ("observer_role", [_OBSERVER]),
    "09090": ("creator_role", [_CREATOR]),
    "9999": ("admin_role", [_ADMIN, _OBSERVER]),
}

# Validating these tokens shows the token's own user as an impersonator with these roles.
_MAAS_ADMIN = [
    {"id": "123", "name": "monitoring:service-admin"},
    {"id": "234", "name": "object-store:admin"},
]
IMPERSONATOR_TOKENS: dict[str, tuple[str, list[Role]]] = {
    **{
        token: ("maas_admin_roles", _MAAS_ADMIN)
        for token in (
            "this_is_an_impersonator_token",
            "this_is_an_impersonator_token_also",
            "impersonate_watson",
            "impersonate_creator",
            "this_is_an_impersonator_token_also_2",
            "impersonate_foo_token",
        )
    },
    "this_is_a_racker_token": ("racker_token", [{"id": "9", "name": "Racker"}]),
}

# The roles shown for the impersonator of a RAX-AUTH impersonation token.
IMPERSONATION_ROLES: list[dict[str, str]] = [
    {
        "id": "10000001",
        "serviceId": "test-eabb70a0e702a4626977c331d5c4",
        "description": "Service admin role for cloud feeds access. Assign only to service users",
        "name": "cloudfeeds:service-admin",
    },
    {
        "id": "10000002",
        "serviceId": "test-eabb70a0e702a4626977c331d5c4",
        "description": "Checkmate Access role",
        "name": "checkmate",
    },
    {
        "id": "100000003",
        "serviceId": "test-eabb70a0e702a4626977c331d5c4",
        "description": "Service admin role for Monitoring access. Assign only to service users",
        "name": "monitoring:service-admin",
    },
    {
        "id": "100000004",
        "serviceId": "test-eabb70a0e702a4626977c331d5c4",
        "description": "Admin Role.",
        "name": "identity:admin",
    },
    {
        "id": "10000005",
        "serviceId": "test-d4614b87411e141fe8109099bc4f",
        "description": "Role to access Customer service as an Admin",
        "name": "customer:admin",
    },
    {
        "id": "10000006",
        "serviceId": "test-eabb70a0e702a4626977c331d5c4",
        "description": "Service admin role for Cloud Backup access. Assign only to service users",
        "name": "cloudbackup:service-admin",
    },
]


@dataclass(frozen=True)
class FixedIdentity:
    """A token whose validation answers a fixed tenant and user (Mimic's MaaS/Valkyrie users)."""

    preset: str  # Mimic's preset name
    tenant: str
    user: dict[str, Any]
    impersonator_roles: list[Role] | None = field(default=None)


def _role(id_: str, name: str, description: str | None = None, **extra: str) -> Role:
    role = {"id": id_, "name": name}
    if description is not None:
        role["description"] = description
    return {**role, **extra}


_NOBODY = [_role("1", "identity:nobody", "Nobody")]
_HYBRID = "hybrid:123456"

FIXED_IDENTITIES: dict[str, FixedIdentity] = {
    "OneTwo": FixedIdentity(
        "non_dedicated_observer",
        "135790",
        {
            "id": "12",
            "name": "OneTwo",
            "roles": [_role("1", "monitoring:observer", "Monitoring Observer")],
        },
    ),
    "ThreeFour": FixedIdentity(
        "non_dedicated_admin",
        "135790",
        {
            "id": "34",
            "name": "ThreeFour",
            "roles": [
                _role("1", "monitoring:admin", "Monitoring Admin"),
                _role("2", "admin", "Admin"),
            ],
        },
    ),
    "ThreeFourImpersonator": FixedIdentity(
        "non_dedicated_impersonator",
        "135790",
        {"id": "34", "name": "ThreeFour", "roles": _NOBODY},
        [_role("1", "monitoring:service-admin"), _role("2", "object-store:admin")],
    ),
    "ThreeFourRacker": FixedIdentity(
        "non_dedicated_racker",
        "135790",
        {"id": "34", "name": "ThreeFour", "roles": _NOBODY},
        [_role("1", "Racker")],
    ),
    "HybridOneTwo": FixedIdentity(
        "dedicated_full_device_permission_holder",
        _HYBRID,
        {
            "id": "12",
            "name": "HybridOneTwo",
            "roles": [_role("1", "monitoring:observer", tenantId=_HYBRID)],
            "RAX-AUTH:contactId": "12",
        },
    ),
    "HybridThreeFour": FixedIdentity(
        "dedicated_account_permission_holder",
        _HYBRID,
        {
            "id": "34",
            "name": "HybridThreeFour",
            "roles": [
                _role("1", "monitoring:creator", "Monitoring Creator"),
                _role("2", "creator", "Creator"),
            ],
            "RAX-AUTH:contactId": "34",
        },
    ),
    "HybridThreeFourImpersonator": FixedIdentity(
        "dedicated_impersonator",
        _HYBRID,
        {"id": "34", "name": "HybridThreeFour", "roles": _NOBODY, "RAX-AUTH:contactId": "34"},
        [_role("1", "monitoring:service-admin")],
    ),
    "HybridOneTwoRacker": FixedIdentity(
        "dedicated_racker",
        _HYBRID,
        {"id": "12", "name": "HybridOneTwo", "roles": _NOBODY, "RAX-AUTH:contactId": "12"},
        [_role("1", "Racker")],
    ),
    "HybridFiveSix": FixedIdentity(
        "dedicated_limited_device_permission_holder",
        _HYBRID,
        {
            "id": "56",
            "name": "HybridFiveSix",
            "roles": [
                _role("1", "monitoring:observer", "Monitoring Observer"),
                _role("2", "observer", "Observer"),
            ],
            "RAX-AUTH:contactId": "56",
        },
    ),
    "HybridSevenEight": FixedIdentity(
        "dedicated_non_permission_holder",
        _HYBRID,
        {
            "id": "78",
            "name": "HybridSevenEight",
            "roles": [_role("1", "identity:user-admin", "User admin")],
            "RAX-AUTH:contactId": "78",
        },
    ),
    "HybridNineZero": FixedIdentity(
        "dedicated_quasi_user_impersonator",
        _HYBRID,
        {
            "id": "90",
            "name": "HybridNineZero",
            "roles": [
                _role("1", "identity:user-admin", "Admin"),
                _role("3", "hybridRole", "Hybrid Admin", tenantId=_HYBRID),
            ],
        },
        [_role("1", "monitoring:service-admin")],
    ),
}


def roles_for_tenant(tenant: str) -> list[Role]:
    preset = ROLE_TENANTS.get(tenant)
    return [dict(r) for r in (preset[1] if preset else DEFAULT_ROLES)]


def _listing() -> dict[str, object]:
    """Mimic's ``get_presets["identity"]`` keys, built from the tables above."""
    listing: dict[str, list[str]] = {}
    for token, (preset, _) in IMPERSONATOR_TOKENS.items():
        listing.setdefault(preset, []).append(token)
    for tenant, (preset, _) in ROLE_TENANTS.items():
        listing.setdefault(preset, []).append(tenant)
    listing["token_fail_to_auth"] = list(FAIL_TO_AUTH_TOKENS)
    for token, fixed in FIXED_IDENTITIES.items():
        listing.setdefault(fixed.preset, []).append(token)
    return dict(listing)


LISTING = _listing()
