"""A primed start for ``VllmEngine.run``: hold vLLM's scheduler while the first window is queued.

Requests reach the engine one by one as vLLM's serving layer renders them;
without this the first steps run tiny batches (``LLM.chat`` renders everything
before its first step). The hold ends when the window is queued, or after
PRIME_MAX_S (per PRIME_LINES lines of window) whatever the caller's iterator does; it
never outlives that.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# Longest the scheduler is held while the first window is queued, per PRIME_LINES
# lines of window (2 s for the default CPU window of 512): a larger window takes
# proportionally longer to render, and the hold must outlast that to be of use.
PRIME_MAX_S = 2.0
PRIME_LINES = 512


class Prime:
    submitted = 0  # written by the caller's thread, read on the loop (plain attribute, GIL-safe)
    filled = False
    task: asyncio.Task[Any] | None = None  # the hold; kept referenced, asyncio holds tasks weakly


def start_primed(
    call: Callable[..., Any],
    loop: asyncio.AbstractEventLoop,
    client: Any,
    results: queue.SimpleQueue[Any],
    window: int = PRIME_LINES,
) -> Prime | None:
    """Pause the scheduler (``call`` runs a coroutine on ``loop`` and waits for it) and start
    the task that resumes it once ``prime.filled`` and every submitted request is queued."""
    prime = Prime()

    async def hold(paused: asyncio.Event) -> None:
        try:
            await client.pause_generation(mode="keep", clear_cache=False)
        finally:
            paused.set()
        try:
            deadline = loop.time() + PRIME_MAX_S * max(1.0, window / PRIME_LINES)
            while loop.time() < deadline:
                if prime.filled and client.get_num_unfinished_requests() + results.qsize() >= prime.submitted:
                    break
                await asyncio.sleep(0.002)
        finally:
            await client.resume_generation()

    async def start() -> None:
        paused = asyncio.Event()
        task = prime.task = loop.create_task(hold(paused))
        await paused.wait()
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    try:
        call(start(), timeout=30)
    except Exception:  # e.g. an engine without pause support: run unprimed
        logger.warning("could not hold the scheduler for priming", exc_info=True)
        return None
    return prime
