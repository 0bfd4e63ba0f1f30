"""Unit tests: tracker records, the q query language, paging math, the bounded queue, and
the SQLite store's tracker table (which must agree with the pure predicate)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import time
from types import NoneType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulacra.background import drain
from simulacra.dataplane.request import Request
from simulacra.errors import Invalid
from simulacra.store.memory import MemoryStore
from simulacra.store.sqlite import SQLiteStore
from simulacra.virtual import tracker as tracker_module
from simulacra.virtual.tracker import (
    COMMON_HEADERS,
    MAX_LIMIT,
    RESPONSE_PREVIEW_CHARS,
    CallDetail,
    Comparison,
    TrackerJournal,
    TrackerQueue,
    TrackerRecord,
    _build_record,
    build_record,
    compact_headers,
    decode_headers,
    expand_headers,
    header_name,
    is_tracked,
    join_headers,
    pack_detail,
    paging,
    parse_paging,
    parse_query,
    unpack_detail,
)
from simulacra.virtual.tracker import capture as tracker_capture
from simulacra.virtual.tracking import Tracker


def capture(
    path: str = "/api/v2/scenarios/objects/shop/stubs",
    *,
    method: str = "POST",
    query: bytes = b"",
    headers: dict[str, str] | None = None,
    status: int = 200,
    body: bytes = b"ok",
    failed: bool = False,
    duration: float = 0.0123,
    **notes: Any,
) -> tuple[Any, ...]:
    """A capture of a call, as ``Tracker.note`` queues it; ``notes``: delay, session..."""
    all_headers = {"host": "Example.COM:8001", **(headers or {})}
    request = Request(
        method,
        path,
        query,
        [(k.lower().encode(), v.encode("latin-1")) for k, v in all_headers.items()],
        b"",
        ("10.0.0.7", 51234),
        ("0.0.0.0", 8001),
    )
    if failed:
        return tracker_capture(request, 500, b"", 0, b"internal error", 100.0, t1=100.0 + duration)
    sent = [
        (b"x-kind", b"test"),
        (b"content-length", b"%d" % len(body)),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]
    return tracker_capture(
        request,
        status,
        join_headers(sent),
        len(body),
        body[:1024],
        100.0,
        t1=100.0 + duration,
        **notes,
    )


def record(**fields: Any) -> TrackerRecord:
    base: dict[str, Any] = {
        "function": "/api/v2/scenarios/objects/a/stubs",
        "host": "localhost",
        "return_code": 200,
        "duration_ms": 5,
    }
    base.update(fields)
    return TrackerRecord(**base)


class TestTrackedPaths:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/v2/scenarios/objects/a/stubs",
            "/api/v2/scenarios/objects/h:a/action",
            "/api/v2/matcher",
        ],
    )
    def test_tracked(self, path):
        assert is_tracked(path)

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v2/scenarios",
            "/api/v2/scenarios/objects/a",
            "/api/v2/delay-policy",
            "/api/v2/tracker/records",
            "/",
            "/identity/v2.0/tokens",
        ],
    )
    def test_not_tracked(self, path):
        assert not is_tracked(path)


class TestBuildRecord:
    def test_playback_capture(self):
        r = build_record(
            capture(
                query=b"a=1&b=&a=2",
                headers={"session": "s1", "Content-Length": "3"},
                delay=40,
            ),
            server="box",
        )
        call = r.details()
        assert r.function == "/api/v2/scenarios/objects/shop/stubs"
        assert r.host == "example.com"
        assert (call.port, call.remote_ip, call.server) == (8001, "10.0.0.7", "box")
        assert (r.scenario, r.session) == ("example.com:shop", "s1")
        assert call.request_method == "POST"
        assert call.request_params == {"a": "2", "b": ""}
        assert decode_headers(call.request_headers)["session"] == "s1"
        assert decode_headers(call.request_headers)["host"] == "Example.COM:8001"
        assert (call.request_size, call.response_size) == (3, 2)
        assert decode_headers(call.response_headers) == {
            "x-kind": "test",
            "content-length": "2",
            "content-type": "text/plain; charset=utf-8",
        }
        assert (r.return_code, r.duration_ms, r.delay) == (200, 12, 40)
        assert (call.stubo_response, call.error(r.return_code)) == ("ok", None)

    def test_start_time_is_wall_clock_utc(self):
        before = time.time()
        t0 = time.perf_counter()
        call = build_record((t0, t0, *capture()[2:])).details()
        assert before - 1 <= call.started <= time.time() + 1
        assert call.start_time == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(call.started))

    def test_explicit_host_and_target_host(self):
        r = build_record(capture("/api/v2/scenarios/objects/Other.Host:shop/stubs"))
        assert r.scenario == "other.host:shop"
        r = build_record(capture(headers={"target_host": "Target.Host"}))
        assert r.scenario == "target.host:shop"

    def test_session_noted_by_an_action(self):
        path = "/api/v2/scenarios/objects/shop/action"
        r = build_record(capture(path, session="rec"))
        assert (r.scenario, r.session) == ("example.com:shop", "rec")
        r = build_record(capture(path, session=["not", "a", "name"]))
        assert r.session is None

    @pytest.mark.parametrize(
        ("header", "scenario", "session"),
        [
            ("shop:s1", "example.com:shop", "s1"),
            ("H.x:shop:s1", "h.x:shop", "s1"),
            ("garbage", None, "garbage"),
            (":s1", None, ":s1"),
        ],
    )
    def test_matcher_session_header(self, header, scenario, session):
        r = build_record(capture("/api/v2/matcher", headers={"session": header}))
        assert (r.scenario, r.session) == (scenario, session)

    def test_error_message_from_the_envelope(self):
        body = orjson.dumps({"version": "1", "error": {"code": 400, "message": "E017:No match"}})
        r = build_record(capture(status=400, body=body))
        assert r.details().error(r.return_code) == "E017:No match"
        r = build_record(capture(status=503, body=b"down"))
        assert r.details().error(r.return_code) == "down"

    def test_a_failed_handler_is_a_500(self):
        r = build_record(capture(failed=True))
        call = r.details()
        assert (r.return_code, call.response_size, call.error(500)) == (500, 0, "internal error")

    def test_preview_is_cut(self):
        body = ("é" * 600).encode()
        call = build_record(capture(body=body)).details()
        assert call.stubo_response == "é" * RESPONSE_PREVIEW_CHARS
        assert (call.response_size, call.body_start) == (1200, "é" * 512)

    def test_stubo_request_session_header(self):
        r = build_record(capture(headers={"Stubo-Request-Session": "s2"}))
        assert r.session == "s2"
        r = build_record(capture(headers={"Stubo-Request-Session": "s2", "session": "s1"}))
        assert r.session == "s1"

    def test_a_capture_holds_no_container(self):
        # Plain values only (the request headers as a tuple of byte pairs): the scope and
        # response die with the request, and the garbage collector does not have to visit
        # pending captures.
        captured = capture(query=b"a=1", delay=5, session={"x": 1})
        plain = str | bytes | int | float | NoneType
        assert all(isinstance(v, plain) for i, v in enumerate(captured) if i != 5)
        assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in captured[5])
        assert captured[9] is None  # a session noted as a non-string is dropped
        for _ in range(3):  # a collection untracks a tuple of untracked values: one level
            gc.collect()  # each, as the order it visits them in is not creation order
        assert not gc.is_tracked(captured)

    def test_a_repeated_call_builds_the_same_record_as_a_new_one(self):
        # build_record remembers what a capture minus its clock gives: a remembered build
        # must equal a full one, the start time and duration included.
        first = capture(query=b"a=1", headers={"session": "s1"})
        again = (first[0] + 2.5, first[1] + 2.75, *first[2:])
        build_record(first, "srv")
        assert build_record(again, "srv") == _build_record(again, "srv")
        assert build_record(again, "other") == _build_record(again, "other")
        assert build_record(again, "srv").details().started == pytest.approx(
            _build_record(again, "srv").details().started
        )

    def test_a_call_answered_with_another_body_builds_the_same_record_as_a_new_one(
        self, monkeypatch
    ):
        # A sequence's answers, a template's renders: calls that differ only in the body
        # they were answered (here of one length, so their headers are the same) are built
        # from the shape of an earlier one, around their own body: equal to a full build.
        first = capture(body=b"answer 1", headers={"session": "s1"})
        later = capture(body=b"answer 2", headers={"session": "s1"})
        later = (first[0] + 1.5, first[1] + 1.75, *later[2:])
        assert later[2:13] == first[2:13] and later[15:] == first[15:]
        build_record(first, "shape")
        full_builds = []
        monkeypatch.setattr(tracker_module, "_build_record", lambda *a: full_builds.append(a))
        built = build_record(later, "shape")
        monkeypatch.undo()
        assert not full_builds  # built from the first one's shape
        assert built == _build_record(later, "shape")
        assert (built.details().body_start, built.details().started) == (
            "answer 2",
            pytest.approx(_build_record(later, "shape").details().started),
        )
        huge = (*later[:13], 2**32, *later[14:])  # a size the binary detail cannot hold
        assert build_record(huge, "shape") == _build_record(huge, "shape")

    def test_the_answering_stub_is_kept(self):
        # Built in full, then from the memo: each keeps its own stub's id.
        for _ in range(2):
            played = build_record(capture(stub_id="stub-a"), "srv")
            other = build_record(capture(stub_id="stub-b"), "srv")
            missed = build_record(capture(status=404), "srv")
            assert (played.stub_id, other.stub_id, missed.stub_id) == ("stub-a", "stub-b", None)
        assert played.full()["stub_id"] == "stub-a"
        assert "stub_id" not in played.summary()
        assert build_record(capture(failed=True)).stub_id is None

    def test_headers_round_trip(self):
        headers = {"a": "1", "b": "", "c": "x: y, \xe9"}
        call = build_record(capture(headers=headers)).details()
        assert decode_headers(call.request_headers) == {"host": "Example.COM:8001", **headers}
        assert decode_headers("") == {}

    def test_summary_and_full_shapes(self):
        r = build_record(capture(query=b"session=q"))._replace(id=42)
        summary = r.summary()
        assert summary["id"] == "42"
        assert summary["href"] == "/api/v2/tracker/records/objects/42"
        assert summary["request_params"] == {"session": "q"}
        assert set(summary) == {
            "id",
            "href",
            "start_time",
            "function",
            "scenario",
            "session",
            "request_params",
            "return_code",
            "duration_ms",
            "delay",
            "stubo_response",
        }
        full = r.full()
        assert full["id"] == "42"
        assert set(full) == {
            "id",
            "start_time",
            "function",
            "scenario",
            "session",
            "host",
            "port",
            "remote_ip",
            "server",
            "request_method",
            "request_params",
            "request_headers",
            "request_size",
            "return_code",
            "response_headers",
            "response_size",
            "stubo_response",
            "duration_ms",
            "delay",
            "error",
            "tracking_level",
            "stub_id",
        }
        assert full["stub_id"] is None  # no stub named: a miss, an error, a proxied call
        assert full["request_headers"]["Host"] == "Example.COM:8001"  # Tornado's spelling
        assert full["request_params"] == {"session": "q"}
        assert full["port"] == "8001"


class TestQueue:
    def test_bounded_oldest_dropped(self):
        queue = TrackerQueue(max_pending=3)
        for i in range(5):
            queue.add((i,))
        assert len(queue) == 3
        assert queue.dropped == 2
        assert list(queue.drain()) == [(2,), (3,), (4,)]
        assert len(queue) == 0
        queue.add((9,))
        assert list(queue.drain()) == [(9,)]


class TestQuery:
    def test_words_and_filters(self):
        q = parse_query("My_Suite sc:>=200 SC:<=201 rt:>200 d:0 session:s-1 /stubs")
        assert q.words == ("my_suite", "/stubs")
        assert q.comparisons == (
            Comparison("return_code", ">=", 200),
            Comparison("return_code", "<=", 201),
            Comparison("duration_ms", ">", 200),
            Comparison("delay", "=", 0),
        )
        assert q.sessions == ("s-1",)

    @pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "="])
    def test_every_operator(self, op):
        [c] = parse_query(f"rt:{op}10").comparisons
        assert c.op == op
        expected = {"<": [9], "<=": [9, 10], ">": [11], ">=": [10, 11], "=": [10]}[op]
        assert [v for v in (9, 10, 11) if c.holds(v)] == expected

    def test_empty_query_matches_everything(self):
        assert parse_query(None) == parse_query("  ") == parse_query("")
        assert parse_query("").matches(record())

    def test_a_word_containing_sc_colon_is_a_word(self):
        # Mirage looked for "sc:" anywhere in a token, so "misc:1" became a status filter.
        q = parse_query("misc:1")
        assert (q.words, q.comparisons) == (("misc:1",), ())

    @pytest.mark.parametrize(
        "q", ["sc:", "sc:abc", "rt:>>5", "rt:>=", "d:<x", "sc:2.5", "session:", "rt:=>3"]
    )
    def test_malformed_filter_is_invalid(self, q):
        with pytest.raises(Invalid):
            parse_query(q)

    def test_matches_combines_status_and_time(self):
        q = parse_query("shop sc:>=400 rt:>100")
        assert q.matches(record(scenario="h:shop", return_code=400, duration_ms=101))
        assert not q.matches(record(scenario="h:shop", return_code=400, duration_ms=100))
        assert not q.matches(record(scenario="h:shop", return_code=200, duration_ms=500))
        assert not q.matches(record(scenario="h:other", return_code=500, duration_ms=500))
        # a word may match the path instead of the scenario
        assert q.matches(record(function="/x/SHOP/stubs", return_code=500, duration_ms=500))

    def test_session_and_host(self):
        q = parse_query("session:s1", host="a")
        assert q.matches(record(session="s1", host="a"))
        assert not q.matches(record(session="s2", host="a"))
        assert not q.matches(record(session="s1", host="b"))
        assert not q.matches(record(session=None, host="a"))


class TestPaging:
    def test_parse(self):
        assert parse_paging(None, None) == (0, 100)
        assert parse_paging("5", "7") == (5, 7)
        assert parse_paging("", "") == (0, 100)
        assert parse_paging("0", str(MAX_LIMIT + 5)) == (0, MAX_LIMIT)

    @pytest.mark.parametrize(
        ("skip", "limit"), [("-1", "1"), ("0", "0"), ("x", "1"), ("1", "1.5"), ("0", "-3")]
    )
    def test_parse_rejects(self, skip, limit):
        with pytest.raises(Invalid):
            parse_paging(skip, limit)

    @staticmethod
    def skips(page: dict[str, Any]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for key in ("first", "previous", "next", "last"):
            link = page[key]
            out[key] = None if link is None else int(parse_qs(urlsplit(link).query)["skip"][0])
        return out

    @pytest.mark.parametrize(
        ("skip", "limit", "total", "expected"),
        [
            (0, 2, 0, {"first": 0, "previous": None, "next": None, "last": 0}),
            (0, 2, 5, {"first": 0, "previous": None, "next": 2, "last": 4}),
            (2, 2, 5, {"first": 0, "previous": 0, "next": 4, "last": 4}),
            # Mirage: next is None here (skip+2*limit >= total), hiding the last record.
            (2, 2, 5, {"first": 0, "previous": 0, "next": 4, "last": 4}),
            (4, 2, 5, {"first": 0, "previous": 2, "next": None, "last": 4}),
            (0, 2, 4, {"first": 0, "previous": None, "next": 2, "last": 2}),
            (1, 2, 4, {"first": 0, "previous": 0, "next": 3, "last": 2}),
            (0, 10, 3, {"first": 0, "previous": None, "next": None, "last": 0}),
            # beyond the end: previous leads back to the last page
            (50, 10, 25, {"first": 0, "previous": 20, "next": None, "last": 20}),
        ],
    )
    def test_links(self, skip, limit, total, expected):
        page = paging(skip, limit, total)
        assert self.skips(page) == expected
        assert (page["currentLimit"], page["totalItems"]) == (limit, total)

    def test_links_keep_the_query(self):
        page = paging(0, 5, 20, {"q": "a b sc:>=400", "all-hosts": "false"})
        assert page["next"] == (
            "/api/v2/tracker/records?skip=5&limit=5&q=a+b+sc%3A%3E%3D400&all-hosts=false"
        )
        parsed = parse_qs(urlsplit(page["last"]).query)
        assert parsed == {
            "skip": ["15"],
            "limit": ["5"],
            "q": ["a b sc:>=400"],
            "all-hosts": ["false"],
        }

    @given(total=st.integers(0, 300), limit=st.integers(1, 40))
    def test_following_next_visits_every_item_once_and_ends_on_last(self, total, limit):
        seen: list[int] = []
        skip = 0
        pages = 0
        while True:
            seen.extend(range(skip, min(skip + limit, total)))
            page = self.skips(paging(skip, limit, total))
            pages += 1
            if page["next"] is None:
                assert skip == page["last"]
                break
            skip = page["next"]
        assert seen == list(range(total))
        assert pages == max(1, -(-total // limit))

    @given(total=st.integers(1, 300), limit=st.integers(1, 40))
    def test_following_previous_from_last_reaches_first(self, total, limit):
        skip = self.skips(paging(0, limit, total))["last"]
        assert skip is not None and 0 <= skip < total
        while skip:
            previous = self.skips(paging(skip, limit, total))["previous"]
            assert previous is not None and previous < skip
            skip = previous
        assert self.skips(paging(0, limit, total))["previous"] is None


# the store -------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def opened(kind: str) -> SQLiteStore:
    """``sql``: the tracker table of the SQLite stores; ``journal``: memory://'s journal."""
    store = SQLiteStore(":memory:") if kind == "sql" else MemoryStore()
    await store.open()
    return store


