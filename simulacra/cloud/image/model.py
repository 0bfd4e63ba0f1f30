"""Glance v2's view of the compute images: records, filters, sort order and pages.

The image service keeps no state of its own: it reads the same images as compute's
``/images`` (Rackspace's public images of the region, and the tenant's snapshots), so a
name or id found through either API resolves in both. Pure: plain values in, plain
values out, ``simulacra.errors`` raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from simulacra.cloud.compute import catalog_data as data
from simulacra.cloud.compute.model import RegionCompute, Snapshot, parse_timestamp
from simulacra.errors import Invalid, NotFound, shown

# Base images have no creation time of their own; compute shows the same one.
BASE_IMAGE_TIME = datetime(1972, 1, 1, 15, 59, 11, tzinfo=UTC).timestamp()

# Glance's defaults: 25 images a page unless ``limit`` asks otherwise, never more than 1000.
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000

# Rackspace's images were XenServer VHDs in OVF containers.
DISK_FORMAT = "vhd"
CONTAINER_FORMAT = "ovf"

SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
    "visibility",
    "min_disk",
    "min_ram",
)
VISIBILITIES = ("public", "private", "shared", "community", "all")
MEMBER_STATUSES = ("accepted", "pending", "rejected", "all")

# Query parameters that are not property filters.
RESERVED = frozenset(
    {
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "visibility",
        "member_status",
        "size_min",
        "size_max",
        "tag",
        "created_at",
        "updated_at",
        "protected",
        "os_hidden",
    }
)
# Fields filtered on exactly, or with ``in:a,b,"c,d"``.
IN_FILTERS = ("id", "name", "status", "container_format", "disk_format", "owner")


@dataclass(frozen=True)
class GlanceImage:
    """One image as Glance v2 describes it; ``properties`` are its extra string properties."""

    id: str
    name: str
    size: int
    min_ram: int
    min_disk: int
    visibility: str
    owner: str | None
    created_at: float
    updated_at: float
    properties: dict[str, str] = field(default_factory=dict)
    status: str = "active"
    protected: bool = False
    os_hidden: bool = False
    disk_format: str = DISK_FORMAT
    container_format: str = CONTAINER_FORMAT
    tags: tuple[str, ...] = ()

    @property
    def checksum(self) -> str:
        # There are no image bytes; a digest of the id keeps the value stable.
        return hashlib.md5(self.id.encode(), usedforsecurity=False).hexdigest()

    @property
    def os_hash_value(self) -> str:
        return hashlib.sha512(self.id.encode()).hexdigest()

    def field(self, key: str) -> Any:
        """A core field, else an extra property, by name (None when absent)."""
        if key in CORE_FIELDS:
            return getattr(self, key)
        return self.properties.get(key)


# The names ``GlanceImage.field`` reads from the image itself, never from its properties.
CORE_FIELDS = frozenset(f.name for f in fields(GlanceImage)) - {"properties"} | {"checksum"}


def from_compute(image: data.Image | Snapshot, tenant: str) -> GlanceImage:
    """A compute image or snapshot in Glance's terms: base images are public, snapshots
    private to the tenant that made them."""
    if isinstance(image, Snapshot):
        properties = {**image.metadata, "instance_uuid": image.server_id}
        return GlanceImage(
            id=image.id,
            name=image.name,
            size=image.size,
            min_ram=image.min_ram,
            min_disk=image.min_disk,
            visibility="private",
            owner=tenant,
            created_at=image.created,
            updated_at=image.created,
            properties=properties,
        )
    properties = {
        **image.metadata,
        "com.rackspace__1__ui_default_show": str(image.default_show),
    }
    return GlanceImage(
        id=image.id,
        name=image.name,
        size=image.size,
        min_ram=image.min_ram,
        min_disk=image.min_disk,
        visibility="public",
        owner=None,
        created_at=BASE_IMAGE_TIME,
        updated_at=BASE_IMAGE_TIME,
        properties=properties,
    )


# Query parsing ------------------------------------------------------------------------


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{what} param must be an integer") from None


def _bool(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise Invalid(f"Invalid value {shown(value)} for {what}: expected a boolean")


def _split_in(value: str) -> list[str]:
    """``in:a,"b,c",d`` -> ``["a", "b,c", "d"]`` (Glance quotes values holding commas)."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise Invalid(f"Invalid filter value {shown(value)}. The quote is not closed.")
    items.append("".join(current))
    return items


