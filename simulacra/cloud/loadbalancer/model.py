"""The CLB model: load balancers per tenant and region, their nodes and their state machine.

Pure: decoded JSON bodies and path values in, dataclasses out, ``ClbError`` (or another
``simulacra.errors`` error) raised, the clock injected. A load balancer records the
transitions it has due (``BUILD`` now, ``ACTIVE`` at t+30) and applies them whenever it is
read, so one tick of the clock moves every due transition at once, as for servers.

Statuses follow Mimic: the timed ones are ``BUILD``, ``PENDING-UPDATE``, ``PENDING-DELETE``
and ``DELETED`` (hyphenated, as Mimic showed them), while the control plane sets CLB's
underscored ``PENDING_UPDATE``/``PENDING_DELETE`` verbatim. Anything but ``ACTIVE`` makes a
load balancer immutable.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from simulacra.clock import Clock
from simulacra.cloud.behaviors import BehaviorRegistry, Outcome
from simulacra.cloud.loadbalancer.faults import (
    CREATION,
    ClbError,
    Presets,
    compile_presets,
    fault_of,
    immutable_error,
    schema_error,
    validation_error,
)
from simulacra.errors import shown

NODE_LIMIT = 25  # nodes per load balancer (Rackspace's limit, and Mimic's)
BATCH_DELETE_LIMIT = 10  # node ids per bulk delete
DELETED_SECONDS = 3600.0  # how long a DELETED load balancer stays visible (Mimic's value)
GONE = "GONE"  # internal: the load balancer is forgotten, so every id lookup is a 404

# CLB's protocols and the port each one defaults to (None: the port must be given, or 80).
PROTOCOLS: dict[str, int | None] = {
    "DNS_TCP": 53,
    "DNS_UDP": 53,
    "FTP": 21,
    "HTTP": 80,
    "HTTPS": 443,
    "IMAPS": 993,
    "IMAPv2": 143,
    "IMAPv3": 220,
    "IMAPv4": 143,
    "LDAP": 389,
    "LDAPS": 636,
    "MYSQL": 3306,
    "POP3": 110,
    "POP3S": 995,
    "SFTP": 22,
    "SMTP": 25,
    "TCP": None,
    "TCP_CLIENT_FIRST": None,
    "UDP": None,
    "UDP_STREAM": None,
}
_PROTOCOL_NAMES = tuple(PROTOCOLS)
ALGORITHMS = (
    "LEAST_CONNECTIONS",
    "RANDOM",
    "ROUND_ROBIN",
    "WEIGHTED_LEAST_CONNECTIONS",
    "WEIGHTED_ROUND_ROBIN",
)
NODE_CONDITIONS = ("ENABLED", "DISABLED", "DRAINING")
NODE_TYPES = ("PRIMARY", "SECONDARY")
NODE_STATUSES = ("ONLINE", "OFFLINE")
HEALTH_MONITOR_TYPES = ("CONNECT", "HTTP", "HTTPS")
# Statuses the control plane may set (Mimic's list, underscored as CLB spells them).
CONTROL_STATUSES = ["ACTIVE", "ERROR", "PENDING_DELETE", "PENDING_UPDATE"]
PENDING_DELETE = ("PENDING-DELETE", "PENDING_DELETE")

DEFAULT_TIMEOUT = 30
DEFAULT_PORT = 80

_SLACK = 1e-6

_CREATED_FEED = (
    "Node successfully created with address: '{address}', port: '{port}', "
    "condition: '{condition}', weight: '{weight}'"
)
_UPDATED_FEED = (
    "Node successfully updated with address: '{address}', port: '{port}', "
    "weight: '{weight}', condition: '{condition}'"
)


# Request parsing -------------------------------------------------------------------


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def _integer(value: object, what: str, low: int, high: int) -> int:
    """An integer in [low, high]; numeric strings are accepted (Mimic ran ``int()``)."""
    if isinstance(value, str) and _digits(value.strip().removeprefix("-")):
        # int() refuses over 4,300 digits (a 500); past 20 it is out of range anyway
        value = int(value) if len(value) <= 20 else high + 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise schema_error(f"{what} must be an integer")
    if not low <= value <= high:
        raise validation_error(f"{what} must be between {low} and {high}, got {shown(value)}.")
    return value


def _choice(value: object, what: str, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise schema_error(f"{what} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def _flag(container: dict[str, Any], key: str, default: bool = False) -> bool:
    value = container.get(key, default)
    if not isinstance(value, bool):
        raise schema_error(f"{key} must be true or false")
    return value


def _enabled(container: dict[str, Any], key: str) -> dict[str, bool]:
    """``{"enabled": bool}`` settings: connectionLogging, contentCaching."""
    value = container.get(key, {"enabled": False})
    if not isinstance(value, dict) or not isinstance(value.get("enabled"), bool):
        raise schema_error(f'{key} must be {{"enabled": true|false}}')
    return {"enabled": value["enabled"]}


class NodeRequest(NamedTuple):  # a named tuple: a third of a frozen dataclass's cost
    address: str
    port: int
    condition: str = "ENABLED"
    type: str = "PRIMARY"
    weight: int = 1

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)


_NODE_KEYS = frozenset({"address", "port", "condition", "type", "weight"})

# An IPv4 address as ``ipaddress`` writes it (four decimal octets, no leading zeros): its own
# canonical text. ``ipaddress`` parses one in ~2 us, a tenth of a node add; this in ~0.3.
_CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)


def canonical_address(text: str) -> str:
    """``str(ipaddress.ip_address(text))``: ValueError when ``text`` is no IP address."""
    if _CANONICAL_IPV4.fullmatch(text):
        return text
    return str(ipaddress.ip_address(text))


def parse_node(document: object) -> NodeRequest:
    """One node of ``{"nodes": [...]}``: address and port required, the rest defaulted."""
    if not isinstance(document, dict):
        raise schema_error("each node must be an object")
    if not _NODE_KEYS.issuperset(document):
        unknown = sorted(set(document) - _NODE_KEYS)
        # "status" included: it is set by the health monitor, never by the client.
        raise schema_error(f"unexpected node attributes: {', '.join(unknown)}")
    address = document.get("address")
    if address is None or "port" not in document:
        raise validation_error("Node address and port are required.")
    if not isinstance(address, str):
        raise schema_error("node address must be a string")
    try:
        address = canonical_address(address.strip())
    except ValueError:
        raise validation_error(f"Node address '{address}' is not a valid IP address.") from None
    return NodeRequest(
        address=address,
        port=_integer(document["port"], "Node port", 1, 65535),
        condition=_choice(document.get("condition", "ENABLED"), "condition", NODE_CONDITIONS),
        type=_choice(document.get("type", "PRIMARY"), "type", NODE_TYPES),
        weight=_integer(document.get("weight", 1), "Node weight", 1, 100),
    )


def parse_nodes(value: object) -> list[NodeRequest]:
    if not isinstance(value, list):
        raise schema_error("nodes must be a list of node objects")
    return [parse_node(item) for item in value]


def parse_metadata(value: object) -> list[tuple[str, object]]:
    """CLB's ``[{"key", "value"}, ...]``; values are strings or numbers (preset seconds)."""
    if not isinstance(value, list):
        raise schema_error('metadata must be a list of {"key": ..., "value": ...} objects')
    items: list[tuple[str, object]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"key", "value"}:
            raise schema_error('each metadata item must be {"key": ..., "value": ...}')
        key, data = item.get("key"), item.get("value")
        if not isinstance(key, str) or not key.strip():
            raise validation_error("Metadata key must be a non-empty string.")
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            raise validation_error(f"Metadata value of '{key}' must be a string or a number.")
        items.append((key, data))
    return items


