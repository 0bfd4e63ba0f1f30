"""Simulacra side by side with WireMock, Mountebank and Mimic: one command, one table.

    python -m bench.peers                     # installs the peers on first use (~7 minutes)
    python -m bench.peers --json out.json     # also write every sample
    python -m bench.peers --workloads stubs-1,auth --repeats 5

The peers are installed into ``bench/.peers`` (git ignores it) on first use:

* WireMock 3.13.x, the standalone jar the npm package ``wiremock`` ships
  (``npm install --prefix bench/.peers wiremock@3.13``), run as
  ``java -jar wiremock-standalone-*.jar --port P --bind-address 127.0.0.1 --disable-banner``;
* Mountebank 2.9.x (``npm install --prefix bench/.peers mountebank@2.9``), run as
  ``node .../mb --port P``, one imposter on another port;
* Mimic 2.2.0 (PyPI, with ``attrs<24``) in ``bench/.peers/mimic-venv``, for the cloud routes.

Every peer runs its defaults. Each workload gets its own fresh server process per peer, all
started before measuring, so each row's peak RSS is that workload's alone. Each stub target
is warmed up until its rate is steady (runs of ``--warmup`` seconds until two in a row gain
less than 3%, at most ``--warmup-max``): WireMock's JIT takes tens of seconds, and before
2026-12-07 a single 5 s run left it measured at a third to a half of its steady rate. Then
rounds interleave every workload and every peer (the order of the peers rotates each round),
and medians are reported. The load generator is wrk for every row.

Stub workloads (Simulacra, WireMock, Mountebank), ``POST`` with a body, each stub matching
one id in the body, the requests cycling over the ids the peer evaluates **last**:

* ``stubs-1``: one ``contains`` stub, a ~600-byte SOAP request;
* ``stubs-1k`` / ``stubs-10k``: 1,000 / 10,000 ``contains`` stubs;
* ``jsonpath`` / ``jsonpath-10k``: 10 / 10,000 stubs matching a 2 KB JSON body by
  ``$.order.id`` with JSONPath (Simulacra: ``$[?(@.id == '00009')]``; WireMock:
  ``matchesJsonPath`` ``$.order.id`` equalTo; Mountebank: a ``jsonpath`` selector + equals);
* ``xpath`` / ``xpath-10k``: the same order as a 2 KB XML body, matched by ``/order/id`` with
  XPath (Simulacra: ``/order/id[text()='00009']``; WireMock: ``matchesXPath``
  ``/order/id/text()`` equalTo; Mountebank: an ``xpath`` selector + equals);
* ``tracking``: one stub, every peer recording the requests it serves (Simulacra's
  tracker, on by default; WireMock's request journal, on by default; Mountebank's
  ``recordRequests: true``, off by default, so it is on only in this row).

Cloud workloads (Simulacra, Mimic): ``auth`` (``POST /identity/v2.0/tokens``),
``create-server`` (``POST <compute>/servers``, unique names, over 32 fresh tenants per round),
``list-servers-detail`` (``GET <compute>/servers/detail`` of a tenant with 1,000 servers);
the operations and their checks come from ``bench/cloud.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import cloud
from bench._common import (
    LUA_DONE,
    REPO_ROOT,
    RESULT_MARKER,
    SERVERS,
    BenchError,
    Client,
    Memory,
    ServerProcess,
    Stopwatch,
    fmt_ratio,
    free_port,
    log,
    lua_string,
    ratio,
    render_table,
    run_bench,
    run_wrk,
    sessions_cpu_seconds,
    simulacra_process,
    write_lua,
)
from bench.cloud import Sample, WrkRequest
from bench.playback import id_width, request_body

DEFAULT_PEERS_DIR = REPO_ROOT / "bench" / ".peers"
WIREMOCK_SPEC, WIREMOCK_SERIES = "wiremock@3.13", "3.13."
MOUNTEBANK_SPEC, MOUNTEBANK_SERIES = "mountebank@2.9", "2.9."
# WireMock 3.13's defaults, for the report (Options.DEFAULT_CONTAINER_THREADS etc.).
WIREMOCK_DEFAULTS = (
    "Jetty with 25 container threads (WireMock's default), request journal on and unbounded,"
    " JVM defaults (heap up to 1/4 of RAM)"
)
MOUNTEBANK_DEFAULTS = "one Node.js process, log level info (one log line per request)"
MIMIC_DEFAULTS = "twistd, one thread, an access-log line per request (its default)"

SIMULACRA, WIREMOCK, MOUNTEBANK, MIMIC = "Simulacra", "WireMock", "Mountebank", "Mimic"
STUB_PEERS = (SIMULACRA, WIREMOCK, MOUNTEBANK)

PLAYBACK_RATIO_TARGET = 3.0  # Simulacra / WireMock and / Mountebank, playback req/s
STUBS_SCALING_TARGET = 0.80  # 10,000 stubs vs. one stub, Simulacra req/s
CLOUD_RATIO_TARGET = 10.0  # Simulacra / Mimic on the cloud routes
RSS_TARGET_MB = 150.0  # Simulacra's peak RSS with 10,000 stubs
JSON_STUBS = 10
JSON_BODY_BYTES = 2048
XML_BODY_BYTES = 2048
LITERAL_SCALING_TARGET = 0.80  # JSONPath/XPath, 10,000 stubs vs. 10, Simulacra req/s
CREATE_TENANTS = 32  # create-server spreads its creates over this many fresh tenants
QUIET_CORES = 0.05  # servers using at most this much (cores) above their idle baseline
SETTLE_TIMEOUT_S = 10.0  # the longest wait for idle servers before a run
FLAVOR = {"flavorRef": cloud.FLAVOR_REF}
WIREMOCK_READY = "/__admin/mappings"


# workloads ---------------------------------------------------------------------


@dataclass(frozen=True)
class StubWorkload:
    """N stubs, each matching one id in the request body; wrk cycles the last ones."""

    key: str
    label: str
    stubs: int
    kind: str  # "contains", "jsonpath" or "xpath"
    record: bool = False  # turn request recording on where it is off by default
    rotate: int = 4

    @property
    def width(self) -> int:
        return id_width(self.stubs)

    def ident(self, i: int) -> str:
        return f"{i:0{self.width}d}"

    def answer(self, i: int) -> str:
        return f"<response>{i}</response>"

    def request_ids(self) -> list[int]:
        """The last ``rotate`` stubs in insertion order: every peer here evaluates them last."""
        n = self.stubs
        return list(range(n - 1, max(n - 1 - self.rotate, -1), -1))

    def body(self, i: int) -> str:
        if self.kind == "contains":
            return request_body(i, self.width)
        if self.kind == "xpath":
            return order_xml(self.ident(i))
        return order_json(self.ident(i))

    @property
    def content_type(self) -> str:
        return "application/json" if self.kind == "jsonpath" else "text/xml; charset=utf-8"

    def contains_pattern(self, i: int) -> str:
        """Literally in the request body, so no peer needs Mirage's whitespace stripping."""
        return f"<id>{self.ident(i)}</id>"


