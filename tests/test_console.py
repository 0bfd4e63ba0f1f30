"""What every console page shares (simulacra/console/page.py), over a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.server import RunningServer


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://").start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://attacker.example"},
    ],
)
def test_a_form_posted_from_another_site_is_refused(server: RunningServer, headers) -> None:
    form = {"name": "forged"}
    reply = requests.post(server.url + "/console/scenarios", data=form, headers=headers, timeout=10)
    assert reply.status_code == 403, reply.text
    assert "posted from the console itself" in reply.text
    listing = requests.get(server.url + "/api/v2/scenarios", timeout=10).json()["data"]
    assert not any(s["name"].endswith(":forged") for s in listing)


def test_a_form_from_the_console_itself_is_taken(server: RunningServer) -> None:
    origin = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    for headers in (origin, {}):  # a browser on the console's page; a script
        name = "mine" if headers else "scripted"
        reply = requests.post(
            server.url + "/console/scenarios",
            data={"name": name},
            headers=headers,
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 303, reply.text
    listing = requests.get(server.url + "/api/v2/scenarios", timeout=10).json()["data"]
    assert {"mine", "scripted"} <= {s["name"].rpartition(":")[2] for s in listing}


def test_pages_carry_a_policy_that_runs_only_the_consoles_own_script(server: RunningServer):
    reply = requests.get(server.url + "/console/scenarios", timeout=10)
    policy = reply.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in reply.text and "style=" not in reply.text
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
        asset = requests.get(f"{server.url}/console/static/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    missing = requests.get(server.url + "/console/static/../../app.py", timeout=10)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("path", "cloud"),
    [
        ("/console/cloud", True),
        ("/console/cloud/tenants/t1", True),
        ("/console/scenarios", False),
        ("/console/tracker/events", False),
        ("/console/static/console.css", False),
        ("/identity/v2.0/tokens", True),
    ],
)
def test_only_the_consoles_cloud_section_takes_the_shared_cloud(path: str, cloud: bool) -> None:
    """With --shared-cloud, a cloud page runs in the shared state's transaction; the other
    console pages read no cloud state and must not wait for its lock or its store."""
    from simulacra.cloud.shared import is_cloud_request

    assert is_cloud_request({"path": path, "method": "GET"}) is cloud


def test_the_access_log_gives_a_console_error_pages_message() -> None:
    from simulacra.ops import error_cause

    page = b'<!doctype html><main><p class="error" role="alert">No scenario &quot;x&quot;</p>'
    assert error_cause(page) == 'No scenario "x"'
    assert error_cause(b"<!doctype html><p>nothing to say</p>") == "HTML page"
