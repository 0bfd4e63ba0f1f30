"""One settings object for the whole server, and the parsing of its values.

The CLI builds it from flags; with ``--server granian`` or ``uvicorn`` the ASGI factory
rebuilds it from the environment (``SIMULACRA_*``), because their worker processes import
the app by name. The parsers here import only the standard library: the CLI checks
settings before the app is loaded, in a process that may stay alive beside the workers
(granian's parent, or the built-in server's supervisor), and should not carry the app's
modules.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_STORE = "sqlite:///simulacra.db"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# uvicorn's default is info; here a line per request doubles playback's CPU (README).
DEFAULT_LOG_LEVEL = "warning"
MEMORY_URLS = ("memory://", "memory:", "sqlite://", "sqlite:///:memory:")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def sqlite_path_from_url(url: str) -> str:
    """Read the URL as SQLAlchemy does: three slashes relative, four absolute."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path:
        raise ValueError(f"SQLite URL {url!r} names no file")
    return path


def split_url(url: str) -> tuple[str, str | None]:
    """Return (libpq URL, schema): a ``schema`` query parameter selects a schema of its own
    (created if missing), so tests and tenants can share one database."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = [(k, v) for k, v in query if k != "schema"]
    if schema is not None and not SCHEMA_RE.match(schema):
        raise ValueError(f"illegal schema name {schema!r} in store URL")
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), "")), schema


def check_store_url(url: str) -> None:
    """ValueError, with what to write instead, for a URL ``open_store`` would refuse."""
    if is_postgres_url(url):
        split_url(url)
    elif url not in MEMORY_URLS:
        if not url.startswith("sqlite:"):
            raise ValueError(
                f"unsupported store URL {url!r}: use sqlite:///file.db, memory://"
                " or postgresql://..."
            )
        sqlite_path_from_url(url)


def parse_regions(value: str) -> tuple[str, ...]:
    """``"ORD, dfw"`` -> ``("ORD", "DFW")``; refuses an empty list."""
    regions = tuple(dict.fromkeys(r.strip().upper() for r in value.split(",") if r.strip()))
    if not regions:
        raise ValueError("--regions needs at least one region, e.g. ORD,DFW,IAD")
    return regions


Binding = tuple[str, str, int]  # scenario, session, port
Recording = tuple[str, str, int, str]  # scenario, session, port, upstream URL


def parse_bindings(value: str) -> list[Binding]:
    """``"orders/s1=9001\nusers/s2=9002"`` -> [("orders", "s1", 9001), ...] (``--bind``,
    one per line or comma)."""
    bindings: list[Binding] = []
    for item in (part.strip() for part in value.replace("\n", ",").split(",")):
        if not item:
            continue
        names, equals, port = item.rpartition("=")
        scenario, slash, session = names.partition("/")
        if not equals or not slash or not scenario or not session or not port.isdigit():
            raise ValueError(f"--bind {item!r}: write SCENARIO/SESSION=PORT, e.g. orders/s1=9001")
        number = int(port)
        if not 1024 <= number <= 65535:
            raise ValueError(f"--bind {item!r}: the port must be 1024-65535")
        bindings.append((scenario, session, number))
    return bindings


def parse_recordings(value: str) -> list[Recording]:
    """``"orders/rec=9001=https://api.example.com"`` (one per line) -> [("orders", "rec",
    9001, "https://api.example.com")] (``--record``)."""
    recordings: list[Recording] = []
    for item in (line.strip() for line in value.split("\n")):
        if not item:
            continue
        binding, equals, upstream = item.partition("=")[2].partition("=")
        names = item.partition("=")[0]
        scenario, slash, session = names.partition("/")
        if not equals or not slash or not scenario or not session or not binding.isdigit():
            raise ValueError(
                f"--record {item!r}: write SCENARIO/SESSION=PORT=UPSTREAM,"
                " e.g. orders/rec=9001=https://api.example.com"
            )
        port = int(binding)
        if not 1024 <= port <= 65535:
            raise ValueError(f"--record {item!r}: the port must be 1024-65535")
        if not upstream.startswith(("http://", "https://")):
            raise ValueError(f"--record {item!r}: the upstream must be an http(s) URL")
        recordings.append((scenario, session, port, upstream))
    return recordings


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8900
    store_url: str = DEFAULT_STORE
    # Bodies above this many bytes are refused with 413 (stubs, playback, uploads).
    max_body_bytes: int = 10 * 1024 * 1024
    # ... but a bulk import of stubs (``POST .../stubs/import``) may send this many: 100,000
    # small stubs are about 20 MB.
    max_import_bytes: int = 256 * 1024 * 1024
    server: str = "simulacra"
    # Server processes on this machine; more than one needs a shared (PostgreSQL) store.
    workers: int = 1
    # How often in-memory session bookkeeping (last_used) is flushed to the store.
    flush_interval_s: float = 2.0
    # Cloud mocks: regions in the service catalog, and the clock they run on.
    regions: str = "ORD,DFW,IAD"
    realtime: bool = False
    # Where the virtual clock starts (``--clock-start``; clock.parse_start): Mimic's epoch,
    # ``now``, an ISO date or epoch seconds.
    clock_start: str = "epoch"
    # Keep the cloud mocks' state and clock in the PostgreSQL store, shared by every
    # instance and worker (docs/scaling.md); off, each process has its own, as in Mimic.
    shared_cloud: bool = False
    # Tracker: record every playback, stub and session call (off only for comparisons),
    # keeping the newest ``tracker_cap`` records; older ones are deleted as new ones land.
    tracking: bool = True
    tracker_cap: int = 100_000
    # A server process (``simulacra serve``) tunes the garbage collector once started
    # (app.py). Off for apps made in a test process: a frozen app is never collected.
    tune_gc: bool = False
    # Scenario archives (export zips) loaded at start, each replacing a scenario of its
    # name and beginning its session in playback (one path per line, ``--load``).
    load: str = ""
    # Playback sessions bound to their own ports at start (``--bind``; parse_bindings).
    bind: str = ""
    # Sessions recording an upstream on their own ports from the start (``--record``;
    # parse_recordings, one per line).
    record: str = ""
    # ``simulacra serve``'s logging (simulacra/ops.py configure_logging): the level of
    # Simulacra's loggers, the access log's included, and text or JSON lines.
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = "text"

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
