"""One clock per server process.

Mimic starts its clock at the epoch and moves it only when told to
(``POST /mimic/v1.1/tick``), which makes every timed behaviour deterministic. So does
Simulacra by default; ``--clock-start`` (``parse_start``) starts it elsewhere, for clients
that compare a token's expiry with the wall clock (keystoneauth re-authenticates before
every call on a token that expired in 1970).
Cloud state never schedules callbacks: it records *when* each transition is due
and computes the current state from ``clock.seconds()`` on read, so one tick
moves every due transition at once and the real clock needs no timers.
"""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime
from typing import Protocol

from simulacra.errors import Conflict, Invalid


class Clock(Protocol):
    def seconds(self) -> float: ...

    def advance(self, amount: float) -> float:
        """Move the clock forward; return the new time. Refused by the real clock."""


# How far ahead of now anything may be dated: a token expires a day after now, an
# impersonation token when asked, up to this.
AHEAD = 365 * 86400.0
# The latest time the virtual clock may show: datetime ends with the year 9999, and a clock
# ticked past it (or too near to date a token's expiry) failed every token and load
# balancer create afterwards.
LATEST = datetime(9999, 12, 31, tzinfo=UTC).timestamp() - AHEAD


def parse_start(value: str, now: float | None = None) -> float:
    """Where ``--clock-start`` puts the virtual clock, in seconds since the epoch: ``epoch``
    (0, Mimic's start), ``now`` (the wall clock; ``now`` if given), an ISO 8601 date or date
    and time (UTC unless it names an offset), or a number of seconds. ValueError, naming what
    is accepted, for anything else or a time before 1970 or past ``LATEST``."""
    text = value.strip()
    lowered = text.lower()
    if lowered == "epoch":
        return 0.0
    if lowered == "now":
        return time.time() if now is None else now
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"--clock-start {value!r}: use epoch, now, an ISO 8601 date"
                " (2024-05-01 or 2024-05-01T12:00:00Z) or seconds since the epoch"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not 0.0 <= seconds <= LATEST:  # also refuses nan and inf
        raise ValueError(
            f"--clock-start {value!r}: the clock starts between 1970-01-01 and {iso8601(LATEST)}"
        )
    return seconds


class VirtualClock:
    def __init__(self, start: float = 0.0) -> None:
        self.start = float(start)  # where a reset puts it back (--clock-start)
        self._now = self.start

    def reset(self) -> None:
        """Back to where the clock started."""
        self._now = self.start

    def seconds(self) -> float:
        return self._now

    def advance(self, amount: float) -> float:
        """Move forward ``amount`` seconds; Invalid, and the clock unmoved, for an amount that
        is not a finite, non-negative number or that would take it past ``LATEST``."""
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise Invalid("'amount' must be a number of seconds")
        try:
            seconds = float(amount)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
        if not math.isfinite(seconds):
            raise Invalid("'amount' must be a finite number of seconds")
        if seconds < 0:
            raise Invalid("the clock only moves forward: 'amount' must not be negative")
        if seconds > LATEST - self._now:  # checked before moving: nothing is half-advanced
            raise Invalid(
                f"the clock cannot pass {iso8601(LATEST)}: it is at {iso8601(self._now)},"
                f" so 'amount' may be at most {LATEST - self._now:.6f} seconds"
            )
        self._now += seconds
        return self._now


class RealClock:
    def seconds(self) -> float:
        return time.time()

    def advance(self, amount: float) -> float:
        raise Conflict("the server runs on the real clock (--realtime); it cannot be ticked")


@functools.lru_cache(maxsize=4096)
def iso8601(seconds: float) -> str:
    """Mimic's tick format: ``1970-01-01T00:00:04.000000Z``.

    Cached: listing 1,000 servers formats 2,000 timestamps, mostly the same few
    (bench/cloud.py found this was a third of the list's CPU).
    """
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
