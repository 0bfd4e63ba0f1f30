"""How long everyone else waits while one client sends the heaviest requests it can (issue 14).

For each probe (a stub, template or upload that held the event loop before issue 14), starts
a fresh ``simulacra serve`` (memory://) from this checkout and, with ``--base REV``, from
that revision too (``git archive``, run with this virtualenv), stores the probe's stubs, then
for ``--seconds``: one thread plays the probe's request over and over while the main thread
times a ``GET /`` every 10 ms. A fresh server per probe, because on an old revision a probe
may hold the loop for good.

Prints, per probe and server: what the probe got (its status, ``PUT 400`` when the stub is
refused when stored, ``none`` when no answer came within 10 s) and its median time, and the
median, p99 and longest wait of ``GET /``. The goal of issue 14: no wait over 100 ms.
A measurement, not a test: it exits 0 either way.

    python -m bench.stalls                    # this checkout
    python -m bench.stalls --base 235c8cb     # and the revision before issue 14, side by side
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    Client,
    ServerProcess,
    log,
    render_table,
    sigterm_as_interrupt,
    simulacra_process,
)
from bench.dataplane import base_tree

NO_ANSWER_S = 10.0
GOAL_S = 0.1
EVIL = "a" * 40 + "!"
CATASTROPHIC = "^(a+)+$"
EXSLT = "http://exslt.org/regular-expressions"


@dataclass
class Probe:
    """Stubs to store (``None``: a request with no stubs) and the request to repeat."""

    name: str
    stubs: list[dict[str, Any]]
    body: bytes
    path: str = "/p"
    upload: bool = False  # the body is a zip to upload, not a playback


def stub(**request: Any) -> dict[str, Any]:
    return {"request": request, "response": {"status": 200, "body": "ok"}}


def template(text: str) -> dict[str, Any]:
    return {"request": {"method": "POST"}, "response": {"status": 200, "body": text}}


def alias_bomb_zip(depth: int) -> bytes:
    lines = ['l0: &l0 ["lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, depth + 1)]
    lines.append(f"recording: {{scenario: bomb, session: *l{depth}}}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.yaml", "\n".join(lines))
        archive.writestr("stub_0.json", json.dumps(stub()))
    return buffer.getvalue()


def probes() -> list[Probe]:
    nine_mb_json = json.dumps([{"k": i, "v": "y" * 20} for i in range(240_000)]).encode()
    xpath_re = {"expression": f"//a[re:test(., '{CATASTROPHIC}')]", "namespaces": {"re": EXSLT}}
    markup = "<r>" + "<b>x</b>" * 22_000 + "</r>"  # ~180 KB
    return [
        Probe("urlPattern ^/(a+)+$", [stub(urlPattern="^/(a+)+$")], b"", "/" + EVIL),
        Probe(
            "JSONPath =~ /^(a+)+$/",
            [stub(bodyPatterns={"jsonpath": [f"$[?(@.a =~ /{CATASTROPHIC}/)]"]})],
            json.dumps([{"a": EVIL}]).encode(),
        ),
        Probe(
            "XPath re:test ^(a+)+$",
            [stub(bodyPatterns={"xpath": [xpath_re]})],
            f"<r><a>{EVIL}</a></r>".encode(),
        ),
        Probe(
            "XPath following:: on 180 KB",
            [stub(bodyPatterns={"xpath": ["count(//b[. = following::b])"]})],
            markup.encode(),
        ),
        Probe(
            "template 'ab'*5e6|list|sort",
            [template("{% set s='ab'*5000000 %}{{ s|list|sort|first }}")],
            b"x",
        ),
        Probe("template wordwrap", [template("{{ ('ab ' * 2000000)|wordwrap(7) }}")], b"x"),
        Probe(
            "JSONPath $..x on 9 MB",
            [stub(bodyPatterns={"jsonpath": ["$..x"]})],
            nine_mb_json,
        ),
        Probe(
            "contains: 9 MB of a, 40 stubs",
            [stub(bodyPatterns={"contains": ["a" * 60 + f"b{i}"]}) for i in range(40)],
            b"a" * 9_000_000,
        ),
        Probe(
            "contains a*6000+b, 250 KB of a",
            [stub(bodyPatterns={"contains": ["a" * 6000 + "b"]})],
            b"a" * 250_000,
        ),
        Probe("YAML alias bomb, depth 8", [], alias_bomb_zip(8), upload=True),
    ]


@dataclass
class Result:
    probe: str
    server: str
    statuses: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def row(self) -> list[str]:
        waits = sorted(self.waits)
        status = max(set(self.statuses), key=self.statuses.count) if self.statuses else "-"
        took = f"{statistics.median(self.times) * 1000:.0f}" if self.times else "-"
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else 0.0
        worst = waits[-1] if waits else 0.0
        verdict = "ok" if worst <= GOAL_S else "OVER"
        return [
            self.probe,
            self.server,
            status,
            took,
            f"{statistics.median(waits) * 1000:.1f}" if waits else "-",
            f"{p99 * 1000:.0f}",
            f"{worst * 1000:.0f}",
            verdict,
        ]


def prepare(client: Client, probe: Probe) -> tuple[str, dict[str, str]] | str:
    """Store the probe's stubs and begin playback: (path, headers), or why not (a refusal)."""
    tag = uuid.uuid4().hex[:8]
    scenario, record, play = f"st_{tag}", f"rec_{tag}", f"play_{tag}"
    base = f"/api/v2/scenarios/objects/{scenario}"
    client.json("PUT", "/api/v2/scenarios", {"scenario": scenario}, 201)
    client.json("POST", f"{base}/action", {"begin": None, "session": record, "mode": "record"}, 200)
    for document in probe.stubs:
        status, _ = client.request(
            "PUT",
            f"{base}/stubs",
            json.dumps(document),
            {"session": record, "Content-Type": "application/json"},
        )
        if status >= 300:
            return f"PUT {status}"
    client.json("POST", f"{base}/action", {"end": None, "session": record}, 200)
    client.json("POST", f"{base}/action", {"begin": None, "session": play, "mode": "playback"}, 200)
    return f"{base}/stubs", {"session": play, "Stubo-Request-Path": probe.path}


