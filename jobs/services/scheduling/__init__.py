"""Scheduling: which chunk a worker claims next (the policy), and where each batch stands.

- policy.py: the policies, one function each, and the policy in force.
- state.py: the queue and the live workers as one read.
- estimates.py: measured rates and load times (and the worker's Meter that records them).
- simulation.py: the queue run forward under the policies.
- plan.py: positions and ETAs for every unfinished batch, cached.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from jobs.models import Batch
from jobs.services.scheduling import state
from jobs.services.scheduling.estimates import Estimator, Meter
from jobs.services.scheduling.plan import BatchPlan, QueuePlan, plan_for, queue_plan
from jobs.services.scheduling.policy import POLICIES, Pick, current_policy

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
    max_wait = settings.BATCHSITE_SCHEDULER.affinity_max_wait_seconds
    situation = state.LiveSituation(worker_id, now, loaded, max_wait, unfit)
    return name, POLICIES[name](situation)


def queue_positions() -> dict[str, int]:
    """Each unfinished batch's position: 0 started, 1 next to start, ..."""
    return queue_plan().positions()


def estimated_completion(batch: Batch) -> datetime | None:
    entry = plan_for(batch)
    return entry.finishes_at if entry is not None else None
