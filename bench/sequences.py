"""Stateful sequences against one-response playback, on PostgreSQL (one and two instances)
and on SQLite for reference (issue 18 item 4).

Each store configuration gets one scenario of three stubs, played in one session:

- ``one``: a stub with one response (the reference: never asks the store);
- ``stateful``: a stub with three responses, played over and over. On PostgreSQL its
  position comes from the store until the sequence has played to its end; from then on each
  instance answers the last response without the store (until the session is begun again);
- ``in-sequence``: a stub whose sequence is longer than a run (``--length`` responses), so
  every playback takes a position from the store; the session is begun again before each run.

Configurations: ``postgresql x1`` (one instance), ``postgresql x2`` (two instances on one
schema, one wrk process on each, half the connections each), ``sqlite x1``; ``--base REV``
adds ``postgresql x1 @REV``, the same on an earlier revision (its tree taken with
``git archive``, run with this checkout's virtualenv).

Prints req/s, p99 and the servers' CPU time per request (medians over ``--repeats``
interleaved rounds), each workload against ``one`` of its configuration, and the verdict on
the goal: stateful playback at least 0.5x of one-response playback. With two instances the
req/s add up, the p99 is the larger of the two wrk runs' and the CPU is both servers'.
``store positions/req`` is how many positions the store handed out per playback.
A measurement, not a test: it exits 0 either way.

    flock /tmp/simulacra-bench.lock python -m bench.sequences --json out.json
    flock /tmp/simulacra-bench.lock python -m bench.sequences --base HEAD --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    BenchError,
    Client,
    ServerProcess,
    WrkResult,
    fmt_ratio,
    log,
    ratio,
    render_table,
    run_bench,
    run_wrk,
    simulacra_process,
    write_lua,
)
from bench.dataplane import base_tree

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
GOAL = 0.5  # stateful playback / one-response playback, on PostgreSQL
WORKLOADS = ("one", "stateful", "in-sequence")
BODIES = {"one": "<one/>", "stateful": "<seq/>", "in-sequence": "<long/>"}
RECORD, PLAY = "rec", "play"
CONTENT = {"Content-Type": "text/xml; charset=utf-8"}


@dataclass
class Config:
    label: str
    servers: list[ServerProcess]
    # Its own name: the PostgreSQL configurations share NOTIFY's channel (one database), and
    # a scenario of the same name written in another schema would drop this one's index.
    scenario: str = field(default_factory=lambda: "seq_" + uuid.uuid4().hex[:8])
    schema: str | None = None  # PostgreSQL: the schema, dropped at the end
    postgres: str = ""  # PostgreSQL: the server's URL
    samples: dict[str, list[WrkResult]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    positions: dict[str, list[float]] = field(default_factory=dict)  # per request

    def rps(self, workload: str) -> float:
        return statistics.median(s.rps for s in self.samples[workload])

    def p99(self, workload: str) -> float:
        return statistics.median(s.p99_ms for s in self.samples[workload])

    def cpu(self, workload: str) -> float:
        return statistics.median(self.cpu_us[workload])

    def vs_one(self, workload: str) -> float:
        """Median over rounds of req/s against ``one`` of the same round (measured close)."""
        return statistics.median(
            w.rps / o.rps
            for w, o in zip(self.samples[workload], self.samples["one"], strict=True)
            if o.rps
        )


def stub(body: str, responses: list[str]) -> dict[str, Any]:
    return {
        "request": {"method": "POST", "bodyPatterns": {"contains": [body]}},
        "response": {"status": 200, "body": responses if len(responses) > 1 else responses[0]},
    }


def action(config: Config, document: dict[str, Any]) -> None:
    path = f"/api/v2/scenarios/objects/{config.scenario}/action"
    Client(config.servers[0].port).json("POST", path, document, 200)


def playback(config: Config, server: ServerProcess, workload: str) -> tuple[int, bytes]:
    return Client(server.port).request(
        "POST",
        f"/api/v2/scenarios/objects/{config.scenario}/stubs",
        BODIES[workload],
        {"session": PLAY, **CONTENT},
    )


def wait_playing(config: Config, server: ServerProcess) -> None:
    """Until ``server`` plays the session (another instance hears of it by NOTIFY)."""
    deadline = time.monotonic() + 20
    while playback(config, server, "one")[0] != 200:
        if time.monotonic() > deadline:
            raise BenchError(f"{server.url} never played session {PLAY}")
        time.sleep(0.05)


def load(config: Config, length: int) -> None:
    """The scenario of three stubs, its session begun in playback on the first server."""
    client = Client(config.servers[0].port)
    client.json("PUT", "/api/v2/scenarios", {"scenario": config.scenario}, 201)
    action(config, {"begin": None, "session": RECORD, "mode": "record"})
    path = f"/api/v2/scenarios/objects/{config.scenario}/stubs"
    documents = [
        stub(BODIES["one"], ["steady"]),
        stub(BODIES["stateful"], ["1", "2", "3"]),
        stub(BODIES["in-sequence"], [str(i + 1) for i in range(length)]),
    ]
    for document in documents:
        client.json("PUT", path, document, 201, {"session": RECORD})
    action(config, {"end": None, "session": RECORD})
    begin_again(config, first=True)
    servers = config.servers
    answers = [playback(config, servers[i % len(servers)], "stateful") for i in range(4)]
    if [body for _, body in answers] != [b"1", b"2", b"3", b"3"]:
        raise BenchError(f"{config.label}: the stateful stub played {answers}")


def begin_again(config: Config, first: bool = False) -> None:
    """(End and) begin the playback session: every sequence starts again."""
    if not first:
        action(config, {"end": None, "session": PLAY})
    action(config, {"begin": None, "session": PLAY, "mode": "playback"})
    for server in config.servers:
        wait_playing(config, server)


def stored_positions(config: Config) -> int:
    """Positions the store has handed out, all counters together (0 without PostgreSQL)."""
    if config.schema is None:
        return 0
    import psycopg

    with psycopg.connect(config.postgres, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            f'SELECT COALESCE(SUM(n), 0) FROM "{config.schema}".sequence_counter'
        ).fetchone()
    return int(row[0]) if row else 0


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_round(
    config: Config, workload: str, scripts: dict[tuple[str, str], Path], args: argparse.Namespace
) -> None:
    if workload == "in-sequence":
        begin_again(config)  # the sequence from its start: every playback takes a position
    servers = config.servers
    results: list[WrkResult | BaseException] = [BenchError("not run")] * len(servers)
    connections = max(1, args.connections // len(servers))
    threads = 1 if len(servers) > 1 else args.threads

    def one_wrk(i: int) -> None:
        try:
            results[i] = run_wrk(
                args.wrk,
                servers[i].url,
                scripts[(config.label, workload)],
                args.duration,
                connections,
                threads,
            )
        except BaseException as exc:  # reported below, in the bench's thread
            results[i] = exc

    positions0 = stored_positions(config)
    cpu0 = sum(s.cpu_seconds() for s in servers)
    workers = [threading.Thread(target=one_wrk, args=(i,)) for i in range(len(servers))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = sum(s.cpu_seconds() for s in servers) - cpu0
    positions = stored_positions(config) - positions0
    done: list[WrkResult] = []
    for result in results:
        if isinstance(result, BaseException):
            raise BenchError(f"{config.label} {workload}: {result}")
        done.append(result)
    total = sum(r.requests for r in done)
    errors = sum(r.non_2xx + r.socket_errors for r in done)
    if errors:
        raise BenchError(f"{config.label} {workload}: {errors} errors or non-2xx answers")
    if workload == "in-sequence" and positions > args.length:
        log(f"warning: {config.label} in-sequence ran past its {args.length} responses")
    merged = WrkResult(
        rps=sum(r.rps for r in done),
        p50_ms=max(r.p50_ms for r in done),
        p99_ms=max(r.p99_ms for r in done),
        requests=total,
        duration_s=max(r.duration_s for r in done),
        non_2xx=0,
        socket_errors=0,
    )
    config.samples.setdefault(workload, []).append(merged)
    config.cpu_us.setdefault(workload, []).append(cpu / max(total, 1) * 1e6)
    config.positions.setdefault(workload, []).append(positions / max(total, 1))
    log(
        f"{config.label} {workload}: {merged.rps:,.0f} req/s, p99 {merged.p99_ms:.2f} ms,"
        f" {config.cpu_us[workload][-1]:.1f} us CPU/request,"
        f" {config.positions[workload][-1]:.3f} store positions/request"
    )


def configs(args: argparse.Namespace, workdir: Path) -> list[Config]:
    found: list[Config] = []

    def postgres(label: str, instances: int, tree: Path | None) -> Config:
        schema = "bench_seq_" + uuid.uuid4().hex[:10]
        servers = []
        for i in range(instances):
            server = simulacra_process(
                f"{args.postgres}?schema={schema}", "simulacra", workdir / f"{schema}-{i}.log"
            )
            if tree is not None:
                server.cwd = tree
            servers.append(server)
        return Config(label, servers, schema=schema, postgres=args.postgres)

    if args.base:
        tree = base_tree(args.base, workdir / "base")
        found.append(postgres(f"postgresql x1 @{args.base}", 1, tree))
    found.append(postgres("postgresql x1", 1, None))
    found.append(postgres("postgresql x2", 2, None))
    sqlite = f"sqlite:///{workdir / 'seq.db'}"
    found.append(Config("sqlite x1", [simulacra_process(sqlite, "simulacra", workdir / "sq.log")]))
    return found


def measure(args: argparse.Namespace, workdir: Path) -> list[Config]:
    chosen = configs(args, workdir)
    try:
        for config in chosen:
            for server in config.servers:
                server.start()
            load(config, args.length)
        for config in chosen:  # untimed: the first playbacks of a fresh server cost more
            for server in config.servers:
                for _ in range(200):
                    playback(config, server, "one")
        scripts = {
            (c.label, w): write_lua(
                f"{c.label} {w}",
                "POST",
                f"/api/v2/scenarios/objects/{c.scenario}/stubs",
                {"session": PLAY, **CONTENT},
                [BODIES[w]],
                workdir,
            )
            for c in chosen
            for w in WORKLOADS
        }
        runs = [(c, w) for c in chosen for w in WORKLOADS]
        for round_no in range(1, args.repeats + 1):
            log(f"round {round_no}")
            # Each round starts one run later: none is always first on a drifting machine.
            shift = (round_no - 1) % len(runs)
            for config, workload in runs[shift:] + runs[:shift]:
                run_round(config, workload, scripts, args)
        return chosen
    finally:
        for config in chosen:
            for server in config.servers:
                server.stop()
            if config.schema:
                drop_schema(config.postgres, config.schema)


def report(chosen: Sequence[Config]) -> tuple[str, dict[str, Any]]:
    rows = [
        (
            "store",
            "workload",
            "req/s",
            "p99 ms",
            "CPU us/req",
            "store positions/req",
            "vs one",
        )
    ]
    figures: dict[str, Any] = {"goal": GOAL, "configs": {}, "goals": []}
    verdicts = []
    for config in chosen:
        entry: dict[str, Any] = {}
        for workload in WORKLOADS:
            versus = config.vs_one(workload)
            rows.append(
                (
                    config.label,
                    workload,
                    f"{config.rps(workload):,.0f}",
                    f"{config.p99(workload):.2f}",
                    f"{config.cpu(workload):.1f}",
                    f"{statistics.median(config.positions[workload]):.3f}",
                    fmt_ratio(versus),
                )
            )
            entry[workload] = {
                "rps": round(config.rps(workload), 1),
                "p99_ms": round(config.p99(workload), 3),
                "cpu_us": round(config.cpu(workload), 2),
                "store_positions_per_request": round(
                    statistics.median(config.positions[workload]), 4
                ),
                "vs_one_rps": round(versus, 4),
                "vs_one_cpu": round(ratio(config.cpu(workload), config.cpu("one")) or 0, 4),
            }
        figures["configs"][config.label] = entry
        if config.schema is not None:
            for workload in ("stateful", "in-sequence"):
                versus = entry[workload]["vs_one_rps"]
                met = "MET" if versus >= GOAL else "NOT MET"
                figures["goals"].append(
                    {
                        "config": config.label,
                        "workload": workload,
                        "vs_one_rps": versus,
                        "met": versus >= GOAL,
                    }
                )
                verdicts.append(
                    f"{config.label} {workload} vs one: {versus:.2f}x req/s: {met} (goal {GOAL}x)"
                )
    return "\n".join([render_table(rows, left=2), "", *verdicts]), figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="in all (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads, one instance")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--length",
        type=int,
        default=100_000,
        help="responses of the in-sequence stub: more than a run plays (default 100,000)",
    )
    parser.add_argument("--postgres", default=PG_URL, help=f"PostgreSQL (default {PG_URL})")
    parser.add_argument("--base", help="also measure PostgreSQL x1 on this git revision")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    args = parser.parse_args(argv)

    def work(workdir: Path) -> int:
        chosen = measure(args, workdir)
        text, figures = report(chosen)
        print(text)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0

    return run_bench("bench-seq-", work)


if __name__ == "__main__":
    sys.exit(main())
