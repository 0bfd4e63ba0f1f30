"""The compute model: servers per tenant and region, their state machine, images, keypairs.

Pure: decoded JSON bodies and query values in, dataclasses out, ``simulacra.errors``
raised, the clock injected. A server records the transitions it has due
(``BUILD`` now, ``ACTIVE`` at t+120) and applies them whenever it is read, so one tick
moves every due transition at once and the real clock needs no timers.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import random
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from simulacra.clock import Clock
from simulacra.cloud.behaviors import BehaviorRegistry, Outcome
from simulacra.cloud.compute import catalog_data as data
from simulacra.cloud.compute.faults import (
    CREATION,
    Fault,
    check_presets,
    creation_preset,
    deletion_preset,
    fault_of,
    normalize_preset_value,
)
from simulacra.errors import AlreadyExists, Conflict, Invalid, NotFound, shown

# status -> (OS-EXT-STS:vm_state, OS-EXT-STS:task_state, OS-EXT-STS:power_state), as Nova
# reports them. A status set through the control plane that is not listed shows its
# lower-cased name as the vm_state.
STATES: dict[str, tuple[str, str | None, int]] = {
    "ACTIVE": ("active", None, 1),
    "BUILD": ("building", "spawning", 0),
    "ERROR": ("error", None, 1),
    "REBOOT": ("active", "rebooting", 1),
    "HARD_REBOOT": ("active", "rebooting_hard", 1),
    "REBUILD": ("active", "rebuilding", 1),
    "VERIFY_RESIZE": ("resized", None, 1),
    "RESCUE": ("rescued", None, 1),
    "SHUTOFF": ("stopped", None, 4),
    "DELETED": ("deleted", None, 0),
}

# Seconds each timed action stays in its transient status (Mimic's values).
REBOOT_SECONDS = {"SOFT": 3.0, "HARD": 6.0}
REBUILD_SECONDS = 5.0

_SLACK = 1e-6

USER_ID = "170454"  # Mimic's fixed user id on servers
KEYPAIR_USER_ID = "fake"  # ... and on keypairs
_PASSWORD_CHARS = string.ascii_letters + string.digits
assert len(_PASSWORD_CHARS) == 62  # TenantCompute.password draws 6 bits per character


def state_of(status: str) -> tuple[str, str | None, int]:
    return STATES.get(status, (status.lower(), None, 1))


def parse_timestamp(value: str, what: str = "changes-since") -> float:
    """An ISO 8601 time (``Z``, an offset, or naive = UTC) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"Invalid {what} value: {shown(value)} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_limit(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        limit = int(value)
    except ValueError:
        raise Invalid("limit param must be an integer") from None
    if limit < 0:
        raise Invalid("limit param must be positive")
    return limit


# Request parsing ---------------------------------------------------------------


def normalize_metadata(value: object, limit: int = data.MAX_SERVER_METADATA) -> dict[str, str]:
    """Validate a whole metadata object; preset values given as numbers become strings."""
    if not isinstance(value, dict):
        raise Invalid("Malformed request body. metadata must be object")
    if len(value) > limit:
        raise Fault(f"Maximum number of metadata items exceeds {limit}", 403, "forbidden")
    metadata: dict[str, str] = {}
    for key, item in value.items():
        try:
            text = normalize_preset_value(key, item)
        except orjson.JSONEncodeError:  # a preset's object deeper than JSON is written (254)
            text = None
        if text is None:
            raise Invalid("Invalid metadata: The input is not a string or unicode")
        metadata[key] = text
    check_presets(metadata)
    return metadata