def sample_records() -> list[TrackerRecord]:
    """Varied records: every combination of a few statuses, durations, delays, sessions."""
    out = []
    combos = itertools.product(
        [200, 201, 400, 404, 500],
        [0, 99, 100, 101, 250],
        [0, 100],
        [None, "s1", "S1"],
        [("h1", "h1:Shop"), ("h2", None), ("h2", "h2:café")],
    )
    for i, (code, duration, delay, session, (host, scenario)) in enumerate(combos):
        out.append(
            record(
                function=f"/api/v2/scenarios/objects/{'Shop' if i % 2 else 'x'}/stubs",
                return_code=code,
                duration_ms=duration,
                delay=delay,
                session=session,
                host=host,
                scenario=scenario,
                detail=orjson.dumps([i]),
            )
        )
    return out


QUERIES = [
    "",
    "shop",
    "SHOP",
    "/stubs",
    "h2:",
    "café",
    "CAFÉ",  # ASCII-only case folding, as SQLite: no match for É vs é
    "sc:200",
    "sc:>=400",
    "sc:>=200 sc:<=201",
    "rt:>100",
    "rt:<100",
    "rt:=100",
    "rt:<=100 sc:<400",
    "shop sc:>=400 rt:>=100",
    "d:>0",
    "d:0 rt:>99",
    "session:s1",
    "session:S1 sc:500",
    "x shop",
    "nothing-matches",
]


