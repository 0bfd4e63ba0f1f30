"""What ``--shared-cloud`` costs: cloud requests/s on 1 and 2 instances over one PostgreSQL.

For each setup (in-memory cloud state on one instance, then ``--shared-cloud`` on one and on
two instances, each setup on a fresh schema), wrk drives for ``--duration`` seconds:

* ``auth``: ``POST /identity/v2.0/tokens`` for one user (read-only after the first: the same
  token is answered, nothing is written);
* ``create-server``: ``POST <compute>/servers`` into one tenant (every request writes; the
  state grows by one server per request, so this also shows the cost of a growing state).

With two instances one wrk runs against each at the same time and their rates are added.
Rounds repeat ``--repeats`` times; medians are printed. Run from the repository root:

    python -m bench.shared_cloud --store postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import requests

from simulacra.cloud.compute import NOVA
from tests.server import RunningServer

AUTH = '{"auth": {"passwordCredentials": {"username": "bench", "password": "x"}}}'
CREATE = '{"server": {"name": "b", "imageRef": "img", "flavorRef": "2"}}'


def run_parallel(urls: list[str], body: str, duration: int) -> float:
    """One wrk per URL at the same time; the sum of their rates."""
    with tempfile.TemporaryDirectory() as folder:
        procs = []
        for i, url in enumerate(urls):
            script = Path(folder) / f"{i}.lua"
            script.write_text(
                f'wrk.method = "POST"\nwrk.body = [[{body}]]\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            procs.append(
                subprocess.Popen(
                    ["wrk", "-t1", "-c4", f"-d{duration}s", "-s", str(script), url],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        total = 0.0
        for proc in procs:
            out = proc.communicate()[0]
            match = re.search(r"Requests/sec:\s+([\d.]+)", out)
            if match is None or "Non-2xx" in out:
                raise RuntimeError(f"wrk failed:\n{out}")
            total += float(match.group(1))
    return total


def measure(store: str, extra: list[str], instances: int, duration: int) -> dict[str, float]:
    servers = [RunningServer(store=store, extra_args=extra).start() for _ in range(instances)]
    try:
        tenant = uuid.uuid4().hex[:8]
        for server in servers:  # warm up: the user exists, each process has loaded the state
            assert requests.post(server.url + "/identity/v2.0/tokens", data=AUTH).ok
        auth = run_parallel([s.url + "/identity/v2.0/tokens" for s in servers], AUTH, duration)
        compute = [f"{s.url}/mimicking/{NOVA.service_id}/ORD/v2/{tenant}/servers" for s in servers]
        create = run_parallel(compute, CREATE, duration)
        listed = requests.get(compute[0]).json()["servers"]
        return {"auth": auth, "create-server": create, "servers": float(len(listed))}
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setups = [
        ("memory, 1 instance", "memory://", [], 1),
        ("--shared-cloud, 1 instance", None, ["--shared-cloud"], 1),
        ("--shared-cloud, 2 instances", None, ["--shared-cloud"], 2),
    ]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in setups}
    for _ in range(args.repeats):
        for name, store, extra, instances in setups:
            schema = None
            if store is None:
                schema = "bench_" + uuid.uuid4().hex[:12]
                store = f"{args.store}?schema={schema}"
            try:
                results[name].append(measure(store, extra, instances, args.duration))
            finally:
                if schema is not None:
                    with psycopg.connect(args.store, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            time.sleep(1)
    first = results[setups[0][0]]
    base = {k: statistics.median(r[k] for r in first) for k in ("auth", "create-server")}
    print(f"{'setup':<30} {'auth req/s':>11} {'ratio':>6} {'create req/s':>13} {'ratio':>6}")
    for name, *_ in setups:
        auth = statistics.median(r["auth"] for r in results[name])
        create = statistics.median(r["create-server"] for r in results[name])
        servers = statistics.median(r["servers"] for r in results[name])
        print(
            f"{name:<30} {auth:>11.0f} {auth / base['auth']:>6.2f} {create:>13.0f}"
            f" {create / base['create-server']:>6.2f}   ({servers:.0f} servers at the end)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
