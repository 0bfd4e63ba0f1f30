"""Sessions' own ports: a playback session, or one recording an upstream, may be bound to a
port of its own, where every request plays it or is recorded (``PlaybackRoutes.bind``). The
binding is part of the stored session, so each instance binds the ports of the sessions
playing or recording in the store, after a restart too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from simulacra.errors import Conflict, Invalid, shown
from simulacra.virtual.model import Session

if TYPE_CHECKING:
    from simulacra.dataplane.playback import PlaybackRoutes

log = logging.getLogger("simulacra")

# Serves one more port: (the port bound, what closes it); OSError when it cannot bind.
Listener = Callable[[int], Awaitable[tuple[int, Callable[[], None]]]]
LOWEST_PORT = 1024  # below: privileged, refused rather than half-working as root


def parse_port(value: object) -> int:
    """A session's ``port``: 0 (any free port) or 1024-65535."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"port must be an integer (0 picks a free port), got {shown(value)}")
    if value != 0 and not LOWEST_PORT <= value <= 65535:
        raise Invalid(f"port must be 0 (any free port) or {LOWEST_PORT}-65535, got {value}")
    return value


class Ports:
    """The ports this instance serves for bound sessions, and their routes."""

    def __init__(self, routes: PlaybackRoutes, main_port: int, host: str) -> None:
        self.routes = routes
        self.main_port = main_port
        self.host = host
        # Set by the built-in server; under granian or uvicorn, ``app`` (the ASGI app)
        # is served on bound ports by a built-in server on the same loop.
        self.listener: Listener | None = None
        self.app: Any = None
        self._open: dict[int, Callable[[], None]] = {}  # port -> what closes it
        # Reserved for a session still beginning: not yet in the sessions ``reconcile``
        # sees, so it must not close them meanwhile.
        self._pending: set[int] = set()
        self._lock = asyncio.Lock()

    @property
    def open_count(self) -> int:
        """Ports open now: sessions' own, and those reserved for sessions beginning."""
        return len(self._open)

    def _listen(self) -> Listener:
        if self.listener is None:
            from simulacra.server import Server

            server = Server(self.app)
            host = self.host
            self.listener = lambda port: server.listen(host, port)
        return self.listener

    async def reserve(self, port: int) -> int:
        """Listen on ``port`` (0: a free one) for a session about to begin; the port bound.
        ``release`` it if the session does not begin; ``reconcile`` adopts it once it has.

        Conflict (409) for the main port, a port bound already or one in use.
        """
        if port == self.main_port:
            raise Conflict(f"port {port} is the server's own port")
        if port in self._open:
            taken = self.routes.bound.get(port)
            who = f" by session {taken.session}" if taken is not None else ""
            raise Conflict(f"port {port} is bound already{who}")
        try:
            bound, close = await self._listen()(port)
        except OSError as exc:
            raise Conflict(f"port {port} cannot be bound: {exc.strerror or exc}") from None
        self._open[bound] = close
        self._pending.add(bound)
        return bound

    def release(self, port: int) -> None:
        self._pending.discard(port)
        self.routes.unbind(port)
        close = self._open.pop(port, None)
        if close is not None:
            close()

    async def reconcile(self, sessions: Iterable[Session]) -> None:
        """Serve exactly the ports of ``sessions`` playing now (the service's, after any
        change here or told by the store); a port this instance cannot bind is logged."""
        async with self._lock:
            wanted = {s.port: s for s in sessions if s.port is not None and s.serves_port}
            self._pending -= wanted.keys()  # their sessions have begun
            for port in list(self._open):
                if port not in wanted and port not in self._pending:
                    self.release(port)
            for port, session in wanted.items():
                if port not in self._open:
                    try:
                        await self.reserve(port)
                    except Conflict as exc:
                        # Another worker of this instance may serve it (it bound it first).
                        log.info("session %s: %s", session.name, exc.message)
                        continue
                    self._pending.discard(port)  # its session is playing already
                self.routes.bind(port, session.host, session.name)

    def close(self) -> None:
        for port in list(self._open):
            self.release(port)
