"""Scheduling: which chunk a worker claims next (the policy), and where each batch stands.

- policy.py: the policies, one function each, and the policy in force.
- state.py: the queue and the live workers as one read.
- estimates.py: measured rates and load times (and the worker's Meter that records them).
- simulation.py: the queue run forward under the policies.
- plan.py: positions and ETAs for every unfinished batch, cached.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from django.conf import settings
from django.db.models.functions import Now

from jobs.models import Batch, BatchStatus, ChunkStatus
from jobs.services import share
from jobs.services.scheduling import fairness, state
from jobs.services.scheduling.estimates import Estimator, Meter
from jobs.services.scheduling.plan import BatchPlan, QueuePlan, plan_for, queue_plan
from jobs.services.scheduling.policy import POLICIES, Pick, Situation, current_policy

__all__ = [
    "POLICIES",
    "BatchPlan",
    "Estimator",
    "Meter",
    "Pick",
    "QueuePlan",
    "choose",
    "current_policy",
    "estimated_completion",
    "plan_for",
    "queue_plan",
    "queue_positions",
]


def choose(
    worker_id: str, now: datetime, loaded: str | None = None, unfit: frozenset[str] = frozenset()
) -> tuple[str, Pick | None]:
    """The policy in force and what it picks for ``worker_id`` holding ``loaded``
    (by default, the model its row says it has loaded); ``unfit``: models its devices cannot run."""
    name = current_policy()
    conf = settings.BATCHSITE_SCHEDULER
    situation: Situation = state.LiveSituation(worker_id, now, loaded, conf.affinity_max_wait_seconds, unfit)
    if not conf.fair_share or len(_owners_with_work()) < 2:
        # One user (or fair share off): the policy sees the whole queue, exactly as before.
        return name, POLICIES[name](situation)
    waiting = {o: m for o, m in fairness.waiting_by_owner(situation.queue, situation.now).items() if o is not None}
    owner = fairness.choose_owner(
        waiting,
        share.usage_with_running(set(waiting), now),
        share.weights(set(waiting)),
        situation.loaded,
        situation.now,
        conf.fair_switch_seconds,
    )
    if owner is None:
        return name, None
    theirs = Situation(
        situation.now,
        situation.loaded,
        situation.held_elsewhere,
        tuple(w for w in situation.queue if w.owner == owner),
        situation.max_wait,
    )
    pick = POLICIES[name](theirs)
    return name, dataclasses.replace(pick, owner=owner, reason=f"{pick.reason}, fair share") if pick else None


def _owners_with_work() -> list[int]:
    """Up to two owners with chunks to claim: enough to know whether fair share has anything to decide."""
    return list(
        Batch.objects.filter(
            status=BatchStatus.IN_PROGRESS,
            expires_at__gt=Now(),
            errors__isnull=True,
            chunks__status=ChunkStatus.PENDING,
        )
        .order_by()
        .values_list("owner_id", flat=True)
        .distinct()[:2]
    )


def queue_positions() -> dict[str, int]:
    """Each unfinished batch's position: 0 started, 1 next to start, ..."""
    return queue_plan().positions()


def estimated_completion(batch: Batch) -> datetime | None:
    entry = plan_for(batch)
    return entry.finishes_at if entry is not None else None
