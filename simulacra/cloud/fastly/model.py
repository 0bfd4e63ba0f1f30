"""The Fastly model: customers (one per API token), their services, versions and configuration.

Pure: parameter dicts in (form fields, query or JSON, already merged by the edge), dataclasses
out, ``FastlyError`` raised, the clock injected. State is per customer, and a customer is
picked by the ``Fastly-Key`` token, so two tokens never see each other's services (Mimic kept
one dict for every caller). Versions really increment: a new version is empty, a clone copies
its source's configuration, and activating one deactivates the others.
"""

from __future__ import annotations

import copy
import ipaddress
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulacra.clock import Clock
from simulacra.errors import DomainError, shown

_ID_CHARS = string.ascii_letters + string.digits
ID_LENGTH = 22  # Fastly's ids are 22 alphanumeric characters

Params = dict[str, Any]


class FastlyError(DomainError):
    """A Fastly error: ``{"msg", "detail"}`` with an HTTP status."""

    def __init__(self, status: int, msg: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.msg = msg
        self.detail = detail


def not_found(detail: str) -> FastlyError:
    return FastlyError(404, "Record not found", detail)


def bad_request(detail: str) -> FastlyError:
    return FastlyError(400, "Bad request", detail)


# Field parsers: form fields arrive as text, JSON bodies as typed values; accept both. ----


def text(value: object, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise bad_request(f"'{key}' must be a string")


def optional_text(value: object, key: str) -> str | None:
    return None if value is None else text(value, key)


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def integer(value: object, key: str) -> int:
    # int() refuses over 4,300 digits (a 500); 20 hold any 64-bit integer
    if isinstance(value, str) and _digits(value.strip().removeprefix("-")) and len(value) <= 20:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise bad_request(f"'{key}' must be an integer, got {shown(value)}")


def optional_integer(value: object, key: str) -> int | None:
    return None if value in (None, "") else integer(value, key)


def boolean(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    raise bad_request(f"'{key}' must be true or false, got {shown(value)}")


def optional_boolean(value: object, key: str) -> bool | None:
    return None if value in (None, "") else boolean(value, key)


def number_text(value: object, key: str) -> str:
    """Fastly shows TTLs and priorities as strings of digits."""
    return str(integer(value, key))


def choice(*allowed: str | None) -> Callable[[object, str], str | None]:
    def parse(value: object, key: str) -> str | None:
        if value in (None, "") and None in allowed:
            return None
        if value not in allowed:
            names = ", ".join(str(a) for a in allowed if a is not None)
            raise bad_request(f"'{key}' must be one of {names}, got {shown(value)}")
        return value

    return parse


@dataclass(frozen=True)
class Field:
    parse: Callable[[object, str], object]
    default: object = None
    required: bool = False


@dataclass(frozen=True)
class Kind:
    """One kind of versioned configuration object: its route segment and fields."""

    segment: str  # "domain", "backend", "cache_settings" ... in the URL
    label: str  # "Domain", "Backend" ... in messages
    fields: dict[str, Field]
    # Conditions, cache settings and response objects show the version as a string.
    version_as_text: bool = False


def _f(parse: Callable[[object, str], object], default: object = None) -> Field:
    return Field(parse, default)


def _required(parse: Callable[[object, str], object]) -> Field:
    return Field(parse, required=True)


DOMAIN = Kind("domain", "Domain", {"name": _required(text), "comment": _f(text, "")})

BACKEND = Kind(
    "backend",
    "Backend",
    {
        "name": _required(text),
        "address": _required(text),
        "port": _f(integer, 80),
        "use_ssl": _f(boolean, False),
        "comment": _f(text, ""),
        "weight": _f(integer, 100),
        "max_conn": _f(integer, 200),
        "connect_timeout": _f(integer, 1000),
        "first_byte_timeout": _f(integer, 15000),
        "between_bytes_timeout": _f(integer, 10000),
        "error_threshold": _f(integer, 0),
        "auto_loadbalance": _f(boolean, False),
        "healthcheck": _f(optional_text),
        "hostname": _f(optional_text),
        "ipv4": _f(optional_text),
        "ipv6": _f(optional_text),
        "override_host": _f(optional_text),
        "request_condition": _f(text, ""),
        "shield": _f(optional_text),
        "prefer_ipv6": _f(boolean, False),
        "keepalive_time": _f(optional_integer),
        "max_lifetime": _f(optional_integer),
        "max_use": _f(optional_integer),
        "share_key": _f(optional_text),
        "client_cert": _f(optional_text),
        "ssl_ca_cert": _f(optional_text),
        "ssl_cert_hostname": _f(optional_text),
        "ssl_check_cert": _f(optional_boolean, True),
        "ssl_ciphers": _f(optional_text),
        "ssl_client_cert": _f(optional_text),
        "ssl_client_key": _f(optional_text),
        "ssl_hostname": _f(optional_text),
        "ssl_sni_hostname": _f(optional_text),
        "min_tls_version": _f(optional_text),
        "max_tls_version": _f(optional_text),
        "tcp_keepalive_enable": _f(optional_boolean),
        "tcp_keepalive_interval": _f(optional_integer),
        "tcp_keepalive_probes": _f(optional_integer),
        "tcp_keepalive_time": _f(optional_integer),
    },
)

CONDITION = Kind(
    "condition",
    "Condition",
    {
        "name": _required(text),
        "statement": _required(text),
        "type": _f(choice("REQUEST", "CACHE", "RESPONSE", "PREFETCH"), "REQUEST"),
        "priority": _f(number_text, "100"),
        "comment": _f(text, ""),
    },
    version_as_text=True,
)

CACHE_SETTINGS = Kind(
    "cache_settings",
    "Cache setting",
    {
        "name": _required(text),
        "action": _f(choice(None, "pass", "cache", "restart")),
        "cache_condition": _f(optional_text),
        "stale_ttl": _f(number_text, "0"),
        "ttl": _f(number_text, "0"),
    },
    version_as_text=True,
)

RESPONSE_OBJECT = Kind(
    "response_object",
    "Response object",
    {
        "name": _required(text),
        "status": _f(number_text, "200"),
        "response": _f(text, "Ok"),
        "content": _f(text, ""),
        # Mimic's default, kept for the clients written against it.
        "content_type": _f(optional_text, "text/plain"),
        "request_condition": _f(optional_text),
        "cache_condition": _f(optional_text),
    },
    version_as_text=True,
)

KINDS = (DOMAIN, BACKEND, CONDITION, CACHE_SETTINGS, RESPONSE_OBJECT)
KINDS_BY_SEGMENT = {kind.segment: kind for kind in KINDS}

SETTINGS: dict[str, Field] = {
    "general.default_host": _f(text, ""),
    "general.default_ttl": _f(integer, 3600),
    "general.stale_if_error": _f(boolean, False),
    "general.stale_if_error_ttl": _f(integer, 43200),
}


def _parse_fields(fields: dict[str, Field], params: Params, *, partial: bool) -> dict[str, Any]:
    """Known fields of ``params``, parsed; defaults and required checks unless ``partial``."""
    values: dict[str, Any] = {}
    for key, spec in fields.items():
        if key in params:
            values[key] = spec.parse(params[key], key)
            if spec.required and values[key] in ("", None):
                raise bad_request(f"'{key}' must not be blank")
        elif partial:
            continue
        elif spec.required:
            raise bad_request(f"'{key}' is required")
        else:
            values[key] = spec.default
    return values


# State -----------------------------------------------------------------------------


@dataclass
class Item:
    """One configuration object of a version (a domain, a backend...)."""

    values: dict[str, Any]
    created: float
    updated: float

    @property
    def name(self) -> str:
        return self.values["name"]


@dataclass
class Version:
    number: int
    service_id: str
    created: float
    updated: float
    comment: str = ""
    active: bool = False
    locked: bool = False
    deployed: bool = False
    staging: bool = False
    testing: bool = False
    items: dict[str, dict[str, Item]] = field(
        default_factory=lambda: {kind.segment: {} for kind in KINDS}
    )
    settings: dict[str, Any] = field(
        default_factory=lambda: {key: spec.default for key, spec in SETTINGS.items()}
    )


@dataclass
class Service:
    id: str
    name: str
    customer_id: str
    comment: str
    publish_key: str
    type: str
    created: float
    updated: float
    versions: dict[int, Version] = field(default_factory=dict)

    @property
    def active_version(self) -> Version | None:
        return next((v for v in self.versions.values() if v.active), None)

    @property
    def latest_version(self) -> Version:
        return self.versions[max(self.versions)]


@dataclass
class Customer:
    id: str
    owner_id: str
    name: str
    created: float
    services: dict[str, Service] = field(default_factory=dict)


class FastlyBackend:
    """Every customer's Fastly state, in memory; ``reset()`` forgets it all."""

    # --shared-cloud stores each customer's state as a row of its own (simulacra/cloud/shared.py).
    SHARED_PARTS = ("customers",)

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.customers: dict[str, Customer] = {}  # by API token
        self._ids: set[str] = set()

    def reset(self) -> None:
        self.customers.clear()
        self._ids.clear()

    def _now(self) -> float:
        return self.clock.seconds()

    def new_id(self) -> str:
        """A fresh Fastly-style id, never handed out before by this backend."""
        while True:
            value = "".join(self.rng.choice(_ID_CHARS) for _ in range(ID_LENGTH))
            if value not in self._ids:
                self._ids.add(value)
                return value

    def customer(self, token: str) -> Customer:
        """The customer an API token belongs to, created on first use.

        Requests without a token (Mimic's clients sent none) share one anonymous customer.
        """
        customer = self.customers.get(token)
        if customer is None:
            customer = Customer(self.new_id(), self.new_id(), "Poppy - Test", self._now())
            self.customers[token] = customer
        return customer

    def list_customers(self) -> list[Customer]:
        """Every customer, in order of first use (the console's read; creates none)."""
        return list(self.customers.values())

    def customer_by_id(self, token: str, customer_id: str) -> Customer:
        customer = self.customer(token)
        if customer.id != customer_id:
            raise not_found(f"Cannot find customer {shown(customer_id)}")
        return customer

    # Services ------------------------------------------------------------------------

    def service(self, token: str, service_id: str) -> Service:
        service = self.customer(token).services.get(service_id)
        if service is None:
            raise not_found(f"Cannot find service {shown(service_id)}")
        return service

    def create_service(self, token: str, params: Params) -> Service:
        customer = self.customer(token)
        name = text(params.get("name", ""), "name")
        if not name.strip():
            raise bad_request("'name' is required")
        # Any customer_id is taken and shown on the service, as Mimic took it (its README's
        # clients pass their own); the service still belongs to the token's customer.
        given = params.get("customer_id")
        customer_id = customer.id if given in (None, "") else text(given, "customer_id")
        kind = choice("vcl", "wasm")(params.get("type", "vcl"), "type")
        now = self._now()
        service = Service(
            id=self.new_id(),
            name=name,
            customer_id=customer_id,
            comment=text(params.get("comment", ""), "comment"),
            publish_key=self.new_id().lower(),
            type=str(kind),
            created=now,
            updated=now,
        )
        service.versions[1] = Version(1, service.id, now, now)
        customer.services[service.id] = service
        return service

    def list_services(self, token: str) -> list[Service]:
        return list(self.customer(token).services.values())

    def search_service(self, token: str, name: str | None) -> Service:
        if not name:
            raise bad_request("'name' is required")
        for service in self.customer(token).services.values():
            if service.name == name:
                return service
        raise not_found(f"Cannot find service {shown(name)}")

    def update_service(self, token: str, service_id: str, params: Params) -> Service:
        service = self.service(token, service_id)
        if "name" in params:
            name = text(params["name"], "name")
            if not name.strip():
                raise bad_request("'name' must not be blank")
            service.name = name
        if "comment" in params:
            service.comment = text(params["comment"], "comment")
        service.updated = self._now()
        return service

    def delete_service(self, token: str, service_id: str) -> None:
        self.service(token, service_id)
        del self.customer(token).services[service_id]

    # Versions ------------------------------------------------------------------------

    def version(self, token: str, service_id: str, number: str) -> Version:
        service = self.service(token, service_id)
        # No version number has 20 digits; int() refused 5,000 (a 500)
        known = _digits(number) and len(number) < 20
        version = service.versions.get(int(number)) if known else None
        if version is None:
            raise not_found(
                f"Cannot find version {shown(number)[1:-1]} of service {shown(service_id)}"
            )
        return version

    def create_version(self, token: str, service_id: str) -> Version:
        """A new, empty version numbered after the latest."""
        service = self.service(token, service_id)
        now = self._now()
        number = max(service.versions) + 1
        version = service.versions[number] = Version(number, service.id, now, now)
        service.updated = now
        return version

    def clone_version(self, token: str, service_id: str, number: str) -> Version:
        """A new version with a copy of ``number``'s configuration, unlocked and inactive."""
        source = self.version(token, service_id, number)
        service = self.service(token, service_id)
        now = self._now()
        new = max(service.versions) + 1
        clone = Version(new, service.id, now, now, comment=source.comment)
        clone.items = copy.deepcopy(source.items)
        clone.settings = dict(source.settings)
        service.versions[new] = clone
        service.updated = now
        return clone

    def list_versions(self, token: str, service_id: str) -> list[Version]:
        return list(self.service(token, service_id).versions.values())

    def update_version(self, token: str, service_id: str, number: str, params: Params) -> Version:
        version = self.version(token, service_id, number)
        if "comment" in params:
            version.comment = text(params["comment"], "comment")
            version.updated = self._now()
        return version

    def activate(self, token: str, service_id: str, number: str) -> Version:
        """Activate one version (locking it, as Fastly does); the others go inactive."""
        version = self.version(token, service_id, number)
        now = self._now()
        for other in self.service(token, service_id).versions.values():
            if other.active and other is not version:
                other.active, other.updated = False, now
        version.active = version.locked = True
        version.updated = now
        return version

    def deactivate(self, token: str, service_id: str, number: str) -> Version:
        version = self.version(token, service_id, number)
        version.active = False
        version.updated = self._now()
        return version

    def lock(self, token: str, service_id: str, number: str) -> Version:
        version = self.version(token, service_id, number)
        version.locked = True
        version.updated = self._now()
        return version

    # Configuration objects ---------------------------------------------------------

    def _items(self, kind: Kind, version: Version) -> dict[str, Item]:
        return version.items[kind.segment]

    def create_item(
        self, token: str, service_id: str, number: str, kind: Kind, params: Params
    ) -> tuple[Version, Item]:
        version = self.version(token, service_id, number)
        values = _parse_fields(kind.fields, params, partial=False)
        if kind is BACKEND:
            _backend_defaults(values)
        items = self._items(kind, version)
        if values["name"] in items:
            detail = f"Duplicate {kind.segment}: '{values['name']}'"
            raise FastlyError(409, "Duplicate record", detail)
        now = self._now()
        item = items[values["name"]] = Item(values, now, now)
        version.updated = now
        return version, item

    def list_items(
        self, token: str, service_id: str, number: str, kind: Kind
    ) -> tuple[Version, list[Item]]:
        version = self.version(token, service_id, number)
        return version, list(self._items(kind, version).values())

    def get_item(
        self, token: str, service_id: str, number: str, kind: Kind, name: str
    ) -> tuple[Version, Item]:
        version = self.version(token, service_id, number)
        item = self._items(kind, version).get(name)
        if item is None:
            raise not_found(f"Cannot find {kind.label.lower()} {shown(name)}")
        return version, item

    def update_item(
        self, token: str, service_id: str, number: str, kind: Kind, name: str, params: Params
    ) -> tuple[Version, Item]:
        version, item = self.get_item(token, service_id, number, kind, name)
        changes = _parse_fields(kind.fields, params, partial=True)
        items = self._items(kind, version)
        new_name = changes.get("name", name)
        if new_name != name and new_name in items:
            raise FastlyError(
                409, "Duplicate record", f"Duplicate {kind.segment}: {shown(new_name)}"
            )
        item.values.update(changes)
        item.updated = version.updated = self._now()
        if new_name != name:
            # Keep the insertion order of the others; the renamed one moves to the end.
            del items[name]
            items[new_name] = item
        return version, item

    def delete_item(self, token: str, service_id: str, number: str, kind: Kind, name: str) -> None:
        version, item = self.get_item(token, service_id, number, kind, name)
        del self._items(kind, version)[item.name]
        version.updated = self._now()

    # Settings ------------------------------------------------------------------------

    def settings(self, token: str, service_id: str, number: str) -> Version:
        return self.version(token, service_id, number)

    def update_settings(self, token: str, service_id: str, number: str, params: Params) -> Version:
        version = self.version(token, service_id, number)
        version.settings.update(_parse_fields(SETTINGS, params, partial=True))
        version.updated = self._now()
        return version


def _backend_defaults(values: dict[str, Any]) -> None:
    """Fastly fills hostname from the address, and ipv4/ipv6 when the address is one."""
    address = values["address"]
    if values.get("hostname") is None:
        values["hostname"] = address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return
    key = "ipv4" if ip.version == 4 else "ipv6"
    if values.get(key) is None:
        values[key] = address
