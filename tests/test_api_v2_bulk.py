"""Many stubs at once: the bulk import (``POST .../stubs/import``) and the paged and streamed
listing (``GET .../stubs``), against a real server (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests

from simulacra import web
from simulacra.errors import Invalid
from tests.mirage_helpers import (
    assert_data,
    assert_error,
    begin,
    begin_ok,
    create_scenario,
    end_ok,
    list_stubs,
    play,
    put_stub_ok,
    scenario_detail,
    stub,
    stubs_url,
)
from tests.server import RunningServer


def import_url(base_url: str, scenario: str) -> str:
    return stubs_url(base_url, scenario) + "/import"


def soap(i: int, body: str | None = None, **response: Any) -> dict[str, Any]:
    """A stub answering a request whose body holds ``<id>i</id>``."""
    doc = stub(
        body if body is not None else f"answer {i}", bodyPatterns={"contains": [f"<id>{i}</id>"]}
    )
    doc["response"].update(response)
    return doc


def bulk(
    http: requests.Session,
    base_url: str,
    scenario: str,
    stubs: list[Any],
    *,
    ndjson: bool = False,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    if ndjson:
        body = b"\n".join(orjson.dumps(s) for s in stubs) + b"\n"
        kind = "application/x-ndjson"
    else:
        body, kind = orjson.dumps(stubs), "application/json"
    return http.post(
        import_url(base_url, scenario), data=body, headers={"content-type": kind, **(headers or {})}
    )


def count(http: requests.Session, base_url: str, scenario: str) -> int:
    return int(scenario_detail(http, base_url, scenario)["stub_count"])


@pytest.mark.parametrize("ndjson", [False, True], ids=["json-array", "ndjson"])
def test_an_import_stores_every_stub_and_each_plays(http, base_url, name, ndjson):
    create_scenario(http, base_url, name)
    stubs = [soap(i) for i in range(3000)]
    data = assert_data(bulk(http, base_url, name, stubs, ndjson=ndjson), 201)
    assert data == {"created": 3000, "updated": 0, "ignored": 0}
    assert count(http, base_url, name) == 3000
    begin_ok(http, base_url, name, name + "p", "playback")
    for i in (0, 1234, 2999):
        answer = play(http, base_url, name, name + "p", f"<r><id>{i}</id></r>")
        assert (answer.status_code, answer.text) == (200, f"answer {i}")


def test_the_same_matchers_again_make_a_sequence_and_not_stateful_ignores_a_repeat(
    http, base_url, name
):
    create_scenario(http, base_url, name)
    data = assert_data(bulk(http, base_url, name, [soap(1, "one"), soap(1, "two")]), 201)
    assert data == {"created": 1, "updated": 1, "ignored": 0}
    # A later import extends the stored stub's sequence; not stateful, a repeat is ignored.
    data = assert_data(bulk(http, base_url, name, [soap(1, "three"), soap(2)]), 201)
    assert data == {"created": 1, "updated": 1, "ignored": 0}
    repeat = bulk(http, base_url, name, [soap(2)], headers={"stateful": "false"})
    assert assert_data(repeat, 201) == {"created": 0, "updated": 0, "ignored": 1}
    begin_ok(http, base_url, name, name + "p", "playback")
    played = [play(http, base_url, name, name + "p", "<id>1</id>").text for _ in range(4)]
    assert played == ["one", "two", "three", "three"]


def test_one_bad_stub_refuses_the_whole_import_and_keeps_what_was_stored(http, base_url, name):
    create_scenario(http, base_url, name)
    assert_data(bulk(http, base_url, name, [soap(0)]), 201)
    bad = [soap(1), soap(2), {"request": {"urlPath": "/x"}, "respons": {"status": 200}}, soap(3)]
    assert_error(bulk(http, base_url, name, bad), 400, "stub 2", "unknown key 'respons'")
    unplayable = [soap(4), {**soap(5), "request": {"bodyPatterns": {"matchesXPath": ["//["]}}}]
    assert_error(bulk(http, base_url, name, unplayable), 400, "stub 1")
    assert_error(bulk(http, base_url, name, [soap(6)] * 2 + [7]), 400, "stub 2")
    assert [s["stub"]["response"]["body"] for s in list_stubs(http, base_url, name)] == ["answer 0"]


ONE = orjson.dumps(soap(1))


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (b"", "application/json", "not a JSON array"),
        (ONE, "application/json", "not a JSON array"),
        (b"[" + ONE + b", ", "application/json", "not valid JSON"),
        (b"[" + ONE + b" " + ONE + b"]", "application/json", "',' or ']' expected"),
        (b"[" + ONE + b", NaN]", "application/json", "not valid JSON"),
        (b'["\\ud800"]', "application/json", "not valid JSON"),
        (b"[" + ONE + b"] []", "application/json", "text after the array"),
        (b"[" + b"[" * 100_000 + b"]" * 100_001, "application/json", "nested too deeply"),
        (b"[" + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]", "application/json", "too deep"),
        (b"[" * 100_000 + b"\n", "application/x-ndjson", "line 1 is not valid JSON"),
        (b"\xff", "application/json", "not UTF-8"),
        (b"[]", "application/json", "no stubs to import"),
        (ONE + b"\n{oops\n", "application/x-ndjson", "line 2 is not valid JSON"),
        (b"\n\n", "application/x-ndjson", "no stubs to import"),
    ],
)
def test_a_body_that_is_not_stubs_is_a_400(http, base_url, name, body, kind, fragment):
    create_scenario(http, base_url, name)
    answer = http.post(import_url(base_url, name), data=body, headers={"content-type": kind})
    assert_error(answer, 400, fragment)
    assert count(http, base_url, name) == 0


def test_an_import_into_a_recording_session_and_the_sessions_it_refuses(http, base_url, name):
    create_scenario(http, base_url, name)
    other = name + "b"
    create_scenario(http, base_url, other)
    begin_ok(http, base_url, name, name + "r", "record")
    data = assert_data(bulk(http, base_url, name, [soap(1)], headers={"session": name + "r"}), 201)
    assert data["created"] == 1
    assert_error(
        bulk(http, base_url, other, [soap(1)], headers={"session": name + "r"}), 400, "records"
    )
    assert_error(bulk(http, base_url, name, [soap(1)], headers={"session": "nope"}), 404)
    end_ok(http, base_url, name, name + "r")
    begin_ok(http, base_url, name, name + "p", "playback")
    assert_error(bulk(http, base_url, name, [soap(2)], headers={"session": name + "p"}), 409)
    assert_error(bulk(http, base_url, "nosuch" + name, [soap(1)]), 404)


def test_an_import_into_a_playing_scenario_plays_at_once(http, base_url, name):
    create_scenario(http, base_url, name)
    assert_data(bulk(http, base_url, name, [soap(1)]), 201)
    begin_ok(http, base_url, name, name + "p", "playback")
    assert play(http, base_url, name, name + "p", "<id>2</id>").status_code == 400  # E017
    assert_data(bulk(http, base_url, name, [soap(2), soap(1, "again")]), 201)
    assert play(http, base_url, name, name + "p", "<id>2</id>").text == "answer 2"
    assert [play(http, base_url, name, name + "p", "<id>1</id>").text for _ in range(3)] == [
        "answer 1",
        "again",
        "again",
    ]


def test_the_headers_of_a_put_apply_to_every_imported_stub(http, base_url, name):
    create_scenario(http, base_url, name)
    headers = {"priority": "7", "delay_policy": "slow", "stub_created_date": "2020-01-02"}
    assert_data(bulk(http, base_url, name, [soap(1), soap(2)], headers=headers), 201)
    listed = list_stubs(http, base_url, name)
    assert [s["recorded"] for s in listed] == ["2020-01-02"] * 2
    assert [s["stub"].get("priority") for s in listed] == [7, 7]
    assert [s["stub"]["response"].get("delayPolicy") for s in listed] == ["slow", "slow"]


@pytest.fixture(scope="module")
def small_imports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("bulk") / "s.db"
    running = RunningServer(store=f"sqlite:///{db}", extra_args=["--max-import-bytes", "4096"])
    yield running.start()
    running.stop()


def test_an_import_over_its_limit_is_a_413_and_a_put_keeps_its_own(http, small_imports, name):
    base_url = small_imports.url
    create_scenario(http, base_url, name)
    assert_error(bulk(http, base_url, name, [soap(i) for i in range(100)]), 413)
    assert_data(bulk(http, base_url, name, [soap(1)]), 201)
    assert count(http, base_url, name) == 1


# the listing -------------------------------------------------------------------------------


def test_the_listing_is_streamed_whole_and_paged_on_request(http, base_url, name):
    create_scenario(http, base_url, name)
    assert_data(bulk(http, base_url, name, [soap(i) for i in range(1234)]), 201)
    whole = http.get(stubs_url(base_url, name))
    assert whole.headers["content-type"].startswith("application/json")
    assert whole.headers["x-stubo-version"]
    listed = assert_data(whole)
    assert [s["stub"]["response"]["body"] for s in listed] == [f"answer {i}" for i in range(1234)]
    assert set(listed[0]) == {"id", "stub", "matchers_hash", "space_used", "recorded", "scenario"}
    for offset, limit in [(0, 10), (195, 10), (1230, 10), (5000, 3)]:
        page = assert_data(
            http.get(stubs_url(base_url, name), params={"offset": offset, "limit": limit})
        )
        assert page == listed[offset : offset + limit]
    assert assert_data(http.get(stubs_url(base_url, name), params={"limit": 2})) == listed[:2]


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "10001"}, {"offset": "-1"}, {"offset": "x"}]
)
def test_a_wrong_page_is_a_400(http, base_url, name, params):
    create_scenario(http, base_url, name)
    assert_error(http.get(stubs_url(base_url, name), params=params), 400)


def test_listing_an_unknown_scenario_is_a_404_before_any_stream(http, base_url, name):
    assert_error(http.get(stubs_url(base_url, "nosuch" + name)), 404)


def test_an_empty_scenario_lists_an_empty_array(http, base_url, name):
    create_scenario(http, base_url, name)
    assert list_stubs(http, base_url, name) == []


def test_a_put_stub_still_reaches_an_index_built_before(http, base_url, name):
    """A stub put while recording is played once its session plays (the index is built
    again after every change, never kept from before it)."""
    create_scenario(http, base_url, name)
    begin_ok(http, base_url, name, name + "r", "record")
    put_stub_ok(http, base_url, name, name + "r", soap(1))
    end_ok(http, base_url, name, name + "r")
    begin_ok(http, base_url, name, name + "p", "playback")
    assert play(http, base_url, name, name + "p", "<id>1</id>").text == "answer 1"
    end_ok(http, base_url, name, name + "p")
    assert begin(http, base_url, name, name + "r", "record").status_code == 400  # has stubs


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_an_array_is_parsed_the_same_across_decoded_chunks(monkeypatch, chunk):
    """The array's text is decoded a chunk at a time: a value, a number, a multi-byte
    character or white space cut at a chunk's end reads as it would whole."""
    monkeypatch.setattr(web, "_DECODE_CHUNK", chunk)
    values = [soap(i, body="café ☕ " * (i % 3)) for i in range(40)] + [12345, "x", None, [1.5]]
    body = b" [ " + b" ,\n ".join(orjson.dumps(v) for v in values) + b" ] \n"
    assert list(web.json_items(body, ndjson=False)) == values
    assert list(web.json_items(b"[]", ndjson=False)) == []
    for bad, said in [(b"[1 2]", "',' or ']' expected"), (b"[1] x", "text after the array")]:
        with pytest.raises(Invalid, match=said):
            list(web.json_items(bad, ndjson=False))
