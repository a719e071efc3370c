"""The queue plan: every unfinished batch's position and ETA, from simulating the live workers.

Computed from one read of the queue and the measurements, then reused for
BATCHSITE_QUEUE_PLAN_SECONDS from Django's "queue_plan" cache (local memory
by default, see settings.py), so polling clients cost a cache read, not a
simulation. A batch created after the cached plan was computed (a create
response, or a batch another process just created) gets a fresh plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import caches

from jobs.models import Batch, BatchStatus, WorkerState
from jobs.models.clock import db_now
from jobs.services import share
from jobs.services.scheduling import state
from jobs.services.scheduling.estimates import Estimator
from jobs.services.scheduling.policy import POLICIES, current_policy
from jobs.services.scheduling.simulation import (
    Estimates,
    FairShare,
    Outcome,
    SimBatch,
    SimRunning,
    SimWorker,
    simulate,
)

CACHE_KEY = "batchsite:queue-plan"
# A batch created this close to a plan's computation may have been committed
# after the plan's read: it gets a fresh plan rather than none.
COMMIT_SLACK = timedelta(seconds=1)
WHAT_IF_ID = "batch_estimate"  # the simulated batch of an estimate (never a real id: those are longer)


@dataclass(frozen=True)
class BatchPlan:
    model: str
    position: int  # 0: started (running); 1: next to start; 2, 3, ...
    starts_at: datetime | None  # predicted start of a batch not started yet
    finishes_at: datetime | None  # the ETA; None when no worker is alive or a rate is unknown


@dataclass(frozen=True)
class WorkerPlan:
    id: str
    host: str
    device: str
    scheduler: str
    loaded: str | None
    loads: tuple[str, ...]  # the models it is expected to load next, in order


@dataclass(frozen=True)
class QueuePlan:
    computed_at: datetime
    policy: str  # the policy in force: the live workers' ("mixed: ..." if they differ), else this process's
    expected_swaps: int
    batches: dict[str, BatchPlan]
    workers: tuple[WorkerPlan, ...]  # empty: no live worker (positions are for a worker yet to come)

    def positions(self) -> dict[str, int]:
        return {batch_id: entry.position for batch_id, entry in self.batches.items()}


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts is not None else None


def _sim_workers(queue: state.QueueState, policy_of: Callable[[state.LiveWorker], str]) -> list[SimWorker]:
    running_on: dict[str, list[SimRunning]] = {}
    for chunk in queue.running:
        if chunk.worker_id is not None:
            running_on.setdefault(chunk.worker_id, []).append(
                SimRunning(chunk.batch_id, chunk.model, chunk.remaining, chunk.total, chunk.claimed_at)
            )
    workers = []
    for w in queue.workers:
        sim = SimWorker(w.id, policy_of(w), w.loaded, (w.host, w.device), running_on.get(w.id, []))
        if w.state == WorkerState.LOADING and sim.running:
            # A worker claims, then loads: its running chunk says what it loads, and since when.
            sim.loading = sim.running[0].model
            claims = [run.claimed_at for run in sim.running if run.claimed_at is not None]
            sim.loading_for = queue.now - min(claims) if claims else 0.0
        workers.append(sim)
    return workers


def _sim_batches(queue: state.QueueState) -> list[SimBatch]:
    batches = []
    for b in queue.batches:
        # Chunks on a silent worker go back to the queue whole.
        extra_chunks, extra_requests = queue.orphaned.get(b.id, (0, 0))
        batches.append(
            SimBatch(
                b.id,
                b.model,
                b.created_at,
                b.started,
                b.last_served,
                b.pending_chunks + extra_chunks,
                b.pending_requests + extra_requests,
                b.owner,
                b.priority,
            )
        )
    return batches


def _policy_of(worker: state.LiveWorker) -> str:
    # A worker of another version may publish a policy this one does not know.
    return worker.scheduler if worker.scheduler in POLICIES else current_policy()


def _simulate(queue: state.QueueState, extra: list[SimBatch]) -> tuple[Outcome, bool]:
    """The simulated run of the queue (plus ``extra`` batches not in it), and whether a worker is alive."""
    estimator = Estimator.from_database()
    workers = _sim_workers(queue, _policy_of)
    alive = bool(workers)
    if not alive:
        # Nobody to run the queue: order it as a worker would that starts now
        # with nothing loaded, but promise no time.
        workers = [SimWorker("", current_policy(), None, None)]
    batches = _sim_batches(queue) + extra
    conf = settings.BATCHSITE_SCHEDULER
    outcome = simulate(
        queue.now,
        batches,
        workers,
        Estimates(estimator.seconds_per_request, estimator.load_seconds),
        conf.affinity_max_wait_seconds,
        _fair_share(queue, batches) if conf.fair_share else None,
    )
    return outcome, alive


def _fair_share(queue: state.QueueState, batches: list[SimBatch]) -> FairShare | None:
    """The users' worker time and weights, for a queue of several users' work (else None: nothing to share)."""
    owners = {b.owner for b in batches if b.owner is not None}
    if len({b.owner for b in batches}) < 2:
        return None
    at = datetime.fromtimestamp(queue.now, UTC)
    used: dict[int | None, float] = {k: v for k, v in share.usage_with_running(owners, at).items()}
    weights: dict[int | None, float] = {k: v for k, v in share.weights(owners).items()}
    return FairShare(used, weights, settings.BATCHSITE_SCHEDULER.fair_switch_seconds)


def what_if(model: str, requests: int, chunks: int, owner: int | None = None, priority: int = 0) -> BatchPlan:
    """The plan a batch of ``requests`` lines for ``model`` would get if ``owner`` submitted it
    now (``POST /v1/batches/estimate``): the same simulation as the queue plan's, with it last
    in; under fair share it counts as the owner's, beside their other work."""
    queue = state.read(db_now())
    extra = SimBatch(WHAT_IF_ID, model, queue.now, False, None, chunks, requests, owner=owner, priority=priority)
    outcome, alive = _simulate(queue, [extra])
    starts = outcome.starts.get(WHAT_IF_ID)
    running = {c.batch_id for c in queue.running}
    ahead = sum(
        1
        for b in queue.batches
        if not (b.started or b.id in running) and outcome.starts.get(b.id, float("inf")) <= (starts or float("inf"))
    )
    return BatchPlan(model, ahead + 1, _when(starts), _when(outcome.ends.get(WHAT_IF_ID)) if alive else None)