def _matcher(value: str) -> Callable[[Any], bool]:
    if value.startswith("in:"):
        wanted = set(_split_in(value[3:]))
        return lambda actual: actual is not None and str(actual) in wanted
    if value.startswith("eq:"):
        value = value[3:]
    return lambda actual: actual is not None and str(actual) == value


_TIME_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _time_matcher(value: str, what: str) -> Callable[[float], bool]:
    """``gt:2016-04-18T21:38:54Z`` and friends; a bare time means ``eq``."""
    operator, _, moment = value.partition(":")
    if operator not in _TIME_OPERATORS or not moment:
        raise Invalid(
            f"Unable to filter by {what}: use '<operator>:<time>' with operator one of "
            + ", ".join(_TIME_OPERATORS)
        )
    when = parse_timestamp(moment, what)
    compare = _TIME_OPERATORS[operator]
    return lambda actual: compare(actual, when)


def _sort_order(query: Mapping[str, list[str]]) -> list[tuple[str, bool]]:
    """(key, descending) pairs from ``sort=k:dir,...`` or ``sort_key``/``sort_dir``."""
    pairs: list[tuple[str, str]] = []
    if query.get("sort"):
        if query.get("sort_key") or query.get("sort_dir"):
            raise Invalid("The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'")
        for part in ",".join(query["sort"]).split(","):
            key, _, direction = part.strip().partition(":")
            pairs.append((key, direction or "desc"))
    else:
        keys = query.get("sort_key") or []
        directions = query.get("sort_dir") or []
        if len(directions) > max(len(keys), 1):
            raise Invalid("The number of sort_dir values must not exceed that of sort_key")
        for index, key in enumerate(keys or ["created_at"]):
            direction = directions[index] if index < len(directions) else "desc"
            pairs.append((key, direction))
    order: list[tuple[str, bool]] = []
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise Invalid(f"Invalid sort key: {key}. It must be one of: {', '.join(SORT_KEYS)}")
        if direction not in ("asc", "desc"):
            raise Invalid(f"Invalid sort direction: {direction}. It must be 'asc' or 'desc'")
        order.append((key, direction == "desc"))
    # Glance breaks ties on created_at then id, in the direction of the last key.
    last = order[-1][1]
    for key in ("created_at", "id"):
        if key not in [k for k, _ in order]:
            order.append((key, last))
    return order


@dataclass
class ImageQuery:
    """A parsed ``GET /v2/images`` query: filters, sort order, page."""

    predicates: list[Callable[[GlanceImage], bool]]
    order: list[tuple[str, bool]]
    limit: int
    marker: str | None


