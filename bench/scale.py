"""Issue 18 ("Scale without stalls") in one run: items 1-7 measured, figures beside goals.

    python -m bench.scale                          # everything, ~25 minutes on the 2-core VM
    python -m bench.scale --quick                  # a smoke run with small sizes (~3 minutes)
    python -m bench.scale --items 1,2 --json out.json

Items 1 and 2 are measured here; items 3-7 run their own bench as a subprocess with
``--json`` and read its figures (a bench that is missing or fails gives a row that says
"not measured", never a failed run):

1. **Stalls.** One-stub Mirage playback (bench.peers' ``stubs-1``) under wrk, alone, then
   while one client does each of: (a) polls ``GET /api/v2/tracker/records?q=...`` as fast
   as it can over a full tracker (100,000 records), (b) ends and begins a playback session
   of a 100,000-stub scenario, (c) lists those 100,000 stubs (``GET .../stubs``, following
   ``paging.next`` if the listing is paged), (d) bulk-imports 100,000 stubs into a fresh
   scenario (a 10,000-stub zip upload where the import endpoint is missing), and, on
   SQLite, (r) restarts the server and sends the first playback to the 100,000-stub
   session. On memory:// and SQLite. Figure: req/s and p99 against playback alone in the
   same round (medians of the rounds' ratios); goal >= 0.8x and < 2x.
2. **Bulk loading.** 100,000 ``contains`` stubs in one ``POST .../stubs/import`` on
   memory://, SQLite and PostgreSQL, and the equivalent mappings in one WireMock
   ``POST /__admin/mappings/import`` in the same run. Goal: < 5 s on SQLite, < 15 s on
   PostgreSQL, SQLite's rate >= 3x WireMock's.
3. ``bench.shared_cloud``, 4. ``bench.sequences``, 5. ``bench.peers`` (JSONPath and XPath),
6. ``bench.connections``, 7. ``bench.memory``: see ``SUB_BENCHES``.

Progress goes to stderr (with each sub-bench's own output); stdout holds the report.
A measurement, not a test: it exits 0 whether or not goals are met (1 on a setup failure).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from bench._common import (
    REPO_ROOT,
    BenchError,
    Client,
    ServerProcess,
    Stopwatch,
    log,
    render_table,
    run_bench,
    run_wrk,
    simulacra_process,
    write_lua,
)
from bench.dataplane import base_tree
from bench.peers import (
    DEFAULT_PEERS_DIR,
    STUB_WORKLOADS,
    WIREMOCK,
    Lab,
    Options,
    SimulacraStubs,
    StubWorkload,
    WireMockStubs,
    ensure_npm_peers,
    java_version,
    machine_line,
)
from bench.stalls import multipart
from tests.zip_helpers import scenario_zip

ITEMS = (1, 2, 3, 4, 5, 6, 7)
PG_URL = "postgresql://127.0.0.1:5432/test"
PG_SCHEMA = "bench_scale"
TRACKER_CAP = 100_000  # the tracker's default --tracker-cap
ZIP_MAX_STUBS = 9_999  # one uploaded archive holds 10,000 entries, its YAML one of them
RECORDS = "/api/v2/tracker/records"
SCENARIOS = "/api/v2/scenarios"
PROBE_TIMEOUT_S = 600.0  # a probe's one request may be slow: that is what is measured
WIREMOCK_TIMEOUT_S = 300.0  # one WireMock import at most; over it the row says so
WIREMOCK_STUBS = 10_000

STALL_RPS_GOAL = 0.8
STALL_P99_GOAL = 2.0
SQLITE_LOAD_GOAL_S = 5.0
PG_LOAD_GOAL_S = 15.0
WIREMOCK_LOAD_GOAL = 3.0


@dataclass(frozen=True)
class Sizes:
    stubs: int  # the big scenario (1b, 1c), each import of 1d, and item 2's loads
    tracker: int  # tracker records before 1a polls
    duration: int  # seconds per wrk run
    rounds: int  # item 1's interleaved rounds, item 2's loads per target


FULL = Sizes(stubs=100_000, tracker=TRACKER_CAP, duration=6, rounds=3)
QUICK = Sizes(stubs=2_000, tracker=5_000, duration=2, rounds=1)


@dataclass
class Row:
    """One line of the summary: ``met`` is None where there is no figure or no goal."""

    item: str
    what: str
    figure: str
    goal: str
    met: bool | None = None
    value: float | None = None

    def cells(self) -> list[str]:
        verdict = {True: "yes", False: "NO", None: "-"}[self.met]
        return [self.item, self.what, self.figure, self.goal, verdict]


@dataclass
class Section:
    """An item's rows, its detail table and its raw figures for --json."""

    rows: list[Row] = field(default_factory=list)
    detail: list[list[str]] = field(default_factory=list)  # [header, *rows]
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def not_measured(item: str, what: str, goal: str, why: str) -> Section:
    return Section(rows=[Row(item, what, f"not measured ({why})", goal)], raw={"error": why})


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# the stubs and the server ------------------------------------------------------------


def bulk_workload(n: int) -> StubWorkload:
    """bench.peers' ``stubs-10k`` at ``n`` stubs: one ``contains`` id each, SOAP bodies."""
    return StubWorkload("bulk", f"{n:,} stubs", n, "contains")


def stub_documents(server: ServerProcess, n: int) -> list[dict[str, Any]]:
    """What ``PUT .../stubs`` takes, ``n`` times: the stubs of bench.peers' stub rows."""
    workload = bulk_workload(n)
    peer = SimulacraStubs(server)
    return [peer.stub_document(workload, i) for i in range(n)]


class ScaleLab(Lab):
    """bench.peers' Lab (start, settle, stop servers; WireMock), Simulacra on any store,
    from this checkout or from ``tree`` (a revision unpacked by ``--rev``)."""

    def __init__(self, opts: Options, tree: Path | None) -> None:
        super().__init__(opts, None)
        self.tree = tree

    def simulacra_on(self, store: str, label: str) -> ServerProcess:
        log_path = self._log_path("simulacra-" + re.sub(r"[^A-Za-z0-9_-]+", "_", label))
        server = simulacra_process(store, "simulacra", log_path)
        server.name = f"simulacra ({label})"
        if self.tree is not None:
            server.cwd = self.tree
        return self.start(server)

    def stop(self, server: ServerProcess) -> None:
        self.servers.remove(server)
        server.stop()


