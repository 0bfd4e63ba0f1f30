"""Memory per stub: the resident memory of a server holding N indexed stubs (issue 18, item 7).

    python -m bench.memory --stubs 100000                 # memory:// and SQLite
    python -m bench.memory --stubs 100000 --stores memory --json out.json

For each store, a fresh ``simulacra serve`` process: its RSS empty; after loading N stubs
(bench.peers' ``stubs-10k`` SOAP stubs: ``POST``, a ``contains`` pattern ``<id>NNNNN</id>``, a
small response), imported in chunks of 10,000 (``POST .../stubs/import``); and once a playback
session has begun and played one request (which builds the scenario's index). VmRSS and
VmHWM (the peak) come from /proc. The goal: 100,000 indexed stubs under 250 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    BenchError,
    Client,
    ServerProcess,
    log,
    render_table,
    simulacra_process,
)
from bench.playback import id_width, request_body

GOAL_MB = 250.0
GOAL_STUBS = 100_000
CHUNK = 10_000  # stubs per import request
STORES = ("memory", "sqlite")


def stub_document(i: int, width: int) -> dict[str, Any]:
    """As bench.peers' ``stubs-10k`` (Simulacra's document)."""
    return {
        "request": {"method": "POST", "bodyPatterns": {"contains": [f"<id>{i:0{width}d}</id>"]}},
        "response": {"status": 200, "body": f"<response>{i}</response>"},
    }


@dataclass
class Figures:
    store: str
    stubs: int
    rss_empty_mb: float
    rss_loaded_mb: float
    rss_indexed_mb: float
    peak_mb: float  # VmHWM: the highest RSS the process reached, loading included
    load_s: float
    first_playback_s: float  # beginning the session and the first playback (the index)

    @property
    def per_stub_kb(self) -> float:
        """What each stub adds to the empty server's RSS, indexed."""
        return (self.rss_indexed_mb - self.rss_empty_mb) * 1024 / max(self.stubs, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "per_stub_kb": round(self.per_stub_kb, 3),
            "goal_mb": GOAL_MB,
            "met": self.rss_indexed_mb < GOAL_MB if self.stubs >= GOAL_STUBS else None,
        }


def load(client: Client, base: str, n: int, width: int, chunk: int = CHUNK) -> None:
    """The stubs into the scenario: the bulk import, else PUTs through a record session."""
    first = [stub_document(i, width) for i in range(min(chunk, n))]
    status, data = client.request(
        "POST", f"{base}/stubs/import", json.dumps(first), {"Content-Type": "application/json"}
    )
    if status in (404, 405):  # no bulk import in this revision
        log("  no bulk import here: PUT, 8 at a time")
        session = f"rec_{uuid.uuid4().hex[:8]}"
        begin = {"begin": None, "session": session, "mode": "record"}
        client.json("POST", f"{base}/action", begin, 200)

        def put(i: int) -> None:
            client.json("PUT", f"{base}/stubs", stub_document(i, width), 201, {"session": session})

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in pool.map(put, range(n)):
                pass
        client.json("POST", f"{base}/action", {"end": None, "session": session}, 200)
        return
    if status != 201:
        raise BenchError(f"POST {base}/stubs/import answered {status}: {data[:300]!r}")
    for start in range(chunk, n, chunk):
        documents = [stub_document(i, width) for i in range(start, min(start + chunk, n))]
        client.json("POST", f"{base}/stubs/import", documents, 201)


def measure(
    store: str, n: int, workdir: Path, chunk: int = CHUNK, tree: Path | None = None
) -> Figures:
    url = (
        "memory://"
        if store == "memory"
        else f"sqlite:///{workdir / f'mem-{uuid.uuid4().hex[:6]}.db'}"
    )
    server = simulacra_process(url, "simulacra", workdir / f"memory-{store}.log")
    if tree is not None:  # another revision's sources (``git archive REV | tar -x``)
        server.cwd = tree
    server.start()
    try:
        return _measure(server, store, n, chunk)
    finally:
        server.stop()


def _measure(server: ServerProcess, store: str, n: int, chunk: int) -> Figures:
    client = Client(server.port, timeout=600)
    time.sleep(0.5)  # let startup settle (the GC tuning runs once the server is up)
    empty = server.memory().current_mb
    scenario = f"memory_{uuid.uuid4().hex[:8]}"
    base = f"/api/v2/scenarios/objects/{scenario}"
    width = id_width(n)
    client.json("PUT", "/api/v2/scenarios", {"scenario": scenario}, 201)
    started = time.perf_counter()
    load(client, base, n, width, chunk)
    load_s = time.perf_counter() - started
    loaded = server.memory().current_mb
    log(f"  {store}: {n:,} stubs loaded in {load_s:.1f}s, RSS {loaded:.0f} MB")
    play = f"play_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    client.json("POST", f"{base}/action", {"begin": None, "session": play, "mode": "playback"}, 200)
    last = n - 1
    headers = {"session": play, "Content-Type": "text/xml; charset=utf-8"}
    status, data = client.request("POST", f"{base}/stubs", request_body(last, width), headers)
    first_s = time.perf_counter() - started
    expected = f"<response>{last}</response>".encode()
    if status != 200 or data != expected:
        raise BenchError(f"playback of stub {last} answered {status} {data[:300]!r}")
    time.sleep(0.5)
    memory = server.memory()
    figures = Figures(store, n, empty, loaded, memory.current_mb, memory.peak_mb, load_s, first_s)
    log(
        f"  {store}: indexed, RSS {figures.rss_indexed_mb:.0f} MB (peak {figures.peak_mb:.0f}),"
        f" {figures.per_stub_kb:.2f} KB a stub"
    )
    return figures


def report(rows: Sequence[Figures]) -> str:
    table = [
        ["store", "stubs", "empty MB", "loaded MB", "indexed MB", "peak MB", "KB/stub", "load s"],
        *(
            [
                f.store,
                f"{f.stubs:,}",
                f"{f.rss_empty_mb:.0f}",
                f"{f.rss_loaded_mb:.0f}",
                f"{f.rss_indexed_mb:.0f}",
                f"{f.peak_mb:.0f}",
                f"{f.per_stub_kb:.2f}",
                f"{f.load_s:.1f}",
            ]
            for f in rows
        ),
    ]
    return render_table(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--stubs", type=int, default=GOAL_STUBS, help="stubs to load")
    parser.add_argument(
        "--stores", default=",".join(STORES), help="memory, sqlite or both (default both)"
    )
    parser.add_argument(
        "--chunk", type=int, default=CHUNK, help=f"stubs per import request (default {CHUNK:,})"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        help="run the server from this source tree (e.g. a `git archive` of another revision)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in stores if s not in STORES]
    if unknown or not stores or args.stubs < 1:
        parser.error(f"--stores takes {', '.join(STORES)}; --stubs at least 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="simulacra-memory-") as tmp:
        for store in stores:
            rows.append(measure(store, args.stubs, Path(tmp), max(1, args.chunk), args.tree))
    print(report(rows))
    for f in rows:
        if f.stubs >= GOAL_STUBS:
            word = "MET" if f.rss_indexed_mb < GOAL_MB else "NOT MET"
            print(
                f"{f.store}: {f.stubs:,} indexed stubs at {f.rss_indexed_mb:.0f} MB RSS"
                f" (goal < {GOAL_MB:.0f} MB): {word}"
            )
    if args.json:
        document = {"goal_mb": GOAL_MB, "stubs": args.stubs, "stores": [f.to_dict() for f in rows]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
