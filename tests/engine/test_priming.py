"""The primed start (jobs/engine/priming.py) and the engine window it fills (BATCHSITE_ENGINE_WINDOW).

The client here is a labelled stand-in: these tests are about how long the
scheduler is held, not about vLLM (tests/engine/test_vllm_engine.py runs the
primed start on the real engine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchsite.env import EnvError, Reader, read_worker_settings
from jobs.engine import priming
from jobs.engine.vllm_engine import VllmEngine
from jobs.worker import GpuWorker


class HeldClient:
    """Stand-in for AsyncLLM's pause/resume: records when the hold began and ended."""

    def __init__(self) -> None:
        self.paused_at = self.resumed_at = 0.0
        self.unfinished = 0

    async def pause_generation(self, mode: str, clear_cache: bool) -> None:
        self.paused_at = time.monotonic()

    async def resume_generation(self) -> None:
        self.resumed_at = time.monotonic()

    def get_num_unfinished_requests(self) -> int:
        return self.unfinished


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def held_for(loop: asyncio.AbstractEventLoop, client: HeldClient, window: int, fill: bool = False) -> float:
    def call(coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    prime = priming.start_primed(call, loop, client, queue.SimpleQueue(), window)
    assert prime is not None
    if fill:
        prime.submitted, prime.filled = 3, True
        client.unfinished = 3  # every submitted line is queued in the engine
    deadline = time.monotonic() + 10
    while not client.resumed_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.resumed_at, "the scheduler was never resumed"
    return client.resumed_at - client.paused_at


def test_the_hold_ends_once_the_window_is_queued(loop, monkeypatch):
    monkeypatch.setattr(priming, "PRIME_MAX_S", 5.0)
    assert held_for(loop, HeldClient(), 512, fill=True) < 1.0


def test_a_window_never_filled_is_held_in_proportion_to_its_size_then_released(loop, monkeypatch):
    # A larger window takes longer to render, so it may be held longer; never for good.
    monkeypatch.setattr(priming, "PRIME_MAX_S", 0.1)
    assert 0.09 <= held_for(loop, HeldClient(), 512) < 1.0
    assert 0.39 <= held_for(loop, HeldClient(), 2048) < 2.0
    assert 0.09 <= held_for(loop, HeldClient(), 8) < 1.0  # a small window keeps the whole cap


def test_the_engine_window_setting_parses_strictly_and_reaches_the_engine(settings):
    assert read_worker_settings(Reader({})).engine_window == 0  # 0: twice max_num_seqs
    assert read_worker_settings(Reader({"BATCHSITE_ENGINE_WINDOW": "4_096"})).engine_window == 4096
    assert read_worker_settings(Reader({"BATCHSITE_ENGINE_WINDOW": ""})).engine_window == 0  # set but empty: unset
    for bad in ("-1", "2k", "1e3", "\ud800", "9" * 5000):
        with pytest.raises(EnvError, match="BATCHSITE_ENGINE_WINDOW"):
            read_worker_settings(Reader({"BATCHSITE_ENGINE_WINDOW": bad}))
    settings.BATCHSITE_WORKER = dataclasses.replace(settings.BATCHSITE_WORKER, engine_window=2048)
    engine = GpuWorker(VllmEngine()).engine
    assert engine.window == 2048  # type: ignore[attr-defined]
    assert VllmEngine().window_lines == 0  # not set: the engine's own default once loaded