def compute_plan(now: datetime | None = None) -> QueuePlan:
    now = now or db_now()
    queue = state.read(now)
    own_policy = current_policy()
    policy_of = _policy_of
    outcome, alive = _simulate(queue, [])
    running = {c.batch_id for c in queue.running}
    started = {b.id for b in queue.batches if b.started or b.id in running}
    waiting = sorted(
        (b for b in queue.batches if b.id not in started),
        key=lambda b: (outcome.starts.get(b.id, float("inf")), b.created_at, b.id),
    )
    position = {batch_id: 0 for batch_id in started}
    position.update({b.id: n for n, b in enumerate(waiting, start=1)})
    policies = sorted({policy_of(w) for w in queue.workers}) or [own_policy]
    return QueuePlan(
        computed_at=now,
        policy=policies[0] if len(policies) == 1 else "mixed: " + ", ".join(policies),
        expected_swaps=outcome.swaps if alive else 0,
        batches={
            b.id: BatchPlan(
                b.model,
                position[b.id],
                _when(outcome.starts.get(b.id)),
                _when(outcome.ends.get(b.id)) if alive else None,
            )
            for b in queue.batches
        },
        workers=tuple(
            WorkerPlan(w.id, w.host, w.device, policy_of(w), w.loaded, tuple(outcome.loads.get(w.id, ())))
            for w in queue.workers
        ),
    )


def queue_plan(refresh: bool = False) -> QueuePlan:
    """The cached plan, or a new one when it is older than BATCHSITE_QUEUE_PLAN_SECONDS (or ``refresh``)."""
    cache = caches["queue_plan"]
    if not refresh:
        plan = cache.get(CACHE_KEY)
        if isinstance(plan, QueuePlan):
            return plan
    plan = compute_plan()
    ttl = settings.BATCHSITE_SCHEDULER.plan_seconds
    if ttl > 0:
        cache.set(CACHE_KEY, plan, ttl)
    return plan


def plan_for(batch: Batch, plan: QueuePlan | None = None) -> BatchPlan | None:
    """``batch``'s entry in the plan (a fresh plan if the one at hand predates the batch); None
    if it is not queued (finished, finalizing, cancelling or past its expiry)."""
    if batch.status != BatchStatus.IN_PROGRESS:
        return None
    plan = plan or queue_plan()
    entry = plan.batches.get(batch.id)
    if entry is None and plan.computed_at < (batch.in_progress_at or batch.created_at) + COMMIT_SLACK:
        entry = queue_plan(refresh=True).batches.get(batch.id)
    return entry
