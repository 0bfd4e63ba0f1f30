"""Cloud mocks side by side: Simulacra vs. Mimic 2.2.0 (the Twisted original), same run.

Starts ``simulacra serve --store memory://`` and Mimic 2.2.0 (``twistd -n mimic``, installed
into a throw-away venv on first use) on free ports and measures, per operation, requests/s,
p99 latency and the server's CPU time per 1,000 requests:

* ``auth``: ``POST /identity/v2.0/tokens`` (password credentials), wrk for a fixed time;
* ``create-server``: exactly ``--servers`` (1,000) ``POST <compute>/servers`` into a fresh
  tenant per batch, ``--batches`` (5) batches per round, from a small asyncio keep-alive
  client (wrk cannot stop at a count);
* ``list-servers-detail``: ``GET <compute>/servers/detail`` on a tenant holding
  ``--servers`` servers, wrk for a fixed time.
* ``lb-create``: exactly ``--servers`` (1,000) ``POST <clb>/loadbalancers`` into a fresh
  tenant per batch, like ``create-server``;
* ``node-add``: exactly ``--servers`` (1,000) ``POST <clb>/loadbalancers/{id}/nodes`` of one
  node each, spread over fresh load balancers (CLB allows 25 nodes per load balancer).

The compute endpoint comes from each server's own service catalog
(``cloudServersOpenStack``, region ORD, ``publicURL``) and the ``imageRef`` from its own
``GET <compute>/images``, so the two URL layouts need not match; ``<clb>`` is likewise the
``cloudLoadBalancers`` endpoint of region ORD. Rounds interleave the
peers and the operations; medians are reported.

Run from the repository root:

    python -m bench.cloud                             # both peers, all operations
    python -m bench.cloud --no-mimic --json out.json  # Simulacra alone
    python -m bench.cloud --operations auth --repeats 5

Adding an operation (e.g. load balancers' "LB create" and "node add"): subclass
``WrkOperation`` (a fixed-duration wrk run of one request shape) or ``CountedOperation``
(exactly N requests, e.g. N creates that must leave N objects behind), and add an instance
to ``OPERATIONS`` at the bottom of the "operations" section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._common import (
    REPO_ROOT,
    SERVERS,
    BenchError,
    Client,
    ServerProcess,
    Stopwatch,
    WrkResult,
    any_status,
    fmt_ratio,
    free_port,
    log,
    ratio,
    render_table,
    run_bench,
    run_wrk,
    simulacra_process,
    write_lua,
)

MIMIC_VERSION = "2.2.0"
# attrs >= 24 breaks Mimic 2.2.0's plugins; pin it below.
MIMIC_REQUIREMENTS = (f"mimic=={MIMIC_VERSION}", "attrs<24")
DEFAULT_MIMIC_VENV = REPO_ROOT / "bench" / ".peers" / "mimic-venv"  # ignored by git
COMPUTE_SERVICE = "cloudServersOpenStack"
CLB_SERVICE = "cloudLoadBalancers"
NODES_PER_LB = 25  # CLB's limit of nodes per load balancer
PASSWORD = "p"
FLAVOR_REF = "2"


# peers -----------------------------------------------------------------------


@dataclass
class Access:
    """What one ``POST /identity/v2.0/tokens`` answered."""

    token: str
    tenant: str
    catalog: list[dict[str, Any]]
    document: dict[str, Any]
    size: int

    def endpoint(self, service: str, region: str) -> str:
        """The ``publicURL`` of ``service`` in ``region`` from the service catalog."""
        for entry in self.catalog:
            if entry.get("name") != service:
                continue
            for endpoint in entry.get("endpoints", []):
                if endpoint.get("region") == region:
                    return str(endpoint["publicURL"])
        names = sorted({str(e.get("name")) for e in self.catalog})
        raise BenchError(
            f"tenant {self.tenant}: no {service} endpoint in region {region} in the catalog"
            f" (services: {', '.join(names)})"
        )


@dataclass
class Peer:
    """One server under test: Simulacra or Mimic."""

    name: str
    version: str
    server: ServerProcess
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = Client(self.server.port)

    @property
    def port(self) -> int:
        return self.server.port

    def authenticate(self, user: str, tenant: str) -> Access:
        data = self.client.json("POST", "/identity/v2.0/tokens", auth_document(user, tenant), 200)
        document = json.loads(data)
        try:
            access = document["access"]
            return Access(
                access["token"]["id"], tenant, access["serviceCatalog"], document, len(data)
            )
        except (KeyError, TypeError) as exc:
            raise BenchError(
                f"{self.name}: auth answered no token/catalog: {data[:300]!r}"
            ) from exc

    def path_of(self, url: str) -> str:
        """The path of a URL from this peer's catalog (which must point back at it)."""
        parts = urlsplit(url)
        if parts.port != self.port:
            raise BenchError(f"{self.name}: catalog URL {url} is not on port {self.port}")
        return parts.path.rstrip("/")

    def get_json(self, path: str, token: str) -> tuple[Any, int]:
        status, data = self.client.request("GET", path, None, {"X-Auth-Token": token})
        if status != 200:
            raise BenchError(f"{self.name}: GET {path} answered {status}: {data[:300]!r}")
        return json.loads(data), len(data)


