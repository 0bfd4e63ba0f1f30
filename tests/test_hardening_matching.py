"""Issue 14: a stub's matchers, or a request matched against them, cannot hold the loop.

The probes that held the server's one event loop: a catastrophic ``urlPattern`` (no answer
at all), the same regex in a JSONPath ``=~``, a JSONPath ``match()``, an XPath ``re:test``
and a behavior criterion; ``count(//b[. = following::b])`` (3.5 s on 180 KB); a JSONPath
over a 9 MB body (1.9 s). Now what RE2 or the XPath cost rules refuse is a 400 when it is
stored, the rest answers at once, and a concurrent ``GET /`` keeps answering in 100 ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulacra.cloud.compute import NOVA, NOVA_CONTROL
from tests.mirage_helpers import (
    assert_error,
    begin_ok,
    create_scenario,
    playback_of,
    put_stub,
    stub,
    stubs_url,
)
from tests.probes import root_waits_while

EXSLT = "http://exslt.org/regular-expressions"
CATASTROPHIC = "^(a+)+$"  # Python's re backtracks 2^n times on "aaa...a!"
EVIL = "a" * 40 + "!"
NO_MATCH = "E017:No matching response found"


def xpath(expression: str) -> dict[str, Any]:
    return {"expression": expression, "namespaces": {"re": EXSLT}}


def refused_at_put(http: requests.Session, base_url: str, name: str, request: dict) -> str:
    create_scenario(http, base_url, name)
    begin_ok(http, base_url, name, f"{name}_rec", "record")
    response = put_stub(http, base_url, name, f"{name}_rec", stub("x", **request))
    message = assert_error(response, 400)
    assert len(message) < 600, message  # quotes a short prefix of the value, not all of it
    return message


@pytest.mark.parametrize(
    ("request_doc", "fragment"),
    [
        ({"urlPattern": r"^/(a)\1$"}, "linear-time"),
        ({"urlPattern": "^/(?=a)"}, "linear-time"),
        ({"urlPattern": "x" * 20_000}, "at most"),
        ({"bodyPatterns": {"jsonpath": [r"$[?(@.a =~ /(a)\1/)]"]}}, "linear-time"),
        ({"bodyPatterns": {"jsonpath": ["$[?match(@.a, '(?<=a)b')]"]}}, "linear-time"),
        ({"bodyPatterns": {"jsonpath": ["$..a & $..b"]}}, "intersection"),
        ({"bodyPatterns": {"xpath": [xpath(r"//a[re:test(., '(a)\1')]")]}}, "linear-time"),
        ({"bodyPatterns": {"xpath": [xpath("//a[re:replace(., 'a', 'g', '')]")]}}, "re:test"),
        ({"bodyPatterns": {"xpath": ["count(//b[. = following::b])"]}}, "following axis"),
        ({"bodyPatterns": {"xpath": ["//a//b"]}}, "quadratic"),
        ({"bodyPatterns": {"xpath": ["//a | //b"]}}, "quadratic"),
        ({"bodyPatterns": {"xpath": ["//a = //b"]}}, "quadratic"),
        ({"bodyPatterns": {"xpath": ["//a[//b]"]}}, "absolute path"),
    ],
)
def test_what_could_hold_the_loop_is_refused_when_stored(
    http: requests.Session, base_url: str, name: str, request_doc: dict, fragment: str
) -> None:
    assert fragment in refused_at_put(http, base_url, name, request_doc)


def play(
    base_url: str, scenario: str, session: str, body: str | bytes, path: str = "/p"
) -> tuple[requests.Response, float]:
    """One playback (its path given as a proxy gives it), and how long it took."""
    headers = {"session": session, "Stubo-Request-Path": path}
    started = time.monotonic()
    response = requests.post(
        stubs_url(base_url, scenario),
        data=body.encode() if isinstance(body, str) else body,
        headers=headers,
        timeout=10,
    )
    return response, time.monotonic() - started


CATASTROPHIC_STUBS = [
    stub("url", urlPattern="^/" + CATASTROPHIC[1:]),
    stub("eq", bodyPatterns={"jsonpath": [f"$[?(@.a =~ /{CATASTROPHIC}/)]"]}),
    stub("fn", bodyPatterns={"jsonpath": [f"$[?match(@.a, '{CATASTROPHIC}')]"]}),
    stub("re", bodyPatterns={"xpath": [xpath(f"//a[re:test(., '{CATASTROPHIC}')]")]}),
]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("", "/" + EVIL),
        (json.dumps([{"a": EVIL}]), "/p"),
        (f"<r><a>{EVIL}</a></r>", "/p"),
    ],
    ids=["urlPattern", "jsonpath", "xpath"],
)
def test_catastrophic_regexes_answer_at_once(
    http: requests.Session, base_url: str, name: str, body: str, path: str
) -> None:
    session = playback_of(http, base_url, name, CATASTROPHIC_STUBS)
    response, took = play(base_url, name, session, body, path)
    assert_error(response, 400, NO_MATCH)
    assert took < 1.0


def test_catastrophic_regexes_still_match_what_they_should(
    http: requests.Session, base_url: str, name: str
) -> None:
    session = playback_of(http, base_url, name, CATASTROPHIC_STUBS)
    assert play(base_url, name, session, "", "/aaaa")[0].text == "url"
    assert play(base_url, name, session, json.dumps([{"a": "aa"}]))[0].text == "eq"
    assert play(base_url, name, session, "<r><a>aaa</a></r>")[0].text == "re"


def nine_megabytes() -> str:
    """The JSON body the probe played (1.9 s of JSONPath), under the 10 MiB body limit."""
    return json.dumps([{"k": i, "v": "y" * 20} for i in range(240_000)], separators=(",", ":"))


def chains(depth: int, markup: int) -> str:
    """XML of `a` elements nested ``depth`` deep, as many chains as ``markup`` `<` allow."""
    chain = "<a>" * depth + "<b/>" + "</a>" * depth
    return "<r>" + chain * max(1, markup // (2 * depth + 1) - 1) + "</r>"


def test_big_bodies_answer_at_once(http: requests.Session, base_url: str, name: str) -> None:
    stubs = [
        stub("json", bodyPatterns={"jsonpath": ["$..x"]}),
        stub("deep", bodyPatterns={"xpath": ["//*[.//a[c]]"]}),
    ]
    session = playback_of(http, base_url, name, stubs)
    nine_mb = nine_megabytes()
    assert len(nine_mb) > 9_000_000
    response, took = play(base_url, name, session, nine_mb)
    assert_error(response, 400, NO_MATCH)
    assert took < 1.0
    for markup in (10_000, 100_000):
        response, took = play(base_url, name, session, chains(63, markup))
        assert_error(response, 400, NO_MATCH)
        assert took < 0.5


# The worst requests a stub may still be played with, and those that held the loop before.
HEAVY_STUBS = [
    *CATASTROPHIC_STUBS,
    stub("thrash", urlPattern="[ab]*a[ab]{14}x"),  # RE2's DFA thrashes: ~0.5 µs a byte
    stub("walk", bodyPatterns={"jsonpath": ["$..[?(@.b == 'zz')]"]}),
    stub("pass", bodyPatterns={"xpath": ["//*[.//a[c]]"]}),
    stub("retest", bodyPatterns={"xpath": [xpath("//*[re:test(., '[ab]*a[ab]{14}x')]")]}),
    # Searched for in 9 MB of `a`s: ~26 ms each, the slowest a `contains` search gets.
    *(stub(f"aab{i}", bodyPatterns={"contains": ["a" * 60 + f"b{i}"]}) for i in range(40)),
]


def heavy_requests() -> list[tuple[str, str]]:
    ab = "ab" * 20_000
    return [
        ("", "/" + EVIL),
        (json.dumps([{"a": EVIL}]), "/p"),
        (f"<r><a>{EVIL}</a></r>", "/p"),
        ("", "/" + ab[:8_000]),
        (json.dumps([{"b": "ab", "c": [1, 2]} for _ in range(3_000)]), "/p"),
        # Over the bound, not parsed. (Reading a body of 9 MB holds the loop for tens of ms
        # whatever the stubs: that is the server's part, not matching's.)
        (json.dumps([{"k": "y" * 20}] * 80_000), "/p"),
        (chains(63, 10_000), "/p"),
        ("<r>" + f"<a>{ab[:16]}</a>" * 1_000 + "</r>", "/p"),
        ("a" * 9_000_000, "/p"),
    ]


def test_get_root_answers_within_100_ms_while_heavy_requests_play(
    http: requests.Session, base_url: str, name: str
) -> None:
    session = playback_of(http, base_url, name, HEAVY_STUBS)
    probes = heavy_requests()
    played: list[float] = []

    def player() -> None:
        for body, path in probes:
            try:
                played.append(play(base_url, name, session, body, path)[1])
            except requests.RequestException:
                played.append(float("inf"))  # no answer at all: what issue 14 found

    waits = root_waits_while(base_url, player, samples=40)
    # Every request answered (before issue 14 some never were). The 9 MB one's work is
    # bounded by count (LARGE_REQUEST_WORK_US), not by time: it took 1.0-1.2 s on the shared
    # 2-core VM (29f5ac6 too), so the bound leaves room for a busy machine.
    assert played and max(played) < 2.5, played
    # Under 100 ms: the loop was never held that long (before, some never answered). One
    # sample of the 40 may be late on a busy machine, when the OS, not the loop, held it.
    assert waits[-2] < 0.1 and waits[-1] < 0.25, waits[-5:]


def test_a_large_body_is_matched_and_missed_as_a_small_one(
    http: requests.Session, base_url: str, name: str
) -> None:
    """Bodies over 256 KiB are matched on the matching thread: the same stubs win, the
    same near misses are named, and a search too costly is refused as on the loop."""
    stubs = [
        stub("order", method="POST", urlPath="/orders", bodyPatterns={"contains": ["<id>7</id>"]}),
        stub("other", method="POST", urlPath="/orders", bodyPatterns={"contains": ["<id>8</id>"]}),
        *(
            stub(f"{i}", method="PUT", bodyPatterns={"contains": ["a" * 8, f"z{i}"]})
            for i in range(40)
        ),
    ]
    session = playback_of(http, base_url, name, stubs)
    virtual = f"{base_url}/virtual/{name}/{session}"
    filler = "<x>" + "y" * 3_000_000 + "</x>"
    found = []
    for body in ("<order><id>7</id></order>", f"<order>{filler}<id>7</id></order>"):
        assert http.post(f"{virtual}/orders", data=body, timeout=10).text == "order"
        missed = http.post(f"{virtual}/orders", data=body.replace("7", "9"), timeout=10)
        assert missed.status_code == 404, missed.text
        found.append([(m["id"], m["failed"]) for m in missed.json()["error"]["nearMisses"]])
    assert found[0] == found[1]
    assert [failed for _id, failed in found[0][:2]] == [["bodyPatterns.contains"]] * 2
    # Every stub is a candidate (its anchor is `aaaaaaaa`): 40 searches of 9 MB for `z{i}`
    # (up to ~26 ms each) are more than a request may cost.
    response = http.put(f"{virtual}/p", data="a" * 9_000_000, timeout=10)
    assert_error(response, 400, "costs more than the 500 ms")


def ends_within(seconds: float, call: Callable[[], requests.Response]) -> requests.Response:
    started = time.monotonic()
    response = call()
    assert time.monotonic() - started < seconds
    return response


# Mimic behaviors: a criterion is a regex matched against what a client sends.


def test_a_behavior_criterion_runs_on_re2(http: requests.Session, base_url: str, name: str) -> None:
    control = f"{base_url}/mimicking/{NOVA_CONTROL.service_id}/ORD/v2/{name}/behaviors/creation"
    servers = f"{base_url}/mimicking/{NOVA.service_id}/ORD/v2/{name}/servers"
    refused = http.post(control, json={"name": "error", "criteria": [{"server_name": r"(a)\1"}]})
    assert refused.status_code == 400 and "linear-time" in refused.json()["message"]
    document = {
        "name": "fail",
        "parameters": {"code": 418},
        "criteria": [{"server_name": CATASTROPHIC}],
    }
    assert http.post(control, json=document).status_code == 201

    def boot(server_name: str) -> requests.Response:
        body = {"server": {"name": server_name, "imageRef": "img", "flavorRef": "2"}}
        return http.post(servers, json=body, timeout=10)

    assert ends_within(1.0, lambda: boot(EVIL)).status_code == 202
    assert ends_within(1.0, lambda: boot("aaaa")).status_code == 418
