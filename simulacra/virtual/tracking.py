"""The tracker's edge: note each tracked call on the request path, write them off it.

``Tracker.note`` is called by the data plane for every playback, and by the v2
``endpoint`` decorator for stub and session calls (``tracker.is_tracked``), once the answer
is known (or the call failed). It appends a ``tracker.capture`` (a tuple of plain values)
to a bounded in-memory queue, and nothing more: measured on the real server
(bench/playback.py), every microsecond of Python on the request path costs playback two
to four, while the same work done in batches costs about one. ``Tracker.flush`` builds the
records and writes them to the store in batches: every ``interval`` seconds, before every
tracker read, and on shutdown. A short interval keeps batches short, so requests never
wait long behind one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from typing import Any

from simulacra.dataplane.request import Request
from simulacra.errors import Unavailable
from simulacra.store.base import Store
from simulacra.virtual.tracker import (
    TrackerQuery,
    TrackerQueue,
    TrackerRecord,
    build_record,
    build_records,
    capture,
)

log = logging.getLogger("simulacra.tracker")

__all__ = ["Tracker"]

BATCH = 500  # records per store transaction; the loop serves requests between batches


class Tracker:
    """Pending captures, the store they go to, and the reads that see all of them."""

    def __init__(
        self,
        cap: int = 100_000,
        enabled: bool = True,
        max_pending: int = 20_000,  # 2 s of captures at 10,000 requests/s, ~30 MB at most
        interval: float = 0.05,
    ) -> None:
        self.cap = cap
        self.enabled = enabled
        self.interval = interval
        self.queue = TrackerQueue(max_pending)
        self.store: Store | None = None
        self.server = socket.gethostname()
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._reported_drops = 0
        # Captures whose batch the store could not take (a shared store briefly down): written
        # first by the next flush, so an outage delays records instead of losing them.
        self._retry: deque[tuple[Any, ...]] = deque()
        self._max_retry = max_pending

    @property
    def pending(self) -> int:
        """Captures not yet written: queued, or sent back by a store outage."""
        return len(self.queue) + len(self._retry)

    def note(self, request: Request, *answer: Any, **notes: Any) -> None:
        """Queue one answered call, ended now: ``tracker.capture``'s arguments after the
        request (the answer's status, header block, size and body start, then the call's
        start time) and its notes. Nothing when tracking is off.

        Called before the answer goes out, so a client that reads the tracker after being
        answered finds the record.
        """
        if self.enabled:
            self.queue.add(capture(request, *answer, **notes))

    async def reset(self) -> None:
        """Drop what is pending and every stored record (with the store's ``clear``, which
        ``VirtualService.reset`` calls): nothing captured before a reset shows after it."""
        self.queue.drain()
        self._retry.clear()

    async def start(self, store: Store) -> None:
        self.store = store
        self._lock = asyncio.Lock()
        self._task = asyncio.create_task(self._flush_periodically())

    async def stop(self) -> None:
        """Stop the periodic flush and write what is pending (before the store closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Unavailable:  # stopping during an outage: say what could not be written
            log.warning("tracker: %d records not written: store unavailable", len(self._retry))

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not len(self.queue) and not self._retry:
                continue
            try:
                await self.flush()
            except Unavailable:
                pass  # kept for the next flush; the store logged the outage
            except Exception:
                log.exception("flushing tracker records failed")

    async def flush(self) -> None:
        """Build and write every pending record, in batches.

        Always under the lock, even with nothing pending: a reader must wait for a flush
        in progress, whose records it would otherwise miss.
        """
        if self.store is None or self._lock is None:
            return
        async with self._lock:
            pending = self.queue.drain()
            if self._retry:
                pending.extendleft(reversed(self._retry))
                self._retry = deque()
            if self.queue.dropped != self._reported_drops:
                log.warning(
                    "tracker queue full: %d records dropped so far",
                    self.queue.dropped - self._reported_drops,
                )
                self._reported_drops = self.queue.dropped
            server = self.server
            while pending:
                batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
                try:
                    records = build_records(batch, server)
                except Exception:  # one odd capture must not lose the batch: one by one
                    records = []
                    for captured in batch:
                        try:
                            records.append(build_record(captured, server))
                        except Exception:
                            log.exception("could not build a tracker record")
                try:
                    await self.store.add_tracker_records(records, self.cap)
                except Unavailable:
                    pending.extendleft(reversed(batch))
                    excess = len(pending) - self._max_retry
                    for _ in range(max(excess, 0)):  # bounded: the oldest go first
                        pending.popleft()
                        self.queue.dropped += 1
                    self._retry = pending
                    raise
                if pending:
                    await asyncio.sleep(0)  # let requests run between batches

    async def records(
        self, query: TrackerQuery, skip: int, limit: int
    ) -> tuple[int, list[TrackerRecord]]:
        """Matching records newest first: every call answered before this one is included."""
        await self.flush()
        assert self.store is not None
        return await self.store.tracker_records(query, skip, limit)

    async def record(self, record_id: int) -> TrackerRecord | None:
        await self.flush()
        assert self.store is not None
        return await self.store.tracker_record(record_id)