def auth_document(user: str, tenant: str) -> dict[str, Any]:
    return {
        "auth": {
            "passwordCredentials": {"username": user, "password": PASSWORD},
            "tenantName": tenant,
        }
    }


@dataclass
class ComputeTenant:
    """A tenant's token, compute endpoint path and a valid imageRef."""

    access: Access
    path: str
    image_ref: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.access.token, "Content-Type": "application/json"}


def compute_tenant(peer: Peer, tenant: str, region: str) -> ComputeTenant:
    access = peer.authenticate(f"{tenant}-user", tenant)
    path = peer.path_of(access.endpoint(COMPUTE_SERVICE, region))
    images, _ = peer.get_json(f"{path}/images", access.token)
    if not images.get("images"):
        raise BenchError(f"{peer.name}: GET {path}/images listed no images")
    return ComputeTenant(access, path, str(images["images"][0]["id"]))


def count_servers(peer: Peer, tenant: ComputeTenant) -> int:
    document, _ = peer.get_json(f"{tenant.path}/servers", tenant.access.token)
    return len(document["servers"])


def create_requests(tenant: ComputeTenant, n: int, tag: str) -> list[RawRequest]:
    """``n`` server creates with distinct names (Nova allows duplicates; we avoid them)."""
    return [
        RawRequest(
            "POST",
            f"{tenant.path}/servers",
            tenant.headers,
            json.dumps(
                {
                    "server": {
                        "name": f"bench-{tag}-{i:05d}",
                        "imageRef": tenant.image_ref,
                        "flavorRef": FLAVOR_REF,
                    }
                }
            ).encode(),
        )
        for i in range(n)
    ]


@dataclass
class ClbTenant:
    """A tenant's token and Cloud Load Balancers endpoint path."""

    access: Access
    path: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.access.token, "Content-Type": "application/json"}


def clb_tenant(peer: Peer, tenant: str, region: str) -> ClbTenant:
    access = peer.authenticate(f"{tenant}-user", tenant)
    return ClbTenant(access, peer.path_of(access.endpoint(CLB_SERVICE, region)))


def lb_document(name: str) -> dict[str, Any]:
    return {
        "loadBalancer": {
            "name": name,
            "protocol": "HTTP",
            "port": 80,
            "virtualIps": [{"type": "PUBLIC"}],
        }
    }


def list_lbs(peer: Peer, tenant: ClbTenant) -> list[dict[str, Any]]:
    document, _ = peer.get_json(f"{tenant.path}/loadbalancers", tenant.access.token)
    return list(document["loadBalancers"])


# mimic -------------------------------------------------------------------------


def mimic_versions(venv: Path) -> dict[str, str] | None:
    python = venv / "bin" / "python"
    if not (venv / "bin" / "twistd").exists() or not python.exists():
        return None
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({p: m.version(p) for p in ('mimic', 'twisted', 'attrs')}))"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return dict(json.loads(proc.stdout))


def ensure_mimic(venv: Path, explicit: bool) -> dict[str, str]:
    """Mimic's versions in ``venv``, installing Mimic there first unless ``explicit``."""
    versions = mimic_versions(venv)
    if versions is None and explicit:
        raise BenchError(f"--mimic-venv {venv}: no importable mimic with bin/twistd there")
    if versions is None:
        log(f"installing Mimic {MIMIC_VERSION} into {venv} (once) ...")
        venv.parent.mkdir(parents=True, exist_ok=True)
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *MIMIC_REQUIREMENTS],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
                raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
        versions = mimic_versions(venv)
        if versions is None:
            raise BenchError(f"installed Mimic into {venv} but cannot import it")
    if versions.get("mimic") != MIMIC_VERSION:
        log(f"warning: {venv} has mimic {versions.get('mimic')}, not {MIMIC_VERSION}")
    return versions


def mimic_process(venv: Path, workdir: Path) -> ServerProcess:
    """``twistd -n --pidfile= mimic`` on a free port, cwd in ``workdir/mimic``.

    Mimic writes an access-log line per request to its output (here ``mimic.log``); that
    is its default and part of the CPU it is charged for.
    """
    port = free_port()
    cwd = workdir / "mimic"
    cwd.mkdir(exist_ok=True)
    argv = [
        str(venv / "bin" / "twistd"),
        "-n",
        "--pidfile=",
        "mimic",
        "-l",
        f"tcp:{port}:interface=127.0.0.1",
    ]
    return ServerProcess("mimic", argv, workdir / "mimic.log", port, cwd=cwd, ready=any_status)


