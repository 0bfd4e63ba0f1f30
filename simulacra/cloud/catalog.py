"""The service registry: which cloud services are mocked, where, and their catalog entries.

Endpoint URLs keep Mimic's layout, ``<base>/mimicking/<Key>-<6 hex>/<REGION>/<prefix>/<tenant>``,
so clients that parse them keep working; the 6 hex digits are derived from the key,
not drawn at random, so URLs stay the same across restarts.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REGIONS = ("ORD", "DFW", "IAD")

# (base_url, tenant) -> serviceCatalog entries known only at run time, such as the
# external APIs Identity's OS-KSCATALOG routes add.
EntrySource = Callable[[str, str], list[dict[str, Any]]]


@functools.cache
def _service_id(key: str) -> str:
    """``NovaApi-8ebf5f``: every link a handler builds has one (cached: it hashes)."""
    return f"{key}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class ServiceSpec:
    key: str  # Mimic's plugin class name, e.g. "NovaApi"
    name: str  # catalog name, e.g. "cloudServersOpenStack"
    type: str  # catalog type, e.g. "compute"
    prefix: str = "v2"
    # None: every configured region; a tuple pins the service (Mimic's CLB is ORD only).
    regions: tuple[str, ...] | None = None

    @property
    def service_id(self) -> str:
        return _service_id(self.key)

    @property
    def mount_path(self) -> str:
        """The Starlette mount for this service's per-tenant routes."""
        return f"/mimicking/{self.service_id}/{{region}}/{self.prefix}/{{tenant}}"


@dataclass
class Catalog:
    regions: tuple[str, ...] = DEFAULT_REGIONS
    specs: list[ServiceSpec] = field(default_factory=list)
    sources: list[EntrySource] = field(default_factory=list)

    def register(self, spec: ServiceSpec) -> ServiceSpec:
        self.specs.append(spec)
        return spec

    def add_source(self, source: EntrySource) -> None:
        """Append ``source``'s entries, after the registered services', to every catalog."""
        self.sources.append(source)

    def regions_of(self, spec: ServiceSpec) -> tuple[str, ...]:
        return spec.regions if spec.regions is not None else self.regions

    def serves(self, spec: ServiceSpec, region: str) -> bool:
        return region in self.regions_of(spec)

    def url(self, base_url: str, spec: ServiceSpec, region: str, tenant: str) -> str:
        base = base_url.rstrip("/")
        return f"{base}/mimicking/{spec.service_id}/{region}/{spec.prefix}/{tenant}"

    def entries(self, base_url: str, tenant: str) -> list[dict[str, Any]]:
        """The ``serviceCatalog`` of an access document for ``tenant``."""
        entries = [
            {
                "name": spec.name,
                "type": spec.type,
                "endpoints": [
                    {
                        "region": region,
                        "tenantId": tenant,
                        "publicURL": self.url(base_url, spec, region, tenant),
                        "internalURL": self.url(base_url, spec, region, tenant),
                    }
                    for region in self.regions_of(spec)
                ],
            }
            for spec in self.specs
        ]
        for source in self.sources:
            entries += source(base_url, tenant)
        return entries

    def v3_entries(self, base_url: str, tenant: str) -> list[dict[str, Any]]:
        """The Identity v3 ``catalog`` for ``tenant``: the same services and URLs as v2.0's."""
        return [v3_entry(entry) for entry in self.entries(base_url, tenant)]


# (v3 interface, v2.0 key): v2.0 puts every interface of a region in one endpoint object.
V3_INTERFACES = (("public", "publicURL"), ("internal", "internalURL"), ("admin", "adminURL"))


def stable_id(*parts: str) -> str:
    """A Keystone-style 32-hex id derived from ``parts``: the same on every request and start."""
    return uuid.uuid5(uuid.NAMESPACE_URL, " ".join(parts)).hex


def v3_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A v2.0 ``serviceCatalog`` entry in v3's shape: one endpoint per region and interface."""
    endpoints = [
        {
            "id": stable_id(entry["name"], interface, url),
            "interface": interface,
            "region": endpoint["region"],
            "region_id": endpoint["region"],
            "url": url,
        }
        for endpoint in entry["endpoints"]
        for interface, key in V3_INTERFACES
        if (url := endpoint.get(key))
    ]
    return {
        "id": stable_id(entry["name"], entry["type"]),
        "name": entry["name"],
        "type": entry["type"],
        "endpoints": endpoints,
    }
