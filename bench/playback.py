"""Playback throughput vs. stub count, measured with wrk against a real server.

Starts ``simulacra serve`` on a free port, loads N ``contains`` stubs into one scenario
per N, then runs wrk against ``POST /api/v2/scenarios/objects/{scenario}/stubs`` (Mirage
playback) and against a bare ``GET /`` as the baseline. Prints requests/s and p99 latency
(medians over ``--repeats`` rounds) and whether the target holds: at 10,000 stubs playback
keeps at least 80% of its 10-stub throughput.

Run from the repository root:

    python -m bench.playback                      # granian, N = 10, 1000, 10000
    python -m bench.playback --server uvicorn --stubs 10,10000 --json out.json

This is a measurement script, not a test: it exits 0 whether or not the target is met
(``--strict`` makes a missed target exit 1).

The tracker records every playback. ``--tracking both`` (the default) also starts a second
server with ``--no-tracking``, loads the same scenarios into it (equal heaps: a bigger heap
costs every request in garbage collection), and measures playback on its first N of
``--stubs`` in the same interleaved rounds, to show what tracking costs: the target is less
than 15% of playback throughput. ``--tracking on|off`` runs only the one server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    SERVERS,
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
)
from bench._common import write_lua as write_wrk_script
from simulacra.config import MEMORY_URLS

TARGET_STUBS = 10_000
REFERENCE_STUBS = 10
TARGET_RATIO = 0.80
TRACKING_MAX_COST = 0.15  # tracking may cost at most this share of playback throughput


# the workload ----------------------------------------------------------------


def id_width(n: int) -> int:
    return max(5, len(str(max(n - 1, 0))))


def stub_pattern(i: int, width: int) -> str:
    """Distinct and closed by ``</id>``, so no pattern is a substring of another."""
    return f"<customer><id>{i:0{width}d}</id></customer>"


def stub_document(i: int, width: int) -> dict[str, Any]:
    return {
        "request": {"method": "POST", "bodyPatterns": {"contains": [stub_pattern(i, width)]}},
        "response": {"status": 200, "body": f"<response>{i}</response>"},
    }


def request_body(i: int, width: int) -> str:
    """A realistic SOAP request; whitespace-stripped it contains exactly one pattern."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:crm="http://example.com/crm/v1">\n'
        "  <soapenv:Header>\n"
        "    <crm:RequestId>3f2b9c1e-5d0a-4c7e-9a61-0b1d2e3f4a5b</crm:RequestId>\n"
        "  </soapenv:Header>\n"
        "  <soapenv:Body>\n"
        "    <crm:GetCustomer>\n"
        "      <customer>\n"
        f"        <id>{i:0{width}d}</id>\n"
        "      </customer>\n"
        "      <fields>name address orders</fields>\n"
        "    </crm:GetCustomer>\n"
        "  </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    )


@dataclass
class Target:
    """One thing wrk hammers: ``GET /`` or playback on a scenario of ``stubs`` stubs."""

    label: str
    stubs: int | None
    method: str
    path: str
    headers: dict[str, str]
    bodies: list[str]
    samples: list[WrkResult] = field(default_factory=list)
    server: ServerProcess | None = None  # None: the main server
    cpu_us: list[float] = field(default_factory=list)  # server CPU per request, per round

    @property
    def rps(self) -> float:
        return statistics.median(s.rps for s in self.samples)

    @property
    def p99_ms(self) -> float:
        return statistics.median(s.p99_ms for s in self.samples)

    @property
    def p50_ms(self) -> float:
        return statistics.median(s.p50_ms for s in self.samples)


def baseline_target() -> Target:
    return Target("GET /", None, "GET", "/", {}, [""])


