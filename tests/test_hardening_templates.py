"""Issue 14: a response template cannot hold the server's one event loop.

The probes that held it for seconds (a template stopped at its 2 s deadline still held every
other request for 2 s) now answer 400 within the render budget, while a concurrent `GET /`
keeps answering.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.mirage_helpers import action_url, assert_data, assert_error, create_scenario, put_stub_ok
from tests.probes import root_waits_while

PROBES = [
    "{% set s='ab'*5000000 %}{{ s|list|sort|first }}",
    "{% set s='ab '*2500000 %}{{ s|wordwrap }}",
    "{% set l = range(10000)|list %}{{ (l*1000)|sort|length }}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}",
    "{{ ('<a>'*3000000)|urlize|length }}",
]


@pytest.fixture
def templated(http: requests.Session, base_url: str, name: str) -> str:
    """A scenario whose stubs answer each probe, played by session ``{name}-p``."""
    create_scenario(http, base_url, name)
    rec = {"begin": None, "session": f"{name}-r", "mode": "record"}
    assert_data(http.post(action_url(base_url, name), json=rec))
    for i, body in enumerate(PROBES):
        stub = {"request": {"method": "GET", "urlPath": f"/{i}"}, "response": {"body": body}}
        put_stub_ok(http, base_url, name, f"{name}-r", stub)
    http.post(action_url(base_url, name), json={"end": None, "session": f"{name}-r"})
    play = {"begin": None, "session": f"{name}-p", "mode": "playback"}
    assert_data(http.post(action_url(base_url, name), json=play))
    return f"{base_url}/virtual/{name}/{name}-p"


@pytest.mark.parametrize("probe", range(len(PROBES)))
def test_a_heavy_template_is_refused_quickly(templated: str, probe: int) -> None:
    started = time.monotonic()
    reply = requests.get(f"{templated}/{probe}")
    assert_error(reply, 400, "template")
    assert time.monotonic() - started < 1.0


def test_others_are_answered_while_heavy_templates_play(base_url: str, templated: str) -> None:
    own = threading.local()

    def hammer() -> None:
        if not hasattr(own, "http"):
            own.http = requests.Session()
        for probe in range(len(PROBES)):
            own.http.get(f"{templated}/{probe}")

    waits = root_waits_while(base_url, hammer, samples=30, workers=2)
    # Two clients keep the loop busy with renders of up to ~50 ms each, so a GET / may wait
    # for one or two of them; before, it waited seconds (and, once renders were bounded, a
    # young collection freeing dozens of failed renders' values held it 100-250 ms).
    assert waits[-2] < 0.1 and waits[-1] < 0.25, waits[-5:]
