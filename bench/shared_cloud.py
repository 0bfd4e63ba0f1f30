"""What ``--shared-cloud`` costs: auth and create-server on two shared instances against one
in-memory instance, with an empty cloud and with ``--servers`` existing servers.

For each count of existing servers (``--servers``, default ``0,5000``) and each setup
(``memory``: one instance, cloud state in memory; ``shared``: two instances, ``--shared-cloud``
over one PostgreSQL schema; with ``--base REV``, also ``base``: that revision's two shared
instances, unpacked with ``git archive``), the instances start afresh, the existing servers
are created (``--servers-per-tenant`` to a tenant, spread over the instances), and wrk drives
each instance at the same time for ``--duration`` seconds:

* ``auth``: ``POST /identity/v2.0/tokens`` for one user (read-only after the first: the same
  token is answered, nothing is written);
* ``create-server``: ``POST <compute>/servers``, cycling through ``--tenants`` tenants of
  its own per instance (a team's tests, each in its tenant); every request writes.

Rates of the instances are added; p99 is the worst instance's; CPU per request counts the
instances' processes and, for the shared setups, PostgreSQL's. Rounds repeat ``--repeats``
times (setups interleaved); medians are printed, with each shared setup's ratio to memory and
the goal (issue 18: at least 0.30, at 0 and at 5,000 servers). ``--json PATH`` writes the
same figures for another bench (bench/scale.py). Run from the repository root:

    flock /tmp/simulacra-bench.lock python -m bench.shared_cloud
    flock /tmp/simulacra-bench.lock python -m bench.shared_cloud --base HEAD --servers 0,500
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench._common import _CLOCK_TICKS as CLOCK_TICKS
from bench._common import (
    BenchError,
    ServerProcess,
    WrkResult,
    _proc_stat,
    log,
    lua_string,
    parse_wrk,
    render_table,
    run_bench,
    simulacra_process,
)
from bench.dataplane import base_tree
from simulacra.cloud.compute import NOVA

GOAL = 0.30  # issue 18: two shared instances at least 30% of one in-memory instance
AUTH = '{"auth": {"passwordCredentials": {"username": "bench", "password": "x"}}}'
CREATE = '{"server": {"name": "b", "imageRef": "img", "flavorRef": "2"}}'
WORKLOADS = ("auth", "create-server")

LUA = """\
local paths = {{{paths}}}
local body = {body}
local headers = {{["Content-Type"] = "application/json"}}
local counter = 0
function request()
  counter = counter % #paths + 1
  return wrk.format("POST", paths[counter], headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d socket=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Sample:
    rps: float
    p99_ms: float
    cpu_us: float  # CPU per request: the instances' (and PostgreSQL's) user + system time
    server_cpu_us: float  # the instances' part of it


@dataclass
class Figures:
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)