def load_scenario(client: Client, n: int, workers: int, rotate: int) -> tuple[Target, float]:
    """Create a scenario with ``n`` stubs and a playback session; return it and stubs/s."""
    tag = uuid.uuid4().hex[:8]
    scenario = f"bench_n{n}_{tag}"
    record, play = f"rec_n{n}_{tag}", f"play_n{n}_{tag}"
    base = f"/api/v2/scenarios/objects/{scenario}"
    width = id_width(n)

    client.json("PUT", "/api/v2/scenarios", {"scenario": scenario}, 201)
    client.json("POST", f"{base}/action", {"begin": None, "session": record, "mode": "record"}, 200)

    def put(i: int) -> None:
        client.json("PUT", f"{base}/stubs", stub_document(i, width), 201, {"session": record})

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(put, range(n)):
            pass
    load_rate = n / (time.perf_counter() - started)

    client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
    client.json("POST", f"{base}/action", {"begin": None, "session": play, "mode": "playback"}, 200)

    # Stubs near the END of insertion order: the worst case for any linear scan.
    ids = list(range(n - 1, max(n - 1 - rotate, -1), -1))
    headers = {"session": play, "Content-Type": "text/xml; charset=utf-8"}
    for i in ids:
        status, data = client.request("POST", f"{base}/stubs", request_body(i, width), headers)
        expected = f"<response>{i}</response>".encode()
        if status != 200 or data != expected:
            raise BenchError(
                f"playback check failed for stub {i} of {n}: got {status} {data[:300]!r},"
                f" expected 200 {expected!r}"
            )
    bodies = [request_body(i, width) for i in ids]
    return Target(f"N={n}", n, "POST", f"{base}/stubs", headers, bodies), load_rate


# wrk -------------------------------------------------------------------------


def write_lua(target: Target, directory: Path) -> Path:
    return write_wrk_script(
        target.label, target.method, target.path, target.headers, target.bodies, directory
    )


# report ----------------------------------------------------------------------


def target_verdict(targets: Sequence[Target]) -> tuple[bool | None, str]:
    by_n = {t.stubs: t for t in targets if t.stubs is not None}
    ref, big = by_n.get(REFERENCE_STUBS), by_n.get(TARGET_STUBS)
    if ref is None or big is None:
        return None, (
            f"target not evaluated: it needs N={REFERENCE_STUBS} and N={TARGET_STUBS} in --stubs"
        )
    value = big.rps / ref.rps
    met = value >= TARGET_RATIO
    word = "MET" if met else "NOT MET"
    return met, (
        f"target {word}: at {TARGET_STUBS:,} stubs playback keeps {value:.0%} of its"
        f" {REFERENCE_STUBS}-stub throughput ({big.rps:,.0f} vs {ref.rps:,.0f} req/s;"
        f" needs >= {TARGET_RATIO:.0%})"
    )


def tracking_verdict(tracked: Target, untracked: Target) -> tuple[bool, str, dict[str, Any]]:
    """Throughput and CPU per request of the same playback with and without the tracker.

    The cost is the median over rounds of each round's pair (measured back to back), which
    drift on a shared machine affects far less than a ratio of the two overall medians.
    """
    cost = statistics.median(
        1 - t.rps / u.rps for t, u in zip(tracked.samples, untracked.samples, strict=True)
    )
    cpu_tracked = statistics.median(tracked.cpu_us)
    cpu_untracked = statistics.median(untracked.cpu_us)
    met = cost < TRACKING_MAX_COST
    word = "MET" if met else "NOT MET"
    text = (
        f"tracking {word}: tracking every request costs {cost:.1%} of playback throughput at"
        f" N={tracked.stubs:,} (median of paired rounds; medians {tracked.rps:,.0f} vs"
        f" {untracked.rps:,.0f} req/s untracked;"
        f" needs < {TRACKING_MAX_COST:.0%}); server CPU {cpu_tracked:.0f} vs"
        f" {cpu_untracked:.0f} us per request ({cpu_tracked / cpu_untracked - 1:+.1%},"
        " flushing the records included)"
    )
    figures = {
        "stubs": tracked.stubs,
        "rps_tracked": round(tracked.rps, 1),
        "rps_untracked": round(untracked.rps, 1),
        "throughput_cost": round(cost, 4),
        "cpu_us_per_request_tracked": round(cpu_tracked, 1),
        "cpu_us_per_request_untracked": round(cpu_untracked, 1),
        "max_cost": TRACKING_MAX_COST,
        "met": met,
        "verdict": text,
    }
    return met, text, figures


def table(baseline: Target, playbacks: Sequence[Target]) -> str:
    reference = next((t for t in playbacks if t.stubs == REFERENCE_STUBS), None)
    rows = [("N", "req/s (median)", "p99 ms", "vs GET /", f"vs N={REFERENCE_STUBS}")]
    for t in [baseline, *playbacks]:
        n = "GET /" if t.stubs is None else f"{t.stubs:,}"
        vs_ref = None if reference is None or t.stubs is None else ratio(t.rps, reference.rps)
        rows.append(
            (
                n,
                f"{t.rps:,.0f}",
                f"{t.p99_ms:.2f}",
                fmt_ratio(ratio(t.rps, baseline.rps)),
                fmt_ratio(vs_ref),
            )
        )
    return render_table(rows)