def create_scenario(client: Client, scenario: str) -> None:
    client.json("PUT", SCENARIOS, {"scenario": scenario}, 201)


def delete_scenario(client: Client, scenario: str) -> None:
    path = f"{SCENARIOS}/objects/{quote(scenario)}?force=true"
    status, data = client.request("DELETE", path)
    if status not in (200, 404, 412):  # 412: Mirage's answer for a scenario not there
        raise BenchError(f"DELETE {path} answered {status}: {data[:300]!r}")


def stub_count(client: Client, scenario: str) -> int:
    status, data = client.request("GET", f"{SCENARIOS}/objects/{quote(scenario)}")
    if status != 200:
        raise BenchError(f"GET scenario {scenario} answered {status}: {data[:300]!r}")
    return int(json.loads(data)["stubs"])


@dataclass
class Imported:
    status: int
    seconds: float
    reply: bytes

    @property
    def missing(self) -> bool:
        return self.status in (404, 405)


def bulk_import(client: Client, scenario: str, body: bytes) -> Imported:
    """``POST .../stubs/import`` of a JSON array, straight into the scenario (no ``session``
    header); 201 when it was stored."""
    headers = {"Content-Type": "application/json"}
    path = f"{SCENARIOS}/objects/{quote(scenario)}/stubs/import"
    started = time.perf_counter()
    status, data = client.request("POST", path, body, headers)
    return Imported(status, time.perf_counter() - started, data)


def load_scenario(client: Client, scenario: str, documents: list[dict[str, Any]]) -> str:
    """``documents`` into a new scenario: the bulk import, else PUT over 8 connections.

    Returns how they were loaded. Untimed: setup for item 1.
    """
    create_scenario(client, scenario)
    imported = bulk_import(client, scenario, orjson.dumps(documents))
    if imported.status == 201:
        return "import"
    if not imported.missing:
        raise BenchError(f"import answered {imported.status}: {imported.reply[:300]!r}")
    record = f"rec_{uuid.uuid4().hex[:8]}"
    base = f"{SCENARIOS}/objects/{quote(scenario)}"
    client.json("POST", f"{base}/action", {"begin": None, "session": record, "mode": "record"}, 200)

    def put(document: dict[str, Any]) -> None:
        client.json("PUT", f"{base}/stubs", document, 201, {"session": record})

    with ThreadPoolExecutor(max_workers=SimulacraStubs.load_workers) as pool:
        for _ in pool.map(put, documents):
            pass
    client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
    return "PUT x8"


# item 1: stalls ----------------------------------------------------------------------


@dataclass
class ProbeLog:
    """What the probe's client did during one window."""

    ops: list[float] = field(default_factory=list)  # seconds per operation
    notes: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


Probe = Callable[[threading.Event, ProbeLog], None]


@dataclass
class Window:
    probe: str
    round_no: int
    rps: float
    p99_ms: float
    p50_ms: float
    cpu_us: float  # the server's CPU per playback, the probe's work included
    peak_rss_mb: float  # RSS sampled every 0.2 s over the window
    non_2xx: int
    socket_errors: int
    ops: list[float]
    notes: dict[str, Any]
    errors: list[str]


class RssSampler(threading.Thread):
    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(BenchError):  # between a stop and a start
                self.peak_kib = max(self.peak_kib, self.server.memory().current_kib)
            self.stop.wait(0.2)


# name: (the letter, what the probe's client does)
PROBES = {
    "alone": ("", "nothing (playback alone)"),
    "tracker": ("a", "a client polls tracker queries"),
    "begin": ("b", "end + begin of the big session, repeated"),
    "listing": ("c", "GET .../stubs of the big scenario, repeated"),
    "import": ("d", "bulk import into a new scenario, repeated"),
    "restart": ("r", "restart, then the big session's first playback"),
}


