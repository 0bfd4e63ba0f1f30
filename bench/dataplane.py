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

``--doors`` picks which of the head's doors are measured (default all three), and
``--log-levels`` runs one head server per level (default: the default level alone; a
target of another level is labelled ``head@info mirage``, say).

Prints requests/s, p99 and the server's CPU time per request (medians over ``--repeats``
rounds, each round starting one target later), and each row against ``base mirage``, then
each head target against it over paired rounds. The targets of issue 13: head mirage (at
the default level) within 5% of base in req/s and CPU per request, and bound playback at
least as fast as Mirage's.
A measurement, not a test: it exits 0 either way.

    python -m bench.dataplane                       # --base 6b33466 --stubs 10
    python -m bench.dataplane --repeats 5 --duration 8 --json out.json
    python -m bench.dataplane --base 50d7eaa --doors mirage --log-levels warning,info
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
from simulacra.config import DEFAULT_LOG_LEVEL

BASE_REVISION = "6b33466"  # main before issue 13 (the one data plane)
MAX_SLOWDOWN = 0.05
DOORS = ("mirage", "bound", "prefix")
LOG_LEVELS = ("debug", "info", "warning", "error")


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


def head_label(level: str) -> str:
    return "head" if level == DEFAULT_LOG_LEVEL else f"head@{level}"


def measure(args: argparse.Namespace, workdir: Path) -> list[Target]:
    base_dir = base_tree(args.base, workdir / "base")
    base = simulacra_process("memory://", "simulacra", workdir / "base.log")
    base.cwd = base_dir
    base.name = f"simulacra@{args.base}"
    heads = {}
    for level in args.log_levels:
        head = simulacra_process("memory://", "simulacra", workdir / f"head-{level}.log")
        head.argv += ["--log-level", level]
        head.name = f"simulacra {head_label(level)}"
        heads[level] = head
    servers = [base, *heads.values()]
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
        for level, head in heads.items():
            scenario, session, port, bodies = load(head, args.stubs, "bound" in args.doors)
            label = head_label(level)
            doors = {
                "mirage": (
                    head.port,
                    f"/api/v2/scenarios/objects/{scenario}/stubs",
                    {"session": session, **content},
                ),
                "bound": (port or 0, "/", content),  # a port when "bound" is measured
                "prefix": (head.port, f"/virtual/{scenario}/{session}/", content),
            }
            targets += [
                Target(f"{label} {door}", head, *doors[door], bodies) for door in args.doors
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


def paired(target: Target, base: Target) -> tuple[float, float]:
    """``target`` over ``base`` in req/s and CPU per request, medians of the rounds' ratios:
    each pair measured back to back, they drift less than overall medians."""
    speed = statistics.median(
        t.rps / b.rps for t, b in zip(target.samples, base.samples, strict=True)
    )
    cpu = statistics.median(t / b for t, b in zip(target.cpu_us, base.cpu_us, strict=True))
    return speed, cpu


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
    lines = [render_table(rows), ""]
    figures: dict[str, Any] = {"base": base_label, "targets": {}}
    for t in targets[1:]:
        speed, cpu = paired(t, base)
        line = (
            f"{t.label} vs {base_label} (median of paired rounds): {speed:.3f}x req/s,"
            f" {cpu:.3f}x CPU per request"
        )
        if t.label == "head mirage":  # the target holds at the default log level
            same = speed >= 1 - MAX_SLOWDOWN and cpu <= 1 + MAX_SLOWDOWN
            line += f": {'MET' if same else 'NOT MET'} (within {MAX_SLOWDOWN:.0%})"
        lines.append(line)
        figures["targets"][t.label] = {"vs_base_rps": round(speed, 4), "vs_base_cpu": round(cpu, 4)}
    by = {t.label: t for t in targets}
    if "head bound" in by and "head mirage" in by:
        bound_vs = paired(by["head bound"], by["head mirage"])[0]
        lines.append(
            f"bound port vs Mirage path on head: {bound_vs:.3f}x req/s:"
            f" {'MET' if bound_vs >= 1 else 'NOT MET'} (at least as fast)"
        )
        figures["bound_vs_mirage_rps"] = round(bound_vs, 4)
    for t in targets:
        figures["targets"].setdefault(t.label, {}).update(
            rps=round(t.rps, 1), p99_ms=round(t.p99_ms, 3), cpu_us=round(t.cpu, 2)
        )
    return "\n".join(lines), figures


def names(allowed: tuple[str, ...]) -> Any:
    """An argparse type: a comma-separated list of ``allowed`` names, in the order given."""

    def parse(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return list(dict.fromkeys(chosen))

    return parse


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
    parser.add_argument(
        "--doors",
        type=names(DOORS),
        default=list(DOORS),
        help=f"the head's doors to measure (default {','.join(DOORS)})",
    )
    parser.add_argument(
        "--log-levels",
        type=names(LOG_LEVELS),
        default=[DEFAULT_LOG_LEVEL],
        help=f"one head server per --log-level (default {DEFAULT_LOG_LEVEL})",
    )
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