def parse_health_monitor(value: object) -> dict[str, Any]:
    """A health monitor: ``type`` required; the numbers and texts checked when present."""
    if not isinstance(value, dict):
        raise schema_error("healthMonitor must be an object")
    kind = value.get("type")
    if kind is None:
        raise validation_error("Health monitor type is required.")
    monitor: dict[str, Any] = {"type": _choice(kind, "healthMonitor type", HEALTH_MONITOR_TYPES)}
    ranges = {"delay": (1, 3600), "timeout": (1, 300), "attemptsBeforeDeactivation": (1, 10)}
    for key, (low, high) in ranges.items():
        if key in value:
            monitor[key] = _integer(value[key], f"Health monitor {key}", low, high)
    for key in ("path", "statusRegex", "bodyRegex", "hostHeader"):
        if key in value:
            if not isinstance(value[key], str):
                raise schema_error(f"healthMonitor {key} must be a string")
            monitor[key] = value[key]
    return monitor


class LoadBalancerRequest(NamedTuple):
    """A validated ``POST /loadbalancers`` body (a named tuple, as ``NodeRequest``)."""

    name: str
    protocol: str
    port: int
    algorithm: str
    timeout: int
    virtual_ips: list[dict[str, Any]]
    nodes: list[NodeRequest]
    metadata: list[tuple[str, object]]
    options: dict[str, Any]
    health_monitor: dict[str, Any] | None = None