def multipart(data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="b.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def run_probe(server: ServerProcess, probe: Probe, seconds: float, label: str) -> Result:
    result = Result(probe.name, label)
    setup = Client(server.port)
    if probe.upload:
        body, headers = multipart(probe.body)
        path = "/api/v2/scenarios/upload"
    else:
        prepared = prepare(setup, probe)
        if isinstance(prepared, str):
            result.statuses.append(prepared)  # refused when stored: nothing to play
            return result
        path, headers = prepared
        body = probe.body
    stop = threading.Event()

    def player() -> None:
        client = Client(server.port, timeout=NO_ANSWER_S)
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _ = client.request("POST", path, body, headers)
                result.statuses.append(str(status))
            except OSError:
                result.statuses.append("none")
                client = Client(server.port, timeout=NO_ANSWER_S)
            result.times.append(time.monotonic() - started)

    thread = threading.Thread(target=player, daemon=True)
    thread.start()
    root = Client(server.port, timeout=NO_ANSWER_S)
    time.sleep(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            root.request("GET", "/")
            result.waits.append(time.monotonic() - started)
        except OSError:
            result.waits.append(NO_ANSWER_S)
            break  # the loop is held for good: nothing more to learn
        time.sleep(0.01)
    stop.set()
    thread.join(NO_ANSWER_S + 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a revision to measure side by side (git archive)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per probe and server")
    parser.add_argument("--only", help="run the probes whose name contains this")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    chosen = [p for p in probes() if not args.only or args.only in p.name]
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, sigterm_as_interrupt():
        workdir = Path(tmp)
        trees: list[tuple[str, Path | None]] = [("head", None)]
        if args.base:
            trees.append((args.base, base_tree(args.base, workdir / "base")))
        for probe in chosen:
            for label, tree in trees:
                log(f"{probe.name} on {label}")
                server = simulacra_process("memory://", "simulacra", workdir / f"{label}.log")
                if tree is not None:
                    server.cwd = tree
                server.start()
                try:
                    results.append(run_probe(server, probe, args.seconds, label))
                finally:
                    server.stop(timeout=5)
    header = ["probe", "server", "got", "its ms", "GET / p50 ms", "p99", "max", "<=100 ms"]
    print(render_table([header, *(r.row() for r in results)]))
    if args.json:
        args.json.write_text(json.dumps([dict(zip(header, r.row(), strict=True)) for r in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