@dataclass
class StallLab:
    """One store's server with a one-stub session and a big scenario, and its probes."""

    lab: ScaleLab
    label: str
    store: str
    sizes: Sizes
    server: ServerProcess = field(init=False)
    script: Path = field(init=False)
    big: str = ""
    big_session: str = ""
    loaded_by: str = ""
    documents: list[dict[str, Any]] = field(default_factory=list)
    import_body: bytes = b""
    import_missing: bool = False
    added: int = 0  # stubs probe (b) has added to the big scenario
    setup: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.server = self.lab.simulacra_on(self.store, self.label)
        peer = SimulacraStubs(self.server)
        workload = STUB_WORKLOADS["stubs-1"]
        request = peer.load(workload)
        peer.check(workload, request)
        self.script = write_lua(
            f"stubs1_{self.label}",
            request.method,
            request.path,
            request.headers,
            request.bodies,
            self.lab.opts.workdir,
        )
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        self.documents = stub_documents(self.server, self.sizes.stubs)
        self.import_body = orjson.dumps(self.documents)
        tag = uuid.uuid4().hex[:6]
        self.big, self.big_session = f"big_{tag}", f"bigplay_{tag}"
        started = time.perf_counter()
        self.loaded_by = load_scenario(client, self.big, self.documents)
        self.setup["load_s"] = time.perf_counter() - started
        self.setup["loaded_by"] = self.loaded_by
        self.import_missing = self.loaded_by != "import"
        log(
            f"  {self.label}: {self.sizes.stubs:,} stubs loaded by {self.loaded_by}"
            f" in {self.setup['load_s']:.1f}s"
        )
        started = time.perf_counter()
        self.begin(client)
        self.setup["first_begin_s"] = time.perf_counter() - started
        started = time.perf_counter()
        self.play_big(client)
        self.setup["first_big_playback_s"] = time.perf_counter() - started
        self.end(client)
        started = time.perf_counter()
        self.begin(client)
        self.setup["warm_begin_s"] = time.perf_counter() - started
        log(
            f"  {self.label}: first begin {self.setup['first_begin_s']:.2f}s,"
            f" then its first playback {self.setup['first_big_playback_s']:.2f}s,"
            f" end + begin again {self.setup['warm_begin_s']:.2f}s"
        )
        self.fill_tracker(client)

    def base(self) -> str:
        return f"{SCENARIOS}/objects/{quote(self.big)}"

    def begin(self, client: Client) -> None:
        body = {"begin": None, "session": self.big_session, "mode": "playback"}
        client.json("POST", f"{self.base()}/action", body, 200)

    def end(self, client: Client) -> None:
        client.json(
            "POST", f"{self.base()}/action", {"end": None, "session": self.big_session}, 200
        )

    def play_big(self, client: Client) -> None:
        n = self.sizes.stubs
        workload = bulk_workload(n)
        headers = {"session": self.big_session, "Content-Type": workload.content_type}
        status, data = client.request("POST", f"{self.base()}/stubs", workload.body(n - 1), headers)
        if status != 200 or data != workload.answer(n - 1).encode():
            raise BenchError(f"{self.label}: the big session answered {status} {data[:200]!r}")

    def tracker_total(self, client: Client) -> int:
        status, data = client.request("GET", f"{RECORDS}?limit=1")
        if status != 200:
            raise BenchError(f"GET {RECORDS} answered {status}: {data[:300]!r}")
        return int(json.loads(data)["paging"]["totalItems"])

    def fill_tracker(self, client: Client) -> None:
        """Playback until the tracker holds ``sizes.tracker`` records (its cap at most)."""
        started = time.perf_counter()
        total = self.tracker_total(client)
        for _ in range(30):
            if total >= self.sizes.tracker:
                break
            opts = self.lab.opts
            seconds = min(4, 1 + (self.sizes.tracker - total) // 10_000)
            run_wrk(opts.wrk, self.server.url, self.script, seconds, opts.connections, opts.threads)
            total = self.tracker_total(client)
        self.setup["tracker_records"] = total
        self.setup["tracker_fill_s"] = time.perf_counter() - started
        log(f"  {self.label}: tracker holds {total:,} records")

    # the probes: each loops until ``stop`` is set; one client, as fast as it can

    def probe_tracker(self, stop: threading.Event, out: ProbeLog) -> None:
        # Status, duration and path/scenario filters, as docs/compatibility.md describes:
        # one matching every playback, one matching none (a full scan), one by session.
        queries = ["sc:200 stubs", "sc:404 stubs", "sc:>=200 rt:>=0 bench"]
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        k = 0
        while not stop.is_set():
            q = queries[k % len(queries)]
            k += 1
            started = time.perf_counter()
            status, _ = client.request("GET", f"{RECORDS}?q={quote(q)}")
            out.ops.append(time.perf_counter() - started)
            if status != 200:
                out.errors.append(f"q={q}: {status}")
        out.notes["queries"] = queries

    def probe_begin(self, stop: threading.Event, out: ProbeLog) -> None:
        """End + begin again (``warm``: nothing changed since the last begin), then end,
        record one more stub (append) and begin (``cold``: the scenario changed, so a server
        that compiles the whole scenario on begin does it again), over and over."""
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        warm: list[float] = []
        cold: list[float] = []
        record = f"rec_{self.big_session}"
        base = self.base()
        workload = bulk_workload(self.sizes.stubs)
        peer = SimulacraStubs(self.server)
        while not stop.is_set():
            for times in (warm, cold):
                self.end(client)
                if times is cold:
                    self.added += 1
                    document = peer.stub_document(workload, self.sizes.stubs + self.added)
                    begin = {"begin": None, "session": record, "mode": "record", "append": True}
                    client.json("POST", f"{base}/action", begin, 200)
                    client.json("PUT", f"{base}/stubs", document, 201, {"session": record})
                    client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
                started = time.perf_counter()
                self.begin(client)  # a session is begun whenever the loop stops
                times.append(time.perf_counter() - started)
                out.ops.append(times[-1])
        out.notes["warm_begin_s"] = warm
        out.notes["cold_begin_s"] = cold

    def probe_listing(self, stop: threading.Event, out: ProbeLog) -> None:
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        while not stop.is_set():
            started = time.perf_counter()
            path: str | None = f"{self.base()}/stubs"
            listed = size = pages = 0
            while path:
                status, data = client.request("GET", path)
                if status != 200:
                    out.errors.append(f"GET {path}: {status} {data[:200]!r}")
                    return
                size += len(data)
                pages += 1
                document = orjson.loads(data)
                listed += len(document.get("data") or [])
                path = (document.get("paging") or {}).get("next")
            out.ops.append(time.perf_counter() - started)
            out.notes.update(stubs=listed, bytes=size, pages=pages)

    def probe_import(self, stop: threading.Event, out: ProbeLog) -> None:
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        made: list[str] = []
        try:
            while not stop.is_set():
                scenario = f"imp_{uuid.uuid4().hex[:8]}"
                made.append(scenario)
                if not self.import_missing:
                    create_scenario(client, scenario)
                    imported = bulk_import(client, scenario, self.import_body)
                    out.ops.append(imported.seconds)
                    if imported.status != 201:
                        out.errors.append(f"import: {imported.status} {imported.reply[:200]!r}")
                        return
                    out.notes["kind"] = f"import of {self.sizes.stubs:,} stubs"
                    continue
                # No import endpoint: the largest zip upload there is, under a fresh name
                # each time (the archive names its scenario).
                n = min(self.sizes.stubs, ZIP_MAX_STUBS)
                archive = scenario_zip(scenario, scenario, self.documents[:n])
                body, headers = multipart(archive)
                started = time.perf_counter()
                status, data = client.request("POST", f"{SCENARIOS}/upload", body, headers)
                out.ops.append(time.perf_counter() - started)
                out.notes["kind"] = f"zip upload of {n:,} stubs (no import endpoint)"
                if status >= 300:
                    out.errors.append(f"upload: {status} {data[:200]!r}")
                    return
        finally:
            out.notes["cleanup"] = made  # deleted after the window, outside it

    def probe_restart(self, stop: threading.Event, out: ProbeLog) -> None:
        time.sleep(0.5)  # wrk is under way
        client = Client(self.server.port, timeout=PROBE_TIMEOUT_S)
        started = time.perf_counter()
        self.play_big(client)
        out.ops.append(time.perf_counter() - started)

    def probes(self) -> dict[str, Probe | None]:
        chosen: dict[str, Probe | None] = {
            "alone": None,
            "tracker": self.probe_tracker,
            "begin": self.probe_begin,
            "listing": self.probe_listing,
            "import": self.probe_import,
        }
        if not self.store.startswith("memory"):  # memory:// keeps nothing over a restart
            chosen["restart"] = self.probe_restart
        return chosen

    def window(self, name: str, probe: Probe | None, round_no: int) -> Window:
        opts = self.lab.opts
        if name == "restart":
            self.server.stop()
            self.server.start(timeout=120)
            # One one-stub playback first: its (tiny) index is built before wrk starts.
            warm = run_wrk(opts.wrk, self.server.url, self.script, 1, 1, 1)
            if warm.non_2xx:
                raise BenchError(f"{self.label}: playback after the restart failed")
        else:
            self.lab.settle()
        out = ProbeLog()
        stop = threading.Event()
        sampler = RssSampler(self.server)
        sampler.start()
        thread = None
        if probe is not None:
            thread = threading.Thread(target=probe, args=(stop, out), daemon=True)
            thread.start()
        try:
            with Stopwatch(self.server) as watch:
                result = run_wrk(
                    opts.wrk,
                    self.server.url,
                    self.script,
                    self.sizes.duration,
                    opts.connections,
                    opts.threads,
                )
        finally:
            stop.set()
            if thread is not None:
                thread.join(PROBE_TIMEOUT_S)
            sampler.stop.set()
            sampler.join()
        for scenario in out.notes.pop("cleanup", []):
            delete_scenario(Client(self.server.port, timeout=PROBE_TIMEOUT_S), scenario)
        return Window(
            probe=name,
            round_no=round_no,
            rps=result.rps,
            p99_ms=result.p99_ms,
            p50_ms=result.p50_ms,
            cpu_us=watch.cpu_s / max(result.requests, 1) * 1e6,
            peak_rss_mb=sampler.peak_kib / 1024,
            non_2xx=result.non_2xx,
            socket_errors=result.socket_errors,
            ops=out.ops,
            notes=out.notes,
            errors=out.errors,
        )


def store_url(kind: str, workdir: Path) -> str:
    if kind == "memory":
        return "memory://"
    return f"sqlite:///{workdir / f'scale-{uuid.uuid4().hex[:6]}.db'}"


def item1(lab: ScaleLab, sizes: Sizes, stores: Sequence[str]) -> Section:
    section = Section()
    section.detail.append(
        [
            "store",
            "while",
            "req/s",
            "p99 ms",
            "CPU us/req",
            "peak RSS MB",
            "req/s ratio",
            "p99 ratio",
            "its ops",
            "op median",
            "op max",
        ]
    )
    for kind in stores:
        stall = StallLab(lab, kind, store_url(kind, lab.opts.workdir), sizes)
        log(f"item 1 on {kind}: setting up ...")
        stall.start()
        probes = stall.probes()
        names = list(probes)
        windows: list[Window] = []
        for round_no in range(1, sizes.rounds + 1):
            shift = (round_no - 1) % len(names)
            for name in names[shift:] + names[:shift]:
                w = stall.window(name, probes[name], round_no)
                windows.append(w)
                ops = f", {len(w.ops)} ops, median {median(w.ops) or 0:.3f}s" if w.ops else ""
                log(
                    f"  round {round_no} {kind} {name:>8}: {w.rps:8,.0f} req/s"
                    f"  p99 {w.p99_ms:8.2f} ms  {w.cpu_us:6.1f} us CPU/req{ops}"
                )
                if w.errors:
                    log(f"    probe errors: {w.errors[:3]}")
        lab.stop(stall.server)
        add_stall_figures(section, stall, windows, sizes)
    return section


def add_stall_figures(
    section: Section, stall: StallLab, windows: list[Window], sizes: Sizes
) -> None:
    alone = {w.round_no: w for w in windows if w.probe == "alone"}
    raw: dict[str, Any] = {"setup": stall.setup, "probes": {}}
    for name, (letter, what) in PROBES.items():
        mine = [w for w in windows if w.probe == name]
        if not mine:
            continue
        rps_ratio = median([w.rps / alone[w.round_no].rps for w in mine])
        p99_ratio = median([w.p99_ms / alone[w.round_no].p99_ms for w in mine])
        ops = [op for w in mine for op in w.ops]
        errors = [e for w in mine for e in w.errors]
        notes: dict[str, Any] = {}
        for w in mine:
            for key, value in w.notes.items():  # lists add up over the rounds
                if isinstance(value, list) and isinstance(notes.get(key), list):
                    notes[key] = notes[key] + value
                else:
                    notes[key] = value
        raw["probes"][name] = {
            "rps_ratio": rps_ratio,
            "p99_ratio": p99_ratio,
            "ops": ops,
            "notes": notes,
            "errors": errors,
            "windows": [asdict(w) for w in mine],
        }
        section.detail.append(
            [
                stall.label,
                name,
                f"{median([w.rps for w in mine]) or 0:,.0f}",
                f"{median([w.p99_ms for w in mine]) or 0:.1f}",
                f"{median([w.cpu_us for w in mine]) or 0:.1f}",
                f"{max(w.peak_rss_mb for w in mine):.0f}",
                f"{rps_ratio or 0:.2f}x",
                f"{p99_ratio or 0:.2f}x",
                str(len(ops)) if name != "alone" else "-",
                f"{median(ops):.3f} s" if ops else "-",
                f"{max(ops):.3f} s" if ops else "-",
            ]
        )
        if name == "alone" or rps_ratio is None or p99_ratio is None:
            continue
        flagged = " (probe errors)" if errors else ""
        section.rows.append(
            Row(
                f"1{letter} {stall.label}",
                f"playback while {what}",
                f"{rps_ratio:.2f}x req/s, p99 {p99_ratio:.2f}x{flagged}",
                f">= {STALL_RPS_GOAL}x, < {STALL_P99_GOAL:.0f}x",
                rps_ratio >= STALL_RPS_GOAL and p99_ratio < STALL_P99_GOAL and not errors,
                rps_ratio,
            )
        )
        if errors:
            section.notes.append(f"{stall.label} {name}: {errors[:2]}")
    setup = stall.setup
    begin_notes = raw["probes"].get("begin", {}).get("notes", {})
    restart = raw["probes"].get("restart", {}).get("ops", [])
    listing = raw["probes"].get("listing", {})
    lines = [
        f"{stall.label}: {sizes.stubs:,} stubs loaded by {setup['loaded_by']} in"
        f" {setup['load_s']:.1f} s; alone: the first begin {setup['first_begin_s']:.2f} s,"
        f" its first playback {setup['first_big_playback_s']:.2f} s, end + begin again"
        f" {setup['warm_begin_s']:.2f} s",
        f"{stall.label}: under load (b): end + begin again median"
        f" {fmt_s(median(begin_notes.get('warm_begin_s', [])))}, begin after one more stub"
        f" median {fmt_s(median(begin_notes.get('cold_begin_s', [])))}"
        f" ({len(begin_notes.get('cold_begin_s', []))} of each)",
        f"{stall.label}: tracker {setup['tracker_records']:,} records; the listing"
        f" {listing.get('notes', {}).get('bytes', 0) / 1e6:.1f} MB in"
        f" {listing.get('notes', {}).get('pages', 0)} page(s), median"
        f" {fmt_s(median(listing.get('ops', [])))}",
    ]
    if restart:
        lines.append(
            f"{stall.label}: after a restart, the first playback of the big session took"
            f" {fmt_s(median(restart))} (median of {len(restart)})"
        )
    imp = raw["probes"].get("import", {})
    if imp:
        lines.append(
            f"{stall.label}: probe (d) was the {imp['notes'].get('kind', '?')}, median"
            f" {fmt_s(median(imp['ops']))}"
        )
    section.notes.extend(lines)
    section.raw[stall.label] = raw


# item 2: bulk loading -----------------------------------------------------------------


def drop_pg_schema(pg: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')


def time_simulacra_load(
    lab: ScaleLab, label: str, store: str, n: int, rounds: int
) -> dict[str, Any]:
    server = lab.simulacra_on(store, f"bulk-{label}")
    try:
        body = orjson.dumps(stub_documents(server, n))
        client = Client(server.port, timeout=PROBE_TIMEOUT_S)
        times: list[float] = []
        cpu: list[float] = []
        for round_no in range(1, rounds + 1):
            scenario = f"bulk_{uuid.uuid4().hex[:8]}"
            create_scenario(client, scenario)
            lab.settle()
            with Stopwatch(server) as watch:
                imported = bulk_import(client, scenario, body)
            if imported.missing:
                return {"missing": True, "status": imported.status}
            if imported.status != 201:
                raise BenchError(
                    f"{label}: import answered {imported.status}: {imported.reply[:300]!r}"
                )
            held = stub_count(client, scenario)
            if held != n:
                raise BenchError(f"{label}: the scenario holds {held} stubs after the import")
            times.append(imported.seconds)
            cpu.append(watch.cpu_s)
            reply = json.loads(imported.reply).get("data")
            log(f"  {label} round {round_no}: {n:,} stubs in {imported.seconds:.2f}s ({reply})")
            delete_scenario(client, scenario)  # untimed: each round loads into the same state
        return {
            "seconds": times,
            "cpu_s": cpu,
            "rss_mb": server.memory().peak_mb,
            "json_bytes": len(body),
        }
    finally:
        lab.stop(server)


def time_wiremock_load(lab: ScaleLab, n: int, rounds: int) -> dict[str, Any]:
    ensure_npm_peers(lab.opts.peers_dir, [WIREMOCK])
    server = lab.start(lab.wiremock())
    try:
        peer = WireMockStubs(server)
        workload = bulk_workload(n)
        document = {
            "mappings": [peer.mapping(workload, i) for i in range(n)],
            "importOptions": {"duplicatePolicy": "OVERWRITE", "deleteAllNotInImport": True},
        }
        body = orjson.dumps(document)
        client = Client(server.port, timeout=WIREMOCK_TIMEOUT_S)
        times: list[float] = []
        cpu: list[float] = []
        for round_no in range(1, rounds + 1):
            client.request("POST", "/__admin/mappings/reset")  # untimed: start empty
            lab.settle()
            started = time.perf_counter()
            with Stopwatch(server) as watch:
                status, data = client.request(
                    "POST", "/__admin/mappings/import", body, {"Content-Type": "application/json"}
                )
            seconds = time.perf_counter() - started
            if status != 200:
                raise BenchError(f"WireMock import answered {status}: {data[:300]!r}")
            status, data = client.request("GET", "/__admin/mappings?limit=1")
            total = json.loads(data)["meta"]["total"] if status == 200 else None
            if total != n:
                raise BenchError(f"WireMock holds {total} mappings, expected {n}")
            times.append(seconds)
            cpu.append(watch.cpu_s)
            log(f"  WireMock round {round_no}: {n:,} mappings in {seconds:.2f}s")
        return {
            "seconds": times,
            "cpu_s": cpu,
            "rss_mb": server.memory().peak_mb,
            "java": java_version(lab.opts.java),
        }
    finally:
        lab.stop(server)


def item2(lab: ScaleLab, sizes: Sizes, pg: str, wiremock_stubs: int) -> Section:
    """``wiremock_stubs``: how many mappings WireMock imports (0: none). Its import slows
    with size, about with its square (on 2026-12-06 100,000 mappings took 320 s and 472 s,
    10,000 took 3.4-5.1 s), so it imports a size it finishes and rates (stubs/s) are
    compared: its rate at 10,000 is its better one."""
    n = sizes.stubs
    section = Section()
    log(f"item 2: {n:,} stubs, {sizes.rounds} load(s) each")
    results: dict[str, dict[str, Any]] = {}
    targets = [
        ("memory://", "memory://"),
        ("SQLite", store_url("sqlite", lab.opts.workdir)),
        ("PostgreSQL", f"{pg}?schema={PG_SCHEMA}"),
    ]
    for label, store in targets:
        if label == "PostgreSQL":
            try:
                drop_pg_schema(pg)
            except Exception as exc:  # no PostgreSQL here: the row says so
                results[label] = {"error": f"PostgreSQL at {pg}: {exc}"}
                continue
        try:
            results[label] = time_simulacra_load(lab, label, store, n, sizes.rounds)
        finally:
            if label == "PostgreSQL":
                drop_pg_schema(pg)
        if results[label].get("missing"):
            break  # the endpoint is missing: no store will have it
    if wiremock_stubs:
        try:
            results[WIREMOCK] = time_wiremock_load(lab, wiremock_stubs, sizes.rounds)
        except (BenchError, OSError) as exc:  # OSError: it did not answer in time
            results[WIREMOCK] = {"error": f"{type(exc).__name__}: {exc}"}
    section.raw = {"stubs": n, "wiremock_stubs": wiremock_stubs, "targets": results}
    counts = {label: n for label, _ in targets} | {WIREMOCK: wiremock_stubs}

    def seconds(label: str) -> float | None:
        return median(results.get(label, {}).get("seconds", []))

    def rate(label: str) -> float | None:
        s = seconds(label)
        return counts[label] / s if s else None

    wm = rate(WIREMOCK)
    section.detail.append(["target", "stubs", "seconds", "stubs/s", "CPU s", "peak RSS MB", "S/WM"])
    for label in [t[0] for t in targets] + [WIREMOCK]:
        result = results.get(label, {})
        s, r = seconds(label), rate(label)
        if s is None or r is None:
            why = "missing" if result.get("missing") else result.get("error", "not run")
            section.detail.append([label, f"{counts[label]:,}", str(why)[:60], "-", "-", "-", "-"])
            continue
        section.detail.append(
            [
                label,
                f"{counts[label]:,}",
                f"{s:.2f}",
                f"{r:,.0f}",
                f"{median(result['cpu_s']) or 0:.2f}",
                f"{result['rss_mb']:.0f}",
                f"{r / wm:.2f}x" if wm and label != WIREMOCK else "-",
            ]
        )
    missing = any(r.get("missing") for r in results.values())
    for label, limit in (("SQLite", SQLITE_LOAD_GOAL_S), ("PostgreSQL", PG_LOAD_GOAL_S)):
        s = seconds(label)
        what = f"{n:,} stubs, one bulk import, {label}"
        if s is None:
            why = "missing" if missing else results.get(label, {}).get("error", "not run")
            section.rows.append(Row(f"2 {label}", what, str(why)[:70], f"< {limit:.0f} s"))
            continue
        # The goal is for 100,000 stubs; a --quick run loads fewer, so it has no verdict.
        met = s < limit if n == FULL.stubs else None
        section.rows.append(Row(f"2 {label}", what, f"{s:.2f} s", f"< {limit:.0f} s", met, s))
    ours = rate("SQLite")
    what = (
        f"SQLite's import rate ({n:,}) / WireMock's mappings import ({wiremock_stubs:,})"
        if wiremock_stubs
        else "SQLite's import rate / WireMock's"
    )
    goal = f">= {WIREMOCK_LOAD_GOAL:.0f}x"
    if ours is not None and wm is not None:
        value = ours / wm
        met = value >= WIREMOCK_LOAD_GOAL if n == FULL.stubs else None
        section.rows.append(Row("2 vs WM", what, f"{value:.2f}x", goal, met, value))
    else:
        error = results.get(WIREMOCK, {}).get("error")
        why = "missing" if missing else error or "WireMock not run" if wm is None else "-"
        section.rows.append(Row("2 vs WM", what, f"not measured ({why})"[:70], goal))
    if wiremock_stubs and wiremock_stubs < n:
        section.notes.append(
            f"WireMock imported {wiremock_stubs:,} mappings, not {n:,}: its import slows with"
            " size (100,000 took 320-472 s on 2026-12-06), so its rate here is its better one"
            " (--wiremock-stubs)"
        )
    return section


# items 3-7: other benches, run as subprocesses ------------------------------------------


@dataclass(frozen=True)
class SubBench:
    """A bench run with ``--json PATH`` whose figures make this item's rows."""

    item: int
    module: str
    what: str
    goal: str
    args: Callable[[], list[str]]  # its options, worked out when it runs
    quick: tuple[tuple[str, str], ...]  # options for --quick, passed where its --help has them
    parse: Callable[[Any, bool], Section]


def options_of(module: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout)) if proc.returncode == 0 else set()


def run_sub_bench(bench: SubBench, quick: bool, workdir: Path, timeout: float) -> Section:
    item = str(bench.item)
    module = f"bench.{bench.module}"
    if importlib.util.find_spec(module) is None:
        return not_measured(item, bench.what, bench.goal, f"bench/{bench.module}.py is missing")
    options = options_of(module)
    if "--json" not in options:
        return not_measured(item, bench.what, bench.goal, f"{module} has no --json")
    try:
        argv = [sys.executable, "-m", module, *bench.args()]
    except BenchError as exc:
        return not_measured(item, bench.what, bench.goal, str(exc))
    if quick:
        for option, value in bench.quick:
            if option in options:
                argv += [option, value]
    out = workdir / f"{bench.module}.json"
    argv += ["--json", str(out)]
    log(f"item {item}: {' '.join(argv[1:])}")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return not_measured(item, bench.what, bench.goal, f"{module} ran over {timeout:.0f} s")
    log(proc.stdout)
    took = time.perf_counter() - started
    if not out.exists():
        return not_measured(item, bench.what, bench.goal, f"{module} exited {proc.returncode}")
    try:
        figures = json.loads(out.read_text())
        section = bench.parse(figures, quick)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return not_measured(item, bench.what, bench.goal, f"its JSON: {exc!r}"[:90])
    section.raw = {"argv": argv[1:], "exit": proc.returncode, "seconds": took, "json": figures}
    if proc.returncode != 0:
        section.notes.append(f"{module} exited {proc.returncode} (its rows may be flagged)")
    return section


def find_number(document: Any, *keys: str) -> float | None:
    """The first of ``keys`` in ``document`` that holds a number."""
    if isinstance(document, dict):
        for key in keys:
            value = document.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def parse_shared_cloud(figures: Any, quick: bool) -> Section:
    """bench.shared_cloud: each setup's req/s per workload and count of existing servers."""
    section = Section()
    goal = float(figures.get("goal", 0.3))
    section.detail.append(
        ["servers", "setup", "workload", "req/s", "p99 ms", "CPU us/req", "x memory"]
    )
    for f in figures["results"]:
        ratio = f.get("ratio_to_memory")
        section.detail.append(
            [
                f"{f['servers']:,}",
                f"{f['setup']} x{f['instances']}",
                f["workload"],
                f"{f['rps']:,.0f}",
                f"{f['p99_ms']:.1f}",
                f"{f['cpu_us_per_request']:.0f}",
                "-" if ratio is None else f"{ratio:.2f}x",
            ]
        )
        if f["setup"] != "shared" or ratio is None:
            continue
        section.rows.append(
            Row(
                "3",
                f"{f['workload']}, 2 shared instances / 1 memory, {f['servers']:,} servers",
                f"{ratio:.2f}x",
                f">= {goal}x",
                ratio >= goal,
                ratio,
            )
        )
    if not section.rows:
        raise KeyError("no shared setup in its JSON")
    return section


def parse_sequences(figures: Any, quick: bool) -> Section:
    """bench.sequences: per store configuration and workload, req/s against ``one``."""
    section = Section()
    goal = float(figures.get("goal", 0.5))
    section.detail.append(["store", "workload", "req/s", "p99 ms", "CPU us/req", "vs one"])
    for label, workloads in figures["configs"].items():
        for workload, f in workloads.items():
            section.detail.append(
                [
                    label,
                    workload,
                    f"{f['rps']:,.0f}",
                    f"{f['p99_ms']:.2f}",
                    f"{f['cpu_us']:.1f}",
                    f"{f['vs_one_rps']:.2f}x",
                ]
            )
            if not label.startswith("postgresql") or "@" in label or workload == "one":
                continue
            value = float(f["vs_one_rps"])
            section.rows.append(
                Row(
                    "4",
                    f"{workload} / one-response playback, {label}",
                    f"{value:.2f}x",
                    f">= {goal}x",
                    value >= goal,
                    value,
                )
            )
    if not section.rows:
        raise KeyError("no PostgreSQL configuration in its JSON")
    return section


def parse_peers(figures: Any, quick: bool) -> Section:
    """bench.peers' report: Simulacra over WireMock per workload, and 10 -> 10,000 flatness."""
    section = Section()
    rps: dict[tuple[str, str], float] = {}
    errors: dict[tuple[str, str], list[str]] = {}
    for target in figures["targets"]:
        pair = (target["workload"], target["peer"])
        errors[pair] = target.get("errors") or []
        # Simulacra's figure counts only from a clean run; WireMock's even from a flagged
        # one: at 10,000 JSONPath stubs it may answer nothing within wrk's 10 s timeout.
        if target.get("rps_median") is not None and not (errors[pair] and pair[1] != WIREMOCK):
            rps[pair] = target["rps_median"]

    def versus(workload: str) -> tuple[float | None, str]:
        """Simulacra's req/s over WireMock's, and its cell (infinite: WireMock answered none)."""
        ours, theirs = rps.get((workload, "Simulacra")), rps.get((workload, WIREMOCK))
        if not ours or theirs is None:
            return None, "-"
        flag = " (WM errors)" if errors.get((workload, WIREMOCK)) else ""
        if theirs == 0:
            return float("inf"), "WireMock answered none" + flag
        return ours / theirs, f"{ours / theirs:.2f}x{flag}"

    section.detail.append(["workload", "Simulacra req/s", "WireMock req/s", "S/WM"])
    for workload in dict.fromkeys(t["workload"] for t in figures["targets"]):
        ours, theirs = rps.get((workload, "Simulacra")), rps.get((workload, WIREMOCK))
        section.detail.append(
            [
                workload,
                "-" if ours is None else f"{ours:,.0f}",
                "-" if theirs is None else f"{theirs:,.0f}",
                versus(workload)[1],
            ]
        )
    ran = {t["workload"] for t in figures["targets"]}

    def why(*keys: str) -> str:
        absent = [k for k in keys if k not in ran]
        if absent:
            return f"not measured (bench.peers has no {', '.join(absent)})"
        return "not measured (a run failed or flagged: see its detail)"

    for kind, label in (("jsonpath", "JSONPath"), ("xpath", "XPath")):
        for key, size in ((kind, "10 stubs"), (f"{kind}-10k", "10,000 stubs")):
            value, cell = versus(key)
            what = f"{label} playback, {size}, vs WireMock"
            if value is not None:
                finite = value if value != float("inf") else None  # JSON has no infinity
                section.rows.append(Row("5", what, cell, ">= 3x", value >= 3.0, finite))
            else:
                section.rows.append(Row("5", what, why(key), ">= 3x"))
        small, big = rps.get((kind, "Simulacra")), rps.get((f"{kind}-10k", "Simulacra"))
        what = f"{label}: 10,000 stubs / 10 stubs, Simulacra req/s"
        if small and big:
            value = big / small
            section.rows.append(
                Row("5", what, f"{value:.2f}x", ">= 0.8x (flat)", value >= 0.8, value)
            )
        else:
            section.rows.append(Row("5", what, why(kind, f"{kind}-10k"), ">= 0.8x (flat)"))
    return section


def parse_connections(figures: Any, quick: bool) -> Section:
    """bench.connections: per server and connection count, the tail and requests over 1 s."""
    section = Section()
    goal = figures["goal"]
    section.detail.append(
        ["server", "conns", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "> 1 s", "errors"]
    )
    for f in figures["results"]:
        section.detail.append(
            [
                f["server"],
                f"{f['connections']:,}",
                f"{f['rps']:,.0f}",
                f"{f['p50_ms']:.1f}",
                f"{f['p99_ms']:.1f}",
                f"{f['p999_ms']:.1f}",
                f"{f['max_ms']:.0f}",
                f"{f['over_1s']:,}",
                f"{f['non_2xx'] + f['socket_errors']:,}",
            ]
        )
        if f["server"] != "head" or f["connections"] != goal["connections"]:
            continue
        errors = f["non_2xx"] + f["socket_errors"]
        section.rows.append(
            Row(
                "6",
                f"{f['connections']:,} connections: requests over 1 s, p99 (longest)",
                f"{f['over_1s']:,} over 1 s, p99 {f['p99_ms']:.0f} ms ({f['max_ms']:.0f} ms)"
                + (f", {errors:,} errors" if errors else ""),
                f"none over 1 s, p99 < {goal['p99_ms']:.0f} ms",
                f.get("met"),
                f["p99_ms"],
            )
        )
    if not section.rows:
        raise KeyError(f"no run of this checkout at {goal['connections']} connections")
    return section


def parse_memory(figures: Any, quick: bool) -> Section:
    """bench.memory: RSS per store, empty, loaded, indexed, and the peak."""
    section = Section()
    goal = float(figures.get("goal_mb", 250.0))
    section.detail.append(
        ["store", "stubs", "empty MB", "loaded MB", "indexed MB", "peak MB", "KB/stub", "load s"]
    )
    for f in figures["stores"]:
        section.detail.append(
            [
                f["store"],
                f"{f['stubs']:,}",
                f"{f['rss_empty_mb']:.0f}",
                f"{f['rss_loaded_mb']:.0f}",
                f"{f['rss_indexed_mb']:.0f}",
                f"{f['peak_mb']:.0f}",
                f"{f['per_stub_kb']:.2f}",
                f"{f['load_s']:.1f}",
            ]
        )
        indexed = float(f["rss_indexed_mb"])
        section.rows.append(
            Row(
                f"7 {f['store']}",
                f"RSS of {f['stubs']:,} indexed stubs (peak {f['peak_mb']:.0f} MB)",
                f"{indexed:.0f} MB",
                f"< {goal:.0f} MB",
                f.get("met"),  # None below 100,000 stubs (--quick)
                indexed,
            )
        )
    return section


PEERS_WORKLOADS = ("jsonpath", "jsonpath-10k", "xpath", "xpath-10k")


def peers_args() -> list[str]:
    """The workloads of item 5 that bench.peers has (the rows of the others say so)."""
    import bench.peers

    known = [w for w in PEERS_WORKLOADS if w in bench.peers.STUB_WORKLOADS]
    if not known:
        raise BenchError("bench.peers has none of " + ", ".join(PEERS_WORKLOADS))
    return ["--workloads", ",".join(known), "--peers", "wiremock"]


SUB_BENCHES: dict[int, SubBench] = {
    b.item: b
    for b in (
        SubBench(
            3,
            "shared_cloud",
            "auth and create-server, 2 shared instances / 1 memory instance",
            ">= 0.3x at 0 and 5,000 servers",
            list,
            (("--duration", "2"), ("--repeats", "1"), ("--servers", "0,500")),
            parse_shared_cloud,
        ),
        SubBench(
            4,
            "sequences",
            "stateful sequence playback / one-response playback, PostgreSQL",
            ">= 0.5x",
            list,
            (("--duration", "2"), ("--repeats", "1")),
            parse_sequences,
        ),
        SubBench(
            5,
            "peers",
            "JSONPath and XPath playback vs WireMock",
            ">= 3x, flat 10 -> 10,000",
            peers_args,
            (("--duration", "2"), ("--repeats", "1"), ("--warmup", "1"), ("--warmup-max", "2")),
            parse_peers,
        ),
        SubBench(
            6,
            "connections",
            "1,000 connections: requests over 1 s, p99",
            "none over 1 s, p99 < 150 ms",
            list,
            (("--duration", "3"), ("--repeats", "1")),
            parse_connections,
        ),
        SubBench(
            7,
            "memory",
            "RSS of 100,000 indexed stubs",
            "< 250 MB",
            lambda: ["--stubs", "100000"],
            (("--stubs", "5000"),),
            parse_memory,
        ),
    )
}


# main ----------------------------------------------------------------------------------


def parse_items(text: str) -> list[int]:
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of 1-7") from None
    if not chosen or any(i not in ITEMS for i in chosen):
        raise argparse.ArgumentTypeError("a comma-separated list of 1-7")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--items", type=parse_items, default=list(ITEMS), help="e.g. 1,2 (all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--stubs", type=int, help="big scenario and bulk loads (100,000)")
    parser.add_argument("--tracker", type=int, help="tracker records before 1a (100,000)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run in item 1 (6)")
    parser.add_argument("--rounds", type=int, help="item 1's rounds, item 2's loads (3)")
    parser.add_argument(
        "--stores",
        default="memory,sqlite",
        help="item 1's stores: memory, sqlite or both (default memory,sqlite)",
    )
    parser.add_argument("--pg", default=PG_URL, help=f"item 2's PostgreSQL (default {PG_URL})")
    parser.add_argument(
        "--rev",
        help="run items 1-2's servers from this git revision (git archive), not the checkout",
    )
    parser.add_argument("--no-wiremock", action="store_true", help="item 2 without WireMock")
    parser.add_argument(
        "--wiremock-stubs",
        type=int,
        help=f"mappings WireMock imports in item 2 ({WIREMOCK_STUBS:,}, or --stubs if fewer)",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    parser.add_argument("--java", default="java", help="java for WireMock (default: on PATH)")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR)
    parser.add_argument(
        "--sub-timeout", type=float, default=900.0, help="seconds a sub-bench may run (900)"
    )
    return parser


def report(sections: dict[int, Section], sizes: Sizes, quick: bool) -> str:
    header = ["item", "what is measured", "figure", "goal", "met?"]
    rows = [header] + [r.cells() for s in sections.values() for r in s.rows]
    lines = [
        f"bench/scale.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line()}",
        f"{'--quick: ' if quick else ''}{sizes.stubs:,} stubs, {sizes.tracker:,} tracker records,"
        f" wrk {sizes.duration}s per run, {sizes.rounds} round(s)",
        "",
        render_table(rows, left=3),
    ]
    for item, section in sections.items():
        if len(section.detail) > 1 or section.notes:
            lines += ["", f"item {item}:"]
        if len(section.detail) > 1:
            lines.append(render_table(section.detail, left=2))
        lines += [f"  {note}" for note in section.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> int:
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        stubs=args.stubs or base.stubs,
        tracker=args.tracker or base.tracker,
        duration=args.duration or base.duration,
        rounds=args.rounds or base.rounds,
    )
    wrk = shutil.which(args.wrk)
    if wrk is None:
        raise BenchError(f"wrk not found ({args.wrk!r}); apt-get install wrk")
    opts = Options(
        wrk=wrk,
        workdir=workdir,
        duration=sizes.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=0,
        peers_dir=args.peers_dir,
        java=shutil.which(args.java) or args.java,
        server="simulacra",
    )
    tree = base_tree(args.rev, workdir / "tree") if args.rev else None
    lab = ScaleLab(opts, tree)
    sections: dict[int, Section] = {}
    started = time.perf_counter()
    try:
        for item in args.items:
            if item == 1:
                stores = [s.strip() for s in args.stores.split(",") if s.strip()]
                sections[1] = item1(lab, sizes, stores)
            elif item == 2:
                wm = (
                    0
                    if args.no_wiremock
                    else args.wiremock_stubs or min(sizes.stubs, WIREMOCK_STUBS)
                )
                sections[2] = item2(lab, sizes, args.pg, wm)
            else:
                sections[item] = run_sub_bench(
                    SUB_BENCHES[item], args.quick, workdir, args.sub_timeout
                )
            log(f"item {item} done at {time.perf_counter() - started:.0f}s")
    finally:
        lab.stop_all()
    print(report(sections, sizes, args.quick))
    if args.json:
        document = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_line(),
            "quick": args.quick,
            "sizes": asdict(sizes),
            "seconds": time.perf_counter() - started,
            "rows": [asdict(r) for s in sections.values() for r in s.rows],
            "items": {
                str(k): {"notes": s.notes, "detail": s.detail, "raw": s.raw}
                for k, s in sections.items()
            },
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("simulacra-scale-", lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
