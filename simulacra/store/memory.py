"""``memory://``: nothing survives a restart, so nothing needs a file.

Scenarios, stubs, sessions and delay policies live in an in-memory SQLite database (the
same SQL as the file store). The tracker lives in a TrackerJournal instead: records held
as Python objects cost playback far less than rows in an in-memory table (bench/playback.py
and bench/README.md, "What tracking costs").
"""

from __future__ import annotations

from simulacra.background import run_in_slices
from simulacra.store.sqlite import SQLiteStore
from simulacra.virtual.tracker import TrackerJournal, TrackerQuery, TrackerRecord


class MemoryStore(SQLiteStore):
    def __init__(self) -> None:
        super().__init__(":memory:")
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
