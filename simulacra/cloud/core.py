"""The cloud mocks' shared state: one clock, one catalog, the service backends.

Everything lives in memory (Mimic's point is speed and disposability) and is
reachable from a request as ``request.app.state.cloud``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulacra.clock import Clock, VirtualClock
from simulacra.cloud.catalog import DEFAULT_REGIONS, Catalog


@dataclass
class CloudCore:
    clock: Clock = field(default_factory=VirtualClock)
    catalog: Catalog = field(default_factory=lambda: Catalog(DEFAULT_REGIONS))
    # Backends register here by name ("identity", "compute", ...).
    services: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        """Every backend's state, and the virtual clock back to where it started (a real
        clock has no reset)."""
        for owner in (*self.services.values(), self.clock):
            reset = getattr(owner, "reset", None)
            if reset is not None:
                reset()
