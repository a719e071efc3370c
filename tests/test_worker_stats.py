"""The worker publishes its device status with every heartbeat (shown on the dashboard)."""

from __future__ import annotations

import pytest

from jobs.engine.base import ModelSpec
from jobs.engine.simulated import SimulatedEngine
from jobs.models import Worker, WorkerState
from jobs.services import queue
from jobs.worker import GpuWorker

pytestmark = pytest.mark.django_db


def test_a_heartbeat_publishes_the_device_status():
    worker = GpuWorker(SimulatedEngine(), device="cpu")
    queue.register_worker(worker.id, worker.device, 1)
    assert Worker.objects.get(pk=worker.id).stats == {}
    worker.beat()
    stats = Worker.objects.get(pk=worker.id).stats
    assert stats["kind"] == "cpu" and stats["rss_bytes"] > 0


def test_a_worker_whose_row_vanished_registers_again_and_publishes_on_the_next_beat():
    worker = GpuWorker(SimulatedEngine(), device="cpu")
    worker.beat()  # no row yet: registers
    assert Worker.objects.filter(pk=worker.id).exists()
    worker.beat()
    assert Worker.objects.get(pk=worker.id).stats["kind"] == "cpu"


def test_the_worker_row_shows_each_state_change_at_once_not_at_the_next_heartbeat():
    # The queue plan reads the row: a worker still shown `loading` after its load made
    # the ETAs behind it count the load a second time until the next heartbeat (5 s).
    worker = GpuWorker(SimulatedEngine(), device="cpu")
    queue.register_worker(worker.id, worker.device, 1)

    def row() -> tuple[str, str]:
        return Worker.objects.values_list("state", "loaded_model").get(pk=worker.id)

    during_load = []
    load = worker.engine.load
    worker.engine.load = lambda spec: (during_load.append(row()), load(spec))  # type: ignore[method-assign]
    worker.load(ModelSpec("sim-model", "/simulated", ("chat",), {}))
    assert during_load == [(WorkerState.LOADING, "")]
    worker.set_state(WorkerState.RUNNING)
    assert row() == (WorkerState.RUNNING, "sim-model")
    worker.set_state(WorkerState.IDLE)
    assert row() == (WorkerState.IDLE, "sim-model")
