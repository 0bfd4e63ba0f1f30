"""Long work on the event loop, in slices, so that it never holds the loop from others.

Some work a client can ask for is long and runs in Python, where a thread would hold the
interpreter as long as the loop does: compiling a scenario of 100,000 stubs (seconds),
scanning a tracker journal of 100,000 records for a query, checking and writing 100,000
imported stubs, serializing a listing of them. Such work pauses often (``Slices.pause``,
or written as a generator of steps for ``run_in_slices``):

- a pause returns at once until the job has worked ``SLICE_S`` since its last yield; then
  it yields to the loop, so a request arriving meanwhile waits one slice at most;
- while the loop has other work (a pass of the loop between two slices takes time), the
  work keeps to ``SHARE`` of the loop's time, so concurrent playback keeps the rest; an
  idle loop gives the work all of its time;
- the share is counted for all jobs of the process together (``_owed_until``), so many
  jobs at once still take ``SHARE`` of a busy loop.

Work that runs outside the interpreter (SQLite scanning the tracker, on a reader thread)
runs in a thread of lower CPU priority (``lower_priority``), and keeps to SHARE of a core
when asked back to back (``SQLiteStore._on_reader``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]

SLICE_S = 0.001
# A busy loop's share that long work may take. 0.10 until 2026-12-07: beside it, playback on
# memory:// still lost 16-31% of its rate under the item-1 probes of bench.scale (scans
# thrash the caches playback runs on); at 0.07 it lost 11-18% in two runs.
SHARE = 0.07
# Less than this between two slices is an idle loop (one pass of an idle loop takes ~20 us).
IDLE_S = 0.0003

# Until when background work leaves a busy loop to others: each slice on a busy loop moves
# it on by the time others are owed for it.
_owed_until = 0.0

# What long work builds mostly lives on: a scenario's compiled index is about a million
# objects for 100,000 stubs, and each collection that scans them holds the loop (gen1 30-40
# ms, gen2 100-300 ms, measured while building one). A server freezes them as they are
# built (``freeze_what_is_built``, from app.tune_gc, which froze what startup built), after
# a young collection so that what is frozen is alive: a frozen object is never collected
# again, and one that later becomes part of a garbage cycle is never freed. The young
# collection scans what was built since the last freeze, within a slice: after 20 ms of
# work it took 1-5 ms (an index build of 100,000 stubs: ten over 1 ms); after 5 ms, about
# 1 ms at most (one over 1 ms), for the same total.
FREEZE_EVERY_S = 0.005
_freezing = False
_unfrozen_work = 0.0


# How many nice levels below the loop a thread doing a client's background work runs.
BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Run the calling thread ``BACKGROUND_NICENESS`` nice levels below the process (Linux
    sets a nice value per thread; elsewhere it would be the whole process: nothing is done).

    For a thread doing work that one client asked for and that does not hold the
    interpreter (a tracker query's scan in SQLite): with fewer cores than busy threads, it
    then takes the CPU that playback leaves rather than a share of what playback needs."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except OSError:  # not allowed here (a sandbox): the thread keeps the process's priority
        pass


def freeze_what_is_built(on: bool = True) -> None:
    """Freeze what long work has built as it goes (a server process: see above)."""
    global _freezing
    _freezing = on


class Slices:
    """One job's time on the loop: ``await slices.pause()`` between small units of work."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    async def pause(self) -> None:
        """Yield to the loop once this slice is used up (and keep to SHARE of a busy loop);
        returns at once within a slice."""
        global _owed_until
        clock = time.perf_counter
        worked = clock() - self._start
        if worked < SLICE_S:
            return
        if _freezing:
            _freeze_now_and_then(worked)
        paused = clock()
        await asyncio.sleep(0)
        others = clock() - paused
        if others > IDLE_S:  # others are waiting: leave them (1 - SHARE) of the loop
            owed = worked * (1 - SHARE) / SHARE - others
            _owed_until = max(_owed_until, paused) + owed
        wait = _owed_until - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._start = clock()


def _freeze_now_and_then(worked: float) -> None:
    global _unfrozen_work
    _unfrozen_work += worked
    if _unfrozen_work >= FREEZE_EVERY_S:
        _unfrozen_work = 0.0
        gc.collect(0)
        gc.freeze()


def emptying(*held: list[Any] | dict[Any, Any], step: int = 1500) -> Steps[None]:
    """Empty ``held`` a step of ``step`` items at a time, so that what only they hold is
    freed as they go: 100,000 stubs freed in one go held the loop 60-140 ms (~0.6 µs each:
    a step of 1,500 is about 1 ms)."""
    for container in held:
        while container:
            if isinstance(container, dict):
                for _ in range(min(step, len(container))):
                    container.popitem()
            else:
                del container[-step:]
            yield


async def run_in_slices(steps: Steps[T]) -> T:
    """Drive ``steps`` to its end, pausing between steps; its return value."""
    slices = Slices()
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
        await slices.pause()


def drain(steps: Steps[T]) -> T:
    """Run ``steps`` to its end at once (off the loop, or where it is known to be short)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
