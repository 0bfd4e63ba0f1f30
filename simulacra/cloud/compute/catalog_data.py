"""Canned compute data: the Rackspace public images and flavors Mimic served, and the limits.

Mimic drew image ids and sizes at random on every start (issue #513 asked for stable ids);
here both are derived from the image name, so they are the same across restarts, tenants
and regions. OnMetal images and flavors exist only in IAD, as in Mimic.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

# Image and flavor ids that Mimic's presets list as invalid (GET /mimic/v1.0/presets):
# a GET of one is a 404, a server create (or resize, rebuild) naming one is a 400.
INVALID_IMAGE_REFS = ("INVALID-IMAGE-ID", "1111")
INVALID_FLAVOR_REFS = ("INVALID-FLAVOR-ID", "8888", "-4", "1")

ONMETAL_REGIONS = frozenset({"IAD"})

_IMAGE_NAMESPACE = uuid.UUID("6f1c3c9e-7a39-4e57-9d4e-6d1a0f0c2b11")


def is_invalid_image_ref(image_ref: str) -> bool:
    """Mimic's ``invalid_image_ref`` preset: the listed ids and any id ending in ``Z``."""
    return image_ref in INVALID_IMAGE_REFS or image_ref.endswith("Z")


def is_invalid_flavor_ref(flavor_ref: str) -> bool:
    return flavor_ref in INVALID_FLAVOR_REFS


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    min_ram: int
    min_disk: int
    size: int
    default_show: bool
    metadata: dict[str, str]
    onmetal: bool = False


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    ram: int
    vcpus: int
    rxtx_factor: float
    disk: int
    extra_specs: dict[str, str] = field(default_factory=dict)

    @property
    def onmetal(self) -> bool:
        return self.id.startswith("onmetal-")


def _image_metadata(
    distro: str,
    *,
    vm_mode: str = "hvm",
    flavor_classes: str = "*,!onmetal",
    auto_disk_config: str = "disabled",
    os_type: str = "linux",
) -> dict[str, str]:
    return {
        "flavor_classes": flavor_classes,
        "image_type": "base",
        "os_type": os_type,
        "org.openstack__1__os_distro": distro,
        "vm_mode": vm_mode,
        "auto_disk_config": auto_disk_config,
    }


_PV_CLASSES = "*,!io1,!memory1,!compute1,!onmetal"
_WINDOWS = _image_metadata("com.microsoft.server", vm_mode="", os_type="windows")


def _pv(distro: str) -> dict[str, str]:
    return _image_metadata(
        distro, vm_mode="xen", flavor_classes=_PV_CLASSES, auto_disk_config="True"
    )


def _onmetal(distro: str) -> dict[str, str]:
    return _image_metadata(distro, vm_mode="metal", flavor_classes="onmetal")