@pytest.mark.parametrize("kind", ["sql", "journal"])
class TestStoreTracker:
    @pytest.mark.parametrize("q", QUERIES)
    @pytest.mark.parametrize("host", [None, "h2"])
    def test_store_agrees_with_the_predicate(self, kind, q, host):
        async def go() -> None:
            store = await opened(kind)
            try:
                records = sample_records()
                await store.add_tracker_records(records, cap=10_000)
                query = parse_query(q, host)
                total, page = await store.tracker_records(query, 0, 10_000)
                stored = [r for r in [await store.tracker_record(i) for i in range(1, 451)] if r]
                expected = [r.id for r in reversed(stored) if query.matches(r)]
                assert [r.id for r in page] == expected
                assert total == len(expected)
            finally:
                await store.close()

        run(go())

    def test_newest_first_paging_and_round_trip(self, kind):
        async def go() -> None:
            store = await opened(kind)
            try:
                records = [record(detail=orjson.dumps([i])) for i in range(7)]
                await store.add_tracker_records(records[:3], cap=100)
                await store.add_tracker_records(records[3:], cap=100)
                total, page = await store.tracker_records(parse_query(""), 2, 3)
                assert total == 7
                assert [r.details().started for r in page] == [4, 3, 2]
                assert [r.id for r in page] == [5, 4, 3]
                again = await store.tracker_record(5)
                assert again == page[0]
                assert await store.tracker_record(99) is None
            finally:
                await store.close()

        run(go())

    def test_cap_keeps_the_newest(self, kind):
        async def go() -> None:
            store = await opened(kind)
            try:
                for batch in range(4):
                    batch_records = [record(function=f"{batch}.{i}") for i in range(5)]
                    await store.add_tracker_records(batch_records, cap=8)
                total, page = await store.tracker_records(parse_query(""), 0, 100)
                assert total == 8
                assert [r.function for r in page] == [
                    "3.4",
                    "3.3",
                    "3.2",
                    "3.1",
                    "3.0",
                    "2.4",
                    "2.3",
                    "2.2",
                ]
                # ids keep growing after deletes: an old href never shows another record
                assert page[0].id == 20
                await store.add_tracker_records([record()], cap=8)
                assert (await store.tracker_records(parse_query(""), 0, 1))[1][0].id == 21
            finally:
                await store.close()

        run(go())


