"""How worker time is shared between users, and who waits how long: the dashboard's
Sharing section and /metrics' per-user series.

Worker seconds come from WorkerTime rows (one per ended claim, exact) plus the
claims running now; the decayed ShareUsage that fair share reads is not shown,
being a weighted memory rather than a figure a person can check. Waits follow
the scheduler's own rule (jobs.services.scheduling.state): a batch with lines
to run and no chunk running has waited since its acceptance or since its last
chunk was claimed or ended.

Who sees whom is decided here, as in jobs.services.overview: a row another
user sees carries no user at all (no name, no id), only the label
"another user"; the viewer's own row says "you"; staff see names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Sum

from jobs.models import Batch, BatchStatus, Chunk, WorkerTime
from jobs.models.clock import db_now
from jobs.services import share
from jobs.services.scheduling import state

WINDOW = timedelta(hours=1)
YOU = "you"
ANOTHER_USER = "another user"


@dataclass(frozen=True)
class UserLoad:
    """One user's worker time in the window and their queue, keyed by user id (never shown to non-staff)."""

    user_id: int
    seconds: float = 0.0  # worker seconds of their claims within the window
    queued_batches: int = 0  # queued or running (the per-user quota's count)
    queued_requests: int = 0  # requests of in-progress batches without a result yet
    oldest_wait: float | None = None  # seconds their longest-waiting line has waited; None: none waiting


@dataclass(frozen=True)
class ShareRow:
    """A user's line in the Sharing section, as one viewer may see it."""

    label: str  # "you", "another user", or (for staff) the username
    is_viewer: bool
    seconds: float
    percent: float  # of all users' worker seconds in the window (0 when nobody had any)
    weight: float
    due_percent: float | None  # their weight's part among users with queued work; None: nothing queued
    queued_batches: int
    queued_requests: int
    oldest_wait: float | None


@dataclass(frozen=True)
class ShareReport:
    rows: list[ShareRow]
    total_seconds: float
    window: timedelta
    named: bool  # staff: the rows carry usernames


def _overlap(start: datetime, end: datetime, since: datetime, until: datetime) -> float:
    return max((min(end, until) - max(start, since)).total_seconds(), 0.0)


def worker_seconds(since: datetime, now: datetime) -> dict[int, float]:
    """Per user, worker seconds of their claims within [since, now]: ended claims and running ones."""
    out: dict[int, float] = {}
    ended = WorkerTime.objects.filter(ended_at__gt=since, started_at__lt=now)
    for user_id, started, ended_at in ended.values_list("user_id", "started_at", "ended_at"):
        out[user_id] = out.get(user_id, 0.0) + _overlap(started, ended_at, since, now)
    running = Chunk.objects.running().filter(claimed_at__isnull=False)
    for owner, claimed in running.values_list("batch__owner_id", "claimed_at"):
        if claimed is not None:
            out[owner] = out.get(owner, 0.0) + _overlap(claimed, now, since, now)
    return out


def worker_seconds_total() -> dict[int, float]:
    """Per user, the worker seconds of every ended claim: only grows (rows are only added)."""
    rows = WorkerTime.objects.values("user_id").annotate(n=Sum("seconds")).values_list("user_id", "n")
    return {user_id: n or 0.0 for user_id, n in rows}


def waits(now: datetime) -> dict[int, float]:
    """Per user with lines to run and none of that batch running, how long the longest has waited."""
    queue = state.read(now).situation("", None, 0.0).queue
    out: dict[int, float] = {}
    for item in queue:
        if item.owner is not None and item.waiting_since is not None:
            waited = max(now.timestamp() - item.waiting_since, 0.0)
            out[item.owner] = max(waited, out.get(item.owner, 0.0))
    return out


def loads(now: datetime | None = None, window: timedelta = WINDOW) -> dict[int, UserLoad]:
    """Every user with worker time in the window or queued work, by id."""
    now = now if now is not None else db_now()
    seconds = worker_seconds(now - window, now)
    batches = dict(
        Batch.objects.active().values("owner_id").annotate(n=Count("id")).values_list("owner_id", "n").order_by()
    )
    unfinished = Chunk.objects.unfinished().filter(batch__status=BatchStatus.IN_PROGRESS)
    requests = dict(
        unfinished.values("batch__owner_id")
        .annotate(n=Sum(F("request_count") - F("completed") - F("failed")))
        .values_list("batch__owner_id", "n")
        .order_by()
    )
    waited = waits(now)
    users = set(seconds) | set(batches) | set(requests) | set(waited)
    return {
        user_id: UserLoad(
            user_id,
            seconds=seconds.get(user_id, 0.0),
            queued_batches=batches.get(user_id, 0) or 0,
            queued_requests=max(requests.get(user_id, 0) or 0, 0),
            oldest_wait=waited.get(user_id),
        )
        for user_id in users
    }


def report(viewer: Any, now: datetime | None = None, window: timedelta = WINDOW) -> ShareReport:
    """The Sharing section as ``viewer`` may see it: largest share first, then the longest wait."""
    by_user = loads(now, window)
    total = sum(load.seconds for load in by_user.values())
    weights = share.weights(by_user)
    queued = [u for u, load in by_user.items() if load.queued_requests or load.queued_batches]
    queued_weight = sum(weights[u] for u in queued)
    named = bool(getattr(viewer, "is_staff", False))
    names: dict[int, str] = {}
    if named:
        names = {u.pk: u.get_username() for u in get_user_model().objects.filter(pk__in=list(by_user))}
    ordered = sorted(by_user.values(), key=lambda load: (-load.seconds, -(load.oldest_wait or 0.0), load.user_id))
    rows = []
    for load in ordered:
        mine = load.user_id == viewer.pk
        label = names.get(load.user_id, ANOTHER_USER) if named else YOU if mine else ANOTHER_USER
        weight = weights[load.user_id]
        rows.append(
            ShareRow(
                label=label,
                is_viewer=mine,
                seconds=load.seconds,
                percent=100.0 * load.seconds / total if total > 0 else 0.0,
                weight=weight,
                due_percent=100.0 * weight / queued_weight if load.user_id in queued and queued_weight else None,
                queued_batches=load.queued_batches,
                queued_requests=load.queued_requests,
                oldest_wait=load.oldest_wait,
            )
        )
    return ShareReport(rows=rows, total_seconds=total, window=window, named=named)