def order_json(order_id: str, size: int = JSON_BODY_BYTES) -> str:
    """A realistic order document of exactly ``size`` bytes, ``$.order.id`` = ``order_id``."""
    lines = [
        {
            "sku": f"SKU-{k:04d}",
            "description": "Stainless steel hex bolt, M8 x 40 mm, DIN 933, box of 100",
            "quantity": k + 1,
            "unitPrice": round(3.5 + k * 0.25, 2),
            "currency": "EUR",
        }
        for k in range(10)
    ]
    document: dict[str, Any] = {
        "order": {
            "id": order_id,
            "channel": "web",
            "customer": {
                "id": "C-7781",
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y"},
            },
            "lines": lines,
            "notes": "",
        }
    }
    text = json.dumps(document)
    if len(text) > size:
        raise ValueError(f"the order document is {len(text)} bytes, more than {size}")
    document["order"]["notes"] = "x" * (size - len(text))
    return json.dumps(document)


def order_xml(order_id: str, size: int = XML_BODY_BYTES) -> str:
    """``order_json``'s document as XML of exactly ``size`` bytes, ``/order/id`` = ``order_id``."""
    lines = "".join(
        f"<line><sku>SKU-{k:04d}</sku>"
        "<description>Stainless steel hex bolt, M8 x 40 mm, DIN 933, box of 100</description>"
        f"<quantity>{k + 1}</quantity><unitPrice>{round(3.5 + k * 0.25, 2)}</unitPrice>"
        "<currency>EUR</currency></line>"
        for k in range(8)
    )
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?><order><id>{order_id}</id><channel>web</channel>'
        "<customer><id>C-7781</id><name>Ada Lovelace</name><email>ada@example.com</email>"
        "<address><street>12 St James's Square</street><city>London</city><zip>SW1Y</zip>"
        f"</address></customer><lines>{lines}</lines><notes>"
    )
    tail = "</notes></order>"
    pad = size - len(head) - len(tail)
    if pad < 0:
        raise ValueError(f"the order document is {len(head) + len(tail)} bytes, more than {size}")
    return head + "x" * pad + tail


STUB_WORKLOADS: dict[str, StubWorkload] = {
    w.key: w
    for w in (
        StubWorkload("stubs-1", "1 stub", 1, "contains"),
        StubWorkload("stubs-1k", "1,000 stubs", 1000, "contains"),
        StubWorkload("stubs-10k", "10,000 stubs", 10_000, "contains"),
        StubWorkload("jsonpath", f"JSONPath, 2 KB, {JSON_STUBS} stubs", JSON_STUBS, "jsonpath"),
        StubWorkload("jsonpath-10k", "JSONPath, 2 KB, 10,000 stubs", 10_000, "jsonpath"),
        StubWorkload("xpath", f"XPath, 2 KB, {JSON_STUBS} stubs", JSON_STUBS, "xpath"),
        StubWorkload("xpath-10k", "XPath, 2 KB, 10,000 stubs", 10_000, "xpath"),
        StubWorkload("tracking", "1 stub, all peers tracking", 1, "contains", record=True),
    )
}
CLOUD_WORKLOADS: dict[str, str] = {
    "auth": "auth (POST tokens)",
    "create-server": "create server",
    "list-servers-detail": "list servers detail, 1,000",
}
ALL_WORKLOADS = [*STUB_WORKLOADS, *CLOUD_WORKLOADS]


# installing the peers --------------------------------------------------------------


def npm_version(prefix: Path, package: str) -> str | None:
    manifest = prefix / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_npm_peers(prefix: Path, wanted: Sequence[str]) -> dict[str, str]:
    """WireMock and/or Mountebank installed under ``prefix`` (npm), installing if needed."""
    specs = {WIREMOCK: (WIREMOCK_SPEC, "wiremock", WIREMOCK_SERIES)}
    specs[MOUNTEBANK] = (MOUNTEBANK_SPEC, "mountebank", MOUNTEBANK_SERIES)
    needed = {name: specs[name] for name in wanted if name in specs}
    missing = [
        spec
        for spec, package, series in needed.values()
        if not (npm_version(prefix, package) or "").startswith(series)
    ]
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm is not on PATH: it installs WireMock and Mountebank")
        prefix.mkdir(parents=True, exist_ok=True)
        log(f"installing {', '.join(missing)} into {prefix} (npm, once) ...")
        cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *missing]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    versions = {}
    for name, (spec, package, series) in needed.items():
        version = npm_version(prefix, package)
        if version is None or not version.startswith(series):
            raise BenchError(f"{spec} is not installed under {prefix} (found {version})")
        versions[name] = version
    return versions


