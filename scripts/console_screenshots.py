"""Screenshots of every console page, for docs/console/ (the README shows them).

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]

Starts a server of its own (memory store, clock at the present), fills it through the
Python client and the cloud's APIs as a test suite would (a recorded scenario with a
sequence, a template and a fault, a playing session on its own port with hits and misses,
a delay policy; a tenant with servers, a load balancer, a Fastly service and a behavior),
then photographs each page at 1280 px in Debian's Chromium (Playwright), and the scenario
list in a narrow window too.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from simulacra.client import BehaviorEvent, Simulacra

ROOT = Path(__file__).resolve().parent.parent
NOVA = "/mimicking/NovaApi-8ebf5f/ORD/v2/{tenant}"
CLB = "/mimicking/LoadBalancerApi-f27b1e/ORD/v2/{tenant}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(url: str) -> dict[str, str]:
    """Data for every page; the paths of the pages that need an id."""
    with Simulacra(url) as sim:
        with sim.recording("orders") as rec:
            rec.stub({"method": "GET", "urlPath": "/orders/1"}, {"body": '{"id": 1}'})
            rec.stub(
                {"method": "GET", "urlPath": "/orders/2"},
                [{"status": 202, "body": "pending"}, {"status": 200, "body": "done"}],
            )
            rec.stub(
                {"method": "POST", "urlPath": "/orders", "bodyPatterns": {"contains": ["sku"]}},
                {"status": 201, "body": "{{ request.json.sku }} ordered", "delayPolicy": "slow"},
                priority=1,
            )
            rec.stub({"method": "GET", "urlPath": "/flaky"}, {"fault": "CONNECTION_RESET_BY_PEER"})
        sim.delay_policy({"name": "slow", "delay_type": "fixed", "milliseconds": 20})
        sim.recording("inventory").end()
        play = sim.playing("orders", "checkout", port=0)
        with httpx.Client(base_url=play.url, timeout=10) as app:
            for i in range(60):
                if i % 10 == 9:
                    time.sleep(5)  # spread over a minute: the charts get several buckets
                app.get("/orders/1")
                app.get("/orders/2")
                app.post("/orders", json={"sku": f"sku-{i}"})
                if i % 5 == 0:
                    app.get("/orders/99")  # a miss: its record shows the near misses
        miss = next(sim.tracked("sc:404"))
        token = httpx.post(
            url + "/identity/v2.0/tokens",
            json={"auth": {"passwordCredentials": {"username": "alice", "password": "p"}}},
        ).json()["access"]["token"]
        tenant = token["tenant"]["id"]
        headers = {"X-Auth-Token": token["id"]}
        nova = url + NOVA.format(tenant=tenant)
        for name in ("web-1", "web-2", "db-1"):
            server = {"name": name, "imageRef": "", "flavorRef": "2"}
            httpx.post(nova + "/servers", json={"server": server}, headers=headers)
        sim.tick(30)
        httpx.post(
            nova + "/servers", json={"server": {"name": "web-3", "imageRef": "", "flavorRef": "2"}}, headers=headers
        )
        balancer = {
            "name": "front",
            "protocol": "HTTP",
            "port": 80,
            "virtualIps": [{"type": "PUBLIC"}],
            "nodes": [{"address": "10.0.0.1", "port": 80, "condition": "ENABLED"}],
        }
        httpx.post(
            url + CLB.format(tenant=tenant) + "/loadbalancers",
            json={"loadBalancer": balancer},
            headers=headers,
        )
        httpx.post(
            url + "/fastly/service",
            data={"name": "www", "customer_id": tenant},
            headers={"Fastly-Key": token["id"]},
        )
        sim.add_behavior(
            BehaviorEvent.server_creation(tenant),
            "fail",
            criteria=[{"server_name": "doomed-.*"}],
            parameters={"code": 500, "message": "no"},
        )
        return {
            "record": f"/console/tracker/{miss['id']}",
            "tenant": f"/console/cloud/tenants/{tenant}",
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulacra",
            "serve",
            "--port",
            str(port),
            "--store",
            "memory://",
            "--clock-start",
            "now",
        ],
    )
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        ids = fill(url)
        time.sleep(1.0)  # the tracker writes in batches
        pages = [
            ("scenarios", "/console/scenarios"),
            ("scenario", "/console/scenarios/objects/127.0.0.1:orders"),
            ("delay-policies", "/console/scenarios/delay-policies"),
            ("tracker", "/console/tracker"),
            ("record", ids["record"]),
            ("analytics", "/console/analytics"),
            ("cloud", "/console/cloud"),
            ("tenant", ids["tenant"]),
        ]
        from playwright.sync_api import sync_playwright

        args.out.mkdir(parents=True, exist_ok=True)
        quiet = ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=quiet)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for name, path in pages:
                page.goto(url + path)
                page.wait_for_timeout(1500)  # the tail's and the chart's first updates
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=False)
                print(f"{name}: {path}")
            page.set_viewport_size({"width": 400, "height": 800})
            page.goto(url + "/console/scenarios")
            page.screenshot(path=str(args.out / "scenarios-narrow.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