class TestTrackerJournal:
    """What the shared tests above do not reach: a cap that changes, and edges of paging."""

    def journal(self, n: int, cap: int = 100) -> TrackerJournal:
        journal = TrackerJournal()
        journal.add([record(function=f"/f{i}") for i in range(n)], cap)
        return journal

    def test_a_smaller_cap_keeps_the_newest_and_their_ids(self):
        journal = self.journal(10)
        journal.add([record(function="/f10")], cap=3)
        assert len(journal) == 3 and journal.first_id == 9
        assert [(r.id, r.function) for r in journal.page(parse_query(""), 0, 10)[1]] == [
            (11, "/f10"),
            (10, "/f9"),
            (9, "/f8"),
        ]
        assert journal.get(8) is None
        assert journal.get(9) == record(id=9, function="/f8")
        assert journal.get(12) is None and journal.get(0) is None and journal.get(-1) is None

    def test_cap_zero_keeps_nothing_but_ids_go_on(self):
        journal = self.journal(4, cap=0)
        assert len(journal) == 0 and journal.page(parse_query(""), 0, 10) == (0, [])
        journal.add([record(function="/again")], cap=5)
        assert journal.get(5) == record(id=5, function="/again")

    def test_paging_past_the_end(self):
        journal = self.journal(5)
        assert journal.page(parse_query(""), 5, 10) == (5, [])
        assert journal.page(parse_query("/f"), 7, 10) == (5, [])
        total, page = journal.page(parse_query("/f"), 3, 10)
        assert total == 5 and [r.id for r in page] == [2, 1]


