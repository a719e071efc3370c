"""The one way a batch reaches a terminal status.

Every terminal transition (completed, failed, expired, cancelled), whichever
process makes it (a worker finalizing, the API cancelling, validation failing
at create), goes through ``end_batch``: a guarded UPDATE, so a transition
that lost a race changes nothing, and the batch's event recorded in the same
transaction, so no terminal batch is ever without its event.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import TERMINAL_STATUSES, Batch, BatchStatus, Chunk, ChunkStatus
from jobs.services import events

# The timestamp each terminal status sets, as OpenAI's Batch object names them.
STAMPS = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


def end_batch(batch_id: str, status: BatchStatus, guard: Q, **fields: Any) -> Batch | None:
    """Move a batch matching ``guard`` to ``status``; None (and no event) if it no longer matched."""
    with transaction.atomic():
        changed = (
            Batch.objects.filter(guard, pk=batch_id)
            .exclude(status__in=TERMINAL_STATUSES)
            .update(status=status, **{STAMPS[status]: timezone.now()}, **fields)
        )
        if not changed:
            return None
        batch = Batch.objects.get(pk=batch_id)
        events.batch_ended(batch)
    return batch


def create_failed(**fields: Any) -> Batch:
    """A batch refused by validation: stored failed (as OpenAI does), with its event."""
    with transaction.atomic():
        batch = Batch.objects.create(status=BatchStatus.FAILED, failed_at=timezone.now(), **fields)
        events.batch_ended(batch)
    return batch


def fail_batch(batch_id: str, code: str, message: str) -> Batch | None:
    """Fail a batch that cannot run (its model is gone or will not load); its unfinished chunks fail too."""
    with transaction.atomic():
        Chunk.objects.filter(batch_id=batch_id).exclude(status=ChunkStatus.DONE).update(
            status=ChunkStatus.FAILED, worker=None, last_error=message
        )
        return end_batch(
            batch_id,
            BatchStatus.FAILED,
            Q(),
            errors={"object": "list", "data": [{"code": code, "message": message, "param": None, "line": None}]},
        )
