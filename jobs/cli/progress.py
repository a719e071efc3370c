"""Waiting for a batch with a live progress bar (tqdm), and reporting how it ended."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from tqdm import tqdm

TERMINAL = ("completed", "failed", "expired", "cancelled")
# Exit codes: the batch completed; it ended otherwise; the wait was interrupted (128 + SIGINT).
OK, NOT_COMPLETED, INTERRUPTED = 0, 1, 130


def extension(batch: Any, name: str) -> Any:
    """A batchsite field the SDK's Batch model does not declare (None from OpenAI)."""
    return (batch.model_extra or {}).get(name)


def describe(batch: Any) -> str:
    """One line: status, counts, and (from batchsite) queue position and server ETA."""
    counts = batch.request_counts
    parts = [batch.status]
    if counts is not None:
        parts.append(f"{counts.completed + counts.failed}/{counts.total} done, {counts.failed} failed")
    position = extension(batch, "queue_position")
    if position:
        parts.append(f"queue position {position}")
    eta = server_eta(batch)
    if eta is not None:
        parts.append(f"server ETA {eta}")
    return ", ".join(parts)


def server_eta(batch: Any) -> str | None:
    finish = extension(batch, "estimated_completion_time")
    if not isinstance(finish, int | float) or batch.status in TERMINAL:
        return None
    return str(timedelta(seconds=max(0, round(finish - time.time()))))


def wait(client: Any, batch_id: str, poll: float, out: Any = None) -> Any:
    """Poll until the batch ends, drawing done/total, rate and the server's ETA.

    Ctrl-C propagates as KeyboardInterrupt after the bar is closed; the batch is
    left alone (the caller says how to resume).
    """
    batch = client.batches.retrieve(batch_id)
    bar = tqdm(
        total=batch.request_counts.total if batch.request_counts else None,
        unit="req",
        file=out or sys.stderr,
        dynamic_ncols=True,
        # tqdm puts ", " before the postfix itself.
        bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}]{postfix}",
    )
    try:
        while True:
            counts = batch.request_counts
            if counts is not None:
                bar.total = counts.total
                bar.update(counts.completed + counts.failed - bar.n)
            postfix = [batch.status]
            if counts is not None and counts.failed:
                postfix.append(f"{counts.failed} failed")
            position = extension(batch, "queue_position")
            if position:
                postfix.append(f"queue #{position}")
            eta = server_eta(batch)
            if eta is not None:
                postfix.append(f"ETA {eta}")
            bar.set_postfix_str(", ".join(postfix))
            if batch.status in TERMINAL:
                return batch
            time.sleep(poll)
            batch = client.batches.retrieve(batch_id)
    finally:
        bar.close()