def wiremock_jar(prefix: Path) -> Path:
    build = prefix / "node_modules" / "wiremock" / "build"
    jars = sorted(build.glob("wiremock-standalone-*.jar"))
    if not jars:
        raise BenchError(f"the wiremock npm package under {prefix} ships no standalone jar")
    return jars[-1]


def java_version(java: str) -> str:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0] if first else "?"


# peers serving stubs -----------------------------------------------------------


class StubPeer(ABC):
    """One server under test for the stub workloads: start it, load a workload's stubs."""

    name: str

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = Client(server.port)
        self.url = server.url  # where wrk sends playback requests

    @abstractmethod
    def load(self, workload: StubWorkload) -> WrkRequest:
        """Load the stubs (untimed) and say what wrk sends."""

    def recorded(self) -> int:
        """How many requests the peer has recorded (-1: it cannot tell)."""
        return -1

    def check(self, workload: StubWorkload, request: WrkRequest) -> None:
        """Every request body wrk will send gets its stub's answer."""
        client = Client(int(self.url.rsplit(":", 1)[1]))
        for i, body in zip(workload.request_ids(), request.bodies, strict=True):
            status, data = client.request(request.method, request.path, body, request.headers)
            expected = workload.answer(i).encode()
            if status != 200 or data != expected:
                raise BenchError(
                    f"{self.name} {workload.key}: stub {i} answered {status} {data[:300]!r},"
                    f" expected 200 {expected!r}"
                )


class SimulacraStubs(StubPeer):
    """Mirage v2: a scenario, a record session to PUT stubs, then a playback session."""

    name = SIMULACRA
    load_workers = 8

    def stub_document(self, workload: StubWorkload, i: int) -> dict[str, Any]:
        if workload.kind == "contains":
            patterns = {"contains": [workload.contains_pattern(i)]}
        elif workload.kind == "xpath":
            patterns = {"xpath": [f"/order/id[text()='{workload.ident(i)}']"]}
        else:
            patterns = {"jsonpath": [f"$[?(@.id == '{workload.ident(i)}')]"]}
        return {
            "request": {"method": "POST", "bodyPatterns": patterns},
            "response": {"status": 200, "body": workload.answer(i)},
        }

    def load(self, workload: StubWorkload) -> WrkRequest:
        tag = uuid.uuid4().hex[:8]
        scenario, record, play = f"bench_{tag}", f"rec_{tag}", f"play_{tag}"
        base = f"/api/v2/scenarios/objects/{scenario}"
        client = self.client
        client.json("PUT", "/api/v2/scenarios", {"scenario": scenario}, 201)
        begin = {"begin": None, "session": record, "mode": "record"}
        client.json("POST", f"{base}/action", begin, 200)

        def put(i: int) -> None:
            doc = self.stub_document(workload, i)
            client.json("PUT", f"{base}/stubs", doc, 201, {"session": record})

        with ThreadPoolExecutor(max_workers=self.load_workers) as pool:
            for _ in pool.map(put, range(workload.stubs)):
                pass
        client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
        begin = {"begin": None, "session": play, "mode": "playback"}
        client.json("POST", f"{base}/action", begin, 200)
        headers = {"session": play, "Content-Type": workload.content_type}
        bodies = [workload.body(i) for i in workload.request_ids()]
        return WrkRequest("POST", f"{base}/stubs", headers, bodies)

    def recorded(self) -> int:
        status, data = self.client.request("GET", "/api/v2/tracker/records?limit=1")
        if status != 200:
            raise BenchError(f"Simulacra: GET tracker records answered {status}: {data[:300]!r}")
        return int(json.loads(data)["paging"]["totalItems"])


class WireMockStubs(StubPeer):
    """Stub mappings through ``POST /__admin/mappings/import``, in one request.

    WireMock tries the most recently added mapping first and imports a list from its end,
    so the first mapping of the list is tried first and the last one last, as on the
    other peers.
    """

    name = WIREMOCK
    path = "/crm"

    def mapping(self, workload: StubWorkload, i: int) -> dict[str, Any]:
        if workload.kind == "contains":
            pattern: dict[str, Any] = {"contains": workload.contains_pattern(i)}
        elif workload.kind == "xpath":
            expression = {"expression": "/order/id/text()", "equalTo": workload.ident(i)}
            pattern = {"matchesXPath": expression}
        else:
            expression = {"expression": "$.order.id", "equalTo": workload.ident(i)}
            pattern = {"matchesJsonPath": expression}
        return {
            "request": {"method": "POST", "bodyPatterns": [pattern]},
            "response": {"status": 200, "body": workload.answer(i)},
        }

    def load(self, workload: StubWorkload) -> WrkRequest:
        mappings = [self.mapping(workload, i) for i in range(workload.stubs)]
        document = {
            "mappings": mappings,
            "importOptions": {"duplicatePolicy": "OVERWRITE", "deleteAllNotInImport": True},
        }
        self.client.json("POST", "/__admin/mappings/import", document, 200)
        status, data = self.client.request("GET", "/__admin/mappings?limit=1")
        total = json.loads(data)["meta"]["total"] if status == 200 else None
        if total != workload.stubs:
            raise BenchError(f"WireMock holds {total} mappings, expected {workload.stubs}")
        headers = {"Content-Type": workload.content_type}
        bodies = [workload.body(i) for i in workload.request_ids()]
        return WrkRequest("POST", self.path, headers, bodies)

    def recorded(self) -> int:
        status, data = self.client.request("GET", "/__admin/requests?limit=1")
        if status != 200:
            raise BenchError(f"WireMock: GET /__admin/requests answered {status}")
        return int(json.loads(data)["meta"]["total"])