# the writer --------------------------------------------------------------------


def note(
    tracker: Tracker, body: bytes | None = b"x", path: str = "/api/v2/scenarios/objects/shop/stubs"
) -> None:
    """``tracker.note`` of a call answered ``body`` (None: a failure, answered 500)."""
    request = Request(
        "POST",
        path,
        b"",
        [(b"host", b"localhost:8900"), (b"session", b"s1")],
        b"",
        ("127.0.0.1", 5000),
        ("127.0.0.1", 8900),
    )
    if body is None:
        tracker.note(request, 500, b"", 0, b"internal error", time.perf_counter())
    else:
        tracker.note(request, 200, b"", len(body), body, time.perf_counter())


class TestWriter:
    def test_track_flush_and_read(self):
        async def go() -> None:
            store = await opened("sql")
            tracker = Tracker(cap=3, interval=3600)
            await tracker.start(store)
            try:
                for i in range(5):
                    note(tracker, f"r{i}".encode())
                note(tracker, None)  # a failure
                assert len(tracker.queue) == 6
                total, page = await tracker.records(parse_query(""), 0, 10)
                assert len(tracker.queue) == 0
                assert total == 3  # the cap
                assert [r.return_code for r in page] == [500, 200, 200]
                assert [r.details().stubo_response for r in page[1:]] == ["r4", "r3"]
                assert (page[0].scenario, page[0].session) == ("localhost:shop", "s1")
                assert await tracker.record(page[0].id) == page[0]
            finally:
                await tracker.stop()
                await store.close()

        run(go())

    def test_disabled_tracker_records_nothing(self):
        tracker = Tracker(enabled=False)
        note(tracker)
        assert len(tracker.queue) == 0

    def test_stop_writes_what_is_pending(self):
        async def go() -> None:
            store = await opened("sql")
            tracker = Tracker(interval=3600)
            await tracker.start(store)
            note(tracker)
            await tracker.stop()
            total, _ = await store.tracker_records(parse_query(""), 0, 10)
            assert total == 1
            await store.close()

        run(go())

    def test_periodic_flush(self):
        async def go() -> None:
            store = await opened("sql")
            tracker = Tracker(interval=0.01)
            await tracker.start(store)
            try:
                note(tracker)
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    if (await store.tracker_records(parse_query(""), 0, 1))[0]:
                        break
                assert (await store.tracker_records(parse_query(""), 0, 1))[0] == 1
            finally:
                await tracker.stop()
                await store.close()

        run(go())