def _virtual_ip_requests(value: object) -> list[dict[str, Any]]:
    if value is None:
        # Mimic ignored virtualIps; CLB requires them. A missing list means one public VIP.
        return [{"type": "PUBLIC"}]
    if not isinstance(value, list) or not value:
        raise validation_error("At least one virtual IP is required.")
    requests: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict):
            raise schema_error("each virtual IP must be an object")
        if "id" in item:
            requests.append({"id": _integer(item["id"], "Virtual IP id", 0, 2**62)})
            continue
        kind = _choice(item.get("type"), "virtualIp type", ("PUBLIC", "SERVICENET"))
        version = item.get("ipVersion")
        if version is not None:
            version = _choice(version, "virtualIp ipVersion", ("IPV4", "IPV6"))
        if kind == "SERVICENET" and version == "IPV6":
            raise validation_error("IPv6 is not supported on SERVICENET virtual IPs.")
        requests.append({"type": kind, "ipVersion": version})
    return requests


def parse_load_balancer_request(body: dict[str, Any]) -> LoadBalancerRequest:
    lb = body.get("loadBalancer")
    if not isinstance(lb, dict):
        raise schema_error('body must be {"loadBalancer": {...}}')
    missing = [key for key in ("name", "protocol") if lb.get(key) in (None, "")]
    if missing:
        raise validation_error(*(f"Must provide a {key} for the load balancer." for key in missing))
    name = lb["name"]
    if not isinstance(name, str) or not name.strip():
        raise schema_error("loadBalancer name must be a non-empty string")
    if len(name) > 128:
        raise validation_error("Load balancer name must be at most 128 characters.")
    protocol = _choice(lb["protocol"], "protocol", _PROTOCOL_NAMES)
    port = lb.get("port")
    if port is None:
        port = PROTOCOLS[protocol] or DEFAULT_PORT
    options: dict[str, Any] = {
        "httpsRedirect": _flag(lb, "httpsRedirect"),
        "halfClosed": _flag(lb, "halfClosed"),
        "connectionLogging": _enabled(lb, "connectionLogging"),
        "contentCaching": _enabled(lb, "contentCaching"),
    }
    if lb.get("sessionPersistence") is not None:
        persistence = lb["sessionPersistence"]
        kinds = ("HTTP_COOKIE", "SOURCE_IP")
        if not isinstance(persistence, dict):
            raise schema_error("sessionPersistence must be an object")
        kind = _choice(persistence.get("persistenceType"), "persistenceType", kinds)
        options["sessionPersistence"] = {"persistenceType": kind}
    if lb.get("connectionThrottle") is not None:
        throttle = lb["connectionThrottle"]
        if not isinstance(throttle, dict):
            raise schema_error("connectionThrottle must be an object")
        options["connectionThrottle"] = {
            key: _integer(throttle[key], f"connectionThrottle {key}", 0, 100_000)
            for key in ("maxConnections", "minConnections", "maxConnectionRate", "rateInterval")
            if key in throttle
        }
    algorithm = lb.get("algorithm") or "RANDOM"
    health_monitor = lb.get("healthMonitor")
    return LoadBalancerRequest(
        name=name,
        protocol=protocol,
        port=_integer(port, "Port", 1, 65535),
        algorithm=_choice(algorithm, "algorithm", ALGORITHMS),
        timeout=_integer(lb.get("timeout", DEFAULT_TIMEOUT), "Timeout", 1, 120),
        virtual_ips=_virtual_ip_requests(lb.get("virtualIps")),
        nodes=parse_nodes(lb.get("nodes", [])),
        metadata=parse_metadata(lb.get("metadata", [])),
        options=options,
        health_monitor=None if health_monitor is None else parse_health_monitor(health_monitor),
    )


