"""The console's cloud section: the virtual clock, tenants and their resources, behaviors.

``/console/cloud`` shows the clock (with a tick form), the tenants, every registered
behavior (with a remove button) and the Fastly services; ``/console/cloud/tenants/{tenant}``
one tenant's servers, images, load balancers and nodes per region, its behaviors and the
catalog its token sees. The pages read the cloud's backends through their public methods
and write through the calls the control plane's routes make (``control.tick_clock``,
``BehaviorRegistry.remove``): no second copy of the state. Reads never create a tenant's
state (``find_region``, not ``region``). With ``--shared-cloud`` these routes are cloud
requests (``shared.is_cloud_request``), so each runs in the shared state's transaction.

Every list is bounded: tenants, servers, load balancers and Fastly services are paged,
behaviors and snapshots cut at a limit; statuses are computed now, on the cloud's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulacra.clock import Clock, VirtualClock, iso8601
from simulacra.cloud.behaviors import BehaviorRegistry
from simulacra.cloud.compute import catalog_data
from simulacra.cloud.compute.model import ComputeBackend, RegionCompute, Server
from simulacra.cloud.control import tick_clock
from simulacra.cloud.core import CloudCore
from simulacra.cloud.fastly.model import FastlyBackend
from simulacra.cloud.http import cloud
from simulacra.cloud.identity.model import Identity
from simulacra.cloud.identity.routes import catalog as token_catalog
from simulacra.cloud.loadbalancer import CLB
from simulacra.cloud.loadbalancer.model import LoadBalancer, LoadBalancerBackend
from simulacra.console.page import (
    PREFIX,
    back,
    console_page,
    pager,
    paginate,
    parse_page,
    read_form,
    render,
)
from simulacra.errors import DomainError, Invalid, NotFound, shown

PATH = PREFIX + "/cloud"
SHOWN_LIMIT = 200  # behaviors, snapshots, users, catalog endpoints: the first ones shown
TEXT_LIMIT = 400  # characters of a behavior's criteria or parameters shown

# Statuses as the layout's badges show them; any other (BUILD, PENDING-UPDATE...) is "warn".
OK_STATUSES = frozenset({"ACTIVE", "ONLINE", "ENABLED"})
BAD_STATUSES = frozenset({"ERROR", "DELETED", "OFFLINE", "SUSPENDED", "DISABLED"})

# The behavior registries: kind (the form's value) -> what the page calls it.
REGISTRY_LABELS = {
    "auth": "Identity: authentication",
    "server_creation": "Nova: server creation",
    "load_balancer_creation": "CLB: load balancer creation",
}

# Pure helpers ------------------------------------------------------------------------


def badge(status: str) -> str:
    """The badge class of a status: ok, warn or bad."""
    if status in OK_STATUSES:
        return "ok"
    return "bad" if status in BAD_STATUSES else "warn"


def compact_json(value: object) -> str:
    """A behavior's criteria or parameters as one short line of JSON."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 3] + "..."


def clock_view(clock: Clock) -> dict[str, Any]:
    """The clock's now, and where a virtual clock started (a reset puts it back there)."""
    view: dict[str, Any] = {"now": iso8601(clock.seconds()), "virtual": False, "start": None}
    if isinstance(clock, VirtualClock):
        view.update(virtual=True, start=iso8601(clock.start))
    return view


def _identity(core: CloudCore) -> Identity:
    return core.services["identity"]


def _compute(core: CloudCore) -> ComputeBackend:
    return core.services["compute"]


def _loadbalancers(core: CloudCore) -> LoadBalancerBackend:
    return core.services["loadbalancer"]


def _fastly(core: CloudCore) -> FastlyBackend:
    return core.services["fastly"]


def all_tenants(core: CloudCore) -> list[str]:
    """Identity's tenants, then those only the services know (a client may call Nova or CLB
    with any tenant in the URL, never authenticating)."""
    tenants = dict.fromkeys(_identity(core).tenants())
    tenants.update(dict.fromkeys(_compute(core).tenant_ids()))
    tenants.update(dict.fromkeys(_loadbalancers(core).tenant_ids()))
    return list(tenants)


def has_tenant(core: CloudCore, tenant: str) -> bool:
    """Whether any user, server region or load balancer region has ``tenant``."""
    compute, lbs = _compute(core), _loadbalancers(core)
    return _identity(core).has_tenant(tenant) or any(
        compute.find_region(tenant, region) or lbs.find_region(tenant, region)
        for region in core.catalog.regions
    )


def tenant_row(core: CloudCore, tenant: str) -> dict[str, Any]:
    users = _identity(core).users(tenant)
    return {
        "id": tenant,
        "href": tenant_path(tenant),
        "users": [user.username for user in users[:3]],
        "more_users": max(0, len(users) - 3),
    }


def tenant_path(tenant: str) -> str:
    return f"{PATH}/tenants/{quote(tenant, safe='')}"


# Behaviors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BehaviorScope:
    """One registry: its kind, and the tenant and region it holds rules for ("" for
    Identity's, which holds them for every tenant)."""

    kind: str
    tenant: str
    region: str
    registry: BehaviorRegistry


