"""The chunk queue: claim, progress, completion, and taking back the work of dead workers.

Every write a worker makes about a chunk is guarded by ``status=running AND
worker=me AND fence=my claim's token``: zero rows updated means another worker
(or the stale sweep) took the chunk, and the caller must stop writing it. The
token (``Chunk.fence``) rises with every claim, so even a chunk that comes back
to the same worker is not confused with its earlier claim.

Times are the database's (jobs.models.clock): a host with a skewed clock is
neither taken for dead nor able to take others' work for theirs.

Lock order: where a transaction locks a batch and its chunks, it locks the
batch first (cancel, finalize, failing a batch). The claim locks chunk rows
only, and stamps the batch's ``started_at`` after its transaction committed,
so no transaction holds a chunk while it waits for a batch (no deadlock).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Collection
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, Worker, WorkerState
from jobs.models.clock import Now, ago, db_now
from jobs.services import counters, loads, parts, scheduling, share
from jobs.services.parts import Part

log = logging.getLogger("batchsite.worker")


def register_worker(
    worker_id: str, device: str, pid: int, state: str = WorkerState.IDLE, loaded_model: str = "", ray_node: str = ""
) -> Worker:
    worker, _ = Worker.objects.update_or_create(
        pk=worker_id,
        defaults=dict(
            host=socket.gethostname(),
            pid=pid,
            device=device,
            state=state,
            heartbeat_at=Now(),
            stopped_at=None,
            loaded_model=loaded_model,
            ray_node=ray_node,
        ),
    )
    return worker


def heartbeat(worker_id: str, **fields: Any) -> bool:
    """Refresh the worker's row; False if the row is gone (the caller registers again)."""
    return Worker.objects.filter(pk=worker_id).update(heartbeat_at=Now(), **fields) == 1


def stop_worker(worker_id: str) -> None:
    Worker.objects.filter(pk=worker_id).update(state=WorkerState.STOPPED, stopped_at=Now(), loaded_model="")


def silent_worker(cutoff: Any) -> Q:
    """Chunks whose worker is gone, stopped, or silent since ``cutoff``."""
    return Q(worker__isnull=True) | Q(worker__heartbeat_at__lt=cutoff) | Q(worker__stopped_at__isnull=False)


def claim_next(worker_id: str, model: str | None = None, skip_models: Collection[str] = ()) -> Chunk | None:
    """Claim the chunk the scheduling policy picks for this worker, in one short transaction.

    The policy (jobs/services/scheduling/policy.py) names a model, or the
    queue's head whatever its model; the claim then takes that model's oldest
    pending chunk (oldest batch, then chunk index), so each model's batches
    run in FIFO order. ``model``: the worker keeping its engine fed with the
    model it has loaded wants a chunk for that model only, and only if the
    policy would give it one (under fifo: if the queue's head is for it).
    Models this worker failed to load lately are skipped (jobs.services.loads),
    and so are batches that are failing.
    Batches of ``skip_models`` (models this worker's devices do not fit) are
    passed over, by the policy too, and left to a worker that fits.
    With several users queued and fair share on, the policy sees and the
    claim takes only the chosen user's batches (scheduling/fairness.py); a
    batch's priority comes before its age.

    PostgreSQL: FOR UPDATE OF the chunk row SKIP LOCKED, so concurrent workers
    skip each other's candidates instead of queueing on them. SQLite: the
    IMMEDIATE transaction holds the database's write lock, which serialises
    claims. Either way the UPDATE re-checks ``status=pending`` and its row
    count decides, so a lost race is a miss, never a double claim.
    """
    with transaction.atomic():
        policy, pick = scheduling.choose(worker_id, db_now(), loaded=model, unfit=frozenset(skip_models))
        if pick is None or (model is not None and pick.model not in (None, model)):
            return None
        candidates = (
            Chunk.objects.pending()
            .filter(batch__status=BatchStatus.IN_PROGRESS, batch__expires_at__gt=Now(), batch__errors__isnull=True)
            .exclude(batch__model__in=loads.backing_off(worker_id))
            .exclude(batch__model__in=list(skip_models))
        )
        if pick.model is not None:
            candidates = candidates.filter(batch__model=pick.model)
        if pick.owner is not None:
            candidates = candidates.filter(batch__owner_id=pick.owner)  # fair share chose whose turn it is
        # Queue order, with a batch's priority first (all normal: the seed's FIFO).
        candidates = candidates.order_by("-batch__priority", "batch__created_at", "batch_id", "index")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        chunk = candidates.select_related("batch").first()
        if chunk is None or (model is not None and chunk.batch.model != model):
            return None
        # The counts are not reset: they are the recorded parts' (see release_chunk).
        claimed = Chunk.objects.filter(pk=chunk.pk, status=ChunkStatus.PENDING).update(
            status=ChunkStatus.RUNNING,
            worker_id=worker_id,
            attempts=F("attempts") + 1,
            fence=F("fence") + 1,
            claimed_at=Now(),
        )
        if claimed != 1:
            return None
    # Its own statement, after the chunk's lock is released (see Lock order above).
    Batch.objects.filter(pk=chunk.batch_id, started_at__isnull=True).update(started_at=Now())
    chunk = Chunk.objects.select_related("batch").get(pk=chunk.pk)
    log.info(
        "claimed %s (lines %d-%d, attempt %d, fence %d) model=%s scheduler=%s (%s)",
        chunk,
        chunk.first_line,
        chunk.first_line + chunk.request_count - 1,
        chunk.attempts,
        chunk.fence,
        chunk.batch.model,
        policy,
        pick.reason,
    )
    return chunk


