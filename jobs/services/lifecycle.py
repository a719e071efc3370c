"""The one way a batch reaches a terminal status.

Every terminal transition (completed, failed, expired, cancelled), whichever
process makes it (a worker finalizing, the API cancelling, validation failing
at create), goes through ``end_batch``: a guarded UPDATE, so a transition
that lost a race changes nothing, and the batch's event recorded in the same
transaction, so no terminal batch is ever without its event. A batch that
cannot run on (its model will not load) is first marked failing
(``mark_failing``); its finalize then ends it ``failed`` through ``end_batch``,
with the results of the lines that did run.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import TERMINAL_STATUSES, Batch, BatchStatus, Chunk, ChunkStatus
from jobs.models.clock import Now
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
            .update(status=status, **{STAMPS[status]: Now()}, **fields)
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


def error_list(code: str, message: str) -> dict[str, Any]:
    """OpenAI's ``errors`` object for a batch that failed as a whole (no line to name)."""
    return {"object": "list", "data": [{"code": code, "message": message, "param": None, "line": None}]}


def mark_failing(batch_id: str, code: str, message: str) -> bool:
    """The batch cannot run on (its model will not load, or is gone): it will end ``failed``
    with ``code``. Its pending chunks fail now (their lines go to the error file with
    ``code``); chunks other workers are running are left to finish, and what ran is kept.
    The caller then finalizes it. False if it had already ended or was already failing."""
    with transaction.atomic():
        # The batch's row first, then its chunks: the lock order of every such path.
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.is_terminal or batch.errors is not None:
            return False
        Batch.objects.filter(pk=batch_id).update(errors=error_list(code, message))
        Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.PENDING).update(
            status=ChunkStatus.FAILED, error_code=code, last_error=message, finished_at=Now()
        )
    return True
