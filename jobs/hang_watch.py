"""The engine-hang watch: when did the engine last answer, and is it the engine we wait on?

The worker's heartbeat thread asks ``stalled`` every beat; the main thread
marks the engine running (``running``), its answers (``progressed``), and the
times it does something else while the engine holds lines: feeding it (reading
input, claiming the next chunk) or finalizing a batch whose last chunk just
ended (``off_clock``). Those are not engine silence: a finalize longer than
BATCHSITE_ENGINE_STALL_SECONDS (a multi-GB output on S3) must not mark a healthy
engine dead (issue 20 item 6). The clock starts again when they end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class HangWatch:
    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.engine_running = False
        self.off = 0  # how many off_clock blocks the main thread is in (they nest: a finalize while feeding)
        self.last_progress = time.monotonic()
        self.gave_up = False

    def progressed(self) -> float:
        """The engine answered (or took a line) now; returns now."""
        self.last_progress = now = time.monotonic()
        return now

    @contextmanager
    def running(self) -> Iterator[None]:
        """The engine holds lines for the span of the block: silence counts."""
        self.progressed()
        self.gave_up = False
        self.engine_running = True
        try:
            yield
        finally:
            self.engine_running = False

    @contextmanager
    def off_clock(self) -> Iterator[None]:
        """The engine waits on us for the span of the block: silence does not count."""
        self.off += 1
        try:
            yield
        finally:
            self.off -= 1
            self.progressed()

    def stalled(self) -> str | None:
        """Why the engine is taken for hung (once per run), or None."""
        if not self.engine_running or self.off or self.gave_up:
            return None
        silent = time.monotonic() - self.last_progress
        if silent <= self.stall_seconds:
            return None
        self.gave_up = True
        return f"no progress for {silent:.0f}s (BATCHSITE_ENGINE_STALL_SECONDS={self.stall_seconds:g})"