class TestPackedDetail:
    def fields(self, **changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "started": 1700000000.25,
            "method": "POST",
            "remote_ip": "10.0.0.7",
            "port": 8001,
            "server": "box",
            "query": b"a=1&b=%C3%A9",
            "request_headers": b"host\0h:1\0content-length\x003\0x-odd\0content-type",
            "length": b"3",
            "response_headers": b"content-length\x002\0x-stubo-version\x001",
            "size": 2,
            "body_start": "ok \u00e9\0".encode(),
        }
        base.update(changes)
        return base

    def expected(self, f: dict[str, Any]) -> CallDetail:
        return CallDetail(
            f["started"],
            f["method"],
            f["remote_ip"],
            f["port"],
            f["server"],
            f["query"].decode("latin-1"),
            f["request_headers"].decode("latin-1"),
            int(f["length"]) if f["length"] else 0,
            f["response_headers"].decode("latin-1"),
            f["size"],
            f["body_start"].decode("utf-8", errors="replace"),
        )

    def test_round_trip(self):
        f = self.fields()
        packed = pack_detail(**f)
        assert packed[:1] == b"\x01"
        assert unpack_detail(packed) == self.expected(f)
        # Smaller than the JSON it replaces (which spelled each NUL as \u0000).
        assert len(packed) < len(orjson.dumps(tuple(self.expected(f)))) * 0.8

    @pytest.mark.parametrize(
        "changes",
        [
            {"port": None},
            {"port": 0},
            {"length": b""},
            {"query": b"", "request_headers": b"", "response_headers": b"", "body_start": b""},
            {"length": b"9" * 30},  # over 64 bits: JSON could not hold it as a number
            {"body_start": b"\xff\xfe"},  # not UTF-8: replaced when shown, as before
        ],
    )
    def test_edges(self, changes):
        f = self.fields(**changes)
        assert unpack_detail(pack_detail(**f)) == self.expected(f)

    def test_port_as_text(self):
        # granian gives the server port as text; the record shows it as text either way
        call = unpack_detail(pack_detail(**self.fields(port="8900")))
        assert str(call.port) == "8900"

    def test_odd_values_fall_back_to_json(self):
        f = self.fields(port=2**40)
        packed = pack_detail(**f)
        assert packed[:1] == b"["
        assert unpack_detail(packed) == self.expected(f)

    def test_json_details_of_older_records_still_read(self):
        old = orjson.dumps([1.5, "GET", "ip", 80, "srv", "q=1", "host\0h", 0, "", 0, "body"])
        call = unpack_detail(old)
        assert (call.request_method, call.query, call.request_headers) == ("GET", "q=1", "host\0h")

    @given(st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), max_size=8))
    def test_compacted_headers_expand_back(self, parts):
        # any block of parts (not lone control bytes, which HTTP forbids in headers)
        parts = [p for p in parts if not (len(p) == 1 and p[0] < 0x20)]
        names = [n.encode() for n in COMMON_HEADERS[:3]]
        block = b"\0".join(parts + names + parts[:1])
        compact = compact_headers(block)
        assert len(compact) <= len(block)
        assert expand_headers(compact.decode("latin-1")) == block.decode("latin-1")


