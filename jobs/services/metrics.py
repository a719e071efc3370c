"""What GET /metrics reports: the queue, the fleet and their history, read from the database at scrape time.

Why from the database, and not counters kept in each process (prometheus_client's
multiprocess mode): the events counted happen in workers on other hosts, not in
the web process that answers the scrape; gunicorn's N processes (on N hosts,
behind a load balancer) must all give the same answer to whichever scrape
reaches them; and a restart must not reset anything. Every process computes the
same numbers from the same rows, so nothing is shared between processes.

Counters are derived from rows that only move forward, so they never go down
(Prometheus would read a drop as a reset): requests and tokens from chunks that
have ended (a chunk that finalize sends back to run again keeps what was counted
when it first ended, ``Chunk.counted``), loads from ``ModelLoad`` rows
(only added), queue waits from ``Batch.started_at`` (set once), webhook attempts
from their log (only added), per-user worker seconds from WorkerTime (only
added). Batches are never deleted (files are; batches keep
their ids, as OpenAI's do), so no row a counter sums disappears.

Each scrape is a handful of aggregate queries (grouped by model or status).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Case, Count, F, Min, Q, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from jobs.models import (
    Batch,
    BatchStatus,
    Chunk,
    ChunkStatus,
    DeliveryStatus,
    ModelLoad,
    WebhookAttempt,
    WebhookDelivery,
    Worker,
    WorkerState,
)
from jobs.services import counters, share_report

# Seconds from a batch's acceptance to its first claim: from "at once" to a day.
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
# Seconds to make a model ready (unload of the previous one included).
LOAD_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
ENDED_CHUNKS = counters.ENDED_CHUNKS


def collect(now: datetime | None = None) -> Iterator[Metric]:
    """Every batchsite_ metric family, as of ``now``."""
    now = now or timezone.now()
    yield batches()
    yield from queue(now)
    yield from requests()
    yield lines_rerun()
    yield request_rate(now)
    yield from workers(now)
    yield from loads()
    yield from webhooks()
    yield queue_wait()
    yield from per_user(now)


def batches() -> Metric:
    family = GaugeMetricFamily("batchsite_batches", "Batches by status (OpenAI's statuses)", labels=["status"])
    counts = dict(Batch.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    for status in BatchStatus.values:
        family.add_metric([status], counts.get(status, 0))
    return family


def queue(now: datetime) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "batchsite_queued_requests",
        "Requests of in-progress batches that have no result yet (waiting, or in a running chunk)",
        labels=["model"],
    )
    rows = (
        Chunk.objects.unfinished()
        .filter(batch__status=BatchStatus.IN_PROGRESS)
        .values("batch__model")
        .annotate(n=Sum(F("request_count") - F("completed") - F("failed")))
        .values_list("batch__model", "n")
    )
    for model, n in sorted(rows):
        queued.add_metric([model], max(n or 0, 0))
    yield queued

    oldest = GaugeMetricFamily(
        "batchsite_oldest_waiting_batch_seconds",
        "Age of the oldest in-progress batch no worker has started yet (0: none waiting)",
    )
    waiting = Batch.objects.filter(status=BatchStatus.IN_PROGRESS, started_at__isnull=True).aggregate(
        since=Min(Coalesce("in_progress_at", "created_at"))
    )["since"]
    oldest.add_metric([], max((now - waiting).total_seconds(), 0.0) if waiting else 0.0)
    yield oldest


def _counted(key: str, current: Any) -> Any:
    """The sum of a chunk figure: what was counted when finalize changed it (Chunk.counted), else
    its current value; so a chunk sent back to run again neither falls nor counts twice."""
    kept = Cast(KT(f"counted__{key}"), BigIntegerField())
    return Sum(Case(When(counted__isnull=False, then=kept), default=current, output_field=BigIntegerField()))


def requests() -> Iterator[Metric]:
    """Requests and tokens of ended chunks, per model: final counts, so these only grow; a
    chunk that finalize sent back keeps what it counted when it first ended (Chunk.counted)."""
    total = CounterMetricFamily(
        "batchsite_requests",
        "Requests ended, per model: completed (output file), failed (error file), not_run (cancelled or expired)",
        labels=["model", "outcome"],
    )
    tokens = CounterMetricFamily("batchsite_tokens", "Tokens of ended requests, per model", labels=["model", "kind"])
    rows = (
        Chunk.objects.filter(Q(status__in=ENDED_CHUNKS) | Q(counted__isnull=False))
        .values("batch__model")
        .annotate(
            ended_completed=_counted("completed", F("completed")),
            # A failed chunk's requests that did not complete are in the error file.
            ended_failed=_counted(
                "failed",
                Case(When(status=ChunkStatus.FAILED, then=F("request_count") - F("completed")), default=F("failed")),
            ),
            ended_not_run=_counted(
                "not_run",
                Case(
                    When(status=ChunkStatus.CANCELLED, then=F("request_count") - F("completed") - F("failed")),
                    default=Value(0),
                ),
            ),
            input_tokens=_counted("input", Cast(KT("usage__prompt_tokens"), BigIntegerField())),
            output_tokens=_counted("output", Cast(KT("usage__completion_tokens"), BigIntegerField())),
        )
        .order_by("batch__model")
    )
    row: dict[str, Any]  # keys are built below: a plain dict, not the annotations' TypedDict
    for row in rows:  # type: ignore[assignment]
        model = row["batch__model"]
        for outcome in ("completed", "failed", "not_run"):
            total.add_metric([model, outcome], row[f"ended_{outcome}"] or 0)
        for kind in ("input", "output"):
            tokens.add_metric([model, kind], row[f"{kind}_tokens"] or 0)
    yield total
    yield tokens


def lines_rerun() -> Metric:
    """Lines run again after a lost claim (kill -9, a host gone): those its worker had
    reported finished that no checkpoint held (jobs/services/claims.py)."""
    family = CounterMetricFamily(
        "batchsite_lines_rerun", "Lines finished by a lost claim but not checkpointed, so run again"
    )
    family.add_metric([], counters.value(counters.LINES_RERUN))
    return family


def request_rate(now: datetime) -> Metric:
    """What the fleet runs now: each running chunk's requests done over the time since its claim, summed."""
    family = GaugeMetricFamily(
        "batchsite_request_rate",
        "Requests per second the workers are finishing now, per model (running chunks only)",
        labels=["model"],
    )
    rates: dict[str, float] = {}
    running = Chunk.objects.running().filter(claimed_at__isnull=False)
    for model, done, claimed_at in running.values_list("batch__model", F("completed") + F("failed"), "claimed_at"):
        elapsed = (now - claimed_at).total_seconds()
        rates[model] = rates.get(model, 0.0) + (done / elapsed if elapsed > 0 else 0.0)
    for model in sorted(rates):
        family.add_metric([model], round(rates[model], 6))
    return family


