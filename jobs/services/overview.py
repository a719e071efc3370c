"""What the dashboard shows: the running batches, the queue, the workers and the throughput.

Who sees what is decided here, not in templates: a row for a batch the
viewer may not see in full carries no Batch at all, only its queue position,
model, size and ETA, so no page can leak another user's ids, names,
metadata or files by accident.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, Worker, WorkerState
from jobs.services import scheduling
from jobs.services.access import sees_in_full

# Statuses of batches a worker is on (or finishing); queued ones have not been started.
_RUNNING_STATUSES = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)
RECENT_HOURS = 24
RECENT_LIMIT = 10
# Stopped workers stay on the dashboard this long, so an operator sees that one went away.
STOPPED_WORKERS_SHOWN_FOR = timedelta(hours=1)
CHART_HOURS = (1, 3, 6, 12, 24)


@dataclass(frozen=True)
class BatchRow:
    """One batch on the dashboard. ``batch`` is None when the viewer sees it anonymised."""

    model: str
    total: int
    position: int | None
    eta: datetime | None
    batch: Batch | None = None
    done: int = 0
    rate: float | None = None  # requests per second since a worker started it

    @property
    def anonymous(self) -> bool:
        return self.batch is None

    @property
    def percent(self) -> float:
        return self.batch.progress_percent if self.batch is not None else 0.0


@dataclass(frozen=True)
class QueueView:
    running: list[BatchRow]
    queued: list[BatchRow]
    recent: list[Batch]


def _row(batch: Batch, viewer: Any, positions: dict[str, int], now: datetime) -> BatchRow:
    eta = scheduling.estimated_completion(batch)
    position = positions.get(batch.id)
    if not sees_in_full(viewer, batch):
        return BatchRow(model=batch.model, total=batch.total, position=position, eta=eta)
    done = batch.completed + batch.failed
    rate = None
    if batch.started_at is not None and done:
        rate = done / max((now - batch.started_at).total_seconds(), 1e-3)
    return BatchRow(batch.model, batch.total, position, eta, batch=batch, done=done, rate=rate)


def queue_view(viewer: Any, now: datetime | None = None) -> QueueView:
    """Running batches (a worker has started them), then the queue in order, then the viewer's recent ones."""
    now = now or timezone.now()
    positions = scheduling.queue_positions()
    # The queue is bounded by BATCHSITE_MAX_QUEUED_BATCHES, so this is a short list.
    active = list(Batch.objects.filter(status__in=_RUNNING_STATUSES).select_related("owner").in_queue_order())
    running = [
        _row(b, viewer, positions, now)
        for b in active
        if b.status != BatchStatus.IN_PROGRESS or b.started_at is not None
    ]
    queued = [
        _row(b, viewer, positions, now) for b in active if b.status == BatchStatus.IN_PROGRESS and b.started_at is None
    ]
    since = now - timedelta(hours=RECENT_HOURS)
    mine = Batch.objects.all() if viewer.is_staff else Batch.objects.owned_by(viewer)
    ended = Q(completed_at__gte=since) | Q(failed_at__gte=since) | Q(expired_at__gte=since)
    recent = list(
        mine.terminal()
        .filter(ended | Q(cancelled_at__gte=since))
        .select_related("owner")
        .order_by("-created_at", "-id")[:RECENT_LIMIT]
    )
    return QueueView(running=running, queued=queued, recent=recent)


@dataclass(frozen=True)
class WorkerRow:
    worker: Worker
    silent: bool  # no heartbeat for longer than the stale limit: presumed dead
    current_model: str = ""
    current_batch: Batch | None = None  # None also when it is another user's batch
    current_is_other: bool = False

    @property
    def stats(self) -> dict[str, Any]:
        return self.worker.stats or {}

    @property
    def state(self) -> str:
        if self.worker.state != WorkerState.STOPPED and self.silent:
            return "silent"
        return str(self.worker.state)


def worker_rows(viewer: Any, now: datetime | None = None) -> list[WorkerRow]:
    """Live workers and those stopped in the last hour, with the batch each is running."""
    now = now or timezone.now()
    stale = timedelta(seconds=settings.BATCHSITE_WORKER.stale_after_seconds)
    workers = list(
        Worker.objects.filter(Q(stopped_at__isnull=True) | Q(stopped_at__gte=now - STOPPED_WORKERS_SHOWN_FOR)).order_by(
            "host", "id"
        )
    )
    current: dict[str, Batch] = {}
    for chunk in Chunk.objects.running().filter(worker__in=workers).select_related("batch").order_by("claimed_at"):
        current.setdefault(str(chunk.worker_id), chunk.batch)
    rows = []
    for worker in workers:
        batch = current.get(worker.id)
        silent = worker.stopped_at is None and now - worker.heartbeat_at > stale
        if batch is None:
            rows.append(WorkerRow(worker, silent))
        elif sees_in_full(viewer, batch):
            rows.append(WorkerRow(worker, silent, batch.model, batch))
        else:
            rows.append(WorkerRow(worker, silent, batch.model, None, current_is_other=True))
    return rows


@dataclass
class Throughput:
    """Requests finished per minute, per model, over the last ``hours``."""

    start: datetime
    hours: int
    minutes: int
    series: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(sum(values) for values in self.series.values())


def _spread(counts: list[float], start: datetime, begin: datetime, end: datetime, amount: float) -> None:
    """Add ``amount`` requests finished evenly over [begin, end] to per-minute ``counts`` from ``start``."""
    minutes = len(counts)
    span = (end - begin).total_seconds()
    if span < 1:
        index = int((end - start).total_seconds() // 60)
        if 0 <= index < minutes:
            counts[index] += amount
        return
    first = max(int((begin - start).total_seconds() // 60), 0)
    last = min(int((end - start).total_seconds() // 60), minutes - 1)
    for index in range(first, last + 1):
        bucket_start = start + timedelta(minutes=index)
        bucket_end = bucket_start + timedelta(minutes=1)
        overlap = (min(end, bucket_end) - max(begin, bucket_start)).total_seconds()
        if overlap > 0:
            counts[index] += amount * overlap / span


def throughput(hours: int = 3, now: datetime | None = None) -> Throughput:
    """Per-minute request counts per model, from the chunks' own records.

    The database records, per chunk, when a worker claimed it, when it ended
    and how many of its requests finished (live while it runs). Each chunk's
    count is spread evenly over its run, so a long chunk draws a steady rate
    rather than one spike when it ends; the resolution is therefore the chunk.
    """
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    minutes = hours * 60
    start = end - timedelta(minutes=minutes)
    chunks = (
        Chunk.objects.filter(claimed_at__isnull=False)
        .filter(Q(finished_at__gte=start) | Q(status=ChunkStatus.RUNNING))
        .values_list("batch__model", "claimed_at", "finished_at", "completed", "failed")
    )
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * minutes)
    for model, claimed_at, finished_at, completed, failed in chunks.iterator():
        amount = (completed or 0) + (failed or 0)
        if amount and claimed_at is not None:
            _spread(series[model], start, claimed_at, finished_at or now, float(amount))
    return Throughput(start=start, hours=hours, minutes=minutes, series=dict(sorted(series.items())))