# main ------------------------------------------------------------------------


def parse_stubs(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--stubs wants comma-separated integers: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("--stubs values must be positive integers")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.playback",
        description="Playback throughput vs. stub count (wrk against a real simulacra server).",
    )
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    parser.add_argument("--store", default="memory://", help="store URL (default memory://)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (simulacra serve --workers; above 1 needs --store postgresql://)",
    )
    parser.add_argument(
        "--stubs",
        type=parse_stubs,
        default=[10, 1000, 10000],
        help="comma-separated stub counts (default 10,1000,10000)",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk per target before measuring (0: none)"
    )
    parser.add_argument(
        "--rotate",
        type=int,
        default=4,
        help="playback cycles through the last K stubs of the insertion order (default 4)",
    )
    parser.add_argument(
        "--load-workers", type=int, default=8, help="parallel connections for loading stubs"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument(
        "--tracking",
        choices=("on", "off", "both"),
        default="both",
        help="tracker on the server (on, off), or both: also measure the first N on a second"
        " server with --no-tracking and report the cost of tracking (default both)",
    )
    return parser


def twin_store(url: str) -> str:
    """The untracked server's store: a file store of its own, so neither waits on the other."""
    if url.startswith("sqlite:///") and url not in MEMORY_URLS:
        return url.removesuffix(".db") + "-untracked.db"
    return url


def measure(args: argparse.Namespace, wrk: str, workdir: Path) -> int:
    server: ServerProcess = simulacra_process(args.store, args.server, workdir / "server.log")
    if args.tracking == "off":
        server.argv.append("--no-tracking")
    if args.workers > 1:
        server.argv += ["--workers", str(args.workers)]
    untracked_server: ServerProcess | None = None
    untracked: Target | None = None
    if args.tracking == "both":
        untracked_server = simulacra_process(
            twin_store(args.store), args.server, workdir / "server-untracked.log"
        )
        untracked_server.argv.append("--no-tracking")
        if args.workers > 1:
            untracked_server.argv += ["--workers", str(args.workers)]
    try:
        log(f"starting simulacra ({args.server}, store {args.store}, tracking {args.tracking}) ...")
        server.start()
        log(f"server up on {server.url}")
        if untracked_server is not None:
            untracked_server.start()
            log(f"untracked server up on {untracked_server.url}")
        client = Client(server.port)
        baseline = baseline_target()
        playbacks: list[Target] = []
        load_rates: dict[int, float] = {}
        for n in args.stubs:
            target, rate = load_scenario(client, n, args.load_workers, args.rotate)
            playbacks.append(target)
            load_rates[n] = rate
            log(f"loaded {n:,} stubs ({rate:,.0f} stubs/s); playback check ok")

        if untracked_server is not None:
            twin = Client(untracked_server.port)
            untracked, _ = load_scenario(twin, args.stubs[0], args.load_workers, args.rotate)
            for n in args.stubs[1:]:  # not measured there, but the same heap as the first
                load_scenario(twin, n, args.load_workers, args.rotate)
            untracked.label, untracked.server = f"N={args.stubs[0]} untracked", untracked_server
            log("loaded the same stubs into the untracked server; playback check ok")

        # The tracked/untracked pair runs back to back, in turns first: drift on a shared
        # machine then favours neither side of the pair's median.
        targets = [baseline, playbacks[0], *([untracked] if untracked else []), *playbacks[1:]]
        scripts = {id(t): write_lua(t, workdir) for t in targets}

        def run(target: Target, duration: int) -> WrkResult:
            target_server = target.server or server
            cpu_before = target_server.cpu_seconds()
            result = run_wrk(
                wrk,
                target_server.url,
                scripts[id(target)],
                duration,
                args.connections,
                args.threads,
            )
            if result.non_2xx or result.socket_errors:
                raise BenchError(
                    f"{target.label}: {result.non_2xx} non-2xx responses and"
                    f" {result.socket_errors} socket errors in {result.requests} requests;"
                    f" server log:\n{target_server.log_tail()}"
                )
            # A tracker read writes every pending record first: the CPU of flushing this
            # run's records is counted against this run, not the next one.
            Client(target_server.port).request("GET", "/api/v2/tracker/records?limit=1")
            cpu = target_server.cpu_seconds() - cpu_before
            target.cpu_us.append(cpu / result.requests * 1e6 if result.requests else 0.0)
            return result

        if args.warmup > 0:
            log(f"warming up ({args.warmup}s per target) ...")
            for target in targets:
                run(target, args.warmup)
                target.cpu_us.clear()  # only measured rounds count
        # Rounds interleave the targets, so drift on a noisy machine hits them all alike.
        for round_no in range(1, args.repeats + 1):
            in_turn = list(targets)
            if untracked is not None and round_no % 2 == 0:
                in_turn[1], in_turn[2] = in_turn[2], in_turn[1]
            for target in in_turn:
                result = run(target, args.duration)
                target.samples.append(result)
                log(
                    f"round {round_no}/{args.repeats} {target.label:>9}: {result.rps:9,.0f} req/s"
                    f"  p99 {result.p99_ms:7.2f} ms"
                )
        if server.process is None or server.process.poll() is not None:
            raise BenchError(f"server died during the run:\n{server.log_tail()}")
    finally:
        code = server.stop()
        if code is not None:
            log(f"server stopped (exit code {code})")
        if untracked_server is not None:
            untracked_server.stop()

    met, verdict = target_verdict(playbacks)
    print()
    print(
        f"simulacra playback bench: server={args.server} store={args.store}"
        f" workers={args.workers}"
        f" wrk -t{args.threads} -c{args.connections} -d{args.duration}s,"
        f" median of {args.repeats}, {len(playbacks[0].bodies) if playbacks else 0}"
        " rotating request bodies"
    )
    print()
    print(table(baseline, playbacks))
    print()
    print(verdict)
    tracking: dict[str, Any] | None = None
    if untracked is not None:
        _, tracking_text, tracking = tracking_verdict(playbacks[0], untracked)
        print(tracking_text)

    if args.json:
        reference = next((t for t in playbacks if t.stubs == REFERENCE_STUBS), None)
        report = {
            "server": args.server,
            "store": args.store,
            "workers": args.workers,
            "wrk": {
                "threads": args.threads,
                "connections": args.connections,
                "duration_s": args.duration,
                "repeats": args.repeats,
            },
            "baseline": _target_json(baseline, baseline, None),
            "playback": [_target_json(t, baseline, reference) for t in playbacks],
            "load_stubs_per_s": {str(n): round(r, 1) for n, r in load_rates.items()},
            "tracking": args.tracking,
            "tracking_cost": tracking,
            "target": {
                "stubs": TARGET_STUBS,
                "reference_stubs": REFERENCE_STUBS,
                "min_ratio": TARGET_RATIO,
                "met": met,
                "verdict": verdict,
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if args.strict and met is False else 0


def _target_json(target: Target, baseline: Target, reference: Target | None) -> dict[str, Any]:
    vs_ref = None if reference is None else round(target.rps / reference.rps, 4)
    return {
        "label": target.label,
        "stubs": target.stubs,
        "rps_median": round(target.rps, 1),
        "p50_ms_median": round(target.p50_ms, 3),
        "p99_ms_median": round(target.p99_ms, 3),
        "cpu_us_per_request_median": (
            round(statistics.median(target.cpu_us), 1) if target.cpu_us else None
        ),
        "ratio_vs_get_root": round(target.rps / baseline.rps, 4),
        f"ratio_vs_n{REFERENCE_STUBS}": vs_ref,
        "samples": [asdict(s) for s in target.samples],
    }


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
    if min(args.duration, args.connections, args.threads, args.repeats, args.rotate) <= 0:
        print(
            "error: --duration, --connections, --threads, --repeats, --rotate must be > 0",
            file=sys.stderr,
        )
        return 2
    if args.connections < args.threads:
        print(
            "error: --connections must be >= --threads (wrk needs one per thread)",
            file=sys.stderr,
        )
        return 2
    return run_bench("simulacra-bench-", lambda workdir: measure(args, wrk, workdir))


if __name__ == "__main__":
    sys.exit(main())
