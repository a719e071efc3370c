"""The queue and the live workers as the scheduler sees them: one read, a few small queries.

The claim reads it to ask the worker's policy what to take; the queue plan
reads it to simulate what every worker will do. The queue is bounded
(BATCHSITE_MAX_QUEUED_BATCHES), so the per-batch aggregates stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q, Sum

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, Worker, WorkerState
from jobs.services import loads
from jobs.services.scheduling.policy import Situation, Waiting

# Any constant works: it only has to be the same number in every process.
_DECIDE_LOCK_KEY = 0x73636864  # "schd"


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass(frozen=True)
class QueuedBatch:
    """An unfinished batch that workers may still run (in progress, not past its expiry)."""

    id: str
    model: str
    created_at: float
    started: bool
    last_served: float | None  # latest claim or end of one of its chunks
    pending_chunks: int
    pending_requests: int
    owner: int | None = None
    priority: int = 0


@dataclass(frozen=True)
class RunningChunk:
    batch_id: str
    model: str
    worker_id: str | None
    remaining: int
    total: int
    claimed_at: float | None


@dataclass(frozen=True)
class LiveWorker:
    id: str
    host: str
    device: str
    state: str
    loaded: str | None
    scheduler: str


@dataclass(frozen=True)
class QueueState:
    now: float
    batches: tuple[QueuedBatch, ...]  # queue order
    running: tuple[RunningChunk, ...]  # chunks running on live workers
    orphaned: dict[str, tuple[int, int]]  # batch -> (chunks, requests) running on silent workers: they come back
    workers: tuple[LiveWorker, ...]

    def situation(
        self, worker_id: str, loaded: str | None, max_wait: float, unavailable: frozenset[str] = frozenset()
    ) -> Situation:
        """What ``worker_id``'s policy sees when it claims, holding ``loaded``; batches of
        ``unavailable`` models (ones it is backing off from) are not its to take."""
        served = {chunk.batch_id for chunk in self.running}
        queue = tuple(
            Waiting(
                b.id,
                b.model,
                b.created_at,
                None
                if b.id in served
                else (max(b.created_at, b.last_served or b.created_at) if b.started else b.created_at),
                b.owner,
                b.priority,
            )
            # Higher priority first, then the queue order (a stable sort keeps it among equals).
            for b in sorted(self.batches, key=lambda b: -b.priority)
            if b.pending_chunks > 0 and b.model not in unavailable
        )
        held = {w.loaded for w in self.workers if w.id != worker_id and w.loaded}
        held |= {c.model for c in self.running if c.worker_id != worker_id}
        return Situation(self.now, loaded, frozenset(held), queue, max_wait)

    def loaded_on(self, worker_id: str) -> str | None:
        return next((w.loaded for w in self.workers if w.id == worker_id), None)


def read(now: datetime) -> QueueState:
    stale = now - timedelta(seconds=settings.BATCHSITE_WORKER.stale_after_seconds)
    workers = tuple(
        LiveWorker(w.id, w.host, w.device, w.state, w.loaded_model or None, w.scheduler)
        for w in Worker.objects.filter(heartbeat_at__gte=stale, stopped_at__isnull=True)
        .exclude(state__in=[WorkerState.STOPPING, WorkerState.STOPPED])
        .order_by("id")
    )
    live = {w.id for w in workers}
    pending = Q(chunks__status=ChunkStatus.PENDING)
    rows = (
        Batch.objects.filter(status=BatchStatus.IN_PROGRESS, expires_at__gt=now)
        .in_queue_order()
        .annotate(
            pending_chunks=Count("chunks", filter=pending),
            pending_requests=Sum("chunks__request_count", filter=pending),
            last_claimed=Max("chunks__claimed_at"),
            last_finished=Max("chunks__finished_at"),
        )
        .values_list(
            "id",
            "model",
            "created_at",
            "started_at",
            "pending_chunks",
            "pending_requests",
            "last_claimed",
            "last_finished",
            "owner_id",
            "priority",
        )
    )
    batches = []
    for batch_id, model, created, started, chunks, requests, claimed, finished, owner, priority in rows:
        served = [t for t in (_ts(claimed), _ts(finished)) if t is not None]
        batches.append(
            QueuedBatch(
                batch_id,
                model,
                created.timestamp(),
                started is not None,
                max(served) if served else None,
                chunks,
                requests or 0,
                owner,
                priority,
            )
        )
    running: list[RunningChunk] = []
    orphaned: dict[str, tuple[int, int]] = {}
    for batch_id, model, worker_id, count, completed, failed, claimed in Chunk.objects.filter(
        status=ChunkStatus.RUNNING, batch__status=BatchStatus.IN_PROGRESS
    ).values_list("batch_id", "batch__model", "worker_id", "request_count", "completed", "failed", "claimed_at"):
        if worker_id in live:
            left = max(count - completed - failed, 0)
            running.append(RunningChunk(batch_id, model, worker_id, left, count, _ts(claimed)))
        else:
            # Its worker went silent: the stale sweep will hand it back whole.
            chunks, requests = orphaned.get(batch_id, (0, 0))
            orphaned[batch_id] = (chunks + 1, requests + count)
    return QueueState(now.timestamp(), tuple(batches), tuple(running), orphaned, workers)


class LiveSituation(Situation):
    """A worker's situation at its claim: read from the database when a policy first looks."""

    def __init__(
        self, worker_id: str, now: datetime, loaded: str | None, max_wait: float, unfit: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(now.timestamp(), loaded, frozenset(), (), max_wait)
        self._worker_id = worker_id
        self._at = now
        self._unfit = unfit  # models this worker's devices cannot run (jobs/engine/pinning.py)

    @cached_property
    def _read(self) -> Situation:
        if connection.vendor == "postgresql":
            # A decision made from what other workers hold must see their
            # decisions: two idle workers reading at once would both take the
            # same model. So claims that read the queue's state take turns,
            # until their transaction (the claim) commits; fifo never reads it
            # and keeps claiming in parallel. SQLite's write lock does the same.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DECIDE_LOCK_KEY])
        queue = read(self._at)
        loaded = self._loaded if self._loaded is not None else queue.loaded_on(self._worker_id)
        unavailable = frozenset(loads.backing_off(self._worker_id).values_list("model", flat=True)) | self._unfit
        return queue.situation(self._worker_id, loaded, self.max_wait, unavailable)

    @property
    def loaded(self) -> str | None:
        return self._loaded if self._loaded is not None else self._read.loaded

    @property
    def held_elsewhere(self) -> frozenset[str]:
        return self._read.held_elsewhere

    @property
    def queue(self) -> tuple[Waiting, ...]:
        return self._read.queue
