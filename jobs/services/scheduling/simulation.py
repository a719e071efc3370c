"""Run the queue forward under the policies, on estimated rates: when each batch starts and ends.

Pure (no database): plan.py feeds it a snapshot of the queue and the live
workers. Each worker, when it is free, asks its own policy (the same function
its claims call) what to take, pays a load when that is another model than
the one it holds, and runs the work at the estimated rate of that model on
its slot. A time that rests on an unknown rate or load makes every end that
follows on that worker unknown (None), rather than a made-up number.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.services.scheduling.fairness import choose_owner, waiting_by_owner
from jobs.services.scheduling.policy import POLICIES, Situation, Waiting

Slot = tuple[str, str]
# At most this many claims are simulated: a queue of more chunks is simulated
# in slices of several chunks (the plan must stay cheap whatever the chunk size).
MAX_STEPS = 2000
# Stand-ins that only order work when nothing is known; the ends they give are reported as unknown.
UNKNOWN_SECONDS_PER_REQUEST = 1.0
UNKNOWN_LOAD_SECONDS = 0.0


@dataclass
class SimBatch:
    id: str
    model: str
    created_at: float
    started: bool
    last_served: float | None  # when a chunk of it last ended or was claimed
    pending_chunks: int
    pending_requests: int
    owner: int | None = None
    priority: int = 0


@dataclass
class FairShare:
    """Fair share as the claims apply it (jobs/services/scheduling/fairness.py)."""

    usage: dict[int | None, float]  # decayed worker seconds so far; the run adds its own
    weights: dict[int | None, float]
    switch_seconds: float


@dataclass
class SimRunning:
    batch_id: str
    model: str
    remaining: int  # requests of the chunk not yet done
    total: int = 0  # requests in the chunk
    claimed_at: float | None = None


@dataclass
class SimWorker:
    id: str
    policy: str
    loaded: str | None
    slot: Slot | None  # None: a stand-in worker (no live worker)
    running: list[SimRunning] = field(default_factory=list)
    loading: str | None = None  # the model it is loading now
    loading_for: float = 0.0  # seconds it has been loading


@dataclass(frozen=True)
class Estimates:
    seconds_per_request: Callable[[str, Slot | None], float | None]
    load_seconds: Callable[[str, Slot | None], float | None]


@dataclass
class Outcome:
    starts: dict[str, float] = field(default_factory=dict)  # first claim of batches not yet started
    ends: dict[str, float | None] = field(default_factory=dict)  # None: rests on an unknown rate
    swaps: int = 0
    loads: dict[str, list[str]] = field(default_factory=dict)  # per worker, the models it will load in turn


def simulate(
    now: float,
    batches: list[SimBatch],
    workers: list[SimWorker],
    estimates: Estimates,
    max_wait: float,
    fair: FairShare | None = None,
) -> Outcome:
    out = Outcome()
    # The claim's order: priority first, then the queue's (all normal: FIFO).
    order = sorted(batches, key=lambda b: (-b.priority, b.created_at, b.id))
    used = dict(fair.usage) if fair is not None else {}
    by_id = {b.id: b for b in order}
    busy_until: dict[str, float] = {}  # batch id -> when its claimed work ends
    unsure: set[str] = set()
    total_chunks = sum(b.pending_chunks for b in order)
    step = max(1, math.ceil(total_chunks / MAX_STEPS))

    def finish(batch_id: str, at: float, known: bool) -> None:
        busy_until[batch_id] = max(busy_until.get(batch_id, at), at)
        if not known:
            unsure.add(batch_id)

    clocks: list[tuple[float, int]] = []
    known_from: list[bool] = []
    for index, worker in enumerate(workers):
        t, known = now, worker.slot is not None
        out.loads[worker.id] = []
        if worker.loading is not None:
            load = estimates.load_seconds(worker.loading, worker.slot)
            known = known and load is not None
            t += max(0.0, (UNKNOWN_LOAD_SECONDS if load is None else load) - worker.loading_for)
            worker.loaded = worker.loading
        # Work in the engine ends when its progress says, or when its schedule
        # says if that is later: the engine runs a window of lines at once, so
        # small chunks' lines all finish near the end, together (and short
        # answers first), and counting the lines left underestimates the time left.
        claims = [run.claimed_at for run in worker.running if run.claimed_at is not None]
        scheduled = min(claims) if claims and worker.loading is None else None
        for run in sorted(worker.running, key=lambda r: r.claimed_at or 0.0):
            spr = estimates.seconds_per_request(run.model, worker.slot)
            known = known and spr is not None
            spr = UNKNOWN_SECONDS_PER_REQUEST if spr is None else spr
            t += run.remaining * spr
            end = t
            if scheduled is not None:
                scheduled += run.total * spr
                end = max(end, scheduled)
            if run.batch_id in by_id:
                finish(run.batch_id, end, known)
            t = max(t, end)
        known_from.append(known)
        heapq.heappush(clocks, (t, index))

    def waiting_since(batch: SimBatch, t: float) -> float | None:
        if busy_until.get(batch.id, -math.inf) > t:
            return None
        if not batch.started:
            return batch.created_at
        return max(x for x in (batch.last_served, busy_until.get(batch.id), batch.created_at) if x is not None)

    while clocks:
        t, index = heapq.heappop(clocks)
        worker = workers[index]
        queue = tuple(
            Waiting(b.id, b.model, b.created_at, waiting_since(b, t), b.owner, b.priority)
            for b in order
            if b.pending_chunks > 0
        )
        if not queue:
            continue  # nothing left for this worker: it idles from here on
        if fair is not None and len({w.owner for w in queue}) > 1:
            owner = choose_owner(waiting_by_owner(queue, t), used, fair.weights, worker.loaded, t, fair.switch_seconds)
            queue = tuple(w for w in queue if w.owner == owner)
        held = frozenset(w.loaded for w in workers if w is not worker and w.loaded is not None)
        pick = POLICIES[worker.policy](Situation(t, worker.loaded, held, queue, max_wait))
        if pick is None:
            continue
        target = by_id[next(w.batch_id for w in queue if pick.model is None or w.model == pick.model)]
        chunks = min(step, target.pending_chunks)
        claimed = t
        requests = round(target.pending_requests * chunks / target.pending_chunks)
        target.pending_chunks -= chunks
        target.pending_requests -= requests
        if not target.started:
            target.started = True
            out.starts[target.id] = t
        known = known_from[index]
        if worker.loaded != target.model:
            if worker.loaded is not None:
                out.swaps += 1
            out.loads[worker.id].append(target.model)
            load = estimates.load_seconds(target.model, worker.slot)
            known = known and load is not None
            t += UNKNOWN_LOAD_SECONDS if load is None else load
            worker.loaded = target.model
        spr = estimates.seconds_per_request(target.model, worker.slot)
        known = known and spr is not None
        t += requests * (UNKNOWN_SECONDS_PER_REQUEST if spr is None else spr)
        known_from[index] = known
        used[target.owner] = used.get(target.owner, 0.0) + t - claimed  # as share.record_claim counts it
        finish(target.id, t, known)
        heapq.heappush(clocks, (t, index))

    for batch in order:
        if batch.id in busy_until:
            out.ends[batch.id] = None if batch.id in unsure else busy_until[batch.id]
        elif batch.pending_chunks == 0:
            out.ends[batch.id] = now  # all its chunks ended: only its finalize is left
        else:
            out.ends[batch.id] = None  # no worker will take it
    return out