# counted requests (asyncio keep-alive client) -----------------------------------


@dataclass
class RawRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""

    def encode(self, port: int) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class BatchResult:
    latencies_s: list[float]
    statuses: Counter[int]
    duration_s: float
    socket_errors: int
    bodies: list[bytes]  # one per request, in request order (b"" when it failed)
    failures: list[str]  # the first few non-2xx answers or errors, for the report

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: status, body, and whether the server will close."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("server closed the connection")
    version, status, *_ = status_line.split(None, 2)
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    if chunked:
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body, close = await reader.read(), True
    return int(status), body, close


async def _send_batch(port: int, requests: Sequence[bytes], concurrency: int) -> BatchResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    bodies = [b""] * len(requests)
    failures: list[str] = []
    errors = 0
    queue: Iterator[int] = iter(range(len(requests)))
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        nonlocal errors
        reader, writer = conn
        for i in queue:  # one shared iterator: each request is sent exactly once
            if writer.is_closing():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.perf_counter()
            try:
                writer.write(requests[i])
                status, body, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors += 1
                if len(failures) < 5:
                    failures.append(f"request {i}: {exc!r}")
                writer.close()
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            bodies[i] = body
            if not 200 <= status < 300 and len(failures) < 5:
                failures.append(f"request {i}: {status} {body[:300]!r}")
            if close:
                writer.close()
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in opened))
    duration = time.perf_counter() - started
    return BatchResult(latencies, statuses, duration, errors, bodies, failures)


def send_batch(port: int, requests: Sequence[RawRequest], concurrency: int) -> BatchResult:
    """Send each request exactly once over ``concurrency`` keep-alive connections."""
    encoded = [r.encode(port) for r in requests]
    try:
        return asyncio.run(_send_batch(port, encoded, min(concurrency, len(encoded)) or 1))
    except OSError as exc:
        raise BenchError(f"cannot connect to 127.0.0.1:{port}: {exc}") from exc


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# samples -----------------------------------------------------------------------


@dataclass
class Sample:
    """One measurement of one operation on one peer."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    duration_s: float
    cpu_s: float
    non_2xx: int
    socket_errors: int

    @property
    def cpu_s_per_1k(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def cpu_share(self) -> float:
        """Server CPU / wall time: 1.0 is one core busy all the time."""
        return self.cpu_s / self.duration_s if self.duration_s else 0.0


@dataclass
class Series:
    """All samples of one operation on one peer, plus what setup learned."""

    samples: list[Sample] = field(default_factory=list)
    response_bytes: int | None = None
    document: Any = None  # one parsed answer, for the shape comparison
    errors: list[str] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        if not self.samples:
            return None
        return statistics.median(getattr(s, attr) for s in self.samples)


# operations --------------------------------------------------------------------


@dataclass
class Settings:
    """Knobs every operation may read (from the command line)."""

    wrk: str
    workdir: Path
    duration: int
    connections: int
    threads: int
    warmup: int
    servers: int
    concurrency: int
    auth_users: int
    region: str
    # Counted operations: batches of ``servers`` requests per round (bench.peers keeps 1).
    batches: int = 1


class Operation(ABC):
    """One row of the report. Subclasses say how to set up and measure it on a peer."""

    name: str
    method: str  # one line on how it is measured, printed under the table

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}

    def of(self, peer: Peer) -> Series:
        return self.series.setdefault(peer.name, Series())

    @abstractmethod
    def setup(self, peer: Peer, cfg: Settings) -> None:
        """Untimed preparation on ``peer`` (users, tenants, fixtures, checks)."""

    @abstractmethod
    def warmup(self, peer: Peer, cfg: Settings) -> None:
        """A short unrecorded run."""

    @abstractmethod
    def measure(self, peer: Peer, cfg: Settings, round_no: int) -> Sample:
        """One recorded run."""

    def describe(self, cfg: Settings) -> str:
        """``method`` with ``{servers}`` filled in."""
        return self.method.format(servers=f"{cfg.servers:,}")

    def probe(self, peer: Peer) -> str:
        """After a run with errors: evidence for the report (default: none)."""
        return "non-2xx answers or socket errors"


@dataclass
class WrkRequest:
    method: str
    path: str
    headers: dict[str, str]
    bodies: list[str]


class WrkOperation(Operation):
    """wrk for ``--duration`` seconds with one request shape (cycling through bodies)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Path] = {}
        self.requests: dict[str, WrkRequest] = {}

    @abstractmethod
    def prepare(self, peer: Peer, cfg: Settings) -> WrkRequest:
        """Set up ``peer`` and say what wrk sends; record ``of(peer).response_bytes``."""

    def setup(self, peer: Peer, cfg: Settings) -> None:
        req = self.requests[peer.name] = self.prepare(peer, cfg)
        label = f"{self.name}_{peer.name}"
        self.scripts[peer.name] = write_lua(
            label, req.method, req.path, req.headers, req.bodies, cfg.workdir
        )

    def _run(self, peer: Peer, cfg: Settings, duration: int) -> tuple[WrkResult, Stopwatch]:
        with Stopwatch(peer.server) as watch:
            result = run_wrk(
                cfg.wrk,
                peer.server.url,
                self.scripts[peer.name],
                duration,
                cfg.connections,
                cfg.threads,
            )
        return result, watch

    def warmup(self, peer: Peer, cfg: Settings) -> None:
        if cfg.warmup > 0:
            self._run(peer, cfg, cfg.warmup)

    def measure(self, peer: Peer, cfg: Settings, round_no: int) -> Sample:
        result, watch = self._run(peer, cfg, cfg.duration)
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

    def describe(self, cfg: Settings) -> str:
        return (
            f"{super().describe(cfg)};"
            f" wrk -t{cfg.threads} -c{cfg.connections} -d{cfg.duration}s --latency"
        )

    def probe(self, peer: Peer) -> str:
        """Replay wrk's first request once and show the answer."""
        req = self.requests[peer.name]
        status, data = peer.client.request(req.method, req.path, req.bodies[0] or None, req.headers)
        return f"wrk saw errors; replayed {req.method} {req.path}: {status} {data[:400]!r}"


