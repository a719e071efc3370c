"""The worker publishes its device status with every heartbeat (shown on the dashboard)."""

from __future__ import annotations

import pytest

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Worker
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
