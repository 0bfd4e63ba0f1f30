"""Mimic-compatible cloud mocks: identity, compute, images, load balancers, Fastly, control.

``build_cloud`` is the one place that lists the mocked services: each package's
``install(core)`` registers its catalog entries, backend and presets, and returns
its routes.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.clock import Clock
from simulacra.cloud.catalog import Catalog
from simulacra.cloud.core import CloudCore


def build_cloud(clock: Clock, regions: tuple[str, ...]) -> tuple[CloudCore, list[BaseRoute]]:
    from simulacra.cloud import compute, control, fastly, identity, image, loadbalancer

    core = CloudCore(clock=clock, catalog=Catalog(regions))
    routes: list[BaseRoute] = [*control.ROUTES]
    for service in (identity, compute, image, loadbalancer, fastly):
        routes += service.install(core)
    return core, routes