def live_workers(now: datetime) -> Any:
    cutoff = now - timedelta(seconds=settings.BATCHSITE_WORKER.stale_after_seconds)
    return Worker.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=cutoff).exclude(state=WorkerState.STOPPED)


def workers(now: datetime) -> Iterator[Metric]:
    """Workers heard from lately (a silent one's chunks are being taken back; it is not counted)."""
    counts = GaugeMetricFamily("batchsite_workers", "Live workers by state and loaded model", labels=["state", "model"])
    info = GaugeMetricFamily(
        "batchsite_worker_info",
        "One series per live worker: where it runs and what it holds (always 1)",
        labels=["worker", "host", "device", "state", "model"],
    )
    rows = list(live_workers(now).values_list("id", "host", "device", "state", "loaded_model").order_by("id"))
    grouped: dict[tuple[str, str], int] = {}
    for _, _, _, state, model in rows:
        grouped[(state, model)] = grouped.get((state, model), 0) + 1
    for state in WorkerState.values:
        if state != WorkerState.STOPPED and not any(key[0] == state for key in grouped):
            grouped[(state, "")] = 0  # every state has a series, so a dashboard's lines do not vanish
    for (state, model), n in sorted(grouped.items()):
        counts.add_metric([state, model], n)
    for worker_id, host, device, state, model in rows:
        info.add_metric([worker_id, host, device, state, model], 1)
    yield counts
    yield info