def _reference(value: object, what: str) -> str:
    """An image or flavor reference: a string, or an integer id (Nova accepts both)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Invalid(f"Missing or invalid {what} attribute: a non-empty string is required")


def _check_image_ref(image_ref: str) -> None:
    if image_ref and data.is_invalid_image_ref(image_ref):
        raise Invalid(f"Can not find requested image {image_ref}")


def _check_flavor_ref(flavor_ref: str) -> None:
    if data.is_invalid_flavor_ref(flavor_ref):
        raise Invalid(f"Invalid flavorRef provided: flavor {flavor_ref} could not be found")


def _disk_config(value: object) -> str:
    value = value or "AUTO"
    if value not in ("AUTO", "MANUAL"):
        raise Invalid("OS-DCF:diskConfig must be either 'MANUAL' or 'AUTO'.")
    return str(value)


def _optional_string(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"'{key}' must be a string")
    return value


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise Invalid(f"Malformed request body: {shown(key)} must be an object")
    return value


class ServerRequest(NamedTuple):
    """A validated ``POST /servers`` body (a named tuple: a third of a frozen dataclass's cost)."""

    name: str
    image_ref: str
    flavor_ref: str
    metadata: dict[str, str]
    key_name: str | None = None
    disk_config: str = "AUTO"
    admin_pass: str | None = None


def parse_server_request(body: dict[str, Any]) -> ServerRequest:
    server = _object(body, "server")
    name = server.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("'name' is a required property of 'server' (a non-empty string)")
    flavor_ref = _reference(server.get("flavorRef"), "flavorRef")
    image = server.get("imageRef")
    if image is None or image == "":
        # Booting from a volume sends no image (novaclient sends ""), nothing else does.
        if image is None and not (
            server.get("block_device_mapping") or server.get("block_device_mapping_v2")
        ):
            raise Invalid("Missing imageRef attribute")
        image_ref = ""
    else:
        image_ref = _reference(image, "imageRef")
    _check_image_ref(image_ref)
    _check_flavor_ref(flavor_ref)
    raw_metadata = server.get("metadata")
    metadata = {} if raw_metadata is None else normalize_metadata(raw_metadata)
    return ServerRequest(
        name=name,
        image_ref=image_ref,
        flavor_ref=flavor_ref,
        metadata=metadata,
        key_name=_optional_string(server, "key_name"),
        disk_config=_disk_config(server.get("OS-DCF:diskConfig")),
        admin_pass=_optional_string(server, "adminPass"),
    )


# State ---------------------------------------------------------------------------


@dataclass
class Server:
    id: str
    tenant_id: str
    region: str
    name: str
    image_ref: str
    flavor_ref: str
    metadata: dict[str, str]
    key_name: str | None
    disk_config: str
    admin_pass: str
    private_ipv4: str
    public_ipv4: str
    public_ipv6: str
    host_id: str
    created: float
    updated: float
    status: str = "ACTIVE"
    # When the current status began, and the transitions still due: [(at, status), ...].
    # None due is the shared empty tuple (``move`` makes a list): one object less per
    # server for the garbage collector to track (bench/profile_cloud.md, section 7).
    since: float = 0.0
    pending: list[tuple[float, str]] | tuple[()] = ()
    previous_flavor: str | None = None
    # delete_server_failure bookkeeping: (the preset value counted, failures answered).
    delete_failures: tuple[str, int] = ("", 0)
    # views.server_detail_json's last answer: (everything it was built from, its JSON).
    # Never read as state: a stale entry is recognised by its key and rebuilt.
    view_cache: tuple[tuple[Any, ...], bytes] | None = field(
        default=None, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        # --shared-cloud pickles the state: the view cache is not state (and would double it).
        state = dict(self.__dict__)
        state["view_cache"] = None
        return state

    def settle(self, now: float) -> None:
        """Apply every transition due by ``now``, each at the time it fell due."""
        # The slack absorbs float rounding: ticks of 119 s and 1 s must end a 120 s build.
        while self.pending and self.pending[0][0] <= now + _SLACK:
            due, status = self.pending.pop(0)
            self.status, self.since, self.updated = status, due, due

    def move(self, now: float, status: str, *then: tuple[float, str]) -> None:
        """Enter ``status`` now, then each ``(after seconds, status)`` in turn.

        Whatever was still due is dropped: an explicit change wins over an old timer
        (Mimic's timers fired anyway, so a finished reboot could undo a later resize).
        """
        self.status, self.since, self.updated = status, now, now
        self.pending = []
        at = now
        for delay, following in then:
            at += delay
            self.pending.append((at, following))

    @property
    def deleted(self) -> bool:
        return self.status == "DELETED"

    def progress(self, now: float) -> int:
        """100, or how far a timed transition (a build, a reboot) has come."""
        if not self.pending:
            return 100
        span = self.pending[0][0] - self.since
        if span <= 0:
            return 100
        return max(0, min(100, int(100 * (now - self.since) / span)))

    def addresses(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "private": [{"addr": self.private_ipv4, "version": 4}],
            "public": [
                {"addr": self.public_ipv4, "version": 4},
                {"addr": self.public_ipv6, "version": 6},
            ],
        }


@dataclass
class Keypair:
    name: str
    public_key: str
    fingerprint: str
    created: float
    id: int
    private_key: str | None = None  # only when the server generated the pair


@dataclass
class Snapshot:
    """An image made from a server by ``createImage``."""

    id: str
    name: str
    server_id: str
    min_ram: int
    min_disk: int
    size: int
    metadata: dict[str, str]
    created: float


@dataclass
class ServerPage:
    servers: list[Server]
    next_marker: str | None = None


@dataclass
class ActionResult:
    action: str
    server: Server
    admin_pass: str | None = None
    image: Snapshot | None = None


class TenantCompute:
    """What must be unique across a tenant's regions: server ids and IP addresses."""

    def __init__(self, tenant_id: str, rng: random.Random, backend: ComputeBackend) -> None:
        self.tenant_id = tenant_id
        self.rng = rng
        self.backend = backend  # holds the servers (``ComputeBackend.servers``)
        self.regions: dict[str, RegionCompute] = {}
        # Blocks of SERVER_ID_PAGE address numbers given out, one to each page of server ids
        # a region starts (``RegionCompute.page_blocks``): the k-th server of a page takes
        # number block * SERVER_ID_PAGE + k. So a create writes its page alone (and this,
        # once a page), and two instances creating in two regions at once can never take
        # one number: each page's slots are its own (--shared-cloud checks the parts a
        # request only read, but does not lock them).
        self.address_blocks = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        created = self.__dict__.pop("servers_created", None)
        if created is not None:
            # --shared-cloud state stored by a version that numbered servers across the
            # tenant: the numbers it gave are left behind, and each region's last page, if
            # it has room, gets a block of its own for the servers still to come.
            self.address_blocks = -(-created // SERVER_ID_PAGE)
            for regional in self.regions.values():
                count = regional.__dict__.pop("server_count", 0)
                regional.page_blocks = [-1] * -(-count // SERVER_ID_PAGE)
                if count % SERVER_ID_PAGE:
                    regional.page_blocks[-1] = self.address_blocks
                    self.address_blocks += 1
        elif "address_blocks" not in self.__dict__:
            # Stored by a version that counted each region's pages of server ids
            # (``id_pages``) and numbered servers across the regions: fewer numbers than
            # its pages hold were given, and are left behind. Each region's last page gets
            # a block of its own (whether it has room is in another part, its page's).
            pages = [(r, r.__dict__.pop("id_pages", 0)) for r in self.regions.values()]
            self.address_blocks = sum(count for _, count in pages)
            for regional, count in pages:
                regional.page_blocks = [-1] * count
                if count:
                    regional.page_blocks[-1] = self.address_blocks
                    self.address_blocks += 1

    # The generators below draw from the rng exactly as ``randrange`` and ``choice`` would,
    # from fewer calls: ``getrandbits(k)`` takes one 32-bit word of the Mersenne Twister
    # per started 32 bits (``k <= 32``: the word's top ``k`` bits), and ``getrandbits(32*n)``
    # is the next ``n`` words, the first one lowest. ``randrange(n)`` and ``choice`` are
    # ``_randbelow(n)``: ``getrandbits(n.bit_length())`` until the draw is below ``n``. Each
    # call below only asks for words that the one-draw-at-a-time code would have taken
    # next, so the rng ends in the same state. A server create used to make ~20 Python-level
    # draws, a fifth of its CPU time (bench/peers.py); tests/test_compute_model.py checks
    # these against the plain calls, seed by seed, rejections and clashes included.

    def new_server_id(self) -> str:
        """An id no server of the tenant has, in any region (the caller stores the server)."""
        getrandbits = self.rng.getrandbits
        servers = self.backend.servers
        tenant_id = self.tenant_id
        for _ in range(1000):
            # rng.randrange(10**10): getrandbits(34) is two words, the second's top 2 bits high.
            x = getrandbits(64)
            n = (x >> 62) << 32 | (x & 0xFFFFFFFF)
            while n >= 10_000_000_000:
                x = getrandbits(64)
                n = (x >> 62) << 32 | (x & 0xFFFFFFFF)
            value = f"test-server{n}-id-{n}"
            if (tenant_id, value) not in servers:
                return value
        raise Fault(f"no free server id left for tenant {self.tenant_id}", 500)

    def addresses(self, n: int) -> tuple[str, str, str]:
        """The private IPv4, public IPv4 and public IPv6 addresses numbered ``n``.

        Unique in the tenant without a record of the addresses taken (which grew with every
        server, and --shared-cloud writes a part at every change): a server's number (its
        page's block and its place in the page: ``address_blocks``) picks position n of a
        permutation of each range that the tenant's id chooses, ``(a * n + b) mod size`` with
        ``a`` coprime to the size, so they look scattered.
        """
        if n >= _IPV4_RANGE:
            raise Fault(f"no free private IPv4 address left for tenant {self.tenant_id}", 500)
        a, b, c, d, e, f = _spread(self.tenant_id)
        private = (a * n + b) % _IPV4_RANGE
        public = (c * n + d) % _IPV4_RANGE
        return (
            f"10.180.{private // 254}.{private % 254 + 1}",
            f"198.101.{public // 254}.{public % 254 + 1}",
            public_ipv6_text((e * n + f) & 0xFFFF_FFFF_FFFF_FFFF),
        )

    def password(self, length: int = 12) -> str:
        """``"".join(rng.choice(_PASSWORD_CHARS) for _ in range(length))``, drawn alike.

        ``choice`` of 62 characters is ``getrandbits(6)`` (a word's top byte over 4) until
        the draw is below 62: one word per character still missing is drawn at once, and
        the top bytes become characters through a table, the rejected ones dropped.
        """
        getrandbits = self.rng.getrandbits
        out = b""
        while (missing := length - len(out)) > 0:
            words = getrandbits(32 * missing).to_bytes(4 * missing, "little")
            out += words[3::4].translate(_PASSWORD_TABLE, _PASSWORD_REJECTED)
        return out.decode("ascii")


# Top byte of a word -> its password character (``chars[byte >> 2]``); bytes whose draw is
# 62 or 63 are rejected (deleted before translating).
_PASSWORD_TABLE = bytes(ord(_PASSWORD_CHARS[min(b >> 2, 61)]) for b in range(256))
_PASSWORD_REJECTED = bytes(range(62 << 2, 256))


# x.y.c.d with c in 0-255 and d in 1-254, as Mimic drew them; 2**9 * 127 addresses.
_IPV4_RANGE = 256 * 254


@functools.lru_cache(maxsize=4096)
def _spread(tenant_id: str) -> tuple[int, int, int, int, int, int]:
    """A tenant's permutations of the address ranges (``TenantCompute.addresses``):
    (a, b) for private IPv4, public IPv4 and IPv6; each ``a`` is coprime to its range's
    size (odd, and for IPv4 not a multiple of 127). From the id, so every process agrees."""
    digest = hashlib.sha256(tenant_id.encode()).digest()
    a, b, c, d = (int.from_bytes(digest[i : i + 2], "big") for i in range(0, 8, 2))
    e, f = int.from_bytes(digest[8:16], "big"), int.from_bytes(digest[16:24], "big")

    def coprime(x: int) -> int:
        x |= 1
        return x + 2 if x % 127 == 0 else x

    return coprime(a), b, coprime(c), d, e | 1, f


_IPV6_PREFIX = 0x2001_4800_780E_0510 << 64
_IPV6_FORMAT = "2001:4800:780e:510:%x:%x:%x:%x"


def public_ipv6_text(low: int) -> str:
    """``str(ipaddress.IPv6Address(_IPV6_PREFIX | low))`` for a 64-bit ``low``.

    The prefix has no zero hextet, so unless one of ``low``'s four is zero there is
    nothing to compress and the text is the hextets in lower-case hex; otherwise (about
    one address in 16,000) ``ipaddress`` formats it.
    """
    a, b, c, d = low >> 48, low >> 32 & 0xFFFF, low >> 16 & 0xFFFF, low & 0xFFFF
    if a and b and c and d:
        return _IPV6_FORMAT % (a, b, c, d)  # %-formatting: half the time of an f-string's :x
    return str(ipaddress.IPv6Address(_IPV6_PREFIX | low))


def _allowed(server: Server, action: str, statuses: Iterable[str]) -> None:
    if server.status not in statuses:
        vm_state = state_of(server.status)[0]
        raise Conflict(f"Cannot '{action}' instance {server.id} while it is in vm_state {vm_state}")


# Server ids to a page of ``ComputeBackend.tenants_server_id_pages``: a page of 32 pickles to
# about 1.3 KB, under the size from which PostgreSQL moves a value out of its row (TOAST).
SERVER_ID_PAGE = 32


class RegionCompute:
    """One tenant's compute in one region: servers, snapshots, keypairs, behaviors."""

    def __init__(self, tenant: TenantCompute, region: str, clock: Clock) -> None:
        self.tenant = tenant
        self.region = region
        self.clock = clock
        # The tenant's block of address numbers for each page of server ids this region
        # started (the ids, in creation order, are the backend's
        # ``tenants_server_id_pages``): a create changes its server and its page, and this
        # (with the tenant's count of blocks) once a page, rather than a count in the
        # tenant's part at every create (--shared-cloud writes every part a request changed).
        self.page_blocks: list[int] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.keypairs: dict[str, Keypair] = {}
        self.keypairs_created = 0  # a keypair's id is its number (a count pickles faster)
        self.registry = BehaviorRegistry(CREATION)
        self.host_id = hashlib.sha224(f"{tenant.tenant_id}{region}".encode()).hexdigest()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # --shared-cloud state stored by a version that counted keypairs with an iterator
        # (its count of servers is read by ``TenantCompute.__setstate__``).
        keypair_ids = self.__dict__.pop("_keypair_ids", None)
        if keypair_ids is not None:
            self.keypairs_created = next(keypair_ids) - 1

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def _now(self) -> float:
        return self.clock.seconds()

    def _password(self) -> str:
        return self.tenant.password()

    def _servers(self) -> list[Server]:
        """This region's servers, deleted ones included, in creation order.

        An id without its server is skipped rather than raising: under --shared-cloud a
        process may hold a tenant's list of ids before the servers another process added
        (each is loaded when first looked up). Every lookup is noted, so the answer is found
        stale and built again once they are all loaded, in one more run, not one per server.
        """
        backend = self.tenant.backend
        tenant_id, region = self.tenant.tenant_id, self.region
        ids: list[str] = []
        for page in range(len(self.page_blocks)):
            ids += backend.tenants_server_id_pages.get((tenant_id, region, page), ())
        servers = backend.servers
        found = [servers.get((tenant_id, server_id)) for server_id in ids]
        return [server for server in found if server is not None]

    # Servers ---------------------------------------------------------------------

    def create_server(self, body: dict[str, Any]) -> Server:
        """Create a server as the presets or the first matching behavior say."""
        request = parse_server_request(body)
        outcome = creation_preset(request.metadata)
        if outcome is None and self.registry.has_rules:
            outcome = self.registry.choose(
                {"server_name": request.name, "metadata": request.metadata}
            )
        return self._create(request, outcome)

    def _create(self, request: ServerRequest, outcome: Outcome | None) -> Server:
        if outcome is not None and outcome.name == "fail":
            raise fault_of(outcome)
        now = self._now()
        server_id = self.tenant.new_server_id()
        admin_pass = request.admin_pass or self._password()
        tenant, blocks, region = self.tenant, self.page_blocks, self.region
        tenant_id, pages = tenant.tenant_id, tenant.backend.tenants_server_id_pages
        page = pages.get((tenant_id, region, len(blocks) - 1)) if blocks else None
        if page is not None and len(page) < SERVER_ID_PAGE:
            number = blocks[-1] * SERVER_ID_PAGE + len(page)
        else:  # the first server, or the last page is full: a new page, a new block
            page = None
            number = tenant.address_blocks * SERVER_ID_PAGE
        private_ipv4, public_ipv4, public_ipv6 = tenant.addresses(number)
        server = Server(
            id=server_id,
            tenant_id=self.tenant_id,
            region=self.region,
            name=request.name,
            image_ref=request.image_ref,
            flavor_ref=request.flavor_ref,
            metadata=request.metadata,  # parse_server_request's own dict: no copy needed
            key_name=request.key_name,
            disk_config=request.disk_config,
            admin_pass=admin_pass,
            private_ipv4=private_ipv4,
            public_ipv4=public_ipv4,
            public_ipv6=public_ipv6,
            host_id=self.host_id,
            created=now,
            updated=now,
            since=now,
        )
        tenant.backend.servers[(tenant_id, server.id)] = server
        if page is not None:
            page.append(server.id)
        else:
            pages[(tenant_id, region, len(blocks))] = [server.id]
            blocks.append(tenant.address_blocks)
            tenant.address_blocks += 1
        if outcome is None:  # the default behavior: ACTIVE at once
            return server
        parameters = outcome.parameters
        if outcome.name == "build":
            server.move(now, "BUILD", (parameters["duration"], "ACTIVE"))
        elif outcome.name == "error":
            server.move(now, "ERROR")
        elif outcome.name == "active-then-error":
            server.move(now, "ACTIVE", (parameters["duration"], "ERROR"))
        elif outcome.name == "false-negative":
            # The server exists, but the client is told the create failed (Mimic, for otter).
            raise fault_of(outcome)
        return server

    def _find(self, server_id: str, message: str = "Instance could not be found") -> Server:
        server = self.tenant.backend.servers.get((self.tenant_id, server_id))
        if server is None or server.region != self.region:
            raise NotFound(message)
        server.settle(self._now())
        if server.deleted:
            raise NotFound(message)
        return server

    def get_server(self, server_id: str) -> Server:
        return self._find(server_id)

    def list_servers(
        self,
        *,
        name: str | None = None,
        limit: str | None = None,
        marker: str | None = None,
        changes_since: str | None = None,
        status: str | None = None,
        image: str | None = None,
        flavor: str | None = None,
    ) -> ServerPage:
        """Servers in creation order, filtered and paged as Mimic did.

        The marker is looked up among the servers changed since ``changes-since`` (all
        when absent) before the other filters, and ``DELETED`` servers only show with
        ``changes-since``.
        """
        count = parse_limit(limit)
        now = self._now()
        servers = self._servers()
        for server in servers:
            server.settle(now)
        if changes_since is not None:
            since = parse_timestamp(changes_since)
            servers = [s for s in servers if s.updated >= since]
        if marker is not None:
            ids = [s.id for s in servers]
            if marker not in ids:
                raise Invalid(f"marker [{marker}] not found")
            servers = servers[ids.index(marker) + 1 :]
        if name:
            servers = [s for s in servers if name in s.name]
        if status:
            servers = [s for s in servers if s.status == status.upper()]
        if image:
            servers = [s for s in servers if s.image_ref == image]
        if flavor:
            servers = [s for s in servers if s.flavor_ref == flavor]
        if changes_since is None:
            servers = [s for s in servers if not s.deleted]
        if count is None:
            return ServerPage(servers)
        servers = servers[:count]
        following = servers[-1].id if count and len(servers) >= count else None
        return ServerPage(servers, following)

    def delete_server(self, server_id: str) -> None:
        server = self._find(server_id)
        preset = deletion_preset(server.metadata)
        if preset is not None:
            outcome, times = preset
            value = server.metadata["delete_server_failure"]
            counted, answered = server.delete_failures
            if counted != value:  # a new preset value starts a new count
                answered = 0
            if answered < times:
                server.delete_failures = (value, answered + 1)
                raise fault_of(outcome)
            server.delete_failures = (value, answered)
        server.move(self._now(), "DELETED")

    def set_statuses(self, body: dict[str, Any]) -> None:
        """The control plane's ``{"status": {server_id: STATUS}}``: all or nothing."""
        unknown = sorted(set(body) - {"status"})
        if unknown:
            raise Invalid(f"unknown attributes {unknown}; only 'status' can be set")
        statuses = body.get("status")
        if not isinstance(statuses, dict):
            raise Invalid('body must be {"status": {"<server id>": "<STATUS>", ...}}')
        servers = []
        for server_id, status in statuses.items():
            if not isinstance(status, str) or not status:
                raise Invalid(f"the status of {server_id} must be a non-empty string")
            try:
                servers.append((self._find(server_id), status))
            except NotFound:
                raise Invalid(f"no server {server_id} in this tenant and region") from None
        now = self._now()
        for server, status in servers:
            server.move(now, status)

    # Metadata ----------------------------------------------------------------------

    def _metadata_server(self, server_id: str) -> Server:
        return self._find(server_id, "Server does not exist")

    def get_metadata(self, server_id: str) -> dict[str, str]:
        return self._metadata_server(server_id).metadata

    def replace_metadata(self, server_id: str, body: dict[str, Any]) -> dict[str, str]:
        server = self._metadata_server(server_id)
        if "metadata" not in body:
            raise Invalid("Malformed request body")
        server.metadata = normalize_metadata(body["metadata"])
        server.updated = self._now()
        return server.metadata

    def update_metadata(self, server_id: str, body: dict[str, Any]) -> dict[str, str]:
        """Merge new items into the metadata (Nova's POST; Mimic had no such route)."""
        server = self._metadata_server(server_id)
        if "metadata" not in body:
            raise Invalid("Malformed request body")
        items = normalize_metadata(body["metadata"])
        merged = normalize_metadata({**server.metadata, **items})
        server.metadata = merged
        server.updated = self._now()
        return merged

    def get_metadata_item(self, server_id: str, key: str) -> str:
        metadata = self._metadata_server(server_id).metadata
        if key not in metadata:
            raise NotFound("Metadata item was not found")
        return metadata[key]

    def set_metadata_item(self, server_id: str, key: str, body: dict[str, Any]) -> str:
        server = self._metadata_server(server_id)
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise Invalid("Malformed request body")
        if len(meta) > 1:
            raise Invalid("Request body contains too many items")
        if key not in meta:
            raise Invalid("Request body and URI mismatch")
        limit = data.MAX_SERVER_METADATA
        if key not in server.metadata and len(server.metadata) >= limit:
            raise Fault(f"Maximum number of metadata items exceeds {limit}", 403, "forbidden")
        text = normalize_preset_value(key, meta[key])
        if text is None:
            raise Invalid("Invalid metadata: The input is not a string or unicode")
        check_presets({**server.metadata, key: text})
        server.metadata[key] = text
        server.updated = self._now()
        return text

    def delete_metadata_item(self, server_id: str, key: str) -> None:
        server = self._metadata_server(server_id)
        if key not in server.metadata:
            raise NotFound("Metadata item was not found")
        del server.metadata[key]
        server.updated = self._now()

    def addresses(self, server_id: str, network: str | None = None) -> dict[str, Any]:
        addresses = self._find(server_id, "Instance does not exist").addresses()
        if network is None:
            return addresses
        if network not in addresses:
            raise NotFound("Instance is not a member of specified network")
        return {network: addresses[network]}

    # Actions -----------------------------------------------------------------------

    ACTIONS = (
        "resize",
        "confirmResize",
        "revertResize",
        "rescue",
        "unrescue",
        "reboot",
        "rebuild",
        "changePassword",
        "createImage",
        "os-stop",
        "os-start",
    )

    def perform_action(self, server_id: str, body: dict[str, Any]) -> ActionResult:
        """Run the one action named in ``body`` (``{"reboot": {"type": "HARD"}}``)."""
        server = self._find(server_id, f"Instance {server_id} could not be found")
        action = next((name for name in body if name in self.ACTIONS), None)
        if action is None:
            raise Invalid("There is no such action currently supported")
        parameters = body[action]
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise Invalid(f"Malformed request body: {shown(action)} must be an object or null")
        handler = getattr(self, "_action_" + action.replace("-", "_"))
        return handler(server, parameters)

    def _action_resize(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        if parameters.get("flavorRef") in (None, ""):
            raise Invalid("Resize requests require 'flavorRef' attribute.")
        flavor_ref = _reference(parameters["flavorRef"], "flavorRef")
        _check_flavor_ref(flavor_ref)
        _allowed(server, "resize", ("ACTIVE", "SHUTOFF"))
        server.previous_flavor, server.flavor_ref = server.flavor_ref, flavor_ref
        server.move(self._now(), "VERIFY_RESIZE")
        return ActionResult("resize", server)

    def _action_confirmResize(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        _allowed(server, "confirmResize", ("VERIFY_RESIZE",))
        server.previous_flavor = None
        server.move(self._now(), "ACTIVE")
        return ActionResult("confirmResize", server)

    def _action_revertResize(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        _allowed(server, "revertResize", ("VERIFY_RESIZE",))
        if server.previous_flavor is not None:
            server.flavor_ref, server.previous_flavor = server.previous_flavor, None
        server.move(self._now(), "ACTIVE")
        return ActionResult("revertResize", server)

    def _action_rescue(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        password = _optional_string(parameters, "adminPass") or self._password()
        _allowed(server, "rescue", ("ACTIVE", "SHUTOFF", "ERROR"))
        server.move(self._now(), "RESCUE")
        return ActionResult("rescue", server, admin_pass=password)

    def _action_unrescue(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        _allowed(server, "unrescue", ("RESCUE",))
        server.move(self._now(), "ACTIVE")
        return ActionResult("unrescue", server)

    def _action_reboot(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        kind = parameters.get("type")
        if not kind:
            raise Invalid("Missing argument 'type' for reboot")
        if not isinstance(kind, str) or kind.upper() not in REBOOT_SECONDS:
            raise Invalid("Argument 'type' for reboot is not HARD or SOFT")
        kind = kind.upper()
        if kind == "SOFT":
            _allowed(server, "reboot", ("ACTIVE", "SHUTOFF"))
            status = "REBOOT"
        else:
            _allowed(server, "reboot", ("ACTIVE", "SHUTOFF", "ERROR", "REBOOT", "HARD_REBOOT"))
            status = "HARD_REBOOT"
        server.move(self._now(), status, (REBOOT_SECONDS[kind], "ACTIVE"))
        return ActionResult("reboot", server)

    def _action_rebuild(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        if parameters.get("imageRef") in (None, ""):
            raise Invalid("Could not parse imageRef from request.")
        image_ref = _reference(parameters["imageRef"], "imageRef")
        _check_image_ref(image_ref)
        name = parameters.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise Invalid("'name' must be a non-empty string")
        metadata = parameters.get("metadata")
        if metadata is not None:
            metadata = normalize_metadata(metadata)
        disk_config = parameters.get("OS-DCF:diskConfig")
        if disk_config is not None:
            disk_config = _disk_config(disk_config)
        password = _optional_string(parameters, "adminPass") or self._password()
        _allowed(server, "rebuild", ("ACTIVE", "SHUTOFF", "ERROR"))
        server.image_ref = image_ref
        server.name = name or server.name
        server.metadata = metadata if metadata is not None else server.metadata
        server.disk_config = disk_config or server.disk_config
        server.admin_pass = password
        server.move(self._now(), "REBUILD", (REBUILD_SECONDS, "ACTIVE"))
        return ActionResult("rebuild", server, admin_pass=password)

    def _action_changePassword(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        password = parameters.get("adminPass")
        if not password or not isinstance(password, str):
            raise Invalid("No adminPass was specified")
        _allowed(server, "changePassword", ("ACTIVE",))
        server.admin_pass = password
        server.updated = self._now()
        return ActionResult("changePassword", server)

    def _action_createImage(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        name = parameters.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Invalid("createImage requires a 'name' (a non-empty string)")
        extra = parameters.get("metadata")
        extra = {} if extra is None else normalize_metadata(extra, limit=40)
        _allowed(server, "createImage", ("ACTIVE", "SHUTOFF"))
        base = data.IMAGES_BY_ID.get(server.image_ref)
        metadata = dict(base.metadata) if base is not None else _default_image_metadata()
        metadata["image_type"] = "snapshot"
        metadata.update(extra)
        snapshot = Snapshot(
            id=str(uuid.UUID(int=self.tenant.rng.getrandbits(128), version=4)),
            name=name,
            server_id=server.id,
            min_ram=base.min_ram if base is not None else 512,
            min_disk=base.min_disk if base is not None else 20,
            size=base.size if base is not None else 1_073_741_824,
            metadata=metadata,
            created=self._now(),
        )
        self.snapshots[snapshot.id] = snapshot
        return ActionResult("createImage", server, image=snapshot)

    def _action_os_stop(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        _allowed(server, "stop", ("ACTIVE", "ERROR", "RESCUE"))
        server.move(self._now(), "SHUTOFF")
        return ActionResult("os-stop", server)

    def _action_os_start(self, server: Server, parameters: dict[str, Any]) -> ActionResult:
        _allowed(server, "start", ("SHUTOFF",))
        server.move(self._now(), "ACTIVE")
        return ActionResult("os-start", server)

    # Images, flavors, limits -------------------------------------------------------

    def list_snapshots(self) -> list[Snapshot]:
        """The images made from this region's servers, oldest first."""
        return list(self.snapshots.values())

    def list_images(
        self, limit: str | None = None, marker: str | None = None
    ) -> list[data.Image | Snapshot]:
        images: list[data.Image | Snapshot] = [*data.images_in(self.region)]
        images += self.snapshots.values()
        return _page(images, limit, marker)

    def get_image(self, image_id: str) -> data.Image | Snapshot:
        if data.is_invalid_image_ref(image_id):
            # The invalid_image_ref preset: 404 as Mimic's code answered (its README said
            # 400), so name-or-id lookups (novaclient's find) fall back to names.
            raise NotFound("The resource could not be found.")
        snapshot = self.snapshots.get(image_id)
        if snapshot is not None:
            return snapshot
        image = data.IMAGES_BY_ID.get(image_id)
        if image is None or not data.offered_in(image, self.region):
            raise NotFound("Image not found.")
        return image

    def list_flavors(
        self, limit: str | None = None, marker: str | None = None
    ) -> list[data.Flavor]:
        return _page(data.flavors_in(self.region), limit, marker)

    def get_flavor(self, flavor_id: str) -> data.Flavor:
        flavor = data.FLAVORS_BY_ID.get(flavor_id)
        if flavor is None or not data.offered_in(flavor, self.region):
            raise NotFound("The resource could not be found.")
        return flavor

    def limits(self) -> dict[str, Any]:
        """Mimic's absolute limits, with the ``total*Used`` counts of the live servers."""
        now = self._now()
        live = []
        for server in self._servers():
            server.settle(now)
            if not server.deleted:
                live.append(server)
        flavors = [data.FLAVORS_BY_ID.get(s.flavor_ref) for s in live]
        return {
            **data.ABSOLUTE_LIMITS,
            "totalInstancesUsed": len(live),
            "totalCoresUsed": sum(f.vcpus for f in flavors if f is not None),
            "totalRAMUsed": sum(f.ram for f in flavors if f is not None),
        }

    # Keypairs ----------------------------------------------------------------------

    def list_keypairs(self) -> list[Keypair]:
        return list(self.keypairs.values())

    def create_keypair(self, body: dict[str, Any]) -> Keypair:
        keypair = _object(body, "keypair")
        name = keypair.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise Invalid("Keypair data is invalid: 'name' must be a string of 1 to 255 characters")
        public_key = keypair.get("public_key")
        if public_key is not None and (not isinstance(public_key, str) or not public_key.strip()):
            raise Invalid("Keypair data is invalid: 'public_key' must be a non-empty string")
        if name in self.keypairs:
            raise AlreadyExists(f"Key pair '{name}' already exists.")
        private_key = None
        if public_key is None:
            # Nova generates a pair when none is given; this one is only shaped like a key.
            blob = self.tenant.rng.getrandbits(256).to_bytes(32, "big").hex()
            public_key = f"ssh-rsa AAAAB3NzaC1yc2E{blob} Generated-by-Nova"
            private_key = (
                f"-----BEGIN RSA PRIVATE KEY-----\n{blob}\n-----END RSA PRIVATE KEY-----\n"
            )
        digest = hashlib.md5(public_key.encode(), usedforsecurity=False).hexdigest()
        created = Keypair(
            name=name,
            public_key=public_key,
            fingerprint=":".join(digest[i : i + 2] for i in range(0, 32, 2)),
            created=self._now(),
            id=self.keypairs_created + 1,
            private_key=private_key,
        )
        self.keypairs[name] = created
        self.keypairs_created += 1
        return created

    def get_keypair(self, name: str) -> Keypair:
        keypair = self.keypairs.get(name)
        if keypair is None:
            raise NotFound(f"Keypair {name} not found for user {KEYPAIR_USER_ID}")
        return keypair

    def delete_keypair(self, name: str) -> None:
        self.get_keypair(name)
        del self.keypairs[name]


def _default_image_metadata() -> dict[str, str]:
    # Mimic's Image defaults, for snapshots of servers built from an unknown image.
    return {
        "flavor_classes": "*",
        "image_type": "base",
        "os_type": "linux",
        "org.openstack__1__os_distro": "",
        "vm_mode": "hvm",
        "auto_disk_config": "disabled",
    }


def _page(items: list[Any], limit: str | None, marker: str | None) -> list[Any]:
    if marker is not None:
        ids = [item.id for item in items]
        if marker not in ids:
            raise Invalid(f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1 :]
    count = parse_limit(limit)
    return items if count is None else items[:count]


class ComputeBackend:
    """Every tenant's compute state, in memory; ``reset()`` forgets it all."""

    # --shared-cloud stores each tenant's state, each server and each page of server ids as
    # a row of its own (simulacra/cloud/shared.py).
    SHARED_PARTS = ("tenants", "servers", "tenants_server_id_pages")

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.tenants: dict[str, TenantCompute] = {}
        # Every tenant's servers, by (tenant id, server id), rather than within their
        # tenant's region: a request that creates or changes one server then changes only it
        # (and, a create, a page of ids), not every server the tenant holds (--shared-cloud
        # pickles and writes each collection member it changed).
        self.servers: dict[tuple[str, str], Server] = {}
        # Each region's server ids in creation order, SERVER_ID_PAGE to a page, by (tenant
        # id, region, page number): a create changes its page alone, so what it writes stays
        # the same size however many servers the tenant holds. Named to sort after
        # ``tenants``: --shared-cloud takes rows in the byte order of their keys, and a create
        # that starts a page takes its tenant's row (its blocks of address numbers), so
        # whoever holds it takes the new page's row without waiting (migration 0012).
        self.tenants_server_id_pages: dict[tuple[str, str, int], list[str]] = {}

    def region(self, tenant_id: str, region: str) -> RegionCompute:
        """The state of one tenant in one region, created on first use (as in Mimic)."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            tenant = self.tenants[tenant_id] = TenantCompute(tenant_id, self.rng, self)
        regional = tenant.regions.get(region)
        if regional is None:
            regional = tenant.regions[region] = RegionCompute(tenant, region, self.clock)
        return regional

    def reset(self) -> None:
        self.tenants.clear()
        self.servers.clear()
        self.tenants_server_id_pages.clear()

    # Reads for the console: they never create a tenant's or region's state, as ``region``
    # does (a page looked at must not change what the API answers).

    def tenant_ids(self) -> list[str]:
        """Every tenant with compute state, in order of first use."""
        return list(self.tenants)

    def find_region(self, tenant_id: str, region: str) -> RegionCompute | None:
        """One tenant's state in one region, or None where it has none."""
        tenant = self.tenants.get(tenant_id)
        return None if tenant is None else tenant.regions.get(region)

    def all_regions(self) -> list[RegionCompute]:
        """Every tenant's state in every region it has used."""
        return [
            regional for tenant in self.tenants.values() for regional in tenant.regions.values()
        ]
