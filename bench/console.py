"""Playback with the console's tracker tail open in a browser, against playback without.

Starts ``simulacra serve`` (``memory://``), loads a scenario of ``--stubs`` ``contains``
stubs (bench/dataplane.py's ``load``) and runs wrk against Mirage playback in interleaved
rounds, in two states:

- ``no tail``: headless Chromium is open on ``about:blank``;
- ``tail open``: the same page shows ``/console/tracker``, whose EventSource receives a
  batch of records every half second while wrk runs.

Prints requests/s, p99, the server's CPU time per request and the browser's CPU (Chromium
and the Playwright driver: on a 2-core machine it competes with the server and wrk), as
medians over ``--repeats`` rounds, and ``tail open`` over ``no tail`` (the target of
issue 17: within 5%). Each round measures the two states in turn, the first alternating.
A measurement, not a test: it exits 0 either way.

    python -m bench.console                       # --stubs 10 --repeats 5 --duration 5
    python -m bench.console --repeats 7 --duration 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    BenchError,
    Stopwatch,
    WrkResult,
    _proc_stat,
    fmt_ratio,
    log,
    ratio,
    render_table,
    run_bench,
    run_wrk,
    sessions_cpu_seconds,
    simulacra_process,
    write_lua,
)
from bench.dataplane import Target as PlaybackTarget
from bench.dataplane import check, load

CHROMIUM = "/usr/bin/chromium"
QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
STATES = ("no tail", "tail open")


@dataclass
class State:
    label: str
    samples: list[WrkResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the server's, per request
    browser_cpu: list[float] = field(default_factory=list)  # fraction of one core
    events: list[int] = field(default_factory=list)  # records the page was told of

    def median(self, values: list[float]) -> float:
        return statistics.median(values) if values else 0.0


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[State], list[float]]:
    from playwright.sync_api import sync_playwright

    server = simulacra_process("memory://", "simulacra", workdir / "server.log")
    states = {label: State(label) for label in STATES}
    paired: list[float] = []  # per round: tail open / no tail, in req/s
    try:
        server.start()
        scenario, session, _, bodies = load(server, args.stubs, bind=False)
        path = f"/api/v2/scenarios/objects/{scenario}/stubs"
        headers = {"session": session, "Content-Type": "text/xml; charset=utf-8"}
        check(PlaybackTarget("mirage", server, server.port, path, headers, bodies))
        script = write_lua("mirage", "POST", path, headers, bodies, workdir)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
            page = browser.new_page()
            browser_sessions = _browser_sessions(exclude=os.getsid(server.pid))
            for round_no in range(1, args.repeats + 1):
                order = STATES if round_no % 2 else STATES[::-1]
                rps: dict[str, float] = {}
                for label in order:
                    state = states[label]
                    first = 0
                    if label == "tail open":
                        page.goto(f"{server.url}/console/tracker")
                        page.wait_for_selector("#tail-pause:not([hidden])")
                        first = int(page.get_attribute("#tail", "data-after") or "0")
                    else:
                        page.goto("about:blank")
                    browser0 = sessions_cpu_seconds(browser_sessions)
                    with Stopwatch(server) as watch:
                        result = run_wrk(
                            args.wrk,
                            server.url,
                            script,
                            args.duration,
                            args.connections,
                            args.threads,
                        )
                    browser_s = sessions_cpu_seconds(browser_sessions) - browser0
                    told = 0
                    if label == "tail open":
                        told = _newest_told(page) - first
                        if told == 0:
                            raise BenchError("the tail page received no events during the run")
                    state.samples.append(result)
                    state.cpu_us.append(watch.cpu_s / max(result.requests, 1) * 1e6)
                    state.browser_cpu.append(browser_s / watch.wall_s)
                    state.events.append(told)
                    rps[label] = result.rps
                    log(
                        f"round {round_no}: {label}: {result.rps:,.0f} req/s,"
                        f" p99 {result.p99_ms:.2f} ms, {state.cpu_us[-1]:.1f} us CPU/request,"
                        f" browser {state.browser_cpu[-1]:.2f} cores"
                        + (f", {told:,} records told (rows or skipped)" if told else "")
                    )
                paired.append(rps["tail open"] / rps["no tail"])
            browser.close()
    finally:
        server.stop()
    return list(states.values()), paired


def _browser_sessions(exclude: int) -> set[int]:
    """The bench's own session (the Playwright driver) and those of its children: the
    driver starts Chromium in a session of its own. ``exclude``: the server's."""
    own = os.getsid(0)
    stats = {pid: _proc_stat(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    ours = {pid for pid, stat in stats.items() if stat and int(stat[3]) == own}
    found = {own}
    for stat in stats.values():
        if stat and stat[1] in ours and int(stat[3]) != exclude:
            found.add(int(stat[3]))
    return found


def _newest_told(page: Any) -> int:
    """The newest record id the page was sent (every record after the page's first is
    either a row or counted as skipped)."""
    text = page.inner_text("#tail-state")  # "Live: newest record N."
    digits = "".join(c for c in text if c.isdigit())
    return int(digits or "0")


def report(states: list[State], paired: list[float]) -> str:
    base = states[0]
    rows = [
        [
            "state",
            "req/s",
            "p99 ms",
            "server CPU us/req",
            "browser cores",
            "records told",
            "req/s vs no tail",
        ]
    ]
    for state in states:
        rps = state.median([s.rps for s in state.samples])
        rows.append(
            [
                state.label,
                f"{rps:,.0f}",
                f"{state.median([s.p99_ms for s in state.samples]):.2f}",
                f"{state.median(state.cpu_us):.1f}",
                f"{state.median(state.browser_cpu):.2f}",
                f"{state.median([float(e) for e in state.events]):,.0f}",
                fmt_ratio(ratio(rps, base.median([s.rps for s in base.samples]))),
            ]
        )
    table = render_table(rows)
    cpu = ratio(states[1].median(states[1].cpu_us), base.median(base.cpu_us))
    each = ", ".join(f"{p:.3f}" for p in paired)
    return (
        f"{table}\n\npaired rounds, tail open / no tail: req/s median"
        f" {statistics.median(paired):.3f} (each: {each}); server CPU per request {fmt_ratio(cpu)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", type=int, default=10, help="stubs in the scenario (default 10)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    args = parser.parse_args(argv)

    def work(workdir: Path) -> int:
        states, paired = measure(args, workdir)
        print(report(states, paired))
        return 0

    return run_bench("bench-console-", work)


if __name__ == "__main__":
    sys.exit(main())
