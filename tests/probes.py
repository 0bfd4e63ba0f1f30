"""What the hardening tests watch for: a condition that must come true in time, and how long
a concurrent ``GET /`` waits while other clients keep the server busy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests


def wait_for(
    check: Callable[[], bool], what: str, patience: float = 5.0, every: float = 0.02
) -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` after ``patience`` s."""
    deadline = time.monotonic() + patience
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(every)


def root_waits_while(
    base_url: str, busy: Callable[[], object], samples: int, workers: int = 1
) -> list[float]:
    """How long each of ``samples`` ``GET /`` took (sorted) while ``workers`` threads ran
    ``busy`` over and over: the event loop's share for everyone else."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            busy()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    waits: list[float] = []
    try:
        time.sleep(0.2)  # let the busy clients start
        with requests.Session() as own:
            for _ in range(samples):
                started = time.monotonic()
                assert own.get(base_url + "/", timeout=10).status_code == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return sorted(waits)
