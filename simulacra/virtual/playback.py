"""The hot path: session -> compiled index -> stub -> next response of its sequence.

Nothing here touches the store. Indexes are built once per scenario version by
the service and handed in; counters live in memory per playback session, so a
restart replays sequences from their first response (documented). With a shared
store the store assigns positions, and the service asks it (``SequenceCounters``).
"""

from __future__ import annotations

from simulacra.virtual.model import Response, Stub


class SequenceCounters:
    """How many times each stub has answered, per playback session.

    With a shared store the store assigns the positions (``served``), and this holds only
    what needs no store any more: a sequence seen past its end, whose last response repeats
    until the session is begun again (``reset``). Stubs with one response are never asked.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        # Bumped by every reset: a store's answer to a question asked before a reset may be
        # about the counters the reset dropped, so it must not settle anything (``served``).
        self.resets = 0

    def next_response(self, session_key: tuple[str, str], stub: Stub) -> Response:
        counts = self._counts.setdefault(session_key, {})
        served = counts.get(stub.id, 0)
        counts[stub.id] = served + 1
        responses = stub.responses
        # After the last response of a sequence, the last one repeats (Mirage).
        return responses[served] if served < len(responses) else responses[-1]

    def settled(self, session_key: tuple[str, str], stub: Stub) -> bool:
        """True when ``next_response`` knows the answer without a shared store: one response,
        or a sequence already played to its end. A stub whose sequence grew since (recorded
        further in another session) counts as unsettled again."""
        n = len(stub.responses)
        return n == 1 or self._counts.get(session_key, {}).get(stub.id, 0) >= n

    def served(self, session_key: tuple[str, str], stub: Stub, position: int, resets: int) -> None:
        """A shared store gave ``position`` (0-based) to a playback that asked when ``resets``
        was the count of resets: from the last position on, the sequence is settled here."""
        if position >= len(stub.responses) - 1 and resets == self.resets:
            counts = self._counts.setdefault(session_key, {})
            counts[stub.id] = max(counts.get(stub.id, 0), position + 1)

    def reset(self, session_key: tuple[str, str]) -> None:
        self.resets += 1
        self._counts.pop(session_key, None)

    def reset_all(self) -> None:
        self.resets += 1
        self._counts.clear()
