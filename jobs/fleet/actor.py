"""One GpuWorker inside a Ray actor, pinned to the GPU Ray gave it.

The actor's process is a Ray worker process: Ray set CUDA_VISIBLE_DEVICES for it from
``num_gpus=1`` before this code ran, and ``ray.get_gpu_ids()`` names that GPU, so the worker is
pinned the same way ``run_gpu_worker --device cuda:N`` pins one (jobs/engine/pinning.py). The
database URL, storage and settings arrive as the actor's runtime_env env_vars and are in
os.environ before Django is set up here.

The worker loop runs in a thread of its own so the actor can still answer ``stop`` (the drain
the fleet asks for, like SIGTERM to a plain worker). Each incarnation registers under a new
worker id: when Ray restarts a dead actor, the dead one's claims are taken back by the stale
sweep and the fences, exactly as for a plain worker that died, and a half-dead old process
(a partitioned node) can never pass for the new one.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

log = logging.getLogger("batchsite.worker")


class FleetWorker:
    """The actor class; ray_fleet wraps it with ``ray.remote`` (so importing it needs no Ray)."""

    def __init__(self, slot: str, engine: str, cpu: bool, group_size: int = 0) -> None:
        import django
        import ray

        django.setup()
        from django.utils.module_loading import import_string

        from jobs.engine import pinning
        from jobs.models.ids import new_worker_id
        from jobs.worker import GpuWorker

        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        # The address the node registered with (not this host's default one: two nodes may share a host).
        address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == self.node_id), "")
        self.node = f"{address or ray.util.get_node_ip_address()} {self.node_id[:12]}"
        gpus = tuple(str(g) for g in ray.get_gpu_ids())
        if group_size:
            # A group worker (jobs/fleet/groups.py): no GPU of its own, vLLM's Ray workers take the
            # placement group's; nothing to pin here.
            devices = pinning.Devices("group", size=group_size)
        else:
            devices = pinning.Devices("cpu") if cpu or not gpus else pinning.Devices("cuda", gpus)
            pinning.pin(devices)
        instance = import_string(engine)()
        self.worker = GpuWorker(
            instance,
            worker_id=f"ray-{slot}-{new_worker_id().removeprefix('worker-')}",
            devices=devices,
            ray_node=self.node,
        )
        with warnings.catch_warnings():  # Ray 2.60 warns from inside its own property
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = context.was_current_actor_reconstructed
        log.info(
            "fleet slot %s: worker %s on Ray node %s (%s)%s",
            slot,
            self.worker.id,
            self.node,
            devices.label,
            ", restarted by Ray" if self.restarted else "",
        )
        self.thread = threading.Thread(target=self._run, name=f"worker-{slot}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException:
            log.exception("worker %s: its loop failed", self.worker.id)
        if not self.worker.stopping.is_set():
            # The loop ended without a stop (a bug in it): die, so Ray restarts the actor, as
            # bin/start restarts a plain worker that exits.
            os._exit(1)

    def describe(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker.id,
            "pid": os.getpid(),
            "node_id": self.node_id,
            "node": self.node,
            "restarted": self.restarted,
        }

    def stop(self, timeout: float) -> bool:
        """Drain like SIGTERM: claim nothing more, hand back or finish what runs (abort after the
        grace period). True once the loop has ended (within ``timeout`` seconds)."""
        self.worker.request_stop()
        self.thread.join(timeout)
        return not self.thread.is_alive()