def parse_query(query: Mapping[str, list[str]], tenant: str) -> ImageQuery:
    """Validate the list query (each key maps to all its values); 400 for anything off."""

    def one(key: str) -> str | None:
        values = query.get(key)
        return values[-1] if values else None

    predicates: list[Callable[[GlanceImage], bool]] = []
    limit_value = one("limit")
    limit = DEFAULT_LIMIT if limit_value is None else _int(limit_value, "limit")
    if limit < 0:
        raise Invalid("limit param must be positive")
    limit = min(limit, MAX_LIMIT)

    visibility = one("visibility")
    if visibility is not None and visibility not in VISIBILITIES:
        raise Invalid(f"Invalid visibility value: {visibility}")
    if visibility in (None, "all"):
        # Glance's default listing: public images and the caller's own (no community ones).
        predicates.append(lambda i: i.visibility == "public" or i.owner == tenant)
    else:
        predicates.append(lambda i: i.visibility == visibility)
    member_status = one("member_status")
    if member_status is not None and member_status not in MEMBER_STATUSES:
        raise Invalid(f"Invalid status value: {member_status}")  # nothing is shared here

    for key in IN_FILTERS:
        value = one(key)
        if value is not None:
            match = _matcher(value)
            predicates.append(_field_matches(key, match))
    for key, compare in (("size_min", int.__ge__), ("size_max", int.__le__)):
        value = one(key)
        if value is not None:
            bound = _int(value, key)
            predicates.append(_size_within(compare, bound))
    for key in ("protected", "os_hidden"):
        value = one(key)
        if value is not None:
            wanted = _bool(value, key)
            predicates.append(_flag_is(key, wanted))
    if one("os_hidden") is None:
        predicates.append(lambda i: not i.os_hidden)  # hidden images only when asked for
    for tag in query.get("tag") or []:
        predicates.append(_tagged(tag))
    for key in ("created_at", "updated_at"):
        value = one(key)
        if value is not None:
            time_match = _time_matcher(value, key)
            predicates.append(_time_matches(key, time_match))
    # Any other key filters on an extra property of that name, exactly.
    for key in query:
        if key in RESERVED or key in IN_FILTERS:
            continue
        value = one(key)
        if value is not None:
            predicates.append(_property_is(key, value))
    return ImageQuery(predicates, _sort_order(query), limit, one("marker"))


# One predicate each, built by a function so each closes over its own values.
Predicate = Callable[["GlanceImage"], bool]


def _field_matches(key: str, match: Callable[[Any], bool]) -> Predicate:
    return lambda i: match(i.field(key))


def _size_within(compare: Callable[[int, int], bool], bound: int) -> Predicate:
    return lambda i: compare(i.size, bound)


def _flag_is(key: str, wanted: bool) -> Predicate:
    return lambda i: getattr(i, key) is wanted


def _tagged(tag: str) -> Predicate:
    return lambda i: tag in i.tags


def _time_matches(key: str, match: Callable[[Any], bool]) -> Predicate:
    return lambda i: match(getattr(i, key))


def _property_is(key: str, value: object) -> Predicate:
    return lambda i: i.properties.get(key) == value


def _sorted(images: list[GlanceImage], order: list[tuple[str, bool]]) -> list[GlanceImage]:
    result = list(images)
    for key, descending in reversed(order):  # stable sorts, least significant key first
        result.sort(key=_sort_key(key), reverse=descending)
    return result


def _sort_key(key: str) -> Callable[[GlanceImage], Any]:
    return lambda i: _sort_value(i.field(key))


def _sort_value(value: Any) -> tuple[int, Any]:
    # Absent values sort first, as NULLs do in Glance's database.
    return (0, "") if value is None else (1, value)


@dataclass
class ImagePage:
    images: list[GlanceImage]
    next_marker: str | None


class ImageService:
    """Glance v2 over the compute backend's images: ``core.services["image"]``."""

    def __init__(self, compute_region: Callable[[str, str], RegionCompute]) -> None:
        self._compute_region = compute_region

    def _all(self, tenant: str, region: str) -> list[GlanceImage]:
        compute = self._compute_region(tenant, region)
        return [from_compute(i, tenant) for i in compute.list_images()]

    def list_images(self, tenant: str, region: str, query: Mapping[str, list[str]]) -> ImagePage:
        parsed = parse_query(query, tenant)
        images = [i for i in self._all(tenant, region) if all(p(i) for p in parsed.predicates)]
        images = _sorted(images, parsed.order)
        if parsed.marker is not None:
            ids = [i.id for i in images]
            if parsed.marker not in ids:
                raise Invalid(f"Invalid marker. Image {parsed.marker} could not be found.")
            images = images[ids.index(parsed.marker) + 1 :]
        page = images[: parsed.limit]
        more = len(images) > parsed.limit and parsed.limit > 0
        return ImagePage(page, page[-1].id if more and page else None)

    def get_image(self, tenant: str, region: str, image_id: str) -> GlanceImage:
        compute = self._compute_region(tenant, region)
        try:
            image = compute.get_image(image_id)
        except NotFound:
            raise NotFound(f"No image found with ID {image_id}") from None
        return from_compute(image, tenant)
