"""The hot path: session -> compiled index -> stub -> next response of its sequence.

Nothing here touches the store. Indexes are built once per scenario version by
the service and handed in; counters live in memory per playback session, so a
restart replays sequences from their first response (documented).
"""

from __future__ import annotations

from simulacra.virtual.model import Response, Stub


class SequenceCounters:
    """How many times each stub has answered, per playback session."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], dict[str, int]] = {}

    def next_response(self, session_key: tuple[str, str], stub: Stub) -> Response:
        counts = self._counts.setdefault(session_key, {})
        served = counts.get(stub.id, 0)
        counts[stub.id] = served + 1
        responses = stub.responses
        # After the last response of a sequence, the last one repeats (Mirage).
        return responses[served] if served < len(responses) else responses[-1]

    def reset(self, session_key: tuple[str, str]) -> None:
        self._counts.pop(session_key, None)