def behavior_scopes(core: CloudCore, tenant: str | None = None) -> list[BehaviorScope]:
    """Every registry holding rules (only ``tenant``'s creation registries, if given)."""
    scopes: list[BehaviorScope] = []
    if tenant is None:
        scopes.append(BehaviorScope("auth", "", "", _identity(core).behaviors))
    for kind, regions in (
        ("server_creation", _compute(core).all_regions()),
        ("load_balancer_creation", _loadbalancers(core).all_regions()),
    ):
        for regional in regions:
            if tenant is None or regional.tenant_id == tenant:
                scopes.append(
                    BehaviorScope(kind, regional.tenant_id, regional.region, regional.registry)
                )
    return [scope for scope in scopes if scope.registry.has_rules]


def behavior_rows(scopes: list[BehaviorScope]) -> tuple[list[dict[str, Any]], int]:
    """The first ``SHOWN_LIMIT`` rules of ``scopes``, and how many there are in all."""
    rows: list[dict[str, Any]] = []
    total = 0
    for scope in scopes:
        rules = scope.registry.list()
        total += len(rules)
        for rule in rules[: max(0, SHOWN_LIMIT - len(rows))]:
            rows.append(
                {
                    "kind": scope.kind,
                    "label": REGISTRY_LABELS[scope.kind],
                    "tenant": scope.tenant,
                    "tenant_href": tenant_path(scope.tenant) if scope.tenant else "",
                    "region": scope.region,
                    "id": rule["id"],
                    "name": rule["name"],
                    "criteria": compact_json(rule["criteria"]),
                    "parameters": compact_json(rule["parameters"]),
                }
            )
    return rows, total


def registry_of(core: CloudCore, kind: str, tenant: str, region: str) -> BehaviorRegistry:
    """The registry a remove form names; NotFound where that tenant and region has none."""
    if kind == "auth":
        return _identity(core).behaviors
    regional: RegionCompute | Any
    if kind == "server_creation":
        regional = _compute(core).find_region(tenant, region)
    elif kind == "load_balancer_creation":
        regional = _loadbalancers(core).find_region(tenant, region)
    else:
        raise Invalid(
            f"unknown behavior registry {shown(kind)}; known: {', '.join(REGISTRY_LABELS)}"
        )
    if regional is None:
        raise NotFound(f"tenant {shown(tenant)} has no {kind} behaviors in region {shown(region)}")
    return regional.registry


# A tenant's resources ----------------------------------------------------------------


def server_row(server: Server, now: float, snapshots: dict[str, str]) -> dict[str, Any]:
    flavor = catalog_data.FLAVORS_BY_ID.get(server.flavor_ref)
    image = catalog_data.IMAGES_BY_ID.get(server.image_ref)
    return {
        "name": server.name,
        "id": server.id,
        "status": server.status,
        "badge": badge(server.status),
        "progress": server.progress(now),
        "created": iso8601(server.created),
        "updated": iso8601(server.updated),
        "flavor": server.flavor_ref,
        "flavor_name": flavor.name if flavor is not None else "",
        "image": server.image_ref or "(boot volume)",
        "image_name": image.name if image is not None else snapshots.get(server.image_ref, ""),
    }


def load_balancer_row(lb: LoadBalancer) -> dict[str, Any]:
    return {
        "name": lb.name,
        "id": lb.id,
        "status": lb.status,
        "badge": badge(lb.status),
        "protocol": lb.protocol,
        "port": lb.port,
        "algorithm": lb.algorithm,
        "created": iso8601(lb.created),
        "addresses": [vip.address for vip in lb.virtual_ips],
        "nodes": [
            {
                "id": node.id,
                "address": node.address,
                "port": node.port,
                "condition": node.condition,
                "condition_badge": badge(node.condition),
                "type": node.type,
                "weight": node.weight,
                "status": node.status,
                "badge": badge(node.status),
            }
            for node in lb.nodes.values()  # at most NODE_LIMIT (25)
        ],
    }