@pytest.mark.parametrize(
    ("asgi", "tornado"),
    [
        ("content-type", "Content-Type"),
        ("host", "Host"),
        ("x-request-id", "X-Request-Id"),
        ("dnt", "Dnt"),  # as the spec's record shows it
        ("stubo-request-method", "Stubo-Request-Method"),
    ],
)
def test_record_header_names_are_spelled_as_tornado_did(asgi, tornado):
    assert header_name(asgi) == tornado


class TestJournalInSteps:
    """memory://'s journal filters a block of records per step (background.py), newest
    block first: paging and counts must not see the block boundaries."""

    def test_a_filtered_page_across_steps_is_the_one_a_plain_filter_gives(self):
        records = sample_records()  # 450 varied records, repeated past several steps
        many = [records[i % len(records)] for i in range(25_000)]
        journal = TrackerJournal()
        journal.add(many, cap=30_000)
        for text in ["shop", "sc:404", "sc>=400 rt<=100", "h2 d:100", "/stubs sc:201"]:
            query = parse_query(text)
            expected = [(i + 1, r) for i, r in reversed(list(enumerate(many))) if query.matches(r)]
            for skip, limit in [(0, 5), (8190, 7), (len(expected) - 3, 10), (0, 30_000)]:
                total, page = journal.page(query, skip, limit)
                assert total == len(expected), text
                want = expected[skip : skip + limit]
                assert [(r.id, r.function, r.return_code) for r in page] == [
                    (i, r.function, r.return_code) for i, r in want
                ], (text, skip)

    def test_the_steps_stop_between_slices_of_the_records(self):
        journal = TrackerJournal()
        journal.add([record(function=f"/f{i}") for i in range(20_000)], cap=20_000)
        steps = journal.page_steps(parse_query("/f1"), 0, 3)
        taken = 0
        with pytest.raises(StopIteration) as done:
            while True:
                next(steps)
                taken += 1
        assert taken == 20  # 20,000 records in blocks of 1,024
        total, page = done.value.value
        assert total == sum(1 for i in range(20_000) if "/f1" in f"/f{i}")
        assert [r.function for r in page] == ["/f19999", "/f19998", "/f19997"]

    def test_adds_evictions_and_id_windows_match_a_plain_list(self):
        """Blocks, the evicted part of the oldest, id windows and a scan that began before
        later adds and evictions (it reads what was held at its first step), against the
        newest ``cap`` records of a plain list."""
        rng = random.Random(18)
        journal = TrackerJournal()
        every: list[TrackerRecord] = []
        cap = 3000
        for round_ in range(60):
            batch = [
                record(function=f"/r{round_}/{i}", return_code=rng.choice((200, 404)))
                for i in range(rng.choice((1, 7, 1023, 1024, 1500)))
            ]
            held_before = every[-cap:] if every else []
            if round_ == 30:
                cap = 1100  # a smaller cap evicts many at once
            ids_before = len(every) - len(held_before) + 1
            query = parse_query("sc:404")
            scan = journal.page_steps(query, 0, 10**6)
            result = None
            try:
                next(scan)  # begun before the add
            except StopIteration as stop:  # nothing held: no step
                result = stop.value
            journal.add(batch, cap)
            every += batch
            if result is None:
                result = drain(scan)
            assert [(r.id, r.function) for r in result[1]] == [
                (ids_before + i, r.function)
                for i, r in reversed(list(enumerate(held_before)))
                if r.return_code == 404
            ]
            held = every[-cap:]
            first = len(every) - len(held) + 1
            assert len(journal) == len(held) and journal.first_id == first
            low = first + rng.randrange(len(held))
            high = low + rng.randrange(2000)
            for text in ("sc:404", ""):
                windowed = parse_query(text).newer_than(low - 1).older_than(high + 1)
                expected = [
                    (first + i, r.function)
                    for i, r in reversed(list(enumerate(held)))
                    if low <= first + i <= high
                    and windowed.matches(record(**{**r._asdict(), "id": first + i}))
                ]
                skip = rng.randrange(len(expected) + 2)
                total, page = journal.page(windowed, skip, 50)
                assert total == len(expected)
                assert [(r.id, r.function) for r in page] == expected[skip : skip + 50]
            probe = first + rng.randrange(len(held))
            assert journal.get(probe).function == held[probe - first].function
            assert journal.get(first - 1) is None and journal.get(first + len(held)) is None
