"""The web console at ``/console``: scenarios, the tracker's live tail, analytics, the cloud.

Each section is a module of its own with its ``ROUTES``; ``page.py`` holds what they share.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulacra.console import page


def routes() -> list[BaseRoute]:
    """Every console route (the sections' modules are imported here, not at package import:
    they import the admin API's modules, which import nothing of the console)."""
    from simulacra.console import analytics, cloud, scenarios, tracker

    return [
        *page.ROUTES,
        *scenarios.ROUTES,
        *tracker.ROUTES,
        *analytics.ROUTES,
        *cloud.ROUTES,
    ]