class CountedOperation(Operation):
    """Exactly ``count`` requests per batch over ``--create-concurrency`` connections.

    For requests that change state (creates), where wrk's fixed duration would overshoot
    the intended object count. A round is ``--batches`` batches, each prepared untimed on
    its own fresh objects (a tenant holds ``count`` servers at most, as with one batch);
    1,000 creates are ~0.1 s of Simulacra's CPU (ten 10-ms ticks), too few for a steady
    figure. req/s = requests / summed wall time of the batches; p50/p99 from the
    per-request latencies the client measured.
    """

    @abstractmethod
    def prepare_round(self, peer: Peer, cfg: Settings, tag: str, count: int) -> list[RawRequest]:
        """Untimed: the requests of one round (a fresh tenant etc.)."""

    @abstractmethod
    def verify_round(self, peer: Peer, cfg: Settings, tag: str, batch: BatchResult) -> None:
        """Untimed: check the round's effect (raise ``BenchError`` when it is wrong)."""

    def setup(self, peer: Peer, cfg: Settings) -> None:
        """Nothing: each round prepares its own requests (``prepare_round``)."""

    def count(self, cfg: Settings) -> int:
        return cfg.servers

    def warmup_count(self, cfg: Settings) -> int:
        return min(100, self.count(cfg)) if cfg.warmup > 0 else 0

    def warmup(self, peer: Peer, cfg: Settings) -> None:
        n = self.warmup_count(cfg)
        if n:
            requests = self.prepare_round(peer, cfg, "warmup", n)
            batch = send_batch(peer.port, requests, cfg.concurrency)
            if batch.non_2xx or batch.socket_errors:
                raise BenchError(f"{self.name} warm-up on {peer.name}: {batch.failures}")
            self.verify_round(peer, cfg, "warmup", batch)

    def measure(self, peer: Peer, cfg: Settings, round_no: int) -> Sample:
        latencies: list[float] = []
        duration_s = cpu_s = 0.0
        non_2xx = socket_errors = 0
        series = self.of(peer)
        for batch_no in range(1, cfg.batches + 1):
            tag = f"r{round_no}" if cfg.batches == 1 else f"r{round_no}b{batch_no}"
            requests = self.prepare_round(peer, cfg, tag, self.count(cfg))
            with Stopwatch(peer.server) as watch:
                batch = send_batch(peer.port, requests, cfg.concurrency)
            series.errors.extend(batch.failures)
            if series.response_bytes is None:
                first = next((b for b in batch.bodies if b), None)
                if first is not None:
                    series.response_bytes = len(first)
                    series.document = parse_json(first)
            if not batch.non_2xx and not batch.socket_errors:
                self.verify_round(peer, cfg, tag, batch)
            latencies += batch.latencies_s
            duration_s += batch.duration_s
            cpu_s += watch.cpu_s
            non_2xx += batch.non_2xx
            socket_errors += batch.socket_errors
        return Sample(
            rps=len(latencies) / duration_s if duration_s else 0.0,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            requests=len(latencies),
            duration_s=duration_s,
            cpu_s=cpu_s,
            non_2xx=non_2xx,
            socket_errors=socket_errors,
        )

    def describe(self, cfg: Settings) -> str:
        return (
            f"{super().describe(cfg)}; {cfg.batches} x exactly {self.count(cfg):,} requests per"
            f" round from an asyncio keep-alive client, {cfg.concurrency} connections;"
            " req/s = requests / wall time of the batches"
        )


