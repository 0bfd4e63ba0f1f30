"""Playback through the data plane, against an earlier revision, side by side in one run.

Starts ``simulacra serve`` from this checkout and from ``--base`` (default: the commit
before the data plane, 6b33466; its tree is taken with ``git archive`` into a temporary
folder and run with this checkout's virtualenv), loads the same scenario of ``--stubs``
``contains`` stubs into both, and runs wrk in interleaved rounds against:

- ``base mirage``: Mirage playback (``POST /api/v2/scenarios/objects/{name}/stubs`` with a
  ``session`` header) on the base revision;
- ``head mirage``: the same request on this checkout;
- ``head bound``: the same session's stubs played on a port of its own (``POST /``, no
  Simulacra header), as an unmodified client calls a virtual service;
- ``head prefix``: the same through ``/virtual/{scenario}/{session}/``.

Prints requests/s, p99 and the server's CPU time per request (medians over ``--repeats``
rounds, each round starting one target later), and each row against ``base mirage``. The
targets of issue 13: head mirage within 5% of base in req/s and CPU per request, and bound
playback at least as fast as Mirage's.
A measurement, not a test: it exits 0 either way.

    python -m bench.dataplane                       # --base 6b33466 --stubs 10
    python -m bench.dataplane --repeats 5 --duration 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    REPO_ROOT,
    BenchError,
    Client,
    ServerProcess,
    Stopwatch,
    WrkResult,
    fmt_ratio,
    log,
    ratio,
    render_table,
    run_wrk,
    sigterm_as_interrupt,
    simulacra_process,
    write_lua,
)
from bench.playback import id_width, request_body, stub_document

BASE_REVISION = "6b33466"  # main before issue 13 (the one data plane)
MAX_SLOWDOWN = 0.05


@dataclass
class Target:
    label: str
    server: ServerProcess
    port: int  # where wrk sends it (a bound session's own port for "bound")
    path: str
    headers: dict[str, str]
    bodies: list[str]
    samples: list[WrkResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(s.rps for s in self.samples)

    @property
    def p99_ms(self) -> float:
        return statistics.median(s.p99_ms for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us)


def base_tree(revision: str, into: Path) -> Path:
    """The tree of ``revision``, unpacked (no git state is touched)."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO_ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision} failed: {archive.stderr.decode()[:500]}")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def load(server: ServerProcess, n: int, bind: bool) -> tuple[str, str, int | None, list[str]]:
    """A scenario of ``n`` stubs in playback: (scenario, session, bound port, bodies)."""
    client = Client(server.port)
    tag = uuid.uuid4().hex[:8]
    scenario, record, play = f"dp_{tag}", f"rec_{tag}", f"play_{tag}"
    base = f"/api/v2/scenarios/objects/{scenario}"
    width = id_width(n)
    client.json("PUT", "/api/v2/scenarios", {"scenario": scenario}, 201)
    client.json("POST", f"{base}/action", {"begin": None, "session": record, "mode": "record"}, 200)
    for i in range(n):
        client.json("PUT", f"{base}/stubs", stub_document(i, width), 201, {"session": record})
    client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
    begin: dict[str, Any] = {"begin": None, "session": play, "mode": "playback"}
    if bind:
        begin["port"] = 0
    status, data = client.request("POST", f"{base}/action", json.dumps(begin))
    if status != 200:
        raise BenchError(f"begin playback failed: {status} {data[:300]!r}")
    port = json.loads(data)["data"].get("port") if bind else None
    ids = list(range(n - 1, max(n - 11, -1), -1))
    return scenario, play, port, [request_body(i, width) for i in ids]


def check(target: Target) -> None:
    client = Client(target.port)
    status, data = client.request("POST", target.path, target.bodies[0], target.headers)
    if status != 200 or not data.startswith(b"<response>"):
        raise BenchError(f"{target.label}: got {status} {data[:300]!r}")