def parse_node_update(body: dict[str, Any]) -> dict[str, Any]:
    """``{"node": {condition|weight|type}}``: CLB's schema error, then its validation errors.

    Address, port and id are immutable (a validation error, not a schema error); a weight
    outside 1-100 is reported with them. Checked before the load balancer is looked up,
    as CLB does.
    """
    node = body.get("node")
    if set(body) != {"node"} or not isinstance(node, dict):
        raise schema_error('body must be {"node": {...}}')
    unknown = sorted(set(node) - {"condition", "weight", "type", "address", "port", "id"})
    if unknown:
        raise schema_error(f"unexpected node attributes: {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    if "condition" in node:
        changes["condition"] = _choice(node["condition"], "condition", NODE_CONDITIONS)
    if "type" in node:
        changes["type"] = _choice(node["type"], "type", NODE_TYPES)
    weight = node.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
        raise schema_error("Node weight must be an integer")
    problems = []
    if "address" in node:
        problems.append("Node ip field cannot be modified.")
    if "port" in node:
        problems.append("Port field cannot be modified.")
    if weight is not None and not 1 <= weight <= 100:
        problems.append("Node weight is invalid. Range is 1-100. Please specify a valid weight.")
    if "id" in node:
        problems.append("Node id field cannot be modified.")
    if problems:
        raise validation_error(*problems)
    if weight is not None:
        changes["weight"] = weight
    return changes


# State -----------------------------------------------------------------------------


@dataclass
class Node:
    id: int
    address: str
    port: int
    type: str
    weight: int
    condition: str
    status: str = "ONLINE"
    # The node's Atom feed: (summary, virtual time), oldest first.
    feed: list[tuple[str, float]] = field(default_factory=list)

    def describe(self, template: str) -> str:
        return template.format(
            address=self.address, port=self.port, condition=self.condition, weight=self.weight
        )


@dataclass
class VirtualIp:
    id: int
    address: str
    type: str
    ip_version: str


@dataclass
class MetadataItem:
    id: int
    key: str
    value: object


@dataclass
class LoadBalancer:
    id: int
    tenant_id: str
    region: str
    name: str
    protocol: str
    port: int
    algorithm: str
    timeout: int
    virtual_ips: list[VirtualIp]
    metadata: tuple[MetadataItem, ...]  # never changed after the create: a tuple, () if none
    options: dict[str, Any]
    presets: Presets
    created: float
    updated: float
    status: str = "ACTIVE"
    # Transitions still due: [(at, status), ...], earliest first; none is the shared empty
    # tuple (``move`` makes a list): one object less for the garbage collector to track.
    pending: list[tuple[float, str]] | tuple[()] = ()
    nodes: dict[int, Node] = field(default_factory=dict)
    health_monitor: dict[str, Any] = field(default_factory=dict)

    def settle(self, now: float) -> None:
        """Apply every transition due by ``now``, each at the time it fell due."""
        # The slack absorbs float rounding: ticks of 29 s and 1 s must end a 30 s build.
        while self.pending and self.pending[0][0] <= now + _SLACK:
            due, status = self.pending.pop(0)
            self.status, self.updated = status, due

    def move(self, now: float, status: str, *then: tuple[float, str]) -> None:
        """Enter ``status`` now, then each ``(after seconds, status)`` in turn.

        Whatever was still due is dropped: an explicit change wins over an old timer.
        """
        self.status, self.updated = status, now
        self.pending = []
        at = now
        for delay, following in then:
            at += delay
            self.pending.append((at, following))

    @property
    def deleted(self) -> bool:
        return self.status == "DELETED"


class AddressPool:
    """Hands out each address of a network once (virtual IPs must not collide)."""

    def __init__(self, network: str, what: str) -> None:
        self.network = ipaddress.ip_network(network)
        self._text = network
        self.what = what
        self._taken = 0  # addresses handed out: the next is the network's address + 1
        self._limit = self.network.num_addresses - 1
        self._base = int(self.network.network_address)
        # IPv6: the text of the current 65,536-address block up to its last hextet.
        self._block: tuple[int, str] | None = None

    # Pickled by --shared-cloud at every cloud request (simulacra/cloud/shared.py): the
    # network as its text, the rest derived again on load (an ip_network pickles slowly).
    def __getstate__(self) -> dict[str, Any]:
        return {"network": self._text, "what": self.what, "taken": self._taken}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["network"], state["what"])  # type: ignore[misc]
        self._taken = state["taken"]

    def take(self) -> str:
        self._taken += 1
        index = self._taken
        if index >= self._limit:
            raise ClbError(f"no free {self.what} address left; restart or reset the mock", 500)
        return self.text(self._base + index)

    def text(self, value: int) -> str:
        """``str(ipaddress.ip_address(value))`` for an address of this network, faster.

        ``ipaddress`` formats through several method calls per address (a fifth of a load
        balancer create, bench/peers.py). IPv4 is four numbers. IPv6 is compressed by its
        longest run of zero hextets; while the last hextet is not zero it ends any run, so
        the text up to it is the same for a whole block of 65,536 addresses: it is formatted
        once per block, and a zero last hextet goes to ``ipaddress`` as before.
        """
        if self.network.version == 4:
            return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
        low, high = value & 0xFFFF, value >> 16
        if not low:
            return str(ipaddress.IPv6Address(value))
        block = self._block
        if block is None or block[0] != high:
            head = str(ipaddress.IPv6Address(value)).rsplit(":", 1)[0] + ":"
            block = self._block = (high, head)
        return f"{block[1]}{low:x}"


