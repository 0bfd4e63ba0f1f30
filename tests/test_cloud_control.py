"""Mimic's control plane over a real socket: tick and presets."""

from __future__ import annotations

import pytest

from tests.server import RunningServer


def test_tick_advances_the_virtual_clock(http, base_url):
    first = http.post(base_url + "/mimic/v1.1/tick", json={"amount": 1.5})
    assert first.status_code == 200
    before = first.json()["now"]
    assert first.json()["advanced"] == 1.5
    assert before.startswith("1970-01-01T") and before.endswith("Z")
    second = http.post(base_url + "/mimic/v1.1/tick", json={"amount": 2})
    assert second.json()["advanced"] == 2
    assert second.json()["now"] > before


def test_readme_example_ticks_to_the_present(http, base_url):
    # curl -s -XPOST -d '{"amount": '"$(date +%s)"'}' .../mimic/v1.1/tick
    response = http.post(base_url + "/mimic/v1.1/tick", data='{"amount": 1000000000}')
    assert response.status_code == 200
    assert response.json()["now"] >= "2001-09-09"


@pytest.mark.parametrize(
    "body", ["", "not json", "[]", '{"amount": -1}', '{"amount": "x"}', "{}", '{"amount": true}']
)
def test_bad_ticks_are_400(http, base_url, body):
    response = http.post(base_url + "/mimic/v1.1/tick", data=body)
    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert response.json()["message"]


def test_presets_are_listed(http, base_url):
    response = http.get(base_url + "/mimic/v1.0/presets")
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


def test_realtime_refuses_to_tick():
    server = RunningServer(store="memory://", extra_args=["--realtime"]).start()
    try:
        import requests

        response = requests.post(server.url + "/mimic/v1.1/tick", json={"amount": 1})
        assert response.status_code == 409
        assert "real clock" in response.json()["message"]
    finally:
        server.stop()