class Auth(WrkOperation):
    name = "auth"
    method = "POST /identity/v2.0/tokens, passwordCredentials + tenantName"

    def prepare(self, peer: Peer, cfg: Settings) -> WrkRequest:
        bodies = []
        for k in range(cfg.auth_users):
            user, tenant = f"bench-auth-user-{k}", f"bench-auth-tenant-{k}"
            # The first auth creates the user; wrk then measures repeat logins.
            access = peer.authenticate(user, tenant)
            access.endpoint(COMPUTE_SERVICE, cfg.region)
            self.of(peer).response_bytes = access.size
            self.of(peer).document = only_service(access.document, COMPUTE_SERVICE)
            bodies.append(json.dumps(auth_document(user, tenant)))
        headers = {"Content-Type": "application/json"}
        return WrkRequest("POST", "/identity/v2.0/tokens", headers, bodies)

    def describe(self, cfg: Settings) -> str:
        users = (
            "one fixed user (repeat logins)"
            if cfg.auth_users == 1
            else f"{cfg.auth_users} users in rotation (each logged in once before)"
        )
        return f"{super().describe(cfg)}; {users}"


class CreateServer(CountedOperation):
    name = "create-server"
    method = (
        "POST <compute>/servers {{name, imageRef, flavorRef 2}}, unique names,"
        " into a fresh tenant per batch (which then holds exactly {servers} servers)"
    )

    def __init__(self) -> None:
        super().__init__()
        self._tenants: dict[tuple[str, str], ComputeTenant] = {}

    def prepare_round(self, peer: Peer, cfg: Settings, tag: str, count: int) -> list[RawRequest]:
        tenant = compute_tenant(peer, f"bench-create-{tag}-{uuid.uuid4().hex[:6]}", cfg.region)
        self._tenants[(peer.name, tag)] = tenant
        return create_requests(tenant, count, tag)

    def verify_round(self, peer: Peer, cfg: Settings, tag: str, batch: BatchResult) -> None:
        tenant = self._tenants.pop((peer.name, tag))
        n, expected = count_servers(peer, tenant), len(batch.bodies)
        if n != expected:
            raise BenchError(f"{peer.name}: {n} servers after {expected} creates")


class ListServersDetail(WrkOperation):
    name = "list-servers-detail"
    method = "GET <compute>/servers/detail, tenant with {servers} servers"

    def prepare(self, peer: Peer, cfg: Settings) -> WrkRequest:
        tenant = compute_tenant(peer, f"bench-list-{uuid.uuid4().hex[:6]}", cfg.region)
        batch = send_batch(peer.port, create_requests(tenant, cfg.servers, "list"), cfg.concurrency)
        if batch.non_2xx or batch.socket_errors:
            raise BenchError(f"{peer.name}: filling the list tenant failed: {batch.failures}")
        document, size = peer.get_json(f"{tenant.path}/servers/detail", tenant.access.token)
        if len(document["servers"]) != cfg.servers:
            raise BenchError(
                f"{peer.name}: servers/detail lists {len(document['servers'])} servers,"
                f" expected {cfg.servers}"
            )
        self.of(peer).response_bytes = size
        self.of(peer).document = document
        headers = {"X-Auth-Token": tenant.access.token}
        return WrkRequest("GET", f"{tenant.path}/servers/detail", headers, [""])


class LbCreate(CountedOperation):
    name = "lb-create"
    method = (
        "POST <clb>/loadbalancers {{name, protocol HTTP, port 80, virtualIps [PUBLIC]}},"
        " unique names, into a fresh tenant per batch (which then holds {servers})"
    )

    def __init__(self) -> None:
        super().__init__()
        self._tenants: dict[tuple[str, str], ClbTenant] = {}

    def prepare_round(self, peer: Peer, cfg: Settings, tag: str, count: int) -> list[RawRequest]:
        tenant = clb_tenant(peer, f"bench-lb-{tag}-{uuid.uuid4().hex[:6]}", cfg.region)
        self._tenants[(peer.name, tag)] = tenant
        return [
            RawRequest(
                "POST",
                f"{tenant.path}/loadbalancers",
                tenant.headers,
                json.dumps(lb_document(f"bench-{tag}-{i:05d}")).encode(),
            )
            for i in range(count)
        ]

    def verify_round(self, peer: Peer, cfg: Settings, tag: str, batch: BatchResult) -> None:
        tenant = self._tenants.pop((peer.name, tag))
        n, expected = len(list_lbs(peer, tenant)), len(batch.bodies)
        if n == expected:
            return
        if peer.name == "Mimic" and n < expected:
            # Mimic draws ids with randrange(99999): a collision overwrites a load balancer.
            log(f"note: Mimic lists {n} load balancers after {expected} creates (id collisions)")
            return
        raise BenchError(f"{peer.name}: {n} load balancers after {expected} creates")


