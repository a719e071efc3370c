"""Scheduling policies: what a worker takes next. A policy is one function.

A policy sees a ``Situation`` (the worker's loaded model, the models other
workers hold, and every batch with chunks waiting, in queue order, with how
long it has waited) and answers with a ``Pick``: a model whose oldest chunk
the worker claims, or the queue's head whatever its model; None: nothing. Both policies keep
FIFO among batches of one model, because the claim takes a model's chunks in
queue order.

Policies are pure, so the claim (jobs/services/queue.py) and the queue plan's
simulation (simulation.py) run the very same functions: the positions and
ETAs users see are what the workers will do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

log = logging.getLogger("batchsite.scheduler")


@dataclass(frozen=True)
class Waiting:
    """A batch with chunks left to claim."""

    batch_id: str
    model: str
    created_at: float  # Unix seconds; with batch_id, the queue order
    # Since when nothing of it has run (its creation, or its last chunk's end);
    # None while a chunk of it is running.
    waiting_since: float | None
    owner: int | None = None  # the batch's owner (fair share restricts the queue to one)
    priority: int = 0  # jobs.models.Priority: orders an owner's batches before their age


class Situation:
    """What a policy sees when a worker is about to claim.

    The claim passes a subclass (state.LiveSituation) that reads the queue and
    the workers from the database only when the policy first looks at them,
    so fifo, which looks at none of it, claims as cheaply as a plain FIFO query.
    """

    def __init__(
        self,
        now: float,
        loaded: str | None,
        held_elsewhere: frozenset[str],
        queue: tuple[Waiting, ...],
        max_wait: float,
    ) -> None:
        self.now = now
        self.max_wait = max_wait  # BATCHSITE_AFFINITY_MAX_WAIT_SECONDS
        self._loaded = loaded
        self._held_elsewhere = held_elsewhere
        self._queue = queue

    @property
    def loaded(self) -> str | None:
        """The deciding worker's model."""
        return self._loaded

    @property
    def held_elsewhere(self) -> frozenset[str]:
        """Models loaded on, or running on, other live workers."""
        return self._held_elsewhere

    @property
    def queue(self) -> tuple[Waiting, ...]:
        """Batches with chunks to claim, in queue order."""
        return self._queue


@dataclass(frozen=True)
class Pick:
    model: str | None  # claim this model's oldest chunk; None: the queue's head, whatever its model
    reason: str  # said in the worker's "claimed" log line
    owner: int | None = None  # fair share chose this owner's work; None: anyone's


Policy = Callable[[Situation], Pick | None]


def fifo(situation: Situation) -> Pick | None:
    """Oldest batch first, whatever it costs in model swaps (the seed's promise).

    It need not look whether anything waits: a claim of the queue's head finds
    nothing when nothing does (and the simulation asks only when something does).
    """
    return Pick(None, "queue head")


def affinity(situation: Situation) -> Pick | None:
    """Keep the loaded model while it has work, unless a batch has waited past the bound.

    Past the bound, the oldest such batch goes first whatever its model (so
    once everything is overdue this is FIFO: the bound is a promise to users,
    fewer swaps are not). Without work for its model, a worker prefers a model
    no other worker holds, leaving each model's work to the worker that has it
    loaded; if every waiting model is held, it helps with the queue's head.
    """
    queue = situation.queue
    if not queue:
        return None
    for waiting in queue:
        since = waiting.waiting_since
        if since is not None and situation.now - since > situation.max_wait:
            return Pick(waiting.model, "waited past BATCHSITE_AFFINITY_MAX_WAIT_SECONDS")
    if situation.loaded is not None and any(w.model == situation.loaded for w in queue):
        return Pick(situation.loaded, "loaded model")
    for waiting in queue:
        if waiting.model not in situation.held_elsewhere:
            return Pick(waiting.model, "model not held by another worker")
    return Pick(None, "queue head")


# batchsite/env.py's SCHEDULER_POLICIES lists these names for the settings (a test keeps them equal).
POLICIES: dict[str, Policy] = {"fifo": fifo, "affinity": affinity}

_reported: set[str] = set()


def current_policy() -> str:
    """BATCHSITE_SCHEDULER, unless BATCHSITE_SCHEDULER_FILE names a file that says otherwise.

    Read at every claim (a stat and a few bytes), so an operator can switch the
    policy of running workers without restarting them. A file that says
    something else is reported once and ignored: a running worker cannot stop
    at a typo the way start-up does.
    """
    conf = settings.BATCHSITE_SCHEDULER
    if not conf.policy_file:
        return conf.policy
    try:
        with open(conf.policy_file, "rb") as fh:
            raw = fh.read(64)
    except FileNotFoundError:
        return conf.policy
    except OSError as exc:
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = raw.decode("utf-8", "replace").strip()
        if text in POLICIES:
            return text
        if not text:
            return conf.policy
    if text not in _reported:
        _reported.add(text)
        log.error(
            "BATCHSITE_SCHEDULER_FILE=%s: %r is not one of %s; using BATCHSITE_SCHEDULER=%s",
            Path(conf.policy_file),
            text[:64],
            ", ".join(POLICIES),
            conf.policy,
        )
    return conf.policy