class MountebankStubs(StubPeer):
    """One imposter (its own port) with every stub, created by ``POST /imposters``."""

    name = MOUNTEBANK
    path = "/crm"

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(server)
        self.imposter_port = free_port()
        self.url = f"http://127.0.0.1:{self.imposter_port}"

    def stub(self, workload: StubWorkload, i: int) -> dict[str, Any]:
        if workload.kind == "contains":
            predicate: dict[str, Any] = {"contains": {"body": workload.contains_pattern(i)}}
        elif workload.kind == "xpath":
            predicate = {
                "equals": {"body": workload.ident(i)},
                "xpath": {"selector": "/order/id"},
            }
        else:
            predicate = {
                "equals": {"body": workload.ident(i)},
                "jsonpath": {"selector": "$.order.id"},
            }
        return {
            "predicates": [{"equals": {"method": "POST"}}, predicate],
            "responses": [{"is": {"statusCode": 200, "body": workload.answer(i)}}],
        }

    def load(self, workload: StubWorkload) -> WrkRequest:
        document = {
            "port": self.imposter_port,
            "protocol": "http",
            "recordRequests": workload.record,
            "stubs": [self.stub(workload, i) for i in range(workload.stubs)],
        }
        self.client.json("POST", "/imposters", document, 201)
        headers = {"Content-Type": workload.content_type}
        bodies = [workload.body(i) for i in workload.request_ids()]
        return WrkRequest("POST", self.path, headers, bodies)

    def recorded(self) -> int:
        path = f"/imposters/{self.imposter_port}"
        status, data = self.client.request("GET", path)
        if status != 200:
            raise BenchError(f"Mountebank: GET {path} answered {status}")
        return len(json.loads(data).get("requests") or [])


# the cloud: create-server with wrk -----------------------------------------------

CREATE_LUA = """\
-- generated by bench/peers.py: server creates with unique names over several tenants
local paths = {{{paths}}}
local tokens = {{{tokens}}}
local images = {{{images}}}
local tag = {tag}
local threads = 0
local counter = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local k = counter % #paths + 1
  local body = string.format(
    '{{"server": {{"name": "bench-%s-%d-%d", "imageRef": "%s", "flavorRef": "2"}}}}',
    tag, tid, counter, images[k])
  local headers = {{["X-Auth-Token"] = tokens[k], ["Content-Type"] = "application/json"}}
  return wrk.format("POST", paths[k] .. "/servers", headers, body)
end

{done}"""


class CreateServerWrk(cloud.Operation):
    """``POST <compute>/servers`` with wrk for a fixed time, unique names, fresh tenants.

    wrk cannot stop at a count, so each run (warm-up included) goes to ``CREATE_TENANTS``
    fresh tenants in rotation (no tenant grows past a few thousand servers, far from the
    65,000 addresses a tenant has), and afterwards the tenants must hold as many servers as
    wrk counted answers, plus at most one in flight per connection.
    """

    name = "create-server"
    method = (
        "POST <compute>/servers {{name, imageRef, flavorRef 2}}, unique names, over"
        f" {CREATE_TENANTS} fresh tenants per run in rotation"
    )

    def setup(self, peer: cloud.Peer, cfg: cloud.Settings) -> None:
        """Nothing: every run makes its own tenants."""

    def _run(self, peer: cloud.Peer, cfg: cloud.Settings, tag: str, duration: int) -> Sample:
        tenants = [
            cloud.compute_tenant(peer, f"bench-create-{tag}-{uuid.uuid4().hex[:6]}", cfg.region)
            for _ in range(CREATE_TENANTS)
        ]
        script = CREATE_LUA.format(
            paths=", ".join(lua_string(t.path) for t in tenants),
            tokens=", ".join(lua_string(t.access.token) for t in tenants),
            images=", ".join(lua_string(t.image_ref) for t in tenants),
            tag=lua_string(tag),
            done=LUA_DONE.format(marker=RESULT_MARKER),
        )
        script_path = cfg.workdir / f"create_{peer.name}_{tag}.lua"
        script_path.write_text(script)
        with Stopwatch(peer.server) as watch:
            result = run_wrk(
                cfg.wrk, peer.server.url, script_path, duration, cfg.connections, cfg.threads
            )
        if not (result.non_2xx or result.socket_errors):
            time.sleep(0.2)  # let the last answers wrk did not wait for land
            held = sum(cloud.count_servers(peer, t) for t in tenants)
            if not result.requests <= held <= result.requests + cfg.connections:
                raise BenchError(
                    f"{peer.name}: {held} servers after {result.requests} answered creates"
                )
        series = self.of(peer)
        if series.response_bytes is None:
            status, data = peer.client.request(
                "POST",
                f"{tenants[0].path}/servers",
                json.dumps(
                    {"server": {"name": "probe", "imageRef": tenants[0].image_ref, **FLAVOR}}
                ),
                tenants[0].headers,
            )
            if status == 202:
                series.response_bytes = len(data)
                series.document = cloud.parse_json(data)
        return Sample(
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            duration_s=result.duration_s,
            cpu_s=watch.cpu_s,
            non_2xx=result.non_2xx,
            socket_errors=result.socket_errors,
        )

    def warmup(self, peer: cloud.Peer, cfg: cloud.Settings) -> None:
        if cfg.warmup > 0:
            self._run(peer, cfg, "warmup", cfg.warmup)

    def measure(self, peer: cloud.Peer, cfg: cloud.Settings, round_no: int) -> Sample:
        return self._run(peer, cfg, f"r{round_no}", cfg.duration)


