"""Glance v2's JSON shapes for the image model's values.

Links inside image documents are paths from Glance's root (``/v2/images/<id>``), as
Glance writes them; clients resolve them against their endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from simulacra.cloud.image.model import GlanceImage, ImagePage


def timestamp(seconds: float) -> str:
    """Glance's ``2016-03-15T15:09:07Z``: UTC, whole seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_view(image: GlanceImage) -> dict[str, Any]:
    """One image: the core fields, then the extra properties as top-level strings."""
    core: dict[str, Any] = {
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "checksum": image.checksum,
        "os_hash_algo": "sha512",
        "os_hash_value": image.os_hash_value,
        "owner": image.owner,
        "size": image.size,
        "virtual_size": None,
        "min_ram": image.min_ram,
        "min_disk": image.min_disk,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "created_at": timestamp(image.created_at),
        "updated_at": timestamp(image.updated_at),
        "tags": list(image.tags),
        "self": f"/v2/images/{image.id}",
        "file": f"/v2/images/{image.id}/file",
        "schema": "/v2/schemas/image",
    }
    # A property never hides a core field (Glance refuses such properties outright).
    extra = {k: v for k, v in image.properties.items() if k not in core}
    return {**core, **extra}


def listing(page: ImagePage, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``{"images", "first", "schema", "next"?}``; the links keep the query but the marker."""
    params = [(k, v) for k, v in query if k != "marker"]
    first = "/v2/images" + (f"?{urlencode(params)}" if params else "")
    body: dict[str, Any] = {
        "images": [image_view(i) for i in page.images],
        "first": first,
        "schema": "/v2/schemas/images",
    }
    if page.next_marker is not None:
        body["next"] = "/v2/images?" + urlencode([*params, ("marker", page.next_marker)])
    return body


def versions(root: str) -> dict[str, Any]:
    """Glance's version list; ``root`` is the region's root (``.../GlanceApi-<hex>/<REGION>``).

    Only v2.0 is claimed: the features of later minor versions (import, stores) are not
    served.
    """
    return {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{root}/v2/"}],
            }
        ]
    }
