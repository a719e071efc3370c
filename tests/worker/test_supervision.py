"""bin/supervise (what bin/start runs the worker under) starts a worker that died again,
and passes SIGTERM on for a clean stop. A real worker subprocess on the SIMULATED engine."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from jobs.models import Worker
from tests.conftest import ROOT, subprocess_env
from tests.worker.common import FAST, finish, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def live_worker_pid() -> int | None:
    worker = Worker.objects.filter(stopped_at__isnull=True).order_by("-started_at").first()
    return worker.pid if worker is not None and psutil.pid_exists(worker.pid) else None


def test_a_worker_that_dies_is_started_again_and_a_sigterm_stops_it_cleanly(settings, tmp_path: Path):
    import sys

    command = [str(ROOT / "bin" / "supervise"), sys.executable, "manage.py", "run_gpu_worker"]
    command += ["--engine", "jobs.engine.simulated.SimulatedEngine"]
    log = tmp_path / "supervise.log"
    with log.open("wb") as err:
        supervisor = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(settings, **FAST), stderr=err)
        try:
            first = wait_for(live_worker_pid, what="the first worker")
            psutil.Process(first).send_signal(signal.SIGKILL)
            second = wait_for(lambda: (pid := live_worker_pid()) not in (None, first) and pid, what="a new worker")
            assert psutil.Process(second).ppid() == supervisor.pid
            supervisor.send_signal(signal.SIGTERM)
            assert finish(supervisor, timeout=30) == 0  # the worker's own exit status, passed through
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    assert Worker.objects.get(pid=second).state == "stopped"  # it shut down cleanly
    assert "exited with status 137; starting it again in 1s" in log.read_text()
