"""A real Ray cluster on loopback for the fleet's tests: ``ray start --head`` and more node
processes on 127.0.0.1, each with its own resources, as a multi-host cluster would have.

Every process a node starts (GCS, raylet, workers, agents) inherits a marker variable naming its
test cluster and node, so a node can be stopped alone (its raylet and workers, as when a host
goes away) and ``kill_all`` ends every process of the cluster, whatever the test did, without
touching another Ray on this machine (``ray stop`` would stop every Ray of every user here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

RAY = str(Path(sys.executable).parent / "ray")
MARK = "BATCHSITE_TEST_RAY_CLUSTER"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:10]
        # Short: Ray's socket paths must fit in 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[str] = []

    def _start(self, node: str, args: list[str]) -> None:
        env = {
            **os.environ,
            MARK: f"{self.id}:{node}",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(self.temp_dir),
        }
        # Lose no time noticing a node that went away (defaults: 5 misses of 3 s).
        env.update({"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"})
        done = subprocess.run(
            [RAY, "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise RuntimeError(f"ray start ({node}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        self.nodes.append(node)

    def start_head(self, cpus: int) -> None:
        self._start(
            "head",
            ["--head", "--port", str(self.port), "--num-cpus", str(cpus), "--num-gpus", "0"]
            + ["--include-dashboard", "false", "--temp-dir", str(self.temp_dir)],
        )

    def add_node(self, name: str, cpus: int, resources: dict[str, float], gpus: int = 0) -> None:
        """A node; ``gpus`` declares GPU resources Ray hands out (there are none on this
        machine: for placement only, with the simulated engine)."""
        self._start(
            name,
            ["--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus)]
            + ["--resources", json.dumps(resources)],
        )

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        wanted = f"{self.id}:{node}" if node else None
        found = []
        for process in psutil.process_iter():
            try:
                mark = process.environ().get(MARK, "")
            except (psutil.Error, OSError):
                continue
            if mark.startswith(f"{self.id}:") and (wanted is None or mark == wanted):
                found.append(process)
            elif not mark and wanted is None and self._holds_our_files(process):
                # Ray's agents set their process title over their environment: known by their logs.
                found.append(process)
        return found

    def _holds_our_files(self, process: psutil.Process) -> bool:
        try:
            return any(f.path.startswith(str(self.temp_dir)) for f in process.open_files())
        except (psutil.Error, OSError):
            return False

    def stop_node(self, node: str) -> None:
        """The node's host goes away: its raylet is stopped (it tells the cluster it is leaving)
        and its workers end with it."""
        for process in self.processes(node):
            if process.name() == "raylet":
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.processes(node) and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in self.processes(node):
            _kill(process)
        self.nodes.remove(node)

    def kill_all(self) -> None:
        # Again until none is left: a raylet killed after its agents may have started them again.
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:
            for process in sorted(left, key=lambda p: _name(p) != "raylet"):  # raylets first
                _kill(process)
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *_: Any) -> None:
        self.kill_all()


def _kill(process: psutil.Process) -> None:
    try:
        process.kill()
    except psutil.Error:
        pass


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""
