"""Reading the tracker by id (``TrackerQuery.newer_than`` / ``older_than``), in every store:
what the console's tail ("records since the last one sent") and analytics (pages back by
id) read. The admin API's ``q`` language does not change: ``id:>3`` stays a word."""

from __future__ import annotations

import pytest

from simulacra.store import Store
from simulacra.virtual.tracker import TrackerJournal, parse_query
from tests.test_store_contract import record, run, store_url  # noqa: F401 (a fixture)


def test_newer_and_older_than_in_every_store(store_url):  # noqa: F811
    async def body(store: Store) -> None:
        await store.add_tracker_records([record(i) for i in range(10)], cap=8)  # ids 3..10
        _, everything = await store.tracker_records(parse_query(None), 0, 100)
        ids = [r.id for r in everything]
        assert len(ids) == 8 and ids == sorted(ids, reverse=True)
        newest, oldest = ids[0], ids[-1]
        assert newest is not None and oldest is not None

        total, page = await store.tracker_records(parse_query(None).newer_than(newest - 3), 0, 2)
        assert total == 3 and [r.id for r in page] == [newest, newest - 1]
        total, page = await store.tracker_records(parse_query(None).newer_than(newest), 0, 50)
        assert (total, page) == (0, [])
        # With a filter: status 201 are the odd i, counted among the newer ones only.
        total, page = await store.tracker_records(parse_query("sc:201").newer_than(oldest), 0, 9)
        assert total == 4 and all(r.return_code == 201 and r.id > oldest for r in page)

        total, page = await store.tracker_records(parse_query(None).older_than(oldest + 2), 0, 9)
        assert total == 2 and [r.id for r in page] == [oldest + 1, oldest]
        window = parse_query("contract").newer_than(oldest).older_than(newest)
        total, page = await store.tracker_records(window, 1, 3)
        assert total == 6 and [r.id for r in page] == [newest - 2, newest - 3, newest - 4]
        # Ids beyond either end select nothing, and a far bound changes nothing.
        assert (await store.tracker_records(parse_query(None).older_than(oldest), 0, 5))[0] == 0
        far = parse_query(None).newer_than(-(2**63)).older_than(2**63 - 1)
        assert (await store.tracker_records(far, 0, 1))[0] == 8

    run(store_url, body)


@pytest.mark.parametrize("q", [None, "sc:200", "x1", "session:s1 rt:>2"])
def test_the_journal_window_agrees_with_matches(q):
    """The in-memory journal turns id bounds into a slice: the same records as the query's
    own ``matches`` over every record, for every bound."""
    journal = TrackerJournal()
    journal.add([record(i) for i in range(30)], cap=20)  # ids 11..30
    _, held = journal.page(parse_query(None), 0, 100)
    for low in range(8, 33, 3):
        for high in range(low - 2, 34, 4):
            query = parse_query(q).newer_than(low).older_than(high)
            expected = [r for r in held if query.matches(r)]
            total, page = journal.page(query, 1, 5)
            assert total == len(expected), (low, high)
            assert page == expected[1:6], (low, high)


def test_the_q_language_is_unchanged():
    """``id:`` is no filter of ``q``: the admin API reads it as a word, as before."""
    assert parse_query("id:>3").words == ("id:>3",)
    assert parse_query("id:>3").comparisons == ()