def cloud_operation(key: str) -> cloud.Operation:
    if key == "create-server":
        return CreateServerWrk()
    return cloud.OPERATIONS[key]()


# targets: one workload on one peer ----------------------------------------------


@dataclass
class Target:
    """One cell of the report: a workload on one peer's own server process."""

    workload: str  # key
    peer: str
    server: ServerProcess
    warmup: Callable[[], None]
    measure: Callable[[int], Sample]
    samples: list[Sample] = field(default_factory=list)
    loaded: Memory | None = None  # right after setup, before any measured traffic
    final: Memory | None = None  # after the last round
    errors: list[str] = field(default_factory=list)
    recorded: int | None = None

    def median(self, attr: str) -> float | None:
        if not self.samples:
            return None
        return statistics.median(getattr(s, attr) for s in self.samples)

    @property
    def flagged(self) -> bool:
        return bool(self.errors) or any(s.non_2xx or s.socket_errors for s in self.samples)


@dataclass
class Options:
    wrk: str
    workdir: Path
    duration: int
    connections: int
    threads: int
    warmup: int
    peers_dir: Path
    java: str
    server: str  # the HTTP server Simulacra runs on (simulacra serve --server)
    warmup_max: int = 120  # seconds of warm-up runs per stub target, at most


# A warm-up run this much faster than every one before it: the peer is still warming up.
WARM_GAIN = 0.03


def warm_until_steady(run: Callable[[int], Sample], opts: Options, label: str) -> None:
    """Warm-up runs of ``--warmup`` seconds until two in a row are no faster than the best
    before them by WARM_GAIN, for ``--warmup-max`` seconds at most. A JIT-compiled peer
    keeps getting faster for tens of seconds: after 5 s, WireMock's JSONPath rounds rose
    4,364 -> 6,180 -> 8,445 req/s (2026-12-07); after 60 s they were 10,616-14,951. Measured
    cold, a peer looks slower than its users see it."""
    best = run(opts.warmup).rps
    spent, flat = opts.warmup, 0
    while flat < 2 and spent < opts.warmup_max:
        rps = run(opts.warmup).rps
        spent += opts.warmup
        if rps > best * (1 + WARM_GAIN):
            best, flat = rps, 0
        else:
            best, flat = max(best, rps), flat + 1
    steady = "steady" if flat >= 2 else f"stopped by --warmup-max {opts.warmup_max} s"
    log(f"  {label}: warmed up for {spent} s, best {best:,.0f} req/s ({steady})")


def wrk_sampler(
    server: ServerProcess, url: str, script: Path, opts: Options
) -> Callable[[int], Sample]:
    def run(duration: int) -> Sample:
        with Stopwatch(server) as watch:
            result = run_wrk(opts.wrk, url, script, duration, opts.connections, opts.threads)
        return Sample(
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            duration_s=result.duration_s,
            cpu_s=watch.cpu_s,
            non_2xx=result.non_2xx,
            socket_errors=result.socket_errors,
        )

    return run


