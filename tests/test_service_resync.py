"""VirtualService's resync after a shared store's listener reconnects (``on_change("*")``).

The indexes playback holds are rebuilt from the store and swapped in, not dropped: while
the store is down again, playback keeps the index it has (a dropped one would make the next
playback wait for the store, a 503); once the store answers, the changes missed meanwhile
are in the new index.
"""

from __future__ import annotations

import asyncio

import pytest

from simulacra.errors import Unavailable
from simulacra.store.memory import MemoryStore
from simulacra.virtual.model import Response, Scenario, Stub
from simulacra.virtual.service import VirtualService

SC = "localhost:resync"


def stub(body: str) -> Stub:
    return Stub(SC, {"method": "POST", "bodyPatterns": {"contains": [body]}}, [Response(200, body)])


def test_a_resync_keeps_the_held_index_until_the_store_answers(monkeypatch) -> None:
    async def body() -> None:
        store = MemoryStore()
        await store.open()
        svc = VirtualService(store)
        await svc.start()
        await store.create_scenario(Scenario(SC, "2026-01-01"))
        await store.insert_stub(stub("<a/>"))
        held = await svc._index(SC)
        assert [s.request for s in held.stubs] == [stub("<a/>").request]

        await store.insert_stub(stub("<b/>"))  # a change whose NOTIFY was missed
        read = store.list_stubs

        async def down(*args: object, **kwargs: object) -> list[Stub]:
            raise Unavailable("the store is unavailable")

        monkeypatch.setattr(store, "list_stubs", down)
        with pytest.raises(Unavailable):
            await svc.on_change("*", "")
        assert svc._indexes[SC] is held  # still answering, as before the reconnect

        monkeypatch.setattr(store, "list_stubs", read)
        await svc.on_change("*", "")
        rebuilt = svc._indexes[SC]
        assert rebuilt is not held
        assert len(rebuilt.stubs) == 2  # the missed change is in
        await store.close()

    asyncio.run(body())
