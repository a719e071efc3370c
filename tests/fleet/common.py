"""Running ``manage.py run_ray_fleet`` as a subprocess against a test Ray cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from jobs.models import Worker
from tests.conftest import ROOT, subprocess_env
from tests.worker.common import FAST, wait_for

# The SIMULATED engine (jobs/engine/simulated.py): the scheduling tests are about placement,
# restarts and the queue, not inference.
SIM_ENGINE = "jobs.engine.simulated.SimulatedEngine"


class FleetProcess:
    def __init__(self, settings: Any, address: str, log: Path, *args: str, data_dir: Path | None = None, **env: str):
        self.log = log
        environment = subprocess_env(settings, data_dir, **{**FAST, "BATCHSITE_SHUTDOWN_GRACE_SECONDS": "2", **env})
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_ray_fleet", "--address", address, "--poll-seconds", "0.5", *args],
            cwd=ROOT,
            env=environment,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def workers(self, **filters: Any) -> list[Worker]:
        """The fleet's workers that are up (stopped or silent ones, such as a killed one, are not)."""
        return list(Worker.objects.live(3).filter(id__startswith="ray-", **filters).exclude(state="stopped"))

    def wait_workers(self, count: int, timeout: float = 90, **filters: Any) -> list[Worker]:
        def ready() -> tuple[list[Worker]] | None:  # a tuple: an empty list is an answer too
            if self.process.poll() is not None:
                raise AssertionError(f"the fleet exited {self.process.returncode}:\n{self.log_tail()}")
            found = self.workers(**filters)
            return (found,) if len(found) == count else None

        return wait_for(ready, timeout=timeout, what=f"{count} fleet workers\n{self.log_tail(60)}")[0]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an operator or Kubernetes stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the fleet did not stop:\n{self.log_tail()}") from None


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def sim_fleet(settings: Any, cluster: Any, tmp_path: Path, name: str, *args: str, **env: str) -> FleetProcess:
    """A CPU fleet of SIMULATED-engine workers whose worker ids start with ray-NAME-."""
    return FleetProcess(
        settings, cluster.address, tmp_path / "fleet.log", "--cpu", "--engine", SIM_ENGINE, "--name", name, *args, **env
    )
