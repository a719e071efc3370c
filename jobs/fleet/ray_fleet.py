"""The fleet's driver: one Ray actor per free GPU (or CPU slot with ``--cpu``) on every live node,
kept so as nodes join and leave, grown and shrunk with the queue under ``--autoscale``, drained on
stop.

Placement: each actor is bound to its node (a hard NodeAffinitySchedulingStrategy) and asks for
``num_gpus=1`` (``--cpu``: ``num_cpus``), so a node's workers are exactly as many as its GPUs and
Ray hands each its own GPU. An actor whose GPU another Ray job holds waits, pending, until the GPU
is free (Ray starts it then). ``max_restarts=-1``: Ray restarts an actor whose process dies (the
new incarnation registers a new worker; the dead one's chunks come back through the stale sweep
and the fences, as for any dead worker). An actor of a node that left cannot restart there: the
fleet forgets it and the node's place is taken by the nodes that remain or join.

Models on more than one GPU get a placement group and a group worker of their own
(jobs/fleet/groups.py); the GPUs the groups hold are taken from the one-GPU workers' share.

The actors are owned by this process (not detached): if the driver dies, Ray ends them too, so a
fleet never leaves workers behind without someone who can stop them. The driver also runs the
periodic jobs (webhooks, expiry), so they go on while ``--autoscale`` has no worker up.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from django.conf import settings

from jobs.fleet import autoscale, groups
from jobs.fleet.actor import FleetWorker
from jobs.housekeeper import Housekeeper

log = logging.getLogger("batchsite.fleet")

# What the actors' processes must see to be the same batchsite as this one: the database,
# storage, settings (every BATCHSITE_ variable), and what the engines read.
PASSED_NAMES = ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "LOG_LEVEL", "TZ")
PASSED_PREFIXES = ("BATCHSITE_", "AWS_", "HF_", "VLLM_", "SIM_")


def actor_environment(environ: Mapping[str, str], root: str) -> dict[str, str]:
    """The runtime_env env_vars of every actor: the settings above, and this checkout on the
    path (the nodes run the same image or checkout at the same place, as KubeRay's do)."""
    env = {k: v for k, v in environ.items() if k in PASSED_NAMES or k.startswith(PASSED_PREFIXES)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Slot:
    name: str
    node_id: str
    handle: Any
    drain: Any = None  # the stop() call's ref while it drains
    started: float = field(default_factory=time.monotonic)
    group: Any = None  # a group worker's placement group (jobs/fleet/groups.py)
    size: int = 1  # GPUs it holds
    idle_since: float | None = None  # a group worker's: since when no queued work needs its size


class Fleet:
    def __init__(
        self,
        address: str | None = None,
        max_workers: int | None = None,
        cpu: bool = False,
        cpus_per_worker: float = 1.0,
        autoscale: bool = False,
        chunks_per_worker: int = 2,
        idle_seconds: float = 60.0,
        engine: str = "jobs.engine.vllm_engine.VllmEngine",
        poll_seconds: float = 5.0,
        name: str = "",
    ) -> None:
        self.address = address
        self.max_workers = max_workers
        self.cpu = cpu
        self.cpus_per_worker = cpus_per_worker
        self.autoscale = autoscale
        self.chunks_per_worker = chunks_per_worker
        self.idle_seconds = idle_seconds
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.name = name or f"fleet-{secrets.token_hex(3)}"  # unique in the cluster, short in worker ids
        self.stopping = threading.Event()
        self.slots: dict[str, Slot] = {}
        self.groups: dict[int, Slot] = {}  # group workers by their size in GPUs
        self._refused: set[str] = set()  # the multi-GPU refusals already logged
        self._numbers = count()
        self._shrink_since: float | None = None
        self._requested: int | None = None
        self._requested_groups: tuple[int, ...] = ()  # the groups' sizes in the last request
        conf = settings.BATCHSITE_WORKER
        # A drain waits the grace (then in-flight lines are aborted and handed back), then the unload.
        self.drain_seconds = conf.shutdown_grace_seconds + 60.0

    # -- lifecycle ---------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.info("fleet %s stopping: draining %d workers", self.name, len(self.slots))
            self.stopping.set()

    def connect(self) -> None:
        import ray

        ray.init(address=self.address or "auto", namespace="batchsite", log_to_driver=True)
        resources = {"num_cpus": self.cpus_per_worker} if self.cpu else {"num_gpus": 1, "num_cpus": 0}
        env = actor_environment(os.environ, str(settings.BASE_DIR))
        self._remote = ray.remote(FleetWorker)
        self._options: dict[str, Any] = {"max_restarts": -1, "runtime_env": {"env_vars": env}, **resources}
        log.info(
            "fleet %s connected to Ray at %s (%s workers%s%s)",
            self.name,
            self.address or "auto",
            "CPU" if self.cpu else "GPU",
            f", at most {self.max_workers}" if self.max_workers is not None else "",
            ", autoscaling with the queue" if self.autoscale else "",
        )

    def run(self) -> None:
        import ray

        self.connect()
        if threading.current_thread() is threading.main_thread():
            # After ray.init, which installs a SIGTERM handler of its own (it exits at once).
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        keeper = Housekeeper(self.name)
        keeper.start()
        try:
            while not self.stopping.is_set():
                try:
                    self.reconcile()
                except ray.exceptions.RaySystemError as exc:
                    log.warning("Ray did not answer (%s); trying again", exc)
                self.stopping.wait(self.poll_seconds)
        finally:
            self.drain_all()
            if self.autoscale and (self._requested or self._requested_groups):
                autoscale.request(0, self.bundle())
            keeper.stop(timeout=5)
            ray.shutdown()
            log.info("fleet %s stopped", self.name)

    # -- keeping the fleet the right size ------------------------------------

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker} if self.cpu else {"GPU": 1.0}

    def capacity(self, node: Mapping[str, Any]) -> int:
        resources = node.get("Resources", {})
        if self.cpu:
            return int(math.floor(resources.get("CPU", 0) / self.cpus_per_worker + 1e-9))
        return int(resources.get("GPU", 0))

    def reconcile(self) -> None:
        import ray

        nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        for slot in list(self.slots.values()):
            if slot.node_id not in nodes:
                log.warning("fleet: Ray node %s left; its worker %s is gone", slot.node_id[:12], slot.name)
                self._forget(slot)
        self._reap_drained()
        held = self.reconcile_groups(nodes)
        capacity = sum(self.capacity(n) for n in nodes.values()) - held
        target = capacity if self.max_workers is None else min(capacity, self.max_workers)
        if self.autoscale:
            wanted = autoscale.wanted_workers(autoscale.queued_chunks(), self.chunks_per_worker, self.max_workers)
            # The request replaces the last one: remake it when the one-GPU workers wanted
            # or the groups kept change, so a group started or drained is asked for (or
            # given back) at once, not when the queue next changes size.
            sizes = tuple(sorted(g.size for g in self.groups.values() if g.drain is None))
            if (wanted, sizes) != (self._requested, self._requested_groups):
                log.info(
                    "fleet: the queue wants %d workers and groups of %s GPUs; asking Ray's autoscaler for them",
                    wanted,
                    list(sizes),
                )
                autoscale.request(wanted, self.bundle(), [b for size in sizes for b in groups.bundles(size)])
                self._requested, self._requested_groups = wanted, sizes
            target = min(target, wanted)
        active = [s for s in self.slots.values() if s.drain is None]
        for node_id in sorted(nodes):
            free = self.capacity(nodes[node_id]) - sum(1 for s in active if s.node_id == node_id)
            while free > 0 and len(active) < target:
                active.append(self._start(node_id))
                free -= 1
        self._shrink(active, target)

    def reconcile_groups(self, nodes: Mapping[str, Any]) -> int:
        """Start, keep and drain the group workers of multi-GPU models; the GPUs they hold."""
        import ray

        plans, refused = groups.plan(
            groups.multi_gpu_models(), groups.queued_models(), groups.node_gpus(nodes), self.cpu
        )
        for reason in refused.values():
            if reason not in self._refused:
                self._refused.add(reason)
                log.warning("fleet: %s", reason)
        wanted = {plan.size: plan for plan in plans}
        now = time.monotonic()
        for size, slot in list(self.groups.items()):
            if slot.drain is not None:
                if ray.wait([slot.drain], timeout=0)[0]:
                    self._forget(slot)
            elif size in wanted:
                slot.idle_since = None
            elif slot.idle_since is None:
                slot.idle_since = now
            elif now - slot.idle_since >= self.idle_seconds:
                log.info("fleet: no queued work needs %d GPUs; draining group worker %s", size, slot.name)
                slot.drain = slot.handle.stop.remote(self.drain_seconds)
        for size, plan in wanted.items():
            if size not in self.groups and not self.stopping.is_set():
                self.groups[size] = self._start_group(plan)
        return sum(slot.size for slot in self.groups.values())

    def _start_group(self, plan: groups.GroupPlan) -> Slot:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        name = f"{self.name}-g{plan.size}-{next(self._numbers)}"
        group = placement_group(plan.bundles(), strategy=plan.strategy, name=name)
        # The group worker holds no GPU (vLLM's Ray workers take the bundles' GPUs); bundle 0
        # puts it on the node of vLLM's first rank, which vLLM's Ray executor checks.
        options = {**self._options, "num_cpus": 0, "num_gpus": 0}
        handle = self._remote.options(
            name=name,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
            **options,
        ).remote(name, self.engine, False, plan.size)
        log.info(
            "fleet: group worker %s for %d-GPU models (%s): a placement group of %d GPUs (%s)",
            name,
            plan.size,
            ", ".join(plan.models),
            plan.size,
            plan.strategy,
        )
        slot = Slot(name, "", handle, group=group, size=plan.size)
        return slot

    def _shrink(self, active: list[Slot], target: int) -> None:
        """Drain workers beyond the target, once the queue has wanted fewer for idle_seconds
        (a queue that empties between two batches keeps its loaded workers)."""
        if len(active) <= target:
            self._shrink_since = None
            return
        now = time.monotonic()
        if self._shrink_since is None:
            self._shrink_since = now
        if now - self._shrink_since < self.idle_seconds:
            return
        for slot in sorted(active, key=lambda s: s.started, reverse=True)[: len(active) - target]:
            log.info("fleet: draining worker %s (the queue wants %d workers)", slot.name, target)
            slot.drain = slot.handle.stop.remote(self.drain_seconds)

    def _start(self, node_id: str) -> Slot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = f"{self.name}-{next(self._numbers)}"
        handle = self._remote.options(
            name=name, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False), **self._options
        ).remote(name, self.engine, self.cpu)
        log.info("fleet: worker %s placed on Ray node %s", name, node_id[:12])
        slot = self.slots[name] = Slot(name, node_id, handle)
        return slot

    def _reap_drained(self) -> None:
        import ray

        for slot in list(self.slots.values()):
            if slot.drain is not None and ray.wait([slot.drain], timeout=0)[0]:
                self._forget(slot)

    def _forget(self, slot: Slot) -> None:
        import ray

        ray.kill(slot.handle, no_restart=True)
        self.slots.pop(slot.name, None)
        if slot.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(slot.group)  # its GPUs go back to the one-GPU workers
            self.groups.pop(slot.size, None)

    def drain_all(self) -> None:
        """Stop every worker as SIGTERM stops one, wait for the drains, then end the actors."""
        import ray

        slots = [*self.slots.values(), *self.groups.values()]
        refs = [s.drain if s.drain is not None else s.handle.stop.remote(self.drain_seconds) for s in slots]
        if refs:
            done, pending = ray.wait(refs, num_returns=len(refs), timeout=self.drain_seconds + 30)
            if pending:
                log.warning("fleet: %d workers did not drain in time; ending them", len(pending))
        for slot in slots:
            self._forget(slot)

    def describe(self) -> list[dict[str, Any]]:
        """Each live worker's id, process and node (for logs and tests)."""
        import ray

        slots = [*self.slots.values(), *self.groups.values()]
        return list(ray.get([s.handle.describe.remote() for s in slots if s.drain is None]))
