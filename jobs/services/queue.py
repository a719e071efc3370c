"""The chunk queue: claim, progress, completion, and taking back the work of dead workers.

Every write about a chunk that a worker makes is guarded by
``status=running AND worker=me``: zero rows updated means another worker (or
the stale sweep) took the chunk, and the caller must stop writing it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, Worker, WorkerState

log = logging.getLogger("batchsite.worker")


def register_worker(
    worker_id: str, device: str, pid: int, state: str = WorkerState.IDLE, loaded_model: str = ""
) -> Worker:
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        pk=worker_id,
        defaults=dict(
            host=socket.gethostname(),
            pid=pid,
            device=device,
            state=state,
            heartbeat_at=now,
            stopped_at=None,
            loaded_model=loaded_model,
        ),
    )
    return worker


def heartbeat(worker_id: str, **fields: Any) -> bool:
    """Refresh the worker's row; False if the row is gone (the caller registers again)."""
    return Worker.objects.filter(pk=worker_id).update(heartbeat_at=timezone.now(), **fields) == 1


def stop_worker(worker_id: str) -> None:
    Worker.objects.filter(pk=worker_id).update(state=WorkerState.STOPPED, stopped_at=timezone.now(), loaded_model="")


def claim_next(worker_id: str, model: str | None = None, skip_models: Collection[str] = ()) -> Chunk | None:
    """Claim the oldest pending chunk (oldest batch, then chunk index) in one short transaction.

    With ``model``, only if that oldest chunk is for ``model``: a worker
    keeping its engine fed does not jump the queue to avoid a swap (FIFO).
    Batches of ``skip_models`` (models this worker's devices do not fit) are
    passed over, left to a worker that fits.

    PostgreSQL: FOR UPDATE OF the chunk row SKIP LOCKED, so concurrent workers
    skip each other's candidates instead of queueing on them. SQLite: the
    IMMEDIATE transaction holds the database's write lock, which serialises
    claims. Either way the UPDATE re-checks ``status=pending`` and its row
    count decides, so a lost race is a miss, never a double claim.
    """
    now = timezone.now()
    with transaction.atomic():
        candidates = (
            Chunk.objects.pending()
            .filter(batch__status=BatchStatus.IN_PROGRESS, batch__expires_at__gt=now)
            .exclude(batch__model__in=list(skip_models))
            .in_queue_order()
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        chunk = candidates.select_related("batch").first()
        if chunk is None or (model is not None and chunk.batch.model != model):
            return None
        claimed = Chunk.objects.filter(pk=chunk.pk, status=ChunkStatus.PENDING).update(
            status=ChunkStatus.RUNNING,
            worker_id=worker_id,
            attempts=F("attempts") + 1,
            claimed_at=now,
            completed=0,
            failed=0,
            usage=None,
        )
        if claimed != 1:
            return None
        Batch.objects.filter(pk=chunk.batch_id, started_at__isnull=True).update(started_at=now)
    chunk = Chunk.objects.select_related("batch").get(pk=chunk.pk)
    log.info(
        "claimed %s (lines %d-%d, attempt %d) model=%s",
        chunk,
        chunk.first_line,
        chunk.first_line + chunk.request_count - 1,
        chunk.attempts,
        chunk.batch.model,
    )
    return chunk


def _mine(chunk_id: int, worker_id: str) -> Any:
    return Chunk.objects.filter(pk=chunk_id, status=ChunkStatus.RUNNING, worker_id=worker_id)


def report_progress(chunk_id: int, worker_id: str, completed: int, failed: int) -> bool:
    """Live counts of a running chunk; False if the chunk is no longer ours."""
    return _mine(chunk_id, worker_id).update(completed=completed, failed=failed) == 1


def end_chunk(
    chunk_id: int, worker_id: str, completed: int, failed: int, usage: dict[str, int], cut_short: bool = False
) -> bool:
    """Mark a chunk ended after its part files are on disk; False if it was taken from us.

    ``cut_short``: the batch was cancelled or expired and the part holds only
    the lines that ran; finalize writes the others as batch_cancelled/expired.
    """
    return (
        _mine(chunk_id, worker_id).update(
            status=ChunkStatus.CANCELLED if cut_short else ChunkStatus.DONE,
            completed=completed,
            failed=failed,
            usage=usage,
            finished_at=timezone.now(),
        )
        == 1
    )


def release_chunk(chunk_id: int, worker_id: str, count_attempt: bool = True) -> bool:
    """Give a chunk back to the queue (shutdown, lost engine); its partial results are dropped."""
    attempts = F("attempts") if count_attempt else F("attempts") - 1
    return (
        _mine(chunk_id, worker_id).update(
            status=ChunkStatus.PENDING,
            worker=None,
            completed=0,
            failed=0,
            usage=None,
            attempts=attempts,
        )
        == 1
    )


def release_orphans(worker_id: str) -> int:
    """Chunks still marked as this worker's while it runs none: left by an
    error mid-chunk (the database went away, say). Back to the queue."""
    orphans = list(Chunk.objects.running().filter(worker_id=worker_id).values_list("pk", "batch_id"))
    for chunk_id, batch_id in orphans:
        if release_chunk(chunk_id, worker_id):
            refresh_batch_counts(batch_id)
    return len(orphans)


def refresh_batch_counts(batch_id: str) -> None:
    """request_counts from the chunks' live counts, in one statement.

    Derived rather than incremented, so a chunk that is taken back and run
    again never counts twice.
    """

    def total(field: str) -> Coalesce:
        sums = Chunk.objects.filter(batch_id=OuterRef("pk")).values("batch_id").annotate(n=Sum(field)).values("n")
        return Coalesce(Subquery(sums, output_field=IntegerField()), Value(0))

    Batch.objects.filter(pk=batch_id, status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING]).update(
        completed=total("completed"), failed=total("failed")
    )