def _histogram(
    name: str, documentation: str, rows: Iterable[dict[str, Any]], buckets: tuple[int, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for row in rows:
        cumulative = [(str(float(bound)), row[f"le_{bound}"]) for bound in buckets]
        cumulative.append(("+Inf", row["n"]))
        family.add_metric([row["model"]], cumulative, sum_value=row["total"] or 0.0)
    return family


def loads() -> Iterator[Metric]:
    loaded = CounterMetricFamily("batchsite_model_loads", "Models made ready on a worker", labels=["model"])
    swaps = CounterMetricFamily(
        "batchsite_model_swaps", "Loads that unloaded another model first (hot-swaps)", labels=["model"]
    )
    rows: list[dict[str, Any]] = list(
        ModelLoad.objects.values("model")  # type: ignore[arg-type]
        .annotate(
            n=Count("id"),
            swaps=Count("id", filter=~Q(replaced="") & ~Q(replaced=F("model"))),
            total=Sum("seconds"),
            **{f"le_{bound}": Count("id", filter=Q(seconds__lte=bound)) for bound in LOAD_BUCKETS},
        )
        .order_by("model")
    )
    for row in rows:
        loaded.add_metric([row["model"]], row["n"])
        swaps.add_metric([row["model"]], row["swaps"])
    yield loaded
    yield swaps
    yield _histogram(
        "batchsite_model_load_seconds",
        "Time to make a model ready (unloading the previous one included)",
        rows,
        LOAD_BUCKETS,
    )


def webhooks() -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "batchsite_webhook_deliveries", "Webhook events by delivery status", labels=["status"]
    )
    counts = dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    for status in DeliveryStatus.values:
        deliveries.add_metric([status], counts.get(status, 0))
    yield deliveries

    attempts = CounterMetricFamily(
        "batchsite_webhook_attempts",
        "Webhook POSTs by result: success (2xx), http_error (another status), network_error (no answer)",
        labels=["result"],
    )
    ok = Q(status_code__gte=200, status_code__lt=300)
    tally = WebhookAttempt.objects.aggregate(
        success=Count("id", filter=ok),
        http_error=Count("id", filter=Q(status_code__isnull=False) & ~ok),
        network_error=Count("id", filter=Q(status_code__isnull=True)),
    )
    for result in ("success", "http_error", "network_error"):
        attempts.add_metric([result], tally[result])
    yield attempts


def queue_wait() -> Metric:
    accepted = Coalesce("in_progress_at", "created_at")
    rows = (
        Batch.objects.filter(started_at__isnull=False)
        .annotate(accepted=accepted)
        .values("model")
        .annotate(
            n=Count("id"),
            total=Sum(F("started_at") - F("accepted")),
            **{
                f"le_{bound}": Count("id", filter=Q(started_at__lte=F("accepted") + timedelta(seconds=bound)))
                for bound in QUEUE_WAIT_BUCKETS
            },
        )
        .order_by("model")
    )
    seconds = [{**row, "total": row["total"].total_seconds() if row["total"] else 0.0} for row in rows]
    return _histogram(
        "batchsite_queue_wait_seconds",
        "Time from a batch's acceptance to a worker's first claim of it",
        seconds,
        QUEUE_WAIT_BUCKETS,
    )


def per_user(now: datetime) -> Iterator[Metric]:
    """Each user's queue and worker time, labelled by user id (never a name or an email).

    Only staff read /metrics (jobs/metrics.py: the operator's token or a staff
    session), so the ids go to no one who could not look them up in the admin.
    The counter sums WorkerTime rows, one per ended claim and never changed, so
    it only grows; the decayed ShareUsage fair share reads is no counter."""
    batches = GaugeMetricFamily("batchsite_user_queued_batches", "A user's queued or running batches", labels=["user"])
    requests = GaugeMetricFamily(
        "batchsite_user_queued_requests",
        "Requests of a user's in-progress batches that have no result yet",
        labels=["user"],
    )
    waiting = GaugeMetricFamily(
        "batchsite_user_oldest_waiting_seconds",
        "How long a user's longest-waiting lines have had no worker (users with lines waiting only)",
        labels=["user"],
    )
    for user_id, load in sorted(share_report.loads(now).items()):
        if load.queued_batches or load.queued_requests:
            batches.add_metric([str(user_id)], load.queued_batches)
            requests.add_metric([str(user_id)], load.queued_requests)
        if load.oldest_wait is not None:
            waiting.add_metric([str(user_id)], round(load.oldest_wait, 3))
    yield batches
    yield requests
    yield waiting
    seconds = CounterMetricFamily(
        "batchsite_user_worker_seconds",
        "Worker seconds of a user's ended claims (from a chunk's claim to its end or hand-back)",
        labels=["user"],
    )
    for user_id, total in sorted(share_report.worker_seconds_total().items()):
        seconds.add_metric([str(user_id)], round(total, 3))
    yield seconds


def record_load(worker_id: str, device: str, model: str, replaced: str, seconds: float) -> None:
    """A worker made ``model`` ready in ``seconds`` (after unloading ``replaced``, if any)."""
    ModelLoad.objects.create(
        worker_id=worker_id,
        host=socket.gethostname(),
        device=device,
        model=model,
        replaced=replaced or "",
        seconds=max(seconds, 0.0),
    )