class NodeAdd(CountedOperation):
    name = "node-add"
    method = (
        "POST <clb>/loadbalancers/{{id}}/nodes {{nodes: [one ENABLED node, unique address]}},"
        " {servers} per round over fresh load balancers of 25 nodes each"
    )

    def __init__(self) -> None:
        super().__init__()
        self._tenants: dict[tuple[str, str], ClbTenant] = {}

    def prepare_round(self, peer: Peer, cfg: Settings, tag: str, count: int) -> list[RawRequest]:
        tenant = clb_tenant(peer, f"bench-node-{tag}-{uuid.uuid4().hex[:6]}", cfg.region)
        self._tenants[(peer.name, tag)] = tenant
        needed = math.ceil(count / NODES_PER_LB)
        # Ids from the listing, not the create answers: Mimic's random ids may collide.
        ids: list[int] = []
        while len(ids) < needed:
            for i in range(needed - len(ids)):
                name = f"bench-{tag}-{len(ids)}-{i}"
                path = f"{tenant.path}/loadbalancers"
                peer.client.json("POST", path, lb_document(name), 202, tenant.headers)
            ids = [lb["id"] for lb in list_lbs(peer, tenant)]
        requests = []
        for i in range(count):
            node = {"address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "port": 80}
            body = {"nodes": [{**node, "condition": "ENABLED"}]}
            path = f"{tenant.path}/loadbalancers/{ids[i % needed]}/nodes"
            requests.append(RawRequest("POST", path, tenant.headers, json.dumps(body).encode()))
        return requests

    def verify_round(self, peer: Peer, cfg: Settings, tag: str, batch: BatchResult) -> None:
        tenant = self._tenants.pop((peer.name, tag))
        n, expected = sum(lb["nodeCount"] for lb in list_lbs(peer, tenant)), len(batch.bodies)
        if n != expected:
            raise BenchError(f"{peer.name}: {n} nodes after {expected} node adds")


# To add an operation, define its class above and list it here (in report order).
OPERATIONS: dict[str, type[Operation]] = {
    op.name: op
    for op in (
        Auth,
        CreateServer,
        ListServersDetail,
        LbCreate,
        NodeAdd,
    )
}


# answer shapes -----------------------------------------------------------------


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def only_service(document: dict[str, Any], service: str) -> dict[str, Any]:
    """An auth answer with only ``service`` in its catalog (Mimic lists many more)."""
    access = dict(document["access"])
    access["serviceCatalog"] = [e for e in access["serviceCatalog"] if e.get("name") == service]
    return {**document, "access": access}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "number", float: "number", str: "string"}.get(
        type(value), "list" if isinstance(value, list) else "object"
    )


def shape(document: Any, prefix: str = "") -> dict[str, str]:
    """Key path -> JSON type; a list is represented by its first item."""
    if isinstance(document, dict):
        out = {prefix or ".": "object"}
        for key, value in document.items():
            out.update(shape(value, f"{prefix}.{key}"))
        return out
    if isinstance(document, list):
        out = {prefix + "[]": "list"}
        if document:
            out.update(shape(document[0], prefix + "[]"))
        return out
    return {prefix or ".": json_type(document)}


def shape_differences(ours: Any, theirs: Any, names: tuple[str, str]) -> list[str]:
    """Key paths present in only one answer, or with different JSON types."""
    a, b = shape(ours), shape(theirs)
    out = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            out.append(f"{path}: only {names[0]} ({a[path]})")
        elif path not in a:
            out.append(f"{path}: only {names[1]} ({b[path]})")
        elif a[path] != b[path]:
            out.append(f"{path}: {names[0]} {a[path]}, {names[1]} {b[path]}")
    return out


# report ------------------------------------------------------------------------


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(ops: Sequence[Operation], peers: Sequence[Peer]) -> str:
    first = peers[0].name
    other = peers[1].name if len(peers) > 1 else None
    header = ["operation", f"{first} req/s"]
    if other:
        header += [f"{other} req/s", f"ratio {first[0]}/{other[0]}"]
    header += [f"{first} p99 ms"]
    if other:
        header += [f"{other} p99 ms"]
    rows = [header]
    for op in ops:
        a = op.of(peers[0])
        row = [op.name + (" (!)" if _flagged(a) else ""), _cell(a.median("rps"), ",.0f")]
        if other:
            b = op.of(peers[1])
            row[0] += " (!)" if _flagged(b) and "(!)" not in row[0] else ""
            row += [
                _cell(b.median("rps"), ",.0f"),
                fmt_ratio(ratio(a.median("rps"), b.median("rps"))),
            ]
        row.append(_cell(a.median("p99_ms"), ".2f"))
        if other:
            row.append(_cell(op.of(peers[1]).median("p99_ms"), ".2f"))
        rows.append(row)
    return render_table(rows)