def measure(args: argparse.Namespace, workdir: Path) -> list[Target]:
    base_dir = base_tree(args.base, workdir / "base")
    base = simulacra_process("memory://", "simulacra", workdir / "base.log")
    base.cwd = base_dir
    base.name = f"simulacra@{args.base}"
    head = simulacra_process("memory://", "simulacra", workdir / "head.log")
    servers = [base, head]
    try:
        for server in servers:
            server.start()
        content = {"Content-Type": "text/xml; charset=utf-8"}
        scenario, session, _, bodies = load(base, args.stubs, bind=False)
        targets = [
            Target(
                "base mirage",
                base,
                base.port,
                f"/api/v2/scenarios/objects/{scenario}/stubs",
                {"session": session, **content},
                bodies,
            )
        ]
        scenario, session, port, bodies = load(head, args.stubs, bind=True)
        assert port is not None
        stubs = f"/api/v2/scenarios/objects/{scenario}/stubs"
        targets += [
            Target("head mirage", head, head.port, stubs, {"session": session, **content}, bodies),
            Target("head bound", head, port, "/", content, bodies),
            Target(
                "head prefix", head, head.port, f"/virtual/{scenario}/{session}/", content, bodies
            ),
        ]
        for target in targets:
            check(target)
        scripts = {
            t.label: write_lua(t.label, "POST", t.path, t.headers, t.bodies, workdir)
            for t in targets
        }
        for round_no in range(1, args.repeats + 1):
            # Each round starts one target later: none is always first (or always measured
            # right after the same neighbour) on a machine whose load drifts.
            shift = (round_no - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                url = f"http://127.0.0.1:{target.port}"
                with Stopwatch(target.server) as watch:
                    result = run_wrk(
                        args.wrk,
                        url,
                        scripts[target.label],
                        args.duration,
                        args.connections,
                        args.threads,
                    )
                target.samples.append(result)
                target.cpu_us.append(watch.cpu_s / max(result.requests, 1) * 1e6)
                log(
                    f"round {round_no}: {target.label}: {result.rps:,.0f} req/s,"
                    f" p99 {result.p99_ms:.2f} ms, {target.cpu_us[-1]:.1f} us CPU/request"
                )
        return targets
    finally:
        for server in servers:
            server.stop()


def report(targets: list[Target], base_label: str) -> tuple[str, dict[str, Any]]:
    base = targets[0]
    rows = [("target", "req/s (median)", "p99 ms", "CPU us/req", "req/s vs base", "CPU vs base")]
    for t in targets:
        rows.append(
            (
                t.label,
                f"{t.rps:,.0f}",
                f"{t.p99_ms:.2f}",
                f"{t.cpu:.1f}",
                fmt_ratio(ratio(t.rps, base.rps)),
                fmt_ratio(ratio(t.cpu, base.cpu)),
            )
        )
    by = {t.label: t for t in targets}
    head, bound = by["head mirage"], by["head bound"]
    # Paired rounds (each pair measured back to back) drift less than overall medians.
    speed = statistics.median(
        h.rps / b.rps for h, b in zip(head.samples, base.samples, strict=True)
    )
    cpu = statistics.median(h / b for h, b in zip(head.cpu_us, base.cpu_us, strict=True))
    bound_vs = statistics.median(
        b.rps / h.rps for b, h in zip(bound.samples, head.samples, strict=True)
    )
    same = speed >= 1 - MAX_SLOWDOWN and cpu <= 1 + MAX_SLOWDOWN
    lines = [
        render_table(rows),
        "",
        f"head vs {base_label} (median of paired rounds): {speed:.3f}x req/s, {cpu:.3f}x CPU"
        f" per request: {'MET' if same else 'NOT MET'} (within {MAX_SLOWDOWN:.0%})",
        f"bound port vs Mirage path on head: {bound_vs:.3f}x req/s:"
        f" {'MET' if bound_vs >= 1 else 'NOT MET'} (at least as fast)",
    ]
    figures = {
        "base": base_label,
        "targets": {
            t.label: {
                "rps": round(t.rps, 1),
                "p99_ms": round(t.p99_ms, 3),
                "cpu_us": round(t.cpu, 2),
            }
            for t in targets
        },
        "head_vs_base_rps": round(speed, 4),
        "head_vs_base_cpu": round(cpu, 4),
        "bound_vs_mirage_rps": round(bound_vs, 4),
    }
    return "\n".join(lines), figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", default=BASE_REVISION, help=f"git revision (default {BASE_REVISION})"
    )
    parser.add_argument("--stubs", type=int, default=10, help="stubs in the scenario (default 10)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    args = parser.parse_args(argv)
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
            workdir = Path(tmp)
            (workdir / "base").mkdir()
            targets = measure(args, workdir)
    except BenchError as exc:
        print(f"bench.dataplane: {exc}", file=sys.stderr)
        return 1
    text, figures = report(targets, args.base)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