class Lab:
    """Starts every server, sets every target up, and stops them all at the end."""

    def __init__(self, opts: Options, mimic_venv: Path | None) -> None:
        self.opts = opts
        self.mimic_venv = mimic_venv
        self.servers: list[ServerProcess] = []
        self.stub_peers: dict[tuple[str, str], StubPeer] = {}
        self.counter = 0
        self.baseline = 0.0  # cores all servers use when idle (measured after setup)

    def _log_path(self, name: str) -> Path:
        self.counter += 1
        return self.opts.workdir / f"{self.counter:02d}-{name}.log"

    def start(self, server: ServerProcess) -> ServerProcess:
        self.servers.append(server)
        return server.start(timeout=90.0)

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()

    def idle_cores(self, window: float = 1.0) -> float:
        """CPU (cores) all servers use together over ``window`` seconds."""
        sessions = {s.pid for s in self.servers if s.alive()}
        before = sessions_cpu_seconds(sessions)
        time.sleep(window)
        return (sessions_cpu_seconds(sessions) - before) / window

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> float:
        """Wait until every server is back to idle; return the seconds waited.

        After a run a server may keep working (a peer with 10,000 stubs answers its queue
        for seconds after wrk stops, a JVM compiles and collects, Simulacra's tracker writes
        its last records): that must not land in the next peer's run. Idle: all servers
        together use at most ``QUIET_CORES`` more than their measured idle baseline (timers
        of ~20 idle servers add up) over 0.25 s.
        """
        started = time.perf_counter()
        sessions = {s.pid for s in self.servers if s.alive()}
        limit = (self.baseline + QUIET_CORES) * 0.25
        while time.perf_counter() - started < timeout:
            before = sessions_cpu_seconds(sessions)
            time.sleep(0.25)
            if sessions_cpu_seconds(sessions) - before <= limit:
                break
        return time.perf_counter() - started

    # processes

    def simulacra(self) -> ServerProcess:
        return simulacra_process("memory://", self.opts.server, self._log_path("simulacra"))

    def wiremock(self) -> ServerProcess:
        port = free_port()
        cwd = self.opts.workdir / f"wiremock-{port}"
        cwd.mkdir()
        argv = [
            self.opts.java,
            "-jar",
            str(wiremock_jar(self.opts.peers_dir)),
            "--port",
            str(port),
            "--bind-address",
            "127.0.0.1",
            "--disable-banner",
        ]
        return ServerProcess(
            WIREMOCK, argv, self._log_path("wiremock"), port, cwd=cwd, ready_path=WIREMOCK_READY
        )

    def mountebank(self) -> ServerProcess:
        port = free_port()
        cwd = self.opts.workdir / f"mountebank-{port}"
        cwd.mkdir()
        node = shutil.which("node") or "node"
        mb = self.opts.peers_dir / "node_modules" / "mountebank" / "bin" / "mb"
        argv = [node, str(mb), "--port", str(port)]
        return ServerProcess(MOUNTEBANK, argv, self._log_path("mountebank"), port, cwd=cwd)

    def mimic(self) -> ServerProcess:
        if self.mimic_venv is None:
            raise BenchError("Mimic is not installed")
        self.counter += 1
        sub = self.opts.workdir / f"mimic-{self.counter:02d}"
        sub.mkdir()
        return cloud.mimic_process(self.mimic_venv, sub)

    # targets

    def stub_target(self, workload: StubWorkload, peer_name: str) -> Target:
        factories: dict[str, tuple[Callable[[], ServerProcess], type[StubPeer]]] = {
            SIMULACRA: (self.simulacra, SimulacraStubs),
            WIREMOCK: (self.wiremock, WireMockStubs),
            MOUNTEBANK: (self.mountebank, MountebankStubs),
        }
        make_server, adapter = factories[peer_name]
        server = self.start(make_server())
        peer = adapter(server)
        started = time.perf_counter()
        request = peer.load(workload)
        loaded_s = time.perf_counter() - started
        peer.check(workload, request)
        self.stub_peers[(workload.key, peer_name)] = peer
        label = f"{workload.key}_{peer_name}"
        script = write_lua(
            label, request.method, request.path, request.headers, request.bodies, self.opts.workdir
        )
        run = wrk_sampler(server, peer.url, script, self.opts)
        log(f"  {peer_name}: {workload.stubs:,} stubs loaded in {loaded_s:.1f}s, answers checked")

        def warmup() -> None:
            warm_until_steady(run, self.opts, f"{workload.key} {peer_name}")

        return Target(
            workload.key,
            peer_name,
            server,
            warmup=warmup,
            measure=lambda round_no: run(self.opts.duration),
            loaded=server.memory(),
        )

    def cloud_target(self, key: str, peer_name: str, cfg: cloud.Settings) -> Target:
        import simulacra

        if peer_name == SIMULACRA:
            server = self.simulacra()
            version = simulacra.__version__
        else:
            server = self.mimic()
            version = cloud.MIMIC_VERSION
        self.start(server)
        peer = cloud.Peer(peer_name, version, server)
        op = cloud_operation(key)
        op.setup(peer, cfg)
        log(f"  {peer_name}: set up")
        return Target(
            key,
            peer_name,
            server,
            warmup=lambda: op.warmup(peer, cfg),
            measure=lambda round_no: op.measure(peer, cfg, round_no),
            loaded=server.memory(),
        )


# the report ----------------------------------------------------------------------


def workload_label(key: str) -> str:
    if key in STUB_WORKLOADS:
        return STUB_WORKLOADS[key].label
    return CLOUD_WORKLOADS[key]


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(targets: Sequence[Target], workloads: Sequence[str]) -> str:
    by_key = {(t.workload, t.peer): t for t in targets}
    rows = [
        (
            "workload",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "CPU ms/req",
            "peak RSS MB",
            "S x req/s",
            "RSS / S",
        )
    ]
    for key in workloads:
        peers = [t for t in targets if t.workload == key]
        ours = by_key.get((key, SIMULACRA))
        for k, target in enumerate(peers):
            rps = target.median("rps")
            peak = target.final.peak_mb if target.final else None
            speed = rss = None
            if ours is not None and target is not ours:
                speed = ratio(ours.median("rps"), rps)
                ours_peak = ours.final.peak_mb if ours.final else None
                rss = ratio(peak, ours_peak)
            rows.append(
                (
                    workload_label(key) if k == 0 else "",
                    target.peer + (" (!)" if target.flagged else ""),
                    _cell(rps, ",.0f"),
                    _cell(target.median("p50_ms"), ".2f"),
                    _cell(target.median("p99_ms"), ".2f"),
                    _cell(target.median("cpu_s_per_1k"), ".3f"),
                    _cell(peak, ".0f"),
                    "-" if speed is None else f"{fmt_ratio(speed)}x",
                    "-" if rss is None else f"{fmt_ratio(rss)}x",
                )
            )
    return render_table(rows, left=2)


def verdicts(targets: Sequence[Target]) -> list[tuple[bool | None, str]]:
    by_key = {(t.workload, t.peer): t for t in targets}

    def rps(key: str, peer: str) -> float | None:
        target = by_key.get((key, peer))
        return None if target is None or target.flagged else target.median("rps")

    out: list[tuple[bool | None, str]] = []
    for key in ("stubs-1", "tracking", "jsonpath", "jsonpath-10k", "xpath", "xpath-10k"):
        for peer in (WIREMOCK, MOUNTEBANK):
            value = ratio(rps(key, SIMULACRA), rps(key, peer))
            if value is not None:
                met = value >= PLAYBACK_RATIO_TARGET
                out.append(
                    (
                        met,
                        f"playback ({workload_label(key)}): {value:.2f}x {peer}"
                        f" (target >= {PLAYBACK_RATIO_TARGET:.0f}x)",
                    )
                )
    value = ratio(rps("stubs-10k", SIMULACRA), rps("stubs-1", SIMULACRA))
    if value is not None:
        out.append(
            (
                value >= STUBS_SCALING_TARGET,
                f"10,000 stubs at {value:.0%} of the one-stub throughput"
                f" (target >= {STUBS_SCALING_TARGET:.0%})",
            )
        )
    for kind in ("jsonpath", "xpath"):
        value = ratio(rps(f"{kind}-10k", SIMULACRA), rps(kind, SIMULACRA))
        if value is not None:
            out.append(
                (
                    value >= LITERAL_SCALING_TARGET,
                    f"{kind}: 10,000 stubs at {value:.0%} of the {JSON_STUBS}-stub throughput"
                    f" (target >= {LITERAL_SCALING_TARGET:.0%})",
                )
            )
    for key in CLOUD_WORKLOADS:
        value = ratio(rps(key, SIMULACRA), rps(key, MIMIC))
        if value is not None:
            out.append(
                (
                    value >= CLOUD_RATIO_TARGET,
                    f"{workload_label(key)}: {value:.1f}x Mimic"
                    f" (target >= {CLOUD_RATIO_TARGET:.0f}x)",
                )
            )
    big = by_key.get(("stubs-10k", SIMULACRA))
    if big is not None and big.final is not None and big.loaded is not None:
        peak = big.final.peak_mb
        out.append(
            (
                peak < RSS_TARGET_MB,
                f"peak RSS with 10,000 stubs: {peak:.0f} MB, all of Simulacra's processes summed"
                f" (the largest alone {big.final.largest_peak_mb():.0f} MB;"
                f" {big.loaded.current_mb:.0f} MB right after loading)"
                f" (target < {RSS_TARGET_MB:.0f} MB)",
            )
        )
    return out