def _mine(chunk: Chunk, worker_id: str) -> Any:
    return Chunk.objects.filter(pk=chunk.pk, status=ChunkStatus.RUNNING, worker_id=worker_id, fence=chunk.fence)


def report_progress(chunk: Chunk, worker_id: str, completed: int, failed: int) -> bool:
    """Live counts of a running chunk; False if the chunk is no longer ours."""
    return _mine(chunk, worker_id).update(completed=completed, failed=failed) == 1


def _with(chunk: Chunk, part: Part | None) -> list[Part]:
    return [*parts.recorded(chunk), *([part] if part is not None else [])]


def end_chunk(chunk: Chunk, worker_id: str, part: Part | None, cut_short: bool = False) -> bool:
    """Mark a chunk ended after its part files are on disk, recording the part; False if it was taken from us.

    ``cut_short``: the batch was cancelled or expired and the parts hold only
    the lines that ran; finalize writes the others as batch_cancelled/expired.
    """
    recorded = _with(chunk, part)
    completed, failed = parts.totals(recorded)
    return (
        _mine(chunk, worker_id).update(
            status=ChunkStatus.CANCELLED if cut_short else ChunkStatus.DONE,
            parts=[p.to_json() for p in recorded],
            completed=completed,
            failed=failed,
            usage=parts.total_usage(recorded),
            finished_at=Now(),
        )
        == 1
    )


def back_or_failed(attempts: int, reason: str, max_attempts: int | None) -> dict[str, Any]:
    """The fields for a chunk handed back: pending, or failed once it has had its tries."""
    if max_attempts is not None and attempts >= max_attempts:
        return dict(
            status=ChunkStatus.FAILED,
            finished_at=Now(),
            last_error=f"{reason} This chunk was tried {attempts} times (BATCHSITE_MAX_ATTEMPTS={max_attempts}); "
            "its remaining requests were not retried again.",
        )
    return dict(status=ChunkStatus.PENDING, last_error=f"{reason} Requeued.")


def release_chunk(
    chunk: Chunk,
    worker_id: str,
    keep: Part | None = None,
    count_attempt: bool = True,
    reason: str = "",
) -> bool:
    """Give a chunk back to the queue, recording ``keep`` (the lines this claim finished).

    ``count_attempt=False`` (shutdown, a model this worker could not load): the
    claim does not count against the chunk's tries. Counted, a chunk that has
    had BATCHSITE_MAX_ATTEMPTS tries fails instead: its unrun lines go to the
    error file with the reason.
    """
    recorded = _with(chunk, keep)
    completed, failed = parts.totals(recorded)
    if count_attempt:
        fields = back_or_failed(chunk.attempts, reason, settings.BATCHSITE_WORKER.max_attempts)
    else:
        fields = dict(status=ChunkStatus.PENDING, attempts=F("attempts") - 1, last_error=reason)
    return (
        _mine(chunk, worker_id).update(
            worker=None,
            parts=[p.to_json() for p in recorded],
            completed=completed,
            failed=failed,
            usage=parts.total_usage(recorded),
            **fields,
        )
        == 1
    )


def release_orphans(worker_id: str) -> int:
    """Chunks still marked as this worker's while it runs none: left by an
    error mid-chunk (the database went away, say). Back to the queue."""
    orphans = list(Chunk.objects.running().filter(worker_id=worker_id))
    for chunk in orphans:
        if release_chunk(chunk, worker_id, reason="The worker running it lost track of it."):
            refresh_batch_counts(chunk.batch_id)
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