def postgres_cpu_seconds() -> float:
    """utime + stime of every PostgreSQL process on this machine, from /proc."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm != "postgres":
            continue
        stat = _proc_stat(entry.name)
        if stat is not None:
            ticks += int(stat[11]) + int(stat[12])
    return ticks / CLOCK_TICKS


def compute_path(tenant: str) -> str:
    return f"/mimicking/{NOVA.service_id}/ORD/v2/{tenant}/servers"


def preload(servers: list[ServerProcess], count: int, per_tenant: int) -> None:
    """``count`` servers, ``per_tenant`` to a tenant, created through the instances in turn."""

    def create(i: int) -> None:
        url = servers[i % len(servers)].url + compute_path(f"pre{i // per_tenant}")
        response = requests.post(url, data=CREATE, timeout=60)
        if response.status_code != 202:
            raise BenchError(f"preload create: {response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(count)))


def drive(
    wrk: str,
    servers: list[ServerProcess],
    scripts: list[Path],
    args: argparse.Namespace,
    database: bool,
) -> Sample:
    """One wrk per instance at once; their rates added, the worst p99, CPU per request."""
    import subprocess

    cpu_before = sum(s.cpu_seconds() for s in servers)
    pg_before = postgres_cpu_seconds() if database else 0.0
    procs = [
        subprocess.Popen(
            [
                wrk,
                "--threads=1",
                f"--connections={args.connections}",
                f"--duration={args.duration}s",
                "--timeout=10s",
                f"--script={script}",
                server.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for server, script in zip(servers, scripts, strict=True)
    ]
    results: list[WrkResult] = [parse_wrk(proc.communicate()[0]) for proc in procs]
    server_cpu = sum(s.cpu_seconds() for s in servers) - cpu_before
    cpu = server_cpu + (postgres_cpu_seconds() - pg_before if database else 0.0)
    for result in results:
        if result.non_2xx or result.socket_errors:
            raise BenchError(f"wrk saw {result.non_2xx} non-2xx, {result.socket_errors} errors")
    requests_done = sum(r.requests for r in results)
    return Sample(
        rps=sum(r.rps for r in results),
        p99_ms=max(r.p99_ms for r in results),
        cpu_us=cpu / requests_done * 1e6 if requests_done else 0.0,
        server_cpu_us=server_cpu / requests_done * 1e6 if requests_done else 0.0,
    )


def script(folder: Path, name: str, paths: list[str], body: str) -> Path:
    path = folder / f"{name}.lua"
    items = ", ".join(lua_string(p) for p in paths)
    path.write_text(LUA.format(paths=items, body=lua_string(body)))
    return path


def measure_setup(
    setup: str,
    existing: int,
    args: argparse.Namespace,
    workdir: Path,
    base_dir: Path | None,
) -> dict[str, Sample]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed")
    shared = setup != "memory"
    schema = "bench_" + uuid.uuid4().hex[:12]
    store = f"{args.store}?schema={schema}" if shared else "memory://"
    count = 2 if shared else 1
    servers = []
    for i in range(count):
        server = simulacra_process(store, "simulacra", workdir / f"{setup}-{existing}-{i}.log")
        if shared:
            server.argv.append("--shared-cloud")
        if setup == "base" and base_dir is not None:
            server.cwd = base_dir
        servers.append(server)
    try:
        for server in servers:
            server.start()
        preload(servers, existing, args.servers_per_tenant)
        for server in servers:  # the user exists, each process has loaded it
            response = requests.post(server.url + "/identity/v2.0/tokens", data=AUTH, timeout=30)
            if response.status_code != 200:
                raise BenchError(f"auth: {response.status_code} {response.text[:200]}")
        auth = [script(workdir, f"auth{i}", ["/identity/v2.0/tokens"], AUTH) for i in range(count)]
        tag = uuid.uuid4().hex[:6]
        create = [
            script(
                workdir,
                f"create{i}",
                [compute_path(f"{tag}i{i}t{t}") for t in range(args.tenants)],
                CREATE,
            )
            for i in range(count)
        ]
        return {
            "auth": drive(wrk, servers, auth, args, shared),
            "create-server": drive(wrk, servers, create, args, shared),
        }
    finally:
        for server in servers:
            server.stop()
        if shared:
            with psycopg.connect(args.store, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def report(
    results: dict[tuple[str, int, str], Figures], args: argparse.Namespace
) -> dict[str, Any]:
    rows = [
        ["servers", "setup", "workload", "req/s", "p99 ms", "CPU us/req", "(server)", "x memory"]
    ]
    figures: dict[str, Any] = {"goal": GOAL, "results": []}
    for (setup, existing, workload), found in results.items():
        memory = results.get(("memory", existing, workload))
        rps = found.median("rps")
        ratio = rps / memory.median("rps") if memory and setup != "memory" else None
        met = None if ratio is None else ratio >= GOAL
        rows.append(
            [
                str(existing),
                {"memory": "memory x1", "shared": "shared x2", "base": f"{args.base} x2"}[setup],
                workload,
                f"{rps:.0f}",
                f"{found.median('p99_ms'):.1f}",
                f"{found.median('cpu_us'):.0f}",
                f"{found.median('server_cpu_us'):.0f}",
                "-" if ratio is None else f"{ratio:.3f}" + ("" if met else " (goal NOT met)"),
            ]
        )
        figures["results"].append(
            {
                "servers": existing,
                "setup": setup,
                "instances": 1 if setup == "memory" else 2,
                "workload": workload,
                "rps": rps,
                "p99_ms": found.median("p99_ms"),
                "cpu_us_per_request": found.median("cpu_us"),
                "server_cpu_us_per_request": found.median("server_cpu_us"),
                "ratio_to_memory": ratio,
                "goal_met": met,
            }
        )
    print(render_table(rows, left=3))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--servers", default="0,5000", help="existing servers, comma-separated")
    parser.add_argument("--servers-per-tenant", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=64, help="create-server tenants/instance")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4, help="per instance")
    parser.add_argument("--base", help="also measure this git revision's two shared instances")
    parser.add_argument("--no-head", action="store_true", help="with --base: only memory, base")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.servers.split(",") if n.strip()]
    setups = ["memory", *([] if args.no_head else ["shared"]), *(["base"] if args.base else [])]

    def work(workdir: Path) -> int:
        base_dir = base_tree(args.base, workdir / "base") if args.base else None
        results: dict[tuple[str, int, str], Figures] = {}
        for existing in counts:
            for setup in setups:
                for workload in WORKLOADS:
                    results[(setup, existing, workload)] = Figures()
        for round_ in range(args.repeats):
            for existing in counts:
                for setup in setups:
                    log(f"round {round_ + 1}: {setup}, {existing} servers")
                    samples = measure_setup(setup, existing, args, workdir, base_dir)
                    for workload, sample in samples.items():
                        results[(setup, existing, workload)].samples.append(sample)
        figures = report(results, args)
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0

    return run_bench("simulacra-shared-cloud-", work)


if __name__ == "__main__":
    sys.exit(main())
