"""Generate docs/implementation.md: what each mocked service implements, from the routes.

Run ``python -m simulacra.coverage`` after adding a route; a test fails when the file
is stale, so the table is never a guess.
"""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.routing import Route

FAMILIES = {
    "simulacra.app": "Control plane",
    "simulacra.ops": "Operations",
    "simulacra.metrics": "Operations",
    "simulacra.virtual.api_v2": "Mirage REST API v2",
    "simulacra.virtual.api_v2_admin": "Mirage REST API v2",
    "simulacra.virtual.api_v2_archive": "Mirage REST API v2",
    "simulacra.virtual.api_v1": "Mirage API v1 (legacy)",
    "simulacra.cloud.control": "Mimic control plane",
    "simulacra.cloud.identity.routes": "Identity v2.0 (Rackspace)",
    "simulacra.cloud.identity.v3": "Identity v3 (OpenStack Keystone)",
    "simulacra.cloud.compute.routes": "Compute (OpenStack Nova v2)",
    "simulacra.cloud.image.routes": "Image (OpenStack Glance v2)",
    "simulacra.cloud.loadbalancer.routes": "Cloud Load Balancers v1.0 (Rackspace)",
    "simulacra.cloud.fastly.routes": "Fastly CDN",
    "simulacra.dataplane.playback": "Playback (the data plane: Mirage v2, v1, bound sessions)",
}

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "implementation.md"


def _summary(endpoint: object) -> str:
    doc = (getattr(endpoint, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def render() -> str:
    from simulacra.app import create_app

    rows: dict[str, list[tuple[str, str, str]]] = {}
    app = create_app()
    for declared in app.dataplane.declared:  # answered before the app's routes are tried
        family = FAMILIES.get(declared.endpoint.__module__, declared.endpoint.__module__)
        row = (declared.methods, declared.path, _summary(declared.endpoint))
        rows.setdefault(family, []).append(row)
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        module = getattr(route.endpoint, "__module__", "")
        family = FAMILIES.get(module, module)
        methods = ", ".join(sorted(m for m in (route.methods or ()) if m != "HEAD"))
        rows.setdefault(family, []).append((methods, route.path, _summary(route.endpoint)))
    lines = [
        "# What Simulacra implements",
        "",
        "Generated from the code by `python -m simulacra.coverage`; do not edit by hand.",
    ]
    for family, entries in rows.items():
        lines += ["", f"## {family}", "", "| Method | Path | What it does |", "|---|---|---|"]
        lines += [f"| {m} | `{p}` | {s} |" for m, p, s in entries]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
