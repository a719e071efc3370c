"""The faults themselves: each patches a real function of the service with a wrapper."""

from __future__ import annotations

import functools
import logging
import os
import time
from datetime import timedelta
from typing import Any

log = logging.getLogger("batchsite.worker")


def slow_part_commits(seconds: float) -> None:
    """Hold every part write (checkpoint or final) open: a test stops the worker right there."""
    from jobs.services import parts

    original = parts.PartWriter.commit

    @functools.wraps(original)
    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        log.warning("fault: holding the part of %s#%d for %.1fs", self.batch_id, self.index, seconds)
        time.sleep(seconds)
        return original(self, *args, **kwargs)

    parts.PartWriter.commit = commit  # type: ignore[method-assign]


def slowed(function: Any, seconds: float) -> Any:
    """``function``, called ``seconds`` late."""

    @functools.wraps(function)
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return function(*args, **kwargs)

    return slow


def slow_finalize(seconds: float) -> None:
    """Hold finalize open once both files are assembled, before they are published."""
    from jobs.services import results

    results._publish = slowed(results._publish, seconds)  # type: ignore[assignment]


def skew_clock(offset: float) -> None:
    """This process's clock runs ``offset`` seconds off, as Django sees it."""
    from django.utils import timezone

    real_now = timezone.now
    timezone.now = lambda: real_now() + timedelta(seconds=offset)
    log.warning("fault: this process's clock is %+.0fs off", offset)


def install_from_env() -> None:
    """The faults a test asked a child process for (FAULT_* variables)."""
    if seconds := float(os.environ.get("FAULT_PART_PAUSE_SECONDS", "0")):
        slow_part_commits(seconds)
    if seconds := float(os.environ.get("FAULT_FINALIZE_PAUSE_SECONDS", "0")):
        slow_finalize(seconds)
    if offset := float(os.environ.get("FAULT_CLOCK_OFFSET_SECONDS", "0")):
        skew_clock(offset)
