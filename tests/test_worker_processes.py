"""Real worker subprocesses killed with SIGKILL and SIGTERM, and four at once on one batch.

The engine here is the SIMULATED one (jobs.engine.simulated): these tests are
about the queue surviving faults, not about inference.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobs.models import Batch, Chunk, ChunkStatus, File, Worker
from jobs.services import files as file_service
from tests.conftest import chat_line, jsonl, start_worker
from tests.worker.common import FAST, SIM

pytestmark = pytest.mark.django_db(transaction=True)


def make_batch(client: Any, upload: Any, n: int) -> str:
    file = upload(jsonl([chat_line(i) for i in range(n)]))
    response = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.json()["status"] == "in_progress"
    return response.json()["id"]


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(process: subprocess.Popen[Any], timeout: float = 90) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def custom_ids(batch: Batch) -> list[str]:
    ids = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            with file_service.open_content(File.objects.get(pk=file_id)) as fh:
                ids += [json.loads(line)["custom_id"] for line in fh]
    return ids


def assert_every_line_once(batch_id: str, n: int) -> Batch:
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "completed", (batch.status, batch.errors)
    ids = custom_ids(batch)
    duplicates = [i for i, count in collections.Counter(ids).items() if count > 1]
    assert not duplicates and sorted(ids) == sorted(f"req-{i}" for i in range(n))
    assert batch.completed == n and batch.failed == 0
    return batch


def status(batch_id: str) -> str:
    return Batch.objects.get(pk=batch_id).status


@pytest.mark.parametrize("moment", ["during_load", "mid_chunk", "during_finalize"])
def test_a_worker_killed_with_sigkill_loses_nothing(client, models, upload, limits, settings, moment):
    limits(chunk_size=20)
    n = 200
    batch_id = make_batch(client, upload, n)
    slow = {
        "during_load": {"SIM_LOAD_SECONDS": "60"},
        "mid_chunk": {"SIM_SLEEP_SECONDS": "0.05"},
        "during_finalize": {"FAULT_FINALIZE_PAUSE_SECONDS": "60"},
    }[moment]
    first = start_worker(settings, *SIM, "--worker-id", "doomed", **FAST, **slow)
    if moment == "during_load":
        wait_for(lambda: Worker.objects.filter(pk="doomed", state="loading").exists(), what="loading")
    elif moment == "mid_chunk":
        # Killed while it holds a claim: between two chunks there is no claim to
        # lose (a kill there once left nothing to take back, and no attempt 2).
        wait_for(
            lambda: (
                40 <= Batch.objects.get(pk=batch_id).completed <= 150
                and Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.RUNNING, worker_id="doomed").exists()
            ),
            what="progress with a chunk claimed",
        )
    else:
        wait_for(lambda: status(batch_id) == "finalizing", what="finalizing")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = start_worker(settings, *SIM, "--worker-id", "rescuer", **FAST)
    assert finish(second) == 0
    batch = assert_every_line_once(batch_id, n)
    if moment == "during_finalize":
        assert batch.finalizer_id == "rescuer"
    if moment == "mid_chunk":
        assert Chunk.objects.filter(batch_id=batch_id, attempts=2).exists()


def test_sigterm_exits_0_within_the_grace_period_and_another_worker_finishes(client, models, upload, limits, settings):
    limits(chunk_size=25)
    n = 200
    batch_id = make_batch(client, upload, n)
    first = start_worker(
        settings, *SIM, "--worker-id", "leaver", **FAST, SIM_SLEEP_SECONDS="0.05", BATCHSITE_SHUTDOWN_GRACE_SECONDS="2"
    )
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 30, what="progress")
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert finish(first, timeout=20) == 0
    took = time.monotonic() - sent
    assert took < 2 + 8, took  # grace, plus start-up-free shutdown
    worker = Worker.objects.get(pk="leaver")
    assert worker.state == "stopped" and worker.stopped_at is not None
    # Its chunk went straight back to the queue: no waiting for a heartbeat timeout.
    assert not Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.RUNNING).exists()
    assert status(batch_id) == "in_progress"
    second = start_worker(settings, *SIM, **FAST)
    assert finish(second) == 0
    assert_every_line_once(batch_id, n)


def test_four_workers_share_one_batch_and_run_each_chunk_once(client, models, upload, limits, settings):
    limits(chunk_size=5)
    n = 1000  # 200 chunks
    batch_id = make_batch(client, upload, n)
    workers = [
        start_worker(settings, *SIM, "--worker-id", f"w{i}", **FAST, SIM_SLEEP_SECONDS="0.002") for i in range(4)
    ]
    assert [finish(w, timeout=240) for w in workers] == [0, 0, 0, 0]
    assert_every_line_once(batch_id, n)
    chunks = Chunk.objects.filter(batch_id=batch_id)
    assert chunks.count() == 200
    assert set(chunks.values_list("attempts", flat=True)) == {1}
    assert set(chunks.values_list("status", flat=True)) == {ChunkStatus.DONE}
    per_worker = collections.Counter(chunks.values_list("worker_id", flat=True))
    print("chunks per worker:", dict(per_worker))
    assert len(per_worker) >= 2


def test_a_chunk_that_kills_every_worker_fails_after_max_attempts(client, models, upload, limits, settings):
    limits(chunk_size=10)
    batch_id = make_batch(client, upload, 20)
    Chunk.objects.filter(batch_id=batch_id, index=1).update(attempts=3, status=ChunkStatus.RUNNING, worker=None)
    worker = start_worker(settings, *SIM, **FAST, BATCHSITE_MAX_ATTEMPTS="3")
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "completed" and batch.completed == 10 and batch.failed == 10
    with file_service.open_content(File.objects.get(pk=batch.error_file_id)) as fh:
        errors = [json.loads(line) for line in fh]
    assert [e["custom_id"] for e in errors] == [f"req-{i}" for i in range(10, 20)]
    assert {e["error"]["code"] for e in errors} == {"request_failed"}
    assert "BATCHSITE_MAX_ATTEMPTS" in errors[0]["error"]["message"]


def test_cancel_mid_run_keeps_finished_lines_and_cancels_the_rest(client, models, upload, limits, settings):
    limits(chunk_size=50)
    n = 200
    batch_id = make_batch(client, upload, n)
    worker = start_worker(settings, *SIM, **FAST, SIM_SLEEP_SECONDS="0.03")
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 20, what="progress")
    assert client.post(f"/v1/batches/{batch_id}/cancel").json()["status"] == "cancelling"
    wait_for(lambda: status(batch_id) == "cancelled", timeout=15, what="cancelled")
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    ids = custom_ids(batch)
    assert sorted(ids) == sorted(f"req-{i}" for i in range(n))
    assert 20 <= batch.completed < n and batch.completed + batch.failed == n
    with file_service.open_content(File.objects.get(pk=batch.error_file_id)) as fh:
        codes = {json.loads(line)["error"]["code"] for line in fh}
    assert codes == {"batch_cancelled"}
    print(f"cancelled with {batch.completed} of {n} done")


def pg_ctl(*args: str) -> None:
    command = ["pg_ctl", "-D", os.environ["BATCHSITE_TEST_PG_DATA"], *args]
    user = os.environ.get("BATCHSITE_TEST_PG_USER")
    if user:
        command = ["su", user, "-s", "/bin/bash", "-c", " ".join(f"'{a}'" for a in command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(
    "BATCHSITE_TEST_PG_DATA" not in os.environ,
    reason="needs the PostgreSQL started by bin/with-postgres, which it stops and restarts",
)
def test_the_database_going_away_makes_the_worker_wait_and_resume(client, models, upload, limits, settings):
    from django.db import connection

    limits(chunk_size=20)
    n = 200
    batch_id = make_batch(client, upload, n)
    worker = start_worker(settings, *SIM, **FAST, SIM_SLEEP_SECONDS="0.02")
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 20, what="progress")
    connection.close()
    pg_ctl("-m", "immediate", "stop")
    time.sleep(4)
    assert worker.poll() is None, "the worker crashed while the database was down"
    pg_ctl(
        "-w",
        "-l",
        os.environ["BATCHSITE_TEST_PG_DATA"] + "/../restart.log",
        "-o",
        os.environ["BATCHSITE_TEST_PG_OPTIONS"],
        "start",
    )
    assert finish(worker) == 0
    assert_every_line_once(batch_id, n)