# (name, minRam, minDisk, shown by default in the control panel, metadata), in Mimic's order.
_IMAGES: list[tuple[str, int, int, bool, dict[str, str]]] = [
    ("Windows Server 2008 R2 SP1 + SQL Server 2008 R2 SP2 Standard", 2048, 40, True, _WINDOWS),
    ("Windows Server 2008 R2 SP1 + SQL Server 2008 R2 SP2 Web", 2048, 40, True, _WINDOWS),
    ("Windows Server 2008 R2 SP1", 1024, 40, True, _WINDOWS),
    ("Windows Server 2012 R2", 1024, 40, True, _WINDOWS),
    ("Windows Server 2012 + SQL Server 2012 SP1 Web", 2048, 40, True, _WINDOWS),
    ("Windows Server 2012 + SQL Server 2012 SP1 Standard", 2048, 40, True, _WINDOWS),
    ("Windows Server 2012 R2 + SQL Server 2014 Standard", 2048, 40, True, _WINDOWS),
    ("Windows Server 2012 R2 + SQL Server 2014 Web", 2048, 40, True, _WINDOWS),
    ("Windows Server 2012", 1024, 40, True, _WINDOWS),
    ("CentOS 6 (PV)", 512, 20, False, _pv("org.centos")),
    ("CentOS 5 (PV)", 512, 20, False, _pv("org.centos")),
    ("CentOS 7 (PVHVM)", 512, 20, True, _image_metadata("org.centos")),
    ("CentOS 6 (PVHVM)", 512, 20, True, _image_metadata("org.centos")),
    ("CoreOS (Beta)", 512, 20, False, _image_metadata("org.coreos")),
    ("CoreOS (Alpha)", 512, 20, False, _image_metadata("org.coreos")),
    ("CoreOS (Stable)", 512, 20, True, _image_metadata("org.coreos")),
    ("Debian 7 (Wheezy) (PVHVM)", 512, 20, True, _image_metadata("org.debian")),
    ("Debian Unstable (Sid) (PVHVM)", 512, 20, False, _image_metadata("org.debian")),
    ("Debian Testing (Stretch) (PVHVM)", 512, 20, False, _image_metadata("org.debian")),
    ("Debian 8 (Jessie) (PVHVM)", 512, 20, True, _image_metadata("org.debian")),
    ("Fedora 21 (PVHVM)", 512, 20, True, _image_metadata("org.fedoraproject")),
    ("Fedora 22 (PVHVM)", 512, 20, True, _image_metadata("org.fedoraproject")),
    ("FreeBSD 10 (PVHVM)", 512, 20, False, _image_metadata("org.freebsd")),
    ("Gentoo 15.3 (PVHVM)", 512, 20, False, _image_metadata("org.gentoo")),
    ("OpenSUSE 13.2 (PVHVM)", 512, 20, False, _image_metadata("org.opensuse")),
    ("Red Hat Enterprise Linux 6 (PV)", 512, 20, False, _pv("org.redhat")),
    ("Red Hat Enterprise Linux 5 (PV)", 512, 20, False, _pv("org.redhat")),
    ("Red Hat Enterprise Linux 7 (PVHVM)", 512, 20, True, _image_metadata("org.redhat")),
    ("Red Hat Enterprise Linux 6 (PVHVM)", 512, 20, True, _image_metadata("org.redhat")),
    ("Ubuntu 12.04 LTS (Precise Pangolin) (PV)", 512, 20, False, _pv("org.ubuntu")),
    ("Ubuntu 14.04 LTS (Trusty Tahr) (PV)", 512, 20, False, _pv("org.ubuntu")),
    ("Ubuntu 15.04 (Vivid Vervet) (PVHVM)", 512, 20, True, _image_metadata("org.ubuntu")),
    ("Ubuntu 12.04 LTS (Precise Pangolin) (PVHVM)", 512, 20, True, _image_metadata("org.ubuntu")),
    ("Ubuntu 14.04 LTS (Trusty Tahr) (PVHVM)", 512, 20, True, _image_metadata("org.ubuntu")),
    (
        "Vyatta Network OS 6.7R9",
        1024,
        20,
        True,
        _image_metadata(
            "org.vyatta", vm_mode="xen", flavor_classes=_PV_CLASSES, auto_disk_config="False"
        ),
    ),
    ("Scientific Linux 6 (PVHVM)", 512, 20, False, _image_metadata("org.scientificlinux")),
    ("Scientific Linux 7 (PVHVM)", 512, 20, False, _image_metadata("org.scientificlinux")),
    ("OnMetal - CentOS 6", 512, 20, False, _onmetal("org.centos")),
    ("OnMetal - CentOS 7", 512, 20, False, _onmetal("org.centos")),
    ("OnMetal - CoreOS (Alpha)", 512, 20, False, _onmetal("org.coreos")),
    ("OnMetal - CoreOS (Beta)", 512, 20, False, _onmetal("org.coreos")),
    ("OnMetal - CoreOS (Stable)", 512, 20, False, _onmetal("org.coreos")),
    ("OnMetal - Debian Testing (Stretch)", 512, 20, False, _onmetal("org.debian")),
    ("OnMetal - Debian Unstable (Sid)", 512, 20, False, _onmetal("org.debian")),
    ("OnMetal - Debian 8 (Jessie)", 512, 20, False, _onmetal("org.debian")),
    ("OnMetal - Debian 7 (Wheezy)", 512, 20, False, _onmetal("org.debian")),
    ("OnMetal - Fedora 22", 512, 20, False, _onmetal("org.fedoraproject")),
    ("OnMetal - Fedora 21", 512, 20, False, _onmetal("org.fedoraproject")),
    ("OnMetal - Ubuntu 15.04 (Vivid Vervet)", 512, 20, False, _onmetal("org.ubuntu")),
    ("OnMetal - Ubuntu 14.04 LTS (Trusty Tahr)", 512, 20, False, _onmetal("org.ubuntu")),
    ("OnMetal - Ubuntu 12.04 LTS (Precise Pangolin)", 512, 20, False, _onmetal("org.ubuntu")),
    ("Arch 2015.7 (PVHVM)", 512, 20, False, _image_metadata("org.archlinux")),
]


