"""Finalizes no worker will do: the housekeeper finishes them (issue 20 items 1 and 6).

A batch can be left with every chunk ended and nobody assembling it: a
finalize that failed outside a worker (a cancel, an expiry), one handed over
by the API (which answers at once and never assembles a batch itself:
``hand_over``), one whose worker died between its last chunk and its finalize.
Workers retry such batches in their loop, but without a live worker nothing
would, so the housekeeper (``manage.py run_housekeeper``, and the thread in
every worker) runs ``finish_stranded`` too.

Two finalizers never both assemble a batch: each takes it with
``results.finalize``'s guarded claim, and a live finalize is never taken
over. A finalize here has no worker row whose heartbeat shows it alive, so
its lease is ``finalize_started_at``, renewed by a thread while it runs: a
finalize longer than BATCHSITE_STALE_AFTER_SECONDS (a big output on S3) is
not mistaken for a dead one, and one whose process died is taken over once
the lease runs out.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus
from jobs.models.clock import Now, ago
from jobs.services import queue, results

log = logging.getLogger("batchsite.housekeeper")

ACTIVE = [BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING]


def _unfinished() -> Exists:
    return Exists(Chunk.objects.filter(batch_id=OuterRef("pk"), status__in=[ChunkStatus.PENDING, ChunkStatus.RUNNING]))


def hand_over(batch_id: str) -> bool:
    """Mark a batch whose chunks have all ended ``finalizing`` with no finalizer and no lease:
    the next worker or housekeeper to look takes it (queue.dead_finalizer). One guarded
    UPDATE, so a finalizer that claimed it meanwhile keeps it. False if it did not match."""
    return bool(
        Batch.objects.filter(pk=batch_id, status__in=ACTIVE)
        .exclude(_unfinished())
        .update(
            status=BatchStatus.FINALIZING,
            finalizer=None,
            finalize_started_at=None,
            finalizing_at=Coalesce(F("finalizing_at"), Now()),
        )
    )


def stranded_batches() -> list[str]:
    """Batches with no chunk left to run that no live finalizer has: finalizes nobody is doing,
    and unfinished batches whose last chunk ended longer ago than a worker takes to start
    its finalize (a worker that just ended one is left to finalize it itself)."""
    cutoff = ago(settings.BATCHSITE_WORKER.stale_after_seconds)
    recent = Exists(Chunk.objects.filter(batch_id=OuterRef("pk"), finished_at__gte=cutoff))
    return list(
        Batch.objects.filter(
            (Q(status=BatchStatus.FINALIZING) & queue.dead_finalizer(cutoff)) | (Q(status__in=ACTIVE) & ~recent)
        )
        .exclude(_unfinished())
        .in_queue_order()
        .values_list("pk", flat=True)
    )


class _Lease:
    """Renews the lease of a finalize this process is doing with no worker row (finalizer
    NULL), every third of BATCHSITE_STALE_AFTER_SECONDS, in a thread of its own (with its
    own database connection) until stopped."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.every = settings.BATCHSITE_WORKER.stale_after_seconds / 3
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"finalize-lease-{batch_id}", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                try:
                    Batch.objects.filter(
                        pk=self.batch_id, status=BatchStatus.FINALIZING, finalizer__isnull=True
                    ).update(finalize_started_at=Now())
                except Exception as exc:  # the next renewal tries again; the finalize goes on
                    log.warning("batch %s: could not renew its finalize lease: %s", self.batch_id, exc)
        finally:
            connection.close()

    def __enter__(self) -> _Lease:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()


def finalize_unowned(batch_id: str) -> Batch | None:
    """``results.finalize`` by a process with no worker row (the housekeeper), under a lease."""
    with _Lease(batch_id):
        return results.finalize(batch_id, None)


def finish_stranded() -> list[Batch]:
    """Finalize every stranded batch; return those that ended."""
    ended = []
    for batch_id in stranded_batches():
        batch = finalize_unowned(batch_id)
        if batch is not None:
            log.info("finished stranded batch %s: %s", batch_id, batch.status)
            ended.append(batch)
    return ended