def cpu_table(ops: Sequence[Operation], peers: Sequence[Peer]) -> str:
    first = peers[0].name
    other = peers[1].name if len(peers) > 1 else None
    header = ["operation", f"{first} CPU-s/1k"]
    if other:
        header += [f"{other} CPU-s/1k", f"{other[0]}/{first[0]}"]
    header += [f"{first} CPU/wall"]
    if other:
        header += [f"{other} CPU/wall"]
    header += [f"{first} bytes"]
    if other:
        header += [f"{other} bytes"]
    rows = [header]
    for op in ops:
        a = op.of(peers[0])
        row = [op.name, _cell(a.median("cpu_s_per_1k"), ".3f")]
        if other:
            b = op.of(peers[1])
            row += [
                _cell(b.median("cpu_s_per_1k"), ".3f"),
                fmt_ratio(ratio(b.median("cpu_s_per_1k"), a.median("cpu_s_per_1k"))),
            ]
        row.append(_cell(a.median("cpu_share"), ".2f"))
        if other:
            row.append(_cell(op.of(peers[1]).median("cpu_share"), ".2f"))
        row.append(_cell(a.response_bytes, ","))
        if other:
            row.append(_cell(op.of(peers[1]).response_bytes, ","))
        rows.append(row)
    return render_table(rows)


def compare_shapes(ops: Sequence[Operation], peers: Sequence[Peer]) -> dict[str, list[str]]:
    names = (peers[0].name, peers[1].name)
    return {
        op.name: shape_differences(op.of(peers[0]).document, op.of(peers[1]).document, names)
        for op in ops
    }


def _flagged(series: Series) -> bool:
    return bool(series.errors) or any(s.non_2xx or s.socket_errors for s in series.samples)


def report_json(
    ops: Sequence[Operation], peers: Sequence[Peer], cfg: Settings, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peers": {p.name: {"version": p.version, "argv": p.server.argv} for p in peers},
        "settings": {
            "duration_s": cfg.duration,
            "connections": cfg.connections,
            "threads": cfg.threads,
            "repeats": args.repeats,
            "warmup_s": cfg.warmup,
            "servers": cfg.servers,
            "batches": cfg.batches,
            "create_concurrency": cfg.concurrency,
            "auth_users": cfg.auth_users,
            "region": cfg.region,
            "simulacra_server": args.server,
            "store": args.store,
        },
        "operations": [],
    }
    for op in ops:
        entry: dict[str, Any] = {"name": op.name, "method": op.describe(cfg), "peers": {}}
        for peer in peers:
            series = op.of(peer)
            entry["peers"][peer.name] = {
                "rps_median": series.median("rps"),
                "p50_ms_median": series.median("p50_ms"),
                "p99_ms_median": series.median("p99_ms"),
                "cpu_s_per_1k_median": series.median("cpu_s_per_1k"),
                "cpu_share_median": series.median("cpu_share"),
                "response_bytes": series.response_bytes,
                "errors": series.errors,
                "samples": [{**asdict(s), "cpu_s_per_1k": s.cpu_s_per_1k} for s in series.samples],
            }
        if len(peers) == 2:
            a, b = (op.of(p) for p in peers)
            entry["rps_ratio"] = ratio(a.median("rps"), b.median("rps"))
            entry["cpu_per_request_ratio"] = ratio(
                b.median("cpu_s_per_1k"), a.median("cpu_s_per_1k")
            )
            entry["shape_differences"] = compare_shapes([op], peers)[op.name]
        out["operations"].append(entry)
    return out


# main --------------------------------------------------------------------------


