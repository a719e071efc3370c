"""Helpers for the tests that run real worker subprocesses on the SIMULATED engine.

The simulated engine (jobs.engine.simulated) is used where the fault is about the
queue, not inference; the lines steer it (sim_sleep, sim_hang, sim_crash, ...).
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from jobs.models import Batch, File
from jobs.services import files as file_service
from tests.conftest import chat_line, jsonl

# The SIMULATED engine (jobs/engine/simulated.py): for tests about the queue, never about inference.
SIM_ENGINE = ("--engine", "jobs.engine.simulated.SimulatedEngine")
SIM = (*SIM_ENGINE, "--exit-when-idle")
# Fast heartbeats and polls, so faults are noticed in seconds.
FAST = {
    "BATCHSITE_HEARTBEAT_SECONDS": "0.3",
    "BATCHSITE_STALE_AFTER_SECONDS": "2",
    "BATCHSITE_PROGRESS_SECONDS": "0.2",
    "BATCHSITE_POLL_SECONDS": "0.1",
}


def make_batch(client: Any, upload: Any, lines: int | list[Any], endpoint: str = "/v1/chat/completions") -> str:
    """Upload ``lines`` (or that many chat lines) and create a batch; its id."""
    content = [chat_line(i) for i in range(lines)] if isinstance(lines, int) else lines
    file = upload(jsonl(content))
    response = client.post(
        "/v1/batches", {"input_file_id": file["id"], "endpoint": endpoint, "completion_window": "24h"}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "in_progress", response.content
    return str(response.json()["id"])


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def finish(process: subprocess.Popen[Any], timeout: float = 90) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def lines_of(file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    with file_service.open_content(File.objects.get(pk=file_id)) as fh:
        return [json.loads(line) for line in fh]


def custom_ids(batch: Batch) -> list[str]:
    return [line["custom_id"] for line in lines_of(batch.output_file_id) + lines_of(batch.error_file_id)]


def assert_every_line_once(batch_id: str, n: int, status: str = "completed", prefix: str = "req-") -> Batch:
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == status, (batch.status, batch.errors)
    ids = custom_ids(batch)
    duplicates = [i for i, count in collections.Counter(ids).items() if count > 1]
    assert not duplicates, duplicates
    assert sorted(ids) == sorted(f"{prefix}{i}" for i in range(n))
    assert batch.completed + batch.failed == n
    return batch


def status(batch_id: str) -> str:
    return str(Batch.objects.get(pk=batch_id).status)