def machine_line() -> str:
    return (
        f"{os.cpu_count()} vCPU, {platform.machine()}, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


def report_json(
    targets: Sequence[Target], versions: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    def memory(m: Memory | None) -> dict[str, Any] | None:
        if m is None:
            return None
        return {
            "peak_mb": round(m.peak_mb, 1),
            "current_mb": round(m.current_mb, 1),
            "largest_process_peak_mb": round(m.largest_peak_mb(), 1),
            "processes": {
                str(pid): {"command": c, "vm_hwm_kib": h, "vm_rss_kib": r}
                for pid, (c, h, r) in m.per_process.items()
            },
        }

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_line(),
        "versions": versions,
        "peer_defaults": {
            WIREMOCK: WIREMOCK_DEFAULTS,
            MOUNTEBANK: MOUNTEBANK_DEFAULTS,
            MIMIC: MIMIC_DEFAULTS,
        },
        "settings": {
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup_s": args.warmup,
            "warmup_max_s": args.warmup_max,
        },
        "targets": [
            {
                "workload": t.workload,
                "label": workload_label(t.workload),
                "peer": t.peer,
                "argv": t.server.argv,
                "rps_median": t.median("rps"),
                "p50_ms_median": t.median("p50_ms"),
                "p99_ms_median": t.median("p99_ms"),
                "cpu_s_per_1k_median": t.median("cpu_s_per_1k"),
                "memory_loaded": memory(t.loaded),
                "memory_final": memory(t.final),
                "recorded_requests": t.recorded,
                "errors": t.errors,
                "samples": [{**asdict(s), "cpu_s_per_1k": s.cpu_s_per_1k} for s in t.samples],
            }
            for t in targets
        ],
        "verdicts": [{"met": met, "text": text} for met, text in verdicts(targets)],
    }


# main ----------------------------------------------------------------------------


def parse_list(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
    lowered = {c.lower(): c for c in choices}

    def parse(text: str) -> list[str]:
        if text.strip().lower() == "none":
            return []
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n.lower() not in lowered]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {unknown}; choose from {', '.join(choices)}"
            )
        return [lowered[n.lower()] for n in names]

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="Simulacra vs. WireMock, Mountebank and Mimic (wrk, same stubs, one table).",
    )
    parser.add_argument(
        "--workloads",
        type=parse_list(ALL_WORKLOADS, "workload(s)"),
        default=list(ALL_WORKLOADS),
        help=f"comma-separated subset (default {','.join(ALL_WORKLOADS)})",
    )
    parser.add_argument(
        "--peers",
        type=parse_list([WIREMOCK, MOUNTEBANK, MIMIC], "peer(s)"),
        default=[WIREMOCK, MOUNTEBANK, MIMIC],
        help="peers to measure beside Simulacra (default WireMock,Mountebank,Mimic; none: only"
        " Simulacra)",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="seconds of each warm-up run before measuring (5); a stub workload's runs repeat"
        " until its rate is steady (a peer with a JIT takes tens of seconds)",
    )
    parser.add_argument(
        "--warmup-max",
        type=int,
        default=120,
        help="seconds of warm-up runs per stub target, at most (120)",
    )
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=DEFAULT_PEERS_DIR,
        help="where the peers are installed (default bench/.peers, ignored by git)",
    )
    parser.add_argument(
        "--mimic-venv",
        type=Path,
        metavar="PATH",
        help="a venv with Mimic 2.2.0 (default: PEERS_DIR/mimic-venv, installed if missing)",
    )
    parser.add_argument("--java", default="java", help="java executable (default: java on PATH)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=SERVERS[0],
        help="the HTTP server Simulacra runs on (default: its own)",
    )
    return parser