def parse_operations(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown operation(s) {unknown}; choose from {', '.join(OPERATIONS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cloud",
        description="Simulacra vs. Mimic 2.2.0 on the cloud mocks (identity, compute, CLB).",
    )
    parser.add_argument(
        "--operations",
        type=parse_operations,
        default=list(OPERATIONS),
        help=f"comma-separated subset, in report order (default {','.join(OPERATIONS)})",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="seconds of wrk per wrk operation and peer, and 100 unrecorded creates, before"
        " measuring (0: none)",
    )
    parser.add_argument(
        "--servers", type=int, default=1000, help="creates per round / servers listed (1000)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=5,
        help="batches of --servers requests per round for create-server, lb-create and"
        " node-add, each on fresh objects (default 5)",
    )
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=16,
        help="keep-alive connections of the create client (default 16)",
    )
    parser.add_argument(
        "--auth-users",
        type=int,
        default=1,
        help="users wrk cycles through for auth (default 1: one fixed user)",
    )
    parser.add_argument("--region", default="ORD", help="catalog region (default ORD)")
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    parser.add_argument("--store", default="memory://", help="Simulacra's store (memory://)")
    parser.add_argument("--no-mimic", action="store_true", help="measure Simulacra alone")
    parser.add_argument(
        "--mimic-venv",
        type=Path,
        metavar="PATH",
        help=f"a venv with mimic installed (default: {DEFAULT_MIMIC_VENV}, installed if missing)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    return parser


def run(args: argparse.Namespace, wrk: str, workdir: Path) -> int:
    import simulacra

    cfg = Settings(
        wrk=wrk,
        workdir=workdir,
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        servers=args.servers,
        concurrency=args.create_concurrency,
        auth_users=args.auth_users,
        region=args.region,
        batches=args.batches,
    )
    peers = [
        Peer(
            "Simulacra",
            f"{simulacra.__version__} ({args.server}, {args.store})",
            simulacra_process(args.store, args.server, workdir / "simulacra.log"),
        )
    ]
    if not args.no_mimic:
        venv = args.mimic_venv or DEFAULT_MIMIC_VENV
        versions = ensure_mimic(venv, explicit=args.mimic_venv is not None)
        peers.append(
            Peer(
                "Mimic",
                f"{versions.get('mimic')} (Twisted {versions.get('twisted')})",
                mimic_process(venv, workdir),
            )
        )
    ops = [OPERATIONS[name]() for name in args.operations]
    try:
        for peer in peers:
            log(f"starting {peer.name} {peer.version} ...")
            peer.server.start(timeout=60.0)
            log(f"{peer.name} up on {peer.server.url}")
        for op in ops:
            for peer in peers:
                log(f"setting up {op.name} on {peer.name} ...")
                op.setup(peer, cfg)
        if cfg.warmup > 0:
            log("warming up ...")
            for op in ops:
                for peer in peers:
                    op.warmup(peer, cfg)
        for round_no in range(1, args.repeats + 1):
            # Alternate which peer goes first, so drift does not favour one of them.
            order = peers if round_no % 2 else peers[::-1]
            for op in ops:
                for peer in order:
                    sample = op.measure(peer, cfg, round_no)
                    op.of(peer).samples.append(sample)
                    if sample.non_2xx or sample.socket_errors:
                        evidence = op.probe(peer)
                        op.of(peer).errors.append(evidence)
                        log(f"WARNING {op.name} on {peer.name}: {evidence}")
                    log(
                        f"round {round_no}/{args.repeats} {op.name:>20} {peer.name:>9}:"
                        f" {sample.rps:8,.0f} req/s  p99 {sample.p99_ms:7.2f} ms"
                        f"  cpu {sample.cpu_s_per_1k:.3f} s/1k req"
                        f"  ({sample.requests:,} requests, {sample.non_2xx} non-2xx,"
                        f" {sample.socket_errors} socket errors)"
                    )
                    if not peer.server.alive():
                        raise BenchError(f"{peer.name} died:\n{peer.server.log_tail()}")
    finally:
        for peer in peers:
            code = peer.server.stop()
            if code is not None:
                log(f"{peer.name} stopped (exit code {code})")

    print()
    print("cloud mocks bench: " + "  vs  ".join(f"{p.name} {p.version}" for p in peers))
    interleaved = "; peers interleaved, ratio = Simulacra / Mimic" if len(peers) > 1 else ""
    print(f"median of {args.repeats} rounds{interleaved}")
    print()
    print(results_table(ops, peers))
    print()
    print("server CPU-seconds per 1,000 requests (all server processes, /proc, 10 ms ticks);")
    print("CPU/wall: 1.00 = one core busy; bytes: one response body")
    print()
    print(cpu_table(ops, peers))
    print()
    for op in ops:
        print(f"{op.name}: {op.describe(cfg)}")
    if len(peers) == 2:
        print()
        print("answer shapes vs Mimic (key paths and JSON types of one answer each):")
        for op, diffs in compare_shapes(ops, peers).items():
            print(f"  {op}: " + ("same" if not diffs else f"{len(diffs)} difference(s)"))
            for line in diffs[:20]:
                print(f"    {line}")
    flagged = [(op, p) for op in ops for p in peers if _flagged(op.of(p))]
    for op, peer in flagged:
        print(f"(!) {op.name} on {peer.name}: errors; figures not comparable:")
        for line in op.of(peer).errors[:5]:
            print(f"    {line}")
    if args.json:
        args.json.write_text(json.dumps(report_json(ops, peers, cfg, args), indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if flagged else 0


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
    numbers = (
        args.duration,
        args.connections,
        args.threads,
        args.repeats,
        args.servers,
        args.batches,
        args.create_concurrency,
        args.auth_users,
    )
    if min(numbers) <= 0 or args.warmup < 0:
        print(
            "error: --duration, --connections, --threads, --repeats, --servers, --batches,"
            " --create-concurrency, --auth-users must be > 0 (--warmup >= 0)",
            file=sys.stderr,
        )
        return 2
    if args.connections < args.threads:
        print("error: --connections must be >= --threads", file=sys.stderr)
        return 2
    return run_bench("simulacra-cloud-bench-", lambda workdir: run(args, wrk, workdir))


if __name__ == "__main__":
    sys.exit(main())
