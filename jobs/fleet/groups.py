"""Models on more than one GPU in a Ray fleet: a placement group per model size, and one group
worker that runs them with vLLM's Ray executor.

A fleet worker holds one GPU, so it refuses a model registered with ``tensor_parallel_size`` x
``pipeline_parallel_size`` = N > 1 (jobs/engine/pinning.py). For such a model with queued work the
fleet makes a Ray placement group of N one-GPU bundles (``STRICT_PACK`` when one node has N GPUs,
so the ranks share its fast links; ``PACK`` across nodes when none has: a model larger than a
host) and starts a group worker inside it: a GpuWorker with ``Devices("group", size=N)`` holding no
GPU itself, whose engine gets ``distributed_executor_backend="ray"``. vLLM, created inside a Ray
actor, takes that actor's placement group for its own Ray workers, one per bundle
(``EngineArgs.create_engine_config`` and ``ray_utils.initialize_ray_cluster`` in vLLM 0.32). One
group serves every N-GPU model (it swaps between them as a worker does); its N GPUs are taken from
the one-GPU workers' share, which the fleet drains as usual. Once the queue has had no N-GPU work
for the fleet's idle time, the group worker is drained and its GPUs go back.

A CPU fleet cannot do this (vLLM's Ray executor places one GPU per rank): such a model is refused
with one log line and left to other workers (e.g. ``run_gpu_worker --devices 0,1`` on a host).

The choice (``plan``) is plain code over the registry, the queue and the cluster's nodes; Ray is
only touched by ``ray_fleet``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.engine.pinning import parallel_size
from jobs.models import BatchStatus, Chunk, RegisteredModel


@dataclass(frozen=True)
class GroupPlan:
    size: int  # GPUs: the placement group's bundles
    strategy: str  # Ray's placement strategy: STRICT_PACK (one node) or PACK (across nodes)
    models: tuple[str, ...]  # the N-GPU models with queued work

    def bundles(self) -> list[dict[str, float]]:
        return bundles(self.size)


def bundles(size: int) -> list[dict[str, float]]:
    """A group of ``size`` GPUs as Ray bundles: one GPU each, one per engine worker."""
    return [{"GPU": 1.0} for _ in range(size)]


def multi_gpu_models() -> list[tuple[str, int]]:
    """Enabled models whose engine spans more than one GPU, with their size."""
    found = []
    for name, options in RegisteredModel.objects.enabled().values_list("name", "engine_options"):
        size = parallel_size(options)
        if size is not None and size > 1:
            found.append((name, size))
    return found


def queued_models() -> set[str]:
    """Models with chunks still to claim or running (their batches in progress)."""
    rows = Chunk.objects.unfinished().filter(batch__status=BatchStatus.IN_PROGRESS)
    return set(rows.values_list("batch__model", flat=True).distinct())


def plan(
    models: Iterable[tuple[str, int]], queued: set[str], node_gpus: Sequence[int], cpu: bool
) -> tuple[list[GroupPlan], dict[str, str]]:
    """The groups the queue wants now, and why each multi-GPU model that cannot have one is left
    to other workers (model -> the reason, for one log line each)."""
    total, largest = sum(node_gpus), max(node_gpus, default=0)
    by_size: dict[int, list[str]] = {}
    refused: dict[str, str] = {}
    for name, size in models:
        if cpu:
            refused[name] = (
                f"model {name!r} needs {size} GPUs; a CPU fleet cannot run it (vLLM's Ray executor "
                "places one GPU per rank): leaving its batches to other workers"
            )
        elif size > total:
            refused[name] = (
                f"model {name!r} needs {size} GPUs and the cluster has {total}: "
                "its batches wait for nodes (or for a worker elsewhere)"
            )
        elif name in queued:
            by_size.setdefault(size, []).append(name)
    groups = [
        GroupPlan(size, "STRICT_PACK" if size <= largest else "PACK", tuple(sorted(names)))
        for size, names in sorted(by_size.items())
    ]
    # Every group must fit at once beside the others; the smallest sizes first, as they fit most.
    kept, room = [], total
    for group in groups:
        if group.size <= room:
            kept.append(group)
            room -= group.size
        else:
            for name in group.models:
                refused[name] = f"model {name!r} needs {group.size} GPUs; the other groups hold the rest: waiting"
    return kept, refused


def node_gpus(nodes: Mapping[str, Mapping[str, Any]]) -> list[int]:
    return [int(n.get("Resources", {}).get("GPU", 0)) for n in nodes.values()]
