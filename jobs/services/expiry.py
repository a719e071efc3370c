"""Batches past their window (or cancelled) end even when no worker is running.

Workers expire and finish such batches as part of their loop; without a live
worker nothing would, and a batch would stay ``in_progress`` (or
``cancelling``) past its window for good. ``expire_overdue`` does it: the
housekeeper calls it every few seconds and finalizes what it stopped; the API
calls it when a user reads their batches with ``finalize=False``, which stops
the batch's chunks and hands its finalize over (the batch shows
``finalizing``) instead of holding the request while a whole batch is
assembled. It leaves alone every batch a live worker is still running a chunk
of: that worker aborts its lines and ends it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, Worker
from jobs.models.clock import Now
from jobs.services import queue, stranded


def expire_overdue(batch_ids: list[str] | None = None, owner: Any = None, finalize: bool = True) -> list[str]:
    """Move overdue batches to ``expired`` (and cancelled ones to ``cancelled``) with their
    partial results, when no live worker is running them; return those that ended (or,
    ``finalize=False``, were handed over to be finalized: stranded.hand_over)."""
    conf = settings.BATCHSITE_WORKER
    live = Worker.objects.live(conf.stale_after_seconds).values("pk")
    running_live = Chunk.objects.filter(batch_id=OuterRef("pk"), status=ChunkStatus.RUNNING, worker__in=live)
    due = Batch.objects.filter(
        Q(status=BatchStatus.IN_PROGRESS, expires_at__lte=Now()) | Q(status=BatchStatus.CANCELLING)
    ).exclude(Exists(running_live))
    if batch_ids is not None:
        due = due.filter(pk__in=batch_ids)
    if owner is not None:
        due = due.owned_by(owner)
    ids = list(due.values_list("pk", flat=True))
    if not ids:
        return []
    # Chunks held by dead workers go back first, so that they can be cut short too.
    queue.sweep_stale(conf.stale_after_seconds, conf.max_attempts, batch_ids=ids)
    ended = []
    for batch_id in queue.stop_due_batches(batch_ids=ids):
        done = stranded.finalize_unowned(batch_id) is not None if finalize else stranded.hand_over(batch_id)
        if done:
            ended.append(batch_id)
    return ended