def _stable_size(name: str) -> int:
    # Mimic drew a random size in [250000, 80000000000]; a hash keeps it in range and stable.
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return 250_000 + digest % (80_000_000_000 - 250_000)


IMAGES: tuple[Image, ...] = tuple(
    Image(
        id=str(uuid.uuid5(_IMAGE_NAMESPACE, name)),
        name=name,
        min_ram=min_ram,
        min_disk=min_disk,
        size=_stable_size(name),
        default_show=shown,
        metadata=metadata,
        onmetal=metadata["vm_mode"] == "metal",
    )
    for name, min_ram, min_disk, shown, metadata in _IMAGES
)
IMAGES_BY_ID = {image.id: image for image in IMAGES}


def _specs(kind: str, policy: str, **extra: str) -> dict[str, str]:
    return {**extra, "class": kind, "policy_class": policy}


_STANDARD = _specs("standard1", "standard_flavor")
_COMPUTE = _specs("compute1", "compute_flavor")
_PERF1 = _specs("performance1", "performance_flavor")
_ONMETAL = _specs(
    "onmetal",
    "onmetal_flavor",
    quota_resources="instances=onmetal-compute-v1-instances,ram=onmetal-compute-v1-ram",
)
_PERF2 = _specs("performance2", "performance_flavor")
_MEMORY = _specs("memory1", "memory_flavor")
_IO = _specs("io1", "io_flavor")
_GENERAL = _specs("general1", "general_flavor")

