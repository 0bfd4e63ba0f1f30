"""Identity: Rackspace Identity v2.0 (Mimic-compatible) and Keystone v3 on the same state.

``model.py`` holds the state (users, tenants, tokens), ``documents.py`` the JSON shapes,
``presets.py`` the magic values, ``routes.py`` the v2.0 HTTP edge and ``v3.py`` the v3
one. ``install`` wires them into the cloud core.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute

from simulacra.cloud.behaviors import BehaviorRegistry
from simulacra.cloud.control import behavior_routes, register_presets
from simulacra.cloud.core import CloudCore
from simulacra.cloud.http import cloud
from simulacra.cloud.identity import presets, routes, v3
from simulacra.cloud.identity.model import Identity

BEHAVIORS_PATH = "/mimic/v1.1/IdentityControlAPI/behaviors/auth"


def default_region(regions: tuple[str, ...]) -> str:
    """Mimic's users default to DFW; with --regions lacking DFW, the first region."""
    return "DFW" if "DFW" in regions or not regions else regions[0]


def _registry(request: Request) -> BehaviorRegistry:
    return cloud(request).services["identity"].behaviors


def install(core: CloudCore) -> list[BaseRoute]:
    """Register this service's catalog entries, backend and presets; return its routes."""
    identity = Identity(core.clock, default_region(core.catalog.regions))
    core.services["identity"] = identity
    # External APIs added through OS-KSCATALOG join every tenant's catalog. Looked up in
    # ``core.services`` at each use, as every handler does (--shared-cloud tracks it there).
    core.catalog.add_source(
        lambda base_url, tenant: core.services["identity"].external_entries(tenant)
    )
    register_presets("identity", presets.LISTING)
    return [*routes.ROUTES, *v3.ROUTES, *behavior_routes(BEHAVIORS_PATH, _registry, "auth")]
