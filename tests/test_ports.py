"""Ports: which ports an instance serves for bound sessions (a fake listener, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from simulacra.dataplane.playback import PlaybackRoutes
from simulacra.dataplane.ports import Ports, parse_port
from simulacra.errors import Conflict, Invalid
from simulacra.virtual.model import DORMANT, PLAYBACK, Session
from simulacra.virtual.tracking import Tracker


class FakeListener:
    """Listens on nothing; remembers what is open and refuses ``taken`` ports."""

    def __init__(self, taken: set[int] | None = None) -> None:
        self.open: set[int] = set()
        self.taken = taken or set()
        self.next_free = 40000

    async def __call__(self, port: int) -> tuple[int, Callable[[], None]]:
        if port in self.taken:
            raise OSError(98, "Address already in use")
        if port == 0:
            port, self.next_free = self.next_free, self.next_free + 1
        self.open.add(port)
        return port, lambda: self.open.discard(port)


def ports(taken: set[int] | None = None) -> tuple[Ports, FakeListener]:
    listener = FakeListener(taken)
    served = Ports(PlaybackRoutes(Tracker(enabled=False)), main_port=8900, host="127.0.0.1")
    served.listener = listener
    return served, listener


def session(name: str, port: int | None, status: str = PLAYBACK) -> Session:
    return Session("localhost", name, "localhost:sc", status, None, None, port)


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_reconcile_serves_exactly_the_playing_bound_sessions() -> None:
    served, listener = ports()
    run(served.reconcile([session("a", 9001), session("b", 9002, DORMANT), session("c", None)]))
    assert listener.open == {9001}
    assert served.routes.bound[9001].session == "a"
    run(served.reconcile([session("b", 9002)]))
    assert listener.open == {9002} and set(served.routes.bound) == {9002}


def test_a_reserved_port_survives_a_reconcile_until_its_session_begins() -> None:
    served, listener = ports()
    port = run(served.reserve(0))
    run(served.reconcile([]))  # another change arrives while the session is beginning
    assert port in listener.open
    run(served.reconcile([session("a", port)]))  # begun: adopted
    run(served.reconcile([]))  # ended: closed
    assert listener.open == set() and not served.routes.bound


def test_a_session_that_does_not_begin_releases_its_port() -> None:
    served, listener = ports()
    port = run(served.reserve(9005))
    served.release(port)
    assert listener.open == set()


def test_refusals() -> None:
    served, _ = ports(taken={9009})
    with pytest.raises(Conflict, match="own port"):
        run(served.reserve(8900))
    with pytest.raises(Conflict, match="cannot be bound"):
        run(served.reserve(9009))
    run(served.reconcile([session("a", 9001)]))
    with pytest.raises(Conflict, match="bound already by session a"):
        run(served.reserve(9001))


def test_a_port_another_worker_holds_is_skipped_not_fatal() -> None:
    served, listener = ports(taken={9001})
    run(served.reconcile([session("a", 9001), session("b", 9002)]))
    assert listener.open == {9002}


@pytest.mark.parametrize("value", [80, 1023, 65536, -1, "9001", 1.5, True, None])
def test_parse_port_refuses(value: object) -> None:
    with pytest.raises(Invalid, match="port"):
        parse_port(value)


@pytest.mark.parametrize("value", [0, 1024, 65535])
def test_parse_port_accepts(value: int) -> None:
    assert parse_port(value) == value