# (id, name, ram MB, vcpus, rxtx_factor, disk GB, extra specs), in Mimic's order.
_FLAVORS: list[tuple[str, str, int, int, float, int, dict[str, str]]] = [
    ("2", "512MB Standard Instance", 512, 1, 80, 20, _STANDARD),
    ("3", "1GB Standard Instance", 1024, 1, 120, 40, _STANDARD),
    ("4", "2GB Standard Instance", 2048, 2, 240, 80, _STANDARD),
    ("5", "4GB Standard Instance", 4096, 2, 400, 160, _STANDARD),
    ("6", "8GB Standard Instance", 8192, 4, 600, 320, _STANDARD),
    ("7", "15GB Standard Instance", 15360, 6, 800, 620, _STANDARD),
    ("8", "30GB Standard Instance", 30720, 8, 1200, 1200, _STANDARD),
    ("compute1-4", "3.75 GB Compute v1", 3840, 2, 312.5, 0, _COMPUTE),
    ("compute1-8", "7.5 GB Compute v1", 7680, 4, 625, 0, _COMPUTE),
    ("compute1-15", "15 GB Compute v1", 15360, 8, 1250, 0, _COMPUTE),
    ("compute1-30", "30 GB Compute v1", 30720, 16, 2500, 0, _COMPUTE),
    ("compute1-60", "60 GB Compute v1", 61440, 32, 5000, 0, _COMPUTE),
    ("performance1-1", "1 GB Performance", 1024, 1, 200, 20, _PERF1),
    ("performance1-2", "2 GB Performance", 2048, 2, 400, 40, _PERF1),
    ("performance1-4", "4 GB Performance", 4096, 4, 800, 40, _PERF1),
    ("performance1-8", "8 GB Performance", 8192, 8, 1600, 40, _PERF1),
    ("onmetal-compute1", "OnMetal Compute v1", 32768, 20, 10000, 32, _ONMETAL),
    ("onmetal-io1", "OnMetal IO v1", 131072, 40, 10000, 32, _ONMETAL),
    ("onmetal-memory1", "OnMetal Memory v1", 524288, 24, 10000, 32, _ONMETAL),
    ("performance2-15", "15 GB Performance", 15360, 4, 1250, 40, _PERF2),
    ("performance2-30", "30 GB Performance", 30720, 8, 2500, 40, _PERF2),
    ("performance2-60", "60 GB Performance", 61440, 16, 5000, 40, _PERF2),
    ("performance2-90", "90 GB Performance", 92160, 24, 7500, 40, _PERF2),
    ("performance2-120", "120 GB Performance", 122880, 32, 10000, 40, _PERF2),
    ("memory1-15", "15 GB Memory v1", 15360, 2, 625, 0, _MEMORY),
    ("memory1-30", "30 GB Memory v1", 30720, 4, 1250, 0, _MEMORY),
    ("memory1-60", "60 GB Memory v1", 61440, 8, 2500, 0, _MEMORY),
    ("memory1-120", "120 GB Memory v1", 122880, 16, 5000, 0, _MEMORY),
    ("memory1-240", "240 GB Memory v1", 245760, 32, 10000, 0, _MEMORY),
    ("io1-15", "15 GB I/O v1", 15360, 4, 1250, 40, _IO),
    ("io1-30", "30 GB I/O v1", 30720, 8, 2500, 40, _IO),
    ("io1-60", "60 GB I/O v1", 61440, 16, 5000, 40, _IO),
    ("io1-90", "90 GB I/O v1", 92160, 24, 7500, 40, _IO),
    ("io1-120", "120 GB I/O v1", 122880, 32, 10000, 40, _IO),
    ("general1-1", "1 GB General Purpose v1", 1024, 1, 200, 20, _GENERAL),
    ("general1-2", "2 GB General Purpose v1", 2048, 2, 400, 40, _GENERAL),
    ("general1-4", "4 GB General Purpose v1", 4096, 4, 800, 80, _GENERAL),
    ("general1-8", "8 GB General Purpose v1", 8192, 8, 1600, 160, _GENERAL),
]

FLAVORS: tuple[Flavor, ...] = tuple(Flavor(*row) for row in _FLAVORS)
FLAVORS_BY_ID = {flavor.id: flavor for flavor in FLAVORS}


def offered_in(item: Image | Flavor, region: str) -> bool:
    return not item.onmetal or region in ONMETAL_REGIONS


def images_in(region: str) -> list[Image]:
    return [image for image in IMAGES if offered_in(image, region)]


def flavors_in(region: str) -> list[Flavor]:
    return [flavor for flavor in FLAVORS if offered_in(flavor, region)]


# Mimic's canned absolute limits; the ``total*Used`` values are computed per tenant and region.
ABSOLUTE_LIMITS: dict[str, Any] = {
    "maxServerMeta": 40,
    "maxPersonality": 5,
    "totalPrivateNetworksUsed": 0,
    "maxImageMeta": 40,
    "maxPersonalitySize": 1000,
    "maxSecurityGroupRules": -1,
    "maxTotalKeypairs": 100,
    "totalCoresUsed": 0,
    "totalRAMUsed": 0,
    "totalInstancesUsed": 0,
    "maxSecurityGroups": -1,
    "totalFloatingIpsUsed": 0,
    "maxTotalCores": -1,
    "totalSecurityGroupsUsed": 0,
    "maxTotalPrivateNetworks": 3,
    "maxTotalFloatingIps": -1,
    "maxTotalInstances": 200,
    "maxTotalRAMSize": 256000,
}
MAX_SERVER_METADATA = ABSOLUTE_LIMITS["maxServerMeta"]