def _lb_id(value: str) -> int | None:
    # No id has 20 digits; int() refused 5,000 (a 500) where this is simply not found.
    return int(value) if _digits(value) and len(value) < 20 else None


class RegionLoadBalancers:
    """One tenant's load balancers in one region, and the creation behaviors registered there."""

    def __init__(self, backend: LoadBalancerBackend, tenant_id: str, region: str) -> None:
        self.backend = backend
        self.tenant_id = tenant_id
        self.region = region
        self.clock = backend.clock
        self.lbs: dict[int, LoadBalancer] = {}
        self.registry = BehaviorRegistry(CREATION)

    def _now(self) -> float:
        return self.clock.seconds()

    # Lookups -------------------------------------------------------------------------

    def _settled(self, lb: LoadBalancer, now: float) -> LoadBalancer | None:
        lb.settle(now)
        if lb.status == GONE:
            del self.lbs[lb.id]
            return None
        return lb

    def _live(self) -> Iterator[LoadBalancer]:
        now = self._now()
        for lb in list(self.lbs.values()):
            if self._settled(lb, now) is not None:
                yield lb

    def find(self, lb_id: str) -> LoadBalancer | None:
        """The load balancer with this id, its due transitions applied; None if unknown."""
        number = _lb_id(lb_id)
        lb = self.lbs.get(number) if number is not None else None
        return None if lb is None else self._settled(lb, self._now())

    def get(self, lb_id: str) -> LoadBalancer:
        lb = self.find(lb_id)
        if lb is None:
            raise ClbError("Load balancer not found", 404)
        return lb

    def _readable(self, lb_id: str) -> LoadBalancer:
        """For reads below a load balancer: a DELETED one is 410 Gone."""
        lb = self.get(lb_id)
        if lb.deleted:
            raise ClbError("The loadbalancer is marked as deleted.", 410)
        return lb

    def _mutable(self, lb_id: str) -> LoadBalancer:
        lb = self.get(lb_id)
        if lb.status != "ACTIVE":
            raise immutable_error(lb.id, lb.status)
        return lb

    def _changed(self, lb: LoadBalancer) -> None:
        """After a change of nodes or health monitor: lb_error_state or lb_pending_update."""
        now = self._now()
        outcome = lb.presets.change
        if outcome is None:
            lb.updated = now
        elif outcome.name == "error":
            lb.move(now, "ERROR")
        else:
            lb.move(now, "PENDING-UPDATE", (outcome.parameters["duration"], "ACTIVE"))

    # Load balancers ------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> LoadBalancer:
        """Create a load balancer as the presets or the first matching behavior say."""
        request = parse_load_balancer_request(body)
        metadata = dict(request.metadata)
        presets = compile_presets(metadata)
        outcome = presets.creation
        if outcome is None and self.registry.has_rules:
            texts = {key: str(value) for key, value in metadata.items()}
            outcome = self.registry.choose({"loadbalancer_name": request.name, "metadata": texts})
        if outcome is not None and outcome.name == "fail":
            raise fault_of(outcome)
        _check_new_nodes([], request.nodes)
        virtual_ips = [self._virtual_ip(spec) for spec in request.virtual_ips]
        lb = self._build(request, presets, [vip for group in virtual_ips for vip in group])
        self._start(lb, outcome)
        self.lbs[lb.id] = lb
        if outcome is not None and outcome.name == "false-negative":
            raise fault_of(outcome)
        return lb

    def _build(
        self, request: LoadBalancerRequest, presets: Presets, virtual_ips: list[VirtualIp]
    ) -> LoadBalancer:
        now = self._now()
        lb = LoadBalancer(
            id=self.backend.new_lb_id(),
            tenant_id=self.tenant_id,
            region=self.region,
            name=request.name,
            protocol=request.protocol,
            port=request.port,
            algorithm=request.algorithm,
            timeout=request.timeout,
            virtual_ips=virtual_ips,
            metadata=tuple(
                MetadataItem(i, key, value) for i, (key, value) in enumerate(request.metadata, 1)
            ),
            options=request.options,
            presets=presets,
            created=now,
            updated=now,
            health_monitor=dict(request.health_monitor or {}),
        )
        for node_request in request.nodes:
            node = self._new_node(lb, node_request)
            lb.nodes[node.id] = node
        return lb

    def _start(self, lb: LoadBalancer, outcome: Outcome | None) -> None:
        if outcome is None:
            return
        if outcome.name == "building":
            lb.move(lb.created, "BUILD", (outcome.parameters["duration"], "ACTIVE"))
        elif outcome.name == "error":
            lb.move(lb.created, "ERROR")

    def _virtual_ip(self, spec: dict[str, Any]) -> list[VirtualIp]:
        if "id" in spec:
            # A shared VIP: one this tenant already has in this region.
            for lb in self._live():
                for vip in lb.virtual_ips:
                    if vip.id == spec["id"]:
                        return [vip]
            raise validation_error(f"Virtual IP {spec['id']} was not found on this account.")
        backend = self.backend
        if spec["type"] == "SERVICENET":
            return [
                VirtualIp(backend.new_vip_id(), backend.servicenet.take(), "SERVICENET", "IPV4")
            ]
        versions = [spec["ipVersion"]] if spec["ipVersion"] else ["IPV4", "IPV6"]
        pools = {"IPV4": backend.public_v4, "IPV6": backend.public_v6}
        return [
            VirtualIp(backend.new_vip_id(), pools[version].take(), "PUBLIC", version)
            for version in versions
        ]

    def list_load_balancers(
        self, status: str | None = None, node_address: str | None = None
    ) -> list[LoadBalancer]:
        """The tenant's load balancers in this region, DELETED ones included (as Mimic)."""
        lbs = list(self._live())
        if status:
            lbs = [lb for lb in lbs if lb.status == status.upper()]
        if node_address:
            lbs = [lb for lb in lbs if any(n.address == node_address for n in lb.nodes.values())]
        return lbs

    def delete(self, lb_id: str) -> None:
        """PENDING-DELETE for lb_pending_delete seconds (none by default), then DELETED."""
        lb = self.get(lb_id)
        if lb.status in PENDING_DELETE:
            raise ClbError(
                f"Must provide valid load balancers: {lb.id} are immutable and could not be "
                "processed.",
                400,
            )
        if lb.deleted:
            raise ClbError(f"Must provide valid load balancers: {lb.id} could not be found.", 400)
        if lb.status == "BUILD":
            raise immutable_error(lb.id, lb.status)
        now = self._now()
        deletion = lb.presets.deletion
        if deletion is None:
            lb.move(now, "DELETED", (DELETED_SECONDS, GONE))
        else:
            seconds = deletion.parameters["duration"]
            lb.move(now, "PENDING-DELETE", (seconds, "DELETED"), (DELETED_SECONDS, GONE))

    # Health monitor ------------------------------------------------------------------

    def get_health_monitor(self, lb_id: str) -> dict[str, Any]:
        return self._readable(lb_id).health_monitor

    def set_health_monitor(self, lb_id: str, body: dict[str, Any]) -> None:
        if "healthMonitor" not in body:
            raise schema_error('body must be {"healthMonitor": {...}}')
        monitor = parse_health_monitor(body["healthMonitor"])
        lb = self._mutable(lb_id)
        lb.health_monitor = monitor
        self._changed(lb)

    def delete_health_monitor(self, lb_id: str) -> None:
        lb = self._mutable(lb_id)
        lb.health_monitor = {}
        self._changed(lb)

    # Nodes ---------------------------------------------------------------------------

    def _new_node(self, lb: LoadBalancer, request: NodeRequest) -> Node:
        node = Node(
            id=self.backend.new_node_id(),
            address=request.address,
            port=request.port,
            type=request.type,
            weight=request.weight,
            condition=request.condition,
            # A health monitor has not checked a new node yet (Mimic's rule).
            status="OFFLINE" if lb.health_monitor else "ONLINE",
        )
        node.feed.append((node.describe(_CREATED_FEED), self._now()))
        return node

    def add_nodes(self, lb_id: str, body: dict[str, Any]) -> list[Node]:
        """Add a batch of nodes: 413 for a duplicate address and port or past 25 nodes."""
        if "nodes" not in body:
            raise schema_error('body must be {"nodes": [...]}')
        requests = parse_nodes(body["nodes"])
        if not requests:
            raise validation_error("Must provide at least one node to add.")
        lb = self._mutable(lb_id)
        _check_new_nodes(list(lb.nodes.values()), requests)
        added = [self._new_node(lb, request) for request in requests]
        for node in added:
            lb.nodes[node.id] = node
        self._changed(lb)
        return added

    def list_nodes(self, lb_id: str) -> list[Node]:
        return list(self._readable(lb_id).nodes.values())

    def _node(self, lb: LoadBalancer, node_id: str) -> Node:
        number = _lb_id(node_id)
        node = lb.nodes.get(number) if number is not None else None
        if node is None:
            raise ClbError("Node not found", 404)
        return node

    def get_node(self, lb_id: str, node_id: str) -> Node:
        return self._node(self._readable(lb_id), node_id)

    def update_node(self, lb_id: str, node_id: str, body: dict[str, Any]) -> Node:
        changes = parse_node_update(body)
        lb = self._mutable(lb_id)
        node = self._node(lb, node_id)
        for key, value in changes.items():
            setattr(node, key, value)
        node.feed.append((node.describe(_UPDATED_FEED), self._now()))
        self._changed(lb)
        return node

    def delete_node(self, lb_id: str, node_id: str) -> None:
        lb = self._mutable(lb_id)
        node = self._node(lb, node_id)
        del lb.nodes[node.id]
        self._changed(lb)

    def delete_nodes(self, lb_id: str, node_ids: list[str]) -> None:
        """Bulk delete (``?id=1&id=2``): all or nothing, at most 10 ids."""
        if not node_ids:
            raise ClbError("Must supply one or more id's to process this request.", 400)
        lb = self.get(lb_id)
        if lb.status != "ACTIVE":
            raise ClbError("LoadBalancer is not ACTIVE", 422)
        numbers = [_lb_id(value) for value in node_ids]
        unknown = [value for value, n in zip(node_ids, numbers, strict=True) if n not in lb.nodes]
        if unknown:
            listed = ",".join(sorted(unknown, key=_id_order))
            listed = listed if len(listed) <= 80 else listed[:77] + "..."  # quote a prefix
            raise validation_error(f"Node ids {listed} are not a part of your loadbalancer")
        if len(node_ids) > BATCH_DELETE_LIMIT:
            raise validation_error(
                f"Request to delete {len(node_ids)} nodes exceeds the account limit "
                f"BATCH_DELETE_LIMIT of {BATCH_DELETE_LIMIT} please attempt to delete fewer "
                f"then {BATCH_DELETE_LIMIT} nodes"
            )
        for number in numbers:
            lb.nodes.pop(number, None)  # type: ignore[arg-type]
        self._changed(lb)

    # Control plane -------------------------------------------------------------------

    def _owned(self, lb_id: str) -> LoadBalancer:
        lb = self.find(lb_id)
        if lb is None:
            raise ClbError(f"Tenant {self.tenant_id} doesn't own load balancer {lb_id}", 404)
        return lb

    def require(self, lb_id: str, node_id: str | None = None) -> None:
        """The control plane's 404s, checked before its body is read (as Mimic did)."""
        lb = self._owned(lb_id)
        if node_id is not None and self._node_or_none(lb, node_id) is None:
            raise ClbError(
                f"Load balancer {lb_id} on tenant {self.tenant_id} does not have node {node_id}",
                404,
            )

    def _node_or_none(self, lb: LoadBalancer, node_id: str) -> Node | None:
        number = _lb_id(node_id)
        return lb.nodes.get(number) if number is not None else None

    def set_attributes(self, lb_id: str, body: dict[str, Any]) -> None:
        """``{"status": ...}``: one of CLB's statuses, kept until changed (no timer)."""
        lb = self._owned(lb_id)
        if set(body) - {"status"}:
            raise ClbError("Attempt to alter a bad attribute", 400)
        if "status" in body:
            status = body["status"]
            if status not in CONTROL_STATUSES:
                raise ClbError(f"Unsupported status {status} not one of {CONTROL_STATUSES}", 400)
            lb.move(self._now(), status)

    def set_node_status(self, lb_id: str, node_id: str, body: dict[str, Any]) -> None:
        self.require(lb_id, node_id)
        status = body.get("status")
        if status not in NODE_STATUSES:
            raise ClbError("status key not found or it must have ONLINE or OFFLINE value", 400)
        node = self._node_or_none(self._owned(lb_id), node_id)
        assert node is not None  # require() checked it
        node.status = status