def catalog_rows(entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A serviceCatalog flattened to one row per service and region."""
    return [
        {
            "name": entry["name"],
            "type": entry["type"],
            "region": endpoint.get("region", ""),
            "url": endpoint.get("publicURL", ""),
        }
        for entry in entries
        for endpoint in entry["endpoints"]
    ][:SHOWN_LIMIT]


def fastly_rows(core: CloudCore) -> list[dict[str, Any]]:
    """Every Fastly service, by customer (Fastly's state is per API token, not per tenant)."""
    rows = []
    for customer in _fastly(core).list_customers():
        for service in customer.services.values():
            active = service.active_version
            rows.append(
                {
                    "customer": customer.id,
                    "name": service.name,
                    "id": service.id,
                    "type": service.type,
                    "versions": len(service.versions),
                    "latest": service.latest_version.number,
                    "active": active.number if active is not None else None,
                    "updated": iso8601(service.updated),
                }
            )
    return rows


# The edge ----------------------------------------------------------------------------


@console_page
async def overview(request: Request) -> Response:
    """The clock, the tenants, every registered behavior and the Fastly services."""
    core = cloud(request)
    query = request.query_params
    tenants = paginate(all_tenants(core), parse_page(query.get("page")))
    behaviors, behavior_total = behavior_rows(behavior_scopes(core))
    fastly = paginate(fastly_rows(core), parse_page(query.get("fastly_page")))
    return render(
        request,
        "cloud.html",
        title="Cloud",
        clock=clock_view(core.clock),
        tenants=[tenant_row(core, tenant) for tenant in tenants.items],
        tenant_pager=pager(request, tenants, "page", "tenants"),
        behaviors=behaviors,
        behavior_total=behavior_total,
        fastly=fastly.items,
        fastly_pager=pager(request, fastly, "fastly_page", "services"),
        back_to="overview",
    )


@console_page
async def tenant_page(request: Request) -> Response:
    """One tenant: servers, images, load balancers in a region; behaviors; its token's catalog.

    Also its users; ``region`` picks the region (the first one it has used by default)."""
    core = cloud(request)
    tenant = request.path_params["tenant"]
    if not has_tenant(core, tenant):
        raise NotFound(f"no tenant {shown(tenant)}: no user, server or load balancer has it")
    regions = core.catalog.regions
    compute, lbs = _compute(core), _loadbalancers(core)
    region = request.query_params.get("region")
    if region is None:  # the first region the tenant has used
        used = (r for r in regions if compute.find_region(tenant, r) or lbs.find_region(tenant, r))
        region = next(used, regions[0] if regions else "")
    elif region not in regions:
        raise Invalid(f"unknown region {shown(region)}; this server's: {', '.join(regions)}")
    now = core.clock.seconds()

    regional = compute.find_region(tenant, region)
    snapshots = regional.list_snapshots() if regional is not None else []
    snapshot_names = {snapshot.id: snapshot.name for snapshot in snapshots}
    servers = paginate(
        regional.list_servers().servers if regional is not None else [],
        parse_page(request.query_params.get("page")),
    )
    public_images = catalog_data.images_in(region)

    lb_region = lbs.find_region(tenant, region)
    balancers = paginate(
        lb_region.list_load_balancers() if lb_region is not None else [],
        parse_page(request.query_params.get("lb_page")),
    )
    behaviors, behavior_total = behavior_rows(behavior_scopes(core, tenant))
    users = _identity(core).users(tenant)
    return render(
        request,
        "cloud_tenant.html",
        title=f"Tenant {tenant}",
        tenant=tenant,
        tenant_href=tenant_path(tenant),
        clock=clock_view(core.clock),
        region=region,
        regions=regions,
        users=[{"name": u.username, "id": u.id} for u in users[:SHOWN_LIMIT]],
        user_total=len(users),
        servers=[server_row(server, now, snapshot_names) for server in servers.items],
        server_pager=pager(request, servers, "page", "servers"),
        snapshots=[
            {
                "name": s.name,
                "id": s.id,
                "server": s.server_id,
                "created": iso8601(s.created),
            }
            for s in snapshots[:SHOWN_LIMIT]
        ],
        snapshot_total=len(snapshots),
        public_images=[image.name for image in public_images],
        clb_served=core.catalog.serves(CLB, region),
        balancers=[load_balancer_row(lb) for lb in balancers.items],
        lb_pager=pager(request, balancers, "lb_page", "load balancers"),
        behaviors=behaviors,
        behavior_total=behavior_total,
        catalog=catalog_rows(token_catalog(request, tenant)),
        back_to="tenant",
    )


@console_page
async def tick(request: Request) -> Response:
    """The tick form: the clock advanced as ``POST /mimic/v1.1/tick`` advances it."""
    form = await read_form(request)
    amount = form.get("amount", "").strip()
    try:
        seconds, now = tick_clock(cloud(request), amount)
    except DomainError as exc:
        return back(PATH, error=f"The clock did not move: {exc.message}")
    return back(PATH, notice=f"The clock advanced {seconds:g} s; it is now {iso8601(now)}.")


@console_page
async def remove_behavior(request: Request) -> Response:
    """A remove button: the rule removed as ``DELETE .../behaviors/.../{id}`` removes it."""
    form = await read_form(request)
    kind, tenant, region = form.get("kind", ""), form.get("tenant", ""), form.get("region", "")
    rule_id = form.get("id", "")
    target = tenant_path(tenant) if form.get("back") == "tenant" and tenant else PATH
    try:
        registry_of(cloud(request), kind, tenant, region).remove(rule_id)
    except DomainError as exc:
        return back(target, error=f"Not removed: {exc.message}")
    label = REGISTRY_LABELS[kind]
    return back(target, notice=f"Removed the {label} behavior {rule_id}.")


ROUTES: list[BaseRoute] = [
    Route(PATH, overview, methods=["GET"]),
    Route(PATH + "/tick", tick, methods=["POST"]),
    Route(PATH + "/behaviors/remove", remove_behavior, methods=["POST"]),
    Route(PATH + "/tenants/{tenant:path}", tenant_page, methods=["GET"]),
]
