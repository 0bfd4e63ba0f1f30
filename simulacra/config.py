"""One settings object for the whole server.

The CLI builds it from flags; the ASGI factory rebuilds it from the environment
(``SIMULACRA_*``), because the server process imports the app by name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

DEFAULT_STORE = "sqlite:///simulacra.db"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8900
    store_url: str = DEFAULT_STORE
    # Bodies above this many bytes are refused with 413 (stubs, playback, uploads).
    max_body_bytes: int = 10 * 1024 * 1024
    server: str = "granian"
    # Server processes on this machine; more than one needs a shared (PostgreSQL) store.
    workers: int = 1
    # How often in-memory session bookkeeping (last_used) is flushed to the store.
    flush_interval_s: float = 2.0
    # Cloud mocks: regions in the service catalog, and the clock they run on.
    regions: str = "ORD,DFW,IAD"
    realtime: bool = False
    # Tracker: record every playback, stub and session call (off only for comparisons),
    # keeping the newest ``tracker_cap`` records; older ones are deleted as new ones land.
    tracking: bool = True
    tracker_cap: int = 100_000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"SIMULACRA_{field.name.upper()}")
            if raw is None and field.name == "store_url":
                raw = env.get("SIMULACRA_STORE")
            if raw is None:
                continue
            if field.type in ("int", int):
                values[field.name] = int(raw)
            elif field.type in ("float", float):
                values[field.name] = float(raw)
            elif field.type in ("bool", bool):
                values[field.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[field.name] = raw
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        return {
            f"SIMULACRA_{field.name.upper()}": str(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }
