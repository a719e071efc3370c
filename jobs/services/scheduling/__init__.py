"""Where each unfinished batch stands in the queue, and when it should finish."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from jobs.models import Batch, BatchStatus


def queue_positions() -> dict[str, int]:
    """Batches still to run, oldest first: 0 is the one workers take next (or run now).

    The queue is bounded by BATCHSITE_MAX_QUEUED_BATCHES, so this is one small query.
    """
    ids = Batch.objects.filter(status=BatchStatus.IN_PROGRESS).in_queue_order().values_list("id", flat=True)
    return {batch_id: position for position, batch_id in enumerate(ids)}


def estimated_completion(batch: Batch) -> datetime | None:
    """When the batch should finish, at the rate its requests have finished so far.

    Null until a worker has started it and finished at least one request; the
    rate covers all its workers, so adding GPUs shortens the estimate.
    """
    done = batch.completed + batch.failed
    if batch.status != BatchStatus.IN_PROGRESS or batch.started_at is None or done == 0:
        return None
    now = timezone.now()
    elapsed = (now - batch.started_at).total_seconds()
    remaining = max(batch.total - done, 0)
    return now + timedelta(seconds=elapsed * remaining / done)
