"""How many fleet workers the queue wants, and asking Ray's autoscaler for them (``--autoscale``).

The queue's work is counted in chunks (a claim's unit): a batch in progress with 40 unclaimed or
running chunks keeps up to 40 workers busy, so workers are wanted in proportion to the unfinished
chunks (``chunks_per_worker`` of them each), bounded by ``--max-workers``. A batch that is
finalizing wants one worker too (finalize runs in a worker). Ray's autoscaler is asked for exactly
that many worker-sized bundles (``ray.autoscaler.sdk.request_resources``, which replaces the
previous request each time), and the request is cleared when the queue is empty so it can give
the nodes back once the fleet's workers there have drained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jobs.models import Batch, BatchStatus, Chunk


def queued_chunks() -> int:
    """Chunks workers can still claim or are running, plus one for each batch being finalized."""
    chunks = Chunk.objects.unfinished().filter(batch__status__in=[BatchStatus.IN_PROGRESS]).count()
    return chunks + Batch.objects.filter(status=BatchStatus.FINALIZING).count()


def wanted_workers(queued: int, chunks_per_worker: int, max_workers: int | None) -> int:
    if queued <= 0:
        return 0
    wanted = math.ceil(queued / max(1, chunks_per_worker))
    return wanted if max_workers is None else min(wanted, max_workers)


def request(workers: int, bundle: dict[str, float], extra: Sequence[dict[str, float]] = ()) -> None:
    """Ask the autoscaler for room for ``workers`` workers and the group workers' GPUs
    (``extra`` bundles; nothing at all: withdraw the request)."""
    from ray.autoscaler.sdk import request_resources

    bundles: list[dict[str, Any]] = [dict(bundle) for _ in range(workers)] + [dict(b) for b in extra]
    request_resources(bundles=bundles)
