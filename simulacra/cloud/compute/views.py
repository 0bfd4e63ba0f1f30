"""Nova's JSON shapes for the compute model's values (Mimic's key order and fields).

Links are absolute and built from the request, so the same state reads right under any
host name; ``self`` links carry ``v2``, ``bookmark`` links do not, as in Nova.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from simulacra.clock import iso8601
from simulacra.cloud.compute.catalog_data import Flavor, Image
from simulacra.cloud.compute.model import (
    KEYPAIR_USER_ID,
    USER_ID,
    Keypair,
    Server,
    Snapshot,
    state_of,
)

# Base images have no creation time of their own; Mimic showed "1972-01-01_15-59-11".
BASE_IMAGE_TIME = "1972-01-01T15:59:11Z"


@dataclass(frozen=True)
class Urls:
    """``root`` is ``<base>/mimicking/<NovaApi id>/<REGION>``."""

    root: str
    tenant: str

    def self_link(self, kind: str, item_id: str) -> str:
        return f"{self.root}/v2/{self.tenant}/{kind}/{item_id}"

    def bookmark(self, kind: str, item_id: str) -> str:
        return f"{self.root}/{self.tenant}/{kind}/{item_id}"

    def links(self, kind: str, item_id: str) -> list[dict[str, str]]:
        return [
            {"href": self.self_link(kind, item_id), "rel": "self"},
            {"href": self.bookmark(kind, item_id), "rel": "bookmark"},
        ]

    def image_links(self, image_id: str) -> list[dict[str, str]]:
        return [
            *self.links("images", image_id),
            {
                "href": f"{self.root}/images/{image_id}",
                "type": "application/vnd.openstack.image",
                "rel": "alternate",
            },
        ]

    @property
    def version_root(self) -> str:
        return f"{self.root}/v2/"


def server_created(server: Server, urls: Urls) -> dict[str, Any]:
    return {
        "OS-DCF:diskConfig": server.disk_config,
        "id": server.id,
        "links": urls.links("servers", server.id),
        "adminPass": server.admin_pass,
    }


def server_created_json(server: Server, urls: Urls) -> bytes:
    """``{"server": server_created(...)}`` as JSON, the answer to a create."""
    return orjson.dumps({"server": server_created(server, urls)})


def server_brief(server: Server, urls: Urls) -> dict[str, Any]:
    return {"name": server.name, "links": urls.links("servers", server.id), "id": server.id}


def server_detail(server: Server, urls: Urls, now: float) -> dict[str, Any]:
    vm_state, task_state, power_state = state_of(server.status)
    image: dict[str, Any] | str = ""  # Nova's value for a server booted from a volume
    if server.image_ref:
        image = {
            "id": server.image_ref,
            "links": [{"href": urls.bookmark("images", server.image_ref), "rel": "bookmark"}],
        }
    return {
        "OS-EXT-STS:power_state": power_state,
        "OS-EXT-STS:task_state": task_state,
        "accessIPv4": server.public_ipv4,
        "accessIPv6": server.public_ipv6,
        "hostId": server.host_id,
        "progress": server.progress(now),
        "user_id": USER_ID,
        "id": server.id,
        "OS-DCF:diskConfig": server.disk_config,
        "OS-EXT-STS:vm_state": vm_state,
        "addresses": server.addresses(),
        "created": iso8601(server.created),
        "updated": iso8601(server.updated),
        "flavor": {
            "id": server.flavor_ref,
            "links": [{"href": urls.bookmark("flavors", server.flavor_ref), "rel": "bookmark"}],
        },
        "image": image,
        "links": urls.links("servers", server.id),
        "key_name": server.key_name,
        "metadata": dict(server.metadata),
        "name": server.name,
        "tenant_id": server.tenant_id,
        "status": server.status,
    }


def _detail_key(server: Server, urls: Urls, now: float) -> tuple[Any, ...]:
    """Everything ``server_detail`` reads (``now`` through the progress it shows)."""
    return (
        urls.root,
        urls.tenant,
        server.progress(now),
        server.status,
        server.updated,
        server.name,
        server.flavor_ref,
        server.image_ref,
        server.key_name,
        server.disk_config,
        server.id,
        server.tenant_id,
        server.host_id,
        server.created,
        server.private_ipv4,
        server.public_ipv4,
        server.public_ipv6,
        tuple(server.metadata.items()),
    )


def server_detail_json(server: Server, urls: Urls, now: float) -> bytes:
    """``orjson.dumps(server_detail(server, urls, now))``, reused while nothing it shows changes.

    Listing 1,000 servers in detail built 1,000 dicts and serialized them on every request
    (~8 ms, most of the list's CPU time, bench/peers.py). The JSON of each server is kept on
    the server with the key it was built from (``_detail_key``: every field the detail shows,
    the progress at ``now`` and the URLs), and rebuilt when the key differs, so no mutation
    path has to remember to invalidate it.
    """
    key = _detail_key(server, urls, now)
    cached = server.view_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    data = orjson.dumps(server_detail(server, urls, now))
    server.view_cache = (key, data)
    return data


def json_list(key: str, items: Sequence[bytes], extra: dict[str, Any] | None = None) -> bytes:
    """``orjson.dumps({key: [*items], **extra})`` from items already serialized."""
    head = b"{" + orjson.dumps(key) + b":["
    tail = b"]"
    for name, value in (extra or {}).items():
        tail += b"," + orjson.dumps(name) + b":" + orjson.dumps(value)
    tail += b"}"
    if not items:
        return head + tail
    if len(items) == 1:
        return head + items[0] + tail
    # One copy of the (large) items: the small head and tail ride on the first and last.
    return b",".join([head + items[0], *items[1:-1], items[-1] + tail])


def flavor_brief(flavor: Flavor, urls: Urls) -> dict[str, Any]:
    return {"id": flavor.id, "links": urls.links("flavors", flavor.id), "name": flavor.name}


def flavor_detail(flavor: Flavor, urls: Urls) -> dict[str, Any]:
    return {
        "swap": "",
        "OS-FLV-EXT-DATA:ephemeral": 0,
        **flavor_brief(flavor, urls),
        "ram": flavor.ram,
        "vcpus": flavor.vcpus,
        "rxtx_factor": flavor.rxtx_factor,
        "disk": flavor.disk,
        "OS-FLV-WITH-EXT-SPECS:extra_specs": dict(flavor.extra_specs),
    }


def image_brief(image: Image | Snapshot, urls: Urls) -> dict[str, Any]:
    return {"id": image.id, "links": urls.image_links(image.id), "name": image.name}


def image_detail(image: Image | Snapshot, urls: Urls) -> dict[str, Any]:
    if isinstance(image, Snapshot):
        created = updated = iso8601(image.created)
        size, shown = image.size, False
        min_ram, min_disk = image.min_ram, image.min_disk
    else:
        created = updated = BASE_IMAGE_TIME
        size, shown = image.size, image.default_show
        min_ram, min_disk = image.min_ram, image.min_disk
    detail: dict[str, Any] = {
        **image_brief(image, urls),
        "minRam": min_ram,
        "minDisk": min_disk,
        "OS-EXT-IMG-SIZE:size": size,
        "com.rackspace__1__ui_default_show": shown,
        "created": created,
        "updated": updated,
        "progress": 100,
        "status": "ACTIVE",
        "metadata": dict(image.metadata),
    }
    if isinstance(image, Snapshot):
        detail["server"] = {"id": image.server_id, "links": urls.links("servers", image.server_id)}
    return detail


def keypair_view(keypair: Keypair, *, full: bool = False) -> dict[str, Any]:
    """The pair as listed or created; ``full`` adds what Nova's GET of one pair shows."""
    view: dict[str, Any] = {
        "name": keypair.name,
        "public_key": keypair.public_key,
        "fingerprint": keypair.fingerprint,
        "user_id": KEYPAIR_USER_ID,
    }
    if full:
        view.update(
            {
                "id": keypair.id,
                "created_at": iso8601(keypair.created),
                "updated_at": None,
                "deleted_at": None,
                "deleted": False,
            }
        )
    return view


def version(urls: Urls) -> dict[str, Any]:
    """Nova's v2.0 version document: no microversions, so novaclient settles on 2.0."""
    return {
        "id": "v2.0",
        "status": "CURRENT",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [
            {"href": urls.version_root, "rel": "self"},
            {"href": "http://docs.openstack.org/", "type": "text/html", "rel": "describedby"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}
        ],
    }
