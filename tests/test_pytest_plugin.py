"""Issue 16: the pytest plugin, as a new project uses it: a test file and nothing else.

Each test writes a small suite into a temporary folder and runs pytest on it in a
subprocess, as ``pip install simulacra`` and ``pytest`` would (the plugin is found through
its ``pytest11`` entry point; nothing is configured).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from simulacra.client import Simulacra
from tests.server import RunningServer

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    """The suite the README shows under "From a pytest suite", as it is there."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From a pytest suite") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def run_suite(folder: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_readme_example_passes(tmp_path: Path) -> None:
    example = readme_example()
    assert len(example.splitlines()) <= 10  # "a ten-line test file"
    result = run_suite(tmp_path, {"test_orders.py": example})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_tests_never_see_each_other(tmp_path: Path) -> None:
    suite = """
    import httpx

    from simulacra.cloud.compute import NOVA

    SERVERS = f"/mimicking/{NOVA.service_id}/ORD/v2/tenant-1/servers"


    def test_a_makes_a_scenario_and_a_server(simulacra):
        simulacra.create_scenario("left-behind")
        server = {"server": {"name": "web", "imageRef": "img", "flavorRef": "2"}}
        assert simulacra.http.post(SERVERS, json=server).status_code == 202
        assert len(simulacra.http.get(SERVERS).json()["servers"]) == 1


    def test_b_sees_neither(simulacra):
        assert simulacra.scenarios() == []
        assert simulacra.http.get(SERVERS).json()["servers"] == []


    def test_c_the_clock_is_in_the_present(simulacra):
        import datetime

        now = datetime.datetime.now(datetime.UTC)
        assert simulacra.tick(0)[:10] == now.strftime("%Y-%m-%d")  # real SDKs keep tokens
    """
    result = run_suite(tmp_path, {"test_order.py": suite})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_a_failure_shows_the_requests_no_stub_matched(tmp_path: Path) -> None:
    suite = """
    import httpx


    def test_misses(simulacra):
        with simulacra.recording("shop") as rec:
            rec.stub({"method": "GET", "urlPath": "/cart"}, {"status": 200, "body": "[]"})
        with simulacra.playing("shop", port=0) as shop:
            assert httpx.get(shop.url + "/basket").status_code == 200  # fails: a 404
    """
    result = run_suite(tmp_path, {"test_shop.py": suite})
    assert result.returncode == 1
    assert "requests no stub matched (Simulacra)" in result.stdout
    assert "/basket -> 404" in result.stdout


def test_markers_load_archives_and_hars(tmp_path: Path) -> None:
    har = {
        "log": {
            "version": "1.2",
            "entries": [
                {
                    "request": {
                        "method": "GET",
                        "url": "https://shop.example/hello",
                        "headers": [],
                    },
                    "response": {
                        "status": 200,
                        "headers": [],
                        "content": {"text": "hi", "mimeType": "text/plain"},
                    },
                }
            ],
        }
    }
    import json

    (tmp_path / "site.har").write_text(json.dumps(har))
    suite = """
    import httpx
    import pytest


    @pytest.mark.simulacra_load("site.har")
    def test_har(simulacra):
        assert httpx.get(simulacra.base_url + "/virtual/site/har/hello").text == "hi"
    """
    result = run_suite(tmp_path, {"test_site.py": suite})
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_external_server_is_used_when_given(tmp_path: Path) -> None:
    server = RunningServer(store="memory://").start()
    try:
        suite = """
        def test_it(simulacra, simulacra_server):
            simulacra.create_scenario("external")
            assert simulacra_server == simulacra.base_url
        """
        result = run_suite(tmp_path, {"test_ext.py": suite}, "--simulacra-url", server.url)
        assert result.returncode == 0, result.stdout + result.stderr
        # The fixture reset it after the test: the external server holds nothing more.
        with Simulacra(server.url) as sim:
            assert sim.scenarios() == []
    finally:
        server.stop()