def sweep_stale(stale_after: float, max_attempts: int, batch_ids: Collection[str] | None = None) -> list[str]:
    """Take back chunks whose worker stopped heart-beating; return the batches touched.

    A chunk that has already had ``max_attempts`` tries is failed instead, so
    a chunk that kills every worker that takes it cannot loop forever. Parts
    it recorded before (lines finished by earlier claims) are kept.
    """
    stale = Chunk.objects.running().filter(silent_worker(ago(stale_after)))
    if batch_ids is not None:
        stale = stale.filter(batch_id__in=batch_ids)
    touched = []
    for chunk in list(stale.select_related("batch")):
        recorded = parts.recorded(chunk)
        completed, failed = parts.totals(recorded)
        reason = f"Worker {chunk.worker_id} stopped heart-beating while running it."
        fields = back_or_failed(chunk.attempts, reason, max_attempts)
        changed = Chunk.objects.filter(
            pk=chunk.pk, status=ChunkStatus.RUNNING, worker_id=chunk.worker_id, fence=chunk.fence
        ).update(worker=None, completed=completed, failed=failed, **fields)
        if changed:
            log.warning("took back chunk %s from silent worker %s (attempt %d)", chunk, chunk.worker_id, chunk.attempts)
            share.record_claim(chunk)  # its worker's time until now counts to the owner's share
            # Lines its last progress report counted that no checkpoint holds: they run again.
            counters.add(counters.LINES_RERUN, chunk.completed + chunk.failed - completed - failed)
            refresh_batch_counts(chunk.batch_id)
            touched.append(chunk.batch_id)
    return touched


def _error_of(batch: Batch) -> tuple[str, str]:
    data = (batch.errors or {}).get("data") or [{}]
    return str(data[0].get("code") or "batch_failed"), str(data[0].get("message") or "The batch failed.")


def stop_due_batches(batch_ids: Collection[str] | None = None) -> list[str]:
    """Skip the pending chunks of batches that will run no more: cancelled or past their
    expiry (their lines become batch_cancelled/expired) or failing (the batch's error).
    Return those with nothing running."""
    due = Batch.objects.filter(
        Q(status=BatchStatus.CANCELLING)
        | Q(status=BatchStatus.IN_PROGRESS, expires_at__lte=Now())
        | Q(status=BatchStatus.IN_PROGRESS, errors__isnull=False)
    )
    if batch_ids is not None:
        due = due.filter(pk__in=batch_ids)
    ready = []
    for batch in due:
        pending = Chunk.objects.filter(batch_id=batch.pk, status=ChunkStatus.PENDING)
        if batch.status == BatchStatus.IN_PROGRESS and batch.errors is not None and batch.cancelling_at is None:
            code, message = _error_of(batch)
            pending.update(status=ChunkStatus.FAILED, error_code=code, last_error=message, finished_at=Now())
        else:
            pending.update(status=ChunkStatus.CANCELLED, finished_at=Now())
        if not Chunk.objects.filter(batch_id=batch.pk, status=ChunkStatus.RUNNING).exists():
            ready.append(batch.pk)
    return ready


def batches_to_stop(batch_ids: set[str]) -> set[str]:
    """Of these batches, the ones cancelled or past their expiry: their running lines are aborted."""
    if not batch_ids:
        return set()
    return set(
        Batch.objects.filter(pk__in=batch_ids)
        .filter(Q(status=BatchStatus.CANCELLING) | Q(expires_at__lte=Now()))
        .values_list("pk", flat=True)
    )


def dead_finalizer(cutoff: Any) -> Q:
    """A finalize nobody is doing: its worker went silent or stopped, or (assembled by
    the API, with no worker) its lease ran out."""
    return (
        Q(finalizer__isnull=True, finalize_started_at__isnull=True)
        | Q(finalizer__isnull=True, finalize_started_at__lt=cutoff)
        | Q(finalizer__heartbeat_at__lt=cutoff)
        | Q(finalizer__stopped_at__isnull=False)
    )


def finishable(worker_id: str | None = None) -> Q:
    """Batches a finalize may take: unfinished ones, and finalizes no one is doing (or that
    this worker left when its finalize raised)."""
    cutoff = ago(settings.BATCHSITE_WORKER.stale_after_seconds)
    mine = Q(finalizer_id=worker_id) if worker_id is not None else Q(pk__in=[])
    return Q(status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING]) | (
        Q(status=BatchStatus.FINALIZING) & (dead_finalizer(cutoff) | mine)
    )


def finishable_batches(worker_id: str | None = None) -> list[str]:
    """Batches with no chunk left to run that nobody is finalizing."""
    unfinished = Chunk.objects.filter(batch_id=OuterRef("pk"), status__in=[ChunkStatus.PENDING, ChunkStatus.RUNNING])
    return list(
        Batch.objects.filter(finishable(worker_id))
        .exclude(Exists(unfinished))
        .in_queue_order()
        .values_list("pk", flat=True)
    )
