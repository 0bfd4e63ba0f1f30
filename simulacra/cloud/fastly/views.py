"""Fastly's JSON shapes for the model's values: the shapes the fastly v15 SDK validates.

Where Mimic's canned bodies disagreed with Fastly (``"active": null``, ``"locked": "0"``,
numbers as strings, ``{"service_details", "service_name"}`` for a search), these follow
Fastly's API reference, so typed clients deserialize them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from simulacra.cloud.fastly.model import (
    BACKEND,
    CACHE_SETTINGS,
    CONDITION,
    DOMAIN,
    RESPONSE_OBJECT,
    Customer,
    Item,
    Kind,
    Service,
    Version,
)


def timestamp(seconds: float) -> str:
    """Fastly's time format, ``2024-05-14T09:30:00Z``, on the virtual clock."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _times(created: float, updated: float) -> dict[str, Any]:
    return {
        "created_at": timestamp(created),
        "updated_at": timestamp(updated),
        "deleted_at": None,
    }


def customer_view(customer: Customer) -> dict[str, Any]:
    return {
        "billing_contact_id": None,
        "billing_network_type": "public",
        "billing_ref": None,
        "can_configure_wordpress": False,
        "can_reset_passwords": True,
        "can_upload_vcl": True,
        "force_2fa": False,
        "force_sso": False,
        "has_account_panel": True,
        "has_improved_events": True,
        "has_improved_ssl_config": False,
        "has_openstack_logging": False,
        "has_pci": False,
        "has_pci_passwords": False,
        "ip_whitelist": "0.0.0.0/0",
        "legal_contact_id": None,
        "name": customer.name,
        "owner_id": customer.owner_id,
        "phone_number": "770-123-1749",
        "postal_address": None,
        "pricing_plan": "developer",
        "pricing_plan_id": "developer",
        "security_contact_id": None,
        "technical_contact_id": None,
        **_times(customer.created, customer.created),
        "id": customer.id,
    }


def version_view(version: Version) -> dict[str, Any]:
    return {
        "active": version.active,
        "comment": version.comment,
        "deployed": version.deployed,
        "locked": version.locked,
        "number": version.number,
        "staging": version.staging,
        "testing": version.testing,
        **_times(version.created, version.updated),
        "service_id": version.service_id,
        "environments": [],
    }


def version_created(version: Version) -> dict[str, Any]:
    """``POST .../version``: Fastly answers the new number and the service id."""
    return {"service_id": version.service_id, "number": version.number}


def item_view(kind: Kind, version: Version, item: Item) -> dict[str, Any]:
    view: dict[str, Any] = dict(item.values)
    view["service_id"] = version.service_id
    view["version"] = str(version.number) if kind.version_as_text else version.number
    view.update(_times(item.created, item.updated))
    if kind is BACKEND:
        view["locked"] = version.locked
    return view


def items_view(kind: Kind, version: Version, items: list[Item]) -> list[dict[str, Any]]:
    return [item_view(kind, version, item) for item in items]


def domain_check(version: Version, item: Item) -> list[Any]:
    """``[domain, cname, ok]``: nothing can point a CNAME at a mock, so never ok."""
    return [item_view(DOMAIN, version, item), None, False]


def settings_view(version: Version) -> dict[str, Any]:
    return {**version.settings, "service_id": version.service_id, "version": version.number}


def service_view(service: Service) -> dict[str, Any]:
    return {
        "comment": service.comment,
        "name": service.name,
        "customer_id": service.customer_id,
        "type": service.type,
        "id": service.id,
        "publish_key": service.publish_key,
        "paused": False,
        "versions": [version_view(v) for v in service.versions.values()],
        "environments": [],
        **_times(service.created, service.updated),
    }


def service_list_entry(service: Service) -> dict[str, Any]:
    """An entry of ``GET /service``: ``version`` is the active version, else the latest."""
    view = service_view(service)
    del view["publish_key"], view["paused"]
    current = service.active_version or service.latest_version
    view["version"] = current.number
    return view


def version_detail(version: Version) -> dict[str, Any]:
    """A version with all its configuration (``GET /service/{id}/details``)."""

    def listed(kind: Kind) -> list[dict[str, Any]]:
        return items_view(kind, version, list(version.items[kind.segment].values()))

    return {
        **version_view(version),
        "backends": listed(BACKEND),
        "cache_settings": listed(CACHE_SETTINGS),
        "conditions": listed(CONDITION),
        "directors": [],
        "domains": listed(DOMAIN),
        "gzips": [],
        "headers": [],
        "healthchecks": [],
        "request_settings": [],
        "response_objects": listed(RESPONSE_OBJECT),
        "settings": dict(version.settings),
        "snippets": [],
        "vcls": [],
        "wordpress": [],
    }


def service_detail(service: Service, version: Version) -> dict[str, Any]:
    active = service.active_version
    return {
        **service_view(service),
        "active_version": None if active is None else version_detail(active),
        "version": version_detail(version),
    }