def sweep_stale(stale_after: float, max_attempts: int) -> list[str]:
    """Take back chunks whose worker stopped heart-beating; return the batches touched.

    A chunk that has already had ``max_attempts`` tries is failed instead, so
    a chunk that kills every worker that takes it cannot loop forever.
    """
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = (
        Chunk.objects.running()
        .filter(Q(worker__isnull=True) | Q(worker__heartbeat_at__lt=cutoff) | Q(worker__stopped_at__isnull=False))
        .values_list("pk", "worker_id", "attempts", "batch_id")
    )
    touched = []
    for chunk_id, worker_id, attempts, batch_id in list(stale):
        guard = Chunk.objects.filter(pk=chunk_id, status=ChunkStatus.RUNNING, worker_id=worker_id)
        if attempts >= max_attempts:
            changed = guard.update(
                status=ChunkStatus.FAILED,
                worker=None,
                finished_at=timezone.now(),
                completed=0,
                failed=0,
                last_error=f"Worker {worker_id} stopped while running this chunk, {attempts} times "
                f"(BATCHSITE_MAX_ATTEMPTS={max_attempts}); its requests were not retried again.",
            )
        else:
            changed = guard.update(
                status=ChunkStatus.PENDING,
                worker=None,
                completed=0,
                failed=0,
                usage=None,
                last_error=f"Worker {worker_id} stopped heart-beating; requeued.",
            )
        if changed:
            log.warning(
                "took back chunk %s#%d from silent worker %s (attempt %d)",
                batch_id,
                Chunk.objects.get(pk=chunk_id).index,
                worker_id,
                attempts,
            )
            refresh_batch_counts(batch_id)
            touched.append(batch_id)
    return touched


def stop_due_batches() -> list[str]:
    """Cancelled or expired batches: skip their pending chunks; return those with nothing running."""
    now = timezone.now()
    due = Batch.objects.filter(
        Q(status=BatchStatus.CANCELLING) | Q(status=BatchStatus.IN_PROGRESS, expires_at__lte=now)
    ).values_list("pk", flat=True)
    ready = []
    for batch_id in due:
        Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.PENDING).update(
            status=ChunkStatus.CANCELLED, finished_at=now
        )
        if not Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.RUNNING).exists():
            ready.append(batch_id)
    return ready


def batches_to_stop(batch_ids: set[str]) -> set[str]:
    """Of these batches, the ones cancelled or past their expiry: their running lines are aborted."""
    if not batch_ids:
        return set()
    now = timezone.now()
    return set(
        Batch.objects.filter(pk__in=batch_ids)
        .filter(Q(status=BatchStatus.CANCELLING) | Q(expires_at__lte=now))
        .values_list("pk", flat=True)
    )


def finishable_batches() -> list[str]:
    """Batches with no chunk left to run that have not been finalized (or whose finalizer died)."""
    cutoff = timezone.now() - timedelta(seconds=settings.BATCHSITE_WORKER.stale_after_seconds)
    unfinished = Chunk.objects.filter(batch_id=OuterRef("pk"), status__in=[ChunkStatus.PENDING, ChunkStatus.RUNNING])
    dead_finalizer = (
        Q(finalizer__isnull=True) | Q(finalizer__heartbeat_at__lt=cutoff) | Q(finalizer__stopped_at__isnull=False)
    )
    return list(
        Batch.objects.filter(
            Q(status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING])
            | (Q(status=BatchStatus.FINALIZING) & dead_finalizer)
        )
        .exclude(Exists(unfinished))
        .in_queue_order()
        .values_list("pk", flat=True)
    )
