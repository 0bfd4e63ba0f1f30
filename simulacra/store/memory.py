"""``memory://``: nothing survives a restart.

Scenarios, stubs, sessions and delay policies live in SQLite's private temporary database
(the same SQL as the file store): it is held in SQLite's page cache and, once larger, pages
out to a file that SQLite deleted when it opened it, so nothing is left behind even by a
kill -9. ``:memory:`` held every row in the process as well: 100,000 stubs' rows were
~55 MB of RSS beside their compiled index (bench.memory). The tracker lives in a
TrackerJournal instead: records held as Python objects cost playback far less than rows in
a table (bench/playback.py and bench/README.md, "What tracking costs").
"""

from __future__ import annotations

from simulacra.background import run_in_slices
from simulacra.store.sqlite import SQLiteStore
from simulacra.virtual.tracker import TrackerJournal, TrackerQuery, TrackerRecord


class MemoryStore(SQLiteStore):
    def __init__(self) -> None:
        super().__init__("")  # SQLite's private temporary database
        self.journal = TrackerJournal()

    async def add_tracker_records(self, records: list[TrackerRecord], cap: int) -> None:
        self.journal.add(records, cap)

    async def tracker_records(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> tuple[int, list[TrackerRecord]]:
        return await run_in_slices(self.journal.page_steps(query, skip, limit))

    async def tracker_record(self, record_id: int) -> TrackerRecord | None:
        return self.journal.get(record_id)

    async def clear(self) -> None:
        await super().clear()
        self.journal.clear()