def run(args: argparse.Namespace, wrk: str, workdir: Path) -> int:
    import simulacra

    stub_keys = [k for k in args.workloads if k in STUB_WORKLOADS]
    cloud_keys = [k for k in args.workloads if k in CLOUD_WORKLOADS]
    stub_peers = [SIMULACRA, *[p for p in args.peers if p in STUB_PEERS]]
    use_mimic = MIMIC in args.peers and bool(cloud_keys)

    versions = {SIMULACRA: f"{simulacra.__version__} ({args.server}, memory://, tracking on)"}
    java = args.java
    if stub_keys:
        npm_peers = [p for p in stub_peers if p != SIMULACRA]
        versions.update(ensure_npm_peers(args.peers_dir, npm_peers))
        if WIREMOCK in npm_peers:
            found = shutil.which(java)
            if found is None:
                raise BenchError(f"{java!r} is not on PATH: WireMock needs Java 11 or later")
            java = found
            versions[WIREMOCK] += f" ({java_version(java)})"
        if MOUNTEBANK in npm_peers:
            node = shutil.which("node")
            if node is None:
                raise BenchError("node is not on PATH: Mountebank needs Node.js")
            proc = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
            versions[MOUNTEBANK] += f" (Node.js {proc.stdout.strip()})"
    mimic_venv: Path | None = None
    if use_mimic:
        mimic_venv = args.mimic_venv or args.peers_dir / "mimic-venv"
        found_versions = cloud.ensure_mimic(mimic_venv, explicit=args.mimic_venv is not None)
        versions[MIMIC] = f"{found_versions.get('mimic')} (Twisted {found_versions.get('twisted')})"

    opts = Options(
        wrk=wrk,
        workdir=workdir,
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        peers_dir=args.peers_dir,
        java=java,
        server=args.server,
        warmup_max=args.warmup_max,
    )
    cfg = cloud.Settings(
        wrk=wrk,
        workdir=workdir,
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        servers=1000,
        concurrency=16,
        auth_users=1,
        region="ORD",
    )
    lab = Lab(opts, mimic_venv)
    targets: list[Target] = []
    try:
        for key in stub_keys:
            log(f"setting up {key} ...")
            for peer_name in stub_peers:
                targets.append(lab.stub_target(STUB_WORKLOADS[key], peer_name))
        for key in cloud_keys:
            log(f"setting up {key} ...")
            for peer_name in [SIMULACRA, *([MIMIC] if use_mimic else [])]:
                targets.append(lab.cloud_target(key, peer_name, cfg))
        lab.settle()
        lab.baseline = min(lab.idle_cores() for _ in range(3))
        log(f"idle baseline of {len(lab.servers)} servers: {lab.baseline:.3f} cores")
        if args.warmup > 0:
            log(
                f"warming up (runs of {args.warmup}s; a stub target's until steady, at most"
                f" {args.warmup_max}s) ..."
            )
            for target in targets:
                lab.settle()
                target.warmup()
        for round_no in range(1, args.repeats + 1):
            for key in args.workloads:
                row = [t for t in targets if t.workload == key]
                shift = (round_no - 1) % len(row)  # rotate which peer goes first
                for target in row[shift:] + row[:shift]:
                    waited = lab.settle()
                    if waited > 2:
                        log(f"  (waited {waited:.1f}s for the servers to go idle)")
                    sample = target.measure(round_no)
                    target.samples.append(sample)
                    if sample.non_2xx or sample.socket_errors:
                        target.errors.append(
                            f"round {round_no}: {sample.non_2xx} non-2xx, "
                            f"{sample.socket_errors} socket errors of {sample.requests}"
                        )
                    log(
                        f"round {round_no}/{args.repeats} {key:>20} {target.peer:>10}:"
                        f" {sample.rps:9,.0f} req/s  p50 {sample.p50_ms:7.2f} ms"
                        f"  p99 {sample.p99_ms:8.2f} ms  cpu {sample.cpu_s_per_1k:.3f} s/1k"
                    )
                    if not target.server.alive():
                        raise BenchError(f"{target.peer} died:\n{target.server.log_tail()}")
        for target in targets:
            target.final = target.server.memory()
        for (key, _name), peer in lab.stub_peers.items():
            if STUB_WORKLOADS[key].record:
                target = next(t for t in targets if t.workload == key and t.peer == peer.name)
                target.recorded = peer.recorded()
                if target.recorded == 0:
                    target.errors.append("recorded no request although recording was on")
    finally:
        lab.stop_all()

    print()
    print(
        f"bench/peers.py, {time.strftime('%Y-%m-%d')}, {machine_line()};"
        f" wrk -t{args.threads} -c{args.connections} -d{args.duration}s, median of"
        f" {args.repeats} interleaved rounds"
    )
    for name, version in versions.items():
        print(f"  {name} {version}")
    print()
    print(results_table(targets, args.workloads))
    print()
    print(
        "S x req/s: Simulacra's requests/s over the peer's; RSS / S: the peer's peak RSS over"
        " Simulacra's. CPU ms/req: the server's CPU time (all its processes and threads, /proc)"
        " per request. Peak RSS: VmHWM summed over the server's processes (Simulacra: one"
        " process with its built-in server; granian's parent + worker with --server granian)."
    )
    print()
    for met, text in verdicts(targets):
        print(f"{'MET    ' if met else 'MISSED '} {text}")
    for target in targets:
        if target.flagged:
            print(f"(!) {workload_label(target.workload)} on {target.peer}: {target.errors[:3]}")
        if target.recorded is not None:
            log(f"{target.peer} recorded {target.recorded:,} requests in {target.workload}")
    if args.json:
        args.json.write_text(json.dumps(report_json(targets, versions, args), indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if any(t.flagged for t in targets) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrk = shutil.which(args.wrk)
    if wrk is None:
        print(
            f"error: wrk not found ({args.wrk!r} is not on PATH). Install it with:\n"
            "    sudo apt-get install wrk\n"
            "(or pass --wrk /path/to/wrk)",
            file=sys.stderr,
        )
        return 2
    if min(args.duration, args.connections, args.threads, args.repeats) <= 0 or args.warmup < 0:
        print(
            "error: --duration, --connections, --threads, --repeats must be > 0 (--warmup >= 0)",
            file=sys.stderr,
        )
        return 2
    return run_bench("simulacra-peers-", lambda workdir: run(args, wrk, workdir))


if __name__ == "__main__":
    sys.exit(main())
