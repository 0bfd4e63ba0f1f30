"""`simulacra serve` tunes the garbage collector once started; an app made in a test does not."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from simulacra import cli
from simulacra.app import GC_YOUNG_THRESHOLD, create_app
from simulacra.config import Settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def started(settings: Settings) -> None:
    app = create_app(settings)

    async def run() -> None:
        starlette = app.app  # behind the data plane's ASGI adapter
        async with starlette.router.lifespan_context(starlette):
            pass

    asyncio.run(run())


def test_the_serve_command_asks_for_it_and_workers_inherit_it(monkeypatch):
    asked: list[Settings] = []
    monkeypatch.setattr(cli, "serve", lambda settings: asked.append(settings) or 0)
    assert cli.main(["serve", "--store", "memory://"]) == 0
    assert asked[0].tune_gc is True
    # serve passes its Settings to granian's workers through the environment
    assert Settings.from_env(asked[0].to_env()).tune_gc is True
    assert Settings.from_env(Settings().to_env()).tune_gc is False


def test_an_app_made_in_a_test_leaves_the_collector_alone(restored_gc):
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    started(Settings(store_url="memory://"))
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, threshold)


def test_a_server_freezes_its_startup_heap_and_collects_young_objects_less_often(restored_gc):
    gc.unfreeze()
    started(Settings(store_url="memory://", tune_gc=True))
    assert gc.get_freeze_count() > 10_000  # modules, routes, the app
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