def _id_order(value: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order (as Mimic listed them), anything else after them."""
    numeric = _digits(value) and len(value) < 20  # int() refuses 5,000 digits (a 500)
    return (0, int(value), "") if numeric else (1, 0, value)


def _check_new_nodes(existing: list[Node], requests: list[NodeRequest]) -> None:
    """CLB's 413s: a node already on the load balancer (or twice in the batch), or > 25."""
    seen = {(node.address, node.port) for node in existing}
    for request in requests:
        if request.endpoint in seen:
            raise ClbError(
                "Duplicate nodes detected. One or more nodes already configured on load balancer.",
                413,
            )
        seen.add(request.endpoint)
    if len(existing) + len(requests) > NODE_LIMIT:
        raise ClbError(f"Nodes must not exceed {NODE_LIMIT} per load balancer.", 413)


class LoadBalancerBackend:
    """Every tenant's load balancers, in memory; ``reset()`` forgets them all.

    Ids and addresses come from counters shared by all tenants and regions, so they are
    unique (Mimic drew them at random and could collide).
    """

    # --shared-cloud stores each tenant's region as a row of its own (simulacra/cloud/shared.py).
    SHARED_PARTS = ("regions",)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.regions: dict[tuple[str, str], RegionLoadBalancers] = {}
        self.reset()

    def reset(self) -> None:
        self.regions.clear()
        # The last id handed out of each kind (ints rather than counters: --shared-cloud
        # pickles them at every cloud request, and an int pickles fastest).
        self._lb_id = 10_000
        self._node_id = 100_000
        self._vip_id = 1_000
        # Ranges reserved for benchmarks and examples: they can never reach a real host.
        self.public_v4 = AddressPool("198.18.0.0/15", "public IPv4")
        self.public_v6 = AddressPool("2001:db8:1b::/64", "public IPv6")
        self.servicenet = AddressPool("10.190.0.0/16", "ServiceNet IPv4")

    def new_lb_id(self) -> int:
        self._lb_id += 1
        return self._lb_id

    def new_node_id(self) -> int:
        self._node_id += 1
        return self._node_id

    def new_vip_id(self) -> int:
        self._vip_id += 1
        return self._vip_id

    # Reads for the console: they never create a tenant's region, as ``region`` does.

    def tenant_ids(self) -> list[str]:
        """Every tenant with load balancer state, in order of first use."""
        return list(dict.fromkeys(tenant for tenant, _ in self.regions))

    def find_region(self, tenant_id: str, region: str) -> RegionLoadBalancers | None:
        """One tenant's load balancers in one region, or None where it has none."""
        return self.regions.get((tenant_id, region))

    def all_regions(self) -> list[RegionLoadBalancers]:
        """Every tenant's state in every region it has used."""
        return list(self.regions.values())

    def region(self, tenant_id: str, region: str) -> RegionLoadBalancers:
        """One tenant's load balancers in one region, created on first use (as in Mimic)."""
        key = (tenant_id, region)
        regional = self.regions.get(key)
        if regional is None:
            regional = self.regions[key] = RegionLoadBalancers(self, tenant_id, region)
        return regional


def source_addresses(region: str) -> dict[str, str]:
    """The addresses a region's load balancers connect to nodes from (stable per region)."""
    return dict(_source_addresses(region))


@functools.lru_cache(maxsize=64)
def _source_addresses(region: str) -> tuple[tuple[str, str], ...]:
    """Cached: every load balancer answer shows them (a SHA-256 each time before)."""
    digest = hashlib.sha256(region.encode()).digest()
    return (
        ("ipv6Public", f"2001:db8:{digest[0]:x}{digest[1]:02x}::/64"),
        ("ipv4Servicenet", f"10.183.{digest[2]}.{digest[3] % 254 + 1}"),
        ("ipv4Public", f"198.19.{digest[4]}.{digest[5] % 254 + 1}"),
    )
