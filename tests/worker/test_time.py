"""Time is the database's: workers whose host clocks are an hour off neither lose their
chunks nor take others', nor hide their own death; and a batch past its window expires
even when no worker is left to expire it. Real worker subprocesses on the SIMULATED
engine; FAULT_CLOCK_OFFSET_SECONDS skews a worker's clock as Django sees it."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Batch, Chunk, ChunkStatus
from tests.conftest import run_housekeeper_once, start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, lines_of, make_batch, status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = "3600"


def test_workers_whose_clocks_are_an_hour_off_keep_their_chunks(client, models, upload, settings, limits):
    limits(chunk_size=5)
    n = 100
    batch_id = make_batch(client, upload, n)
    late = start_worker(
        settings,
        *SIM,
        "--worker-id",
        "late",
        **FAST,
        SIM_SLEEP_SECONDS="0.05",
        FAULT_CLOCK_OFFSET_SECONDS="-" + HOUR,
    )
    wait_for(lambda: Chunk.objects.filter(worker_id="late", status=ChunkStatus.RUNNING).exists(), what="late to run")
    # By its own clock, "late" last beat an hour ago; "early" looks at the queue as soon as it starts.
    early = start_worker(
        settings,
        *SIM,
        "--worker-id",
        "early",
        **FAST,
        SIM_SLEEP_SECONDS="0.02",
        FAULT_CLOCK_OFFSET_SECONDS=HOUR,
    )
    assert finish(late) == 0 and finish(early) == 0
    assert_every_line_once(batch_id, n)
    chunks = Chunk.objects.filter(batch_id=batch_id)
    assert set(chunks.values_list("attempts", flat=True)) == {1}  # nobody's chunk was taken back
    assert set(chunks.values_list("worker_id", flat=True)) == {"late", "early"}


def test_a_worker_whose_clock_runs_an_hour_ahead_is_still_seen_to_die(client, models, upload, settings, limits):
    limits(chunk_size=10)
    batch_id = make_batch(client, upload, 40)
    doomed = start_worker(
        settings,
        *SIM,
        "--worker-id",
        "doomed",
        **FAST,
        SIM_SLEEP_SECONDS="0.05",
        FAULT_CLOCK_OFFSET_SECONDS=HOUR,
    )
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 5, what="progress")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    rescuer = start_worker(settings, *SIM, "--worker-id", "rescuer", **FAST)
    # Its heartbeats said "an hour from now"; the stale limit (2 s here) still applies.
    assert finish(rescuer, timeout=30) == 0
    assert_every_line_once(batch_id, 40)


def test_an_overdue_batch_expires_with_its_partial_results_when_no_worker_is_left(
    client, models, upload, settings, limits, worker_conf
):
    limits(chunk_size=5)
    worker_conf(stale_after_seconds=2)  # what this (the API's) process takes for a dead worker
    n = 20
    started = make_batch(client, upload, n)
    worker = start_worker(settings, *SIM, **FAST, SIM_SLEEP_SECONDS="0.1")
    wait_for(lambda: Chunk.objects.filter(batch_id=started, status=ChunkStatus.DONE).exists(), what="chunk 0")
    worker.send_signal(signal.SIGKILL)  # no worker is left, and its chunk still says running
    worker.wait(timeout=10)
    never_started = make_batch(client, upload, 3)
    Batch.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    # Reading the batch stops it once the dead worker's heartbeat is stale, and hands its
    # finalize over (the request assembles nothing); the housekeeper finishes it.
    wait_for(lambda: client.get(f"/v1/batches/{started}").json()["status"] == "finalizing", timeout=15, what="expiry")
    listed = {b["id"]: b["status"] for b in client.get("/v1/batches").json()["data"]}
    assert listed[never_started] == "finalizing"  # listing them is enough too
    run_housekeeper_once(settings, **FAST)
    batch = assert_every_line_once(started, n, status="expired")
    done = Chunk.objects.filter(batch_id=started, status=ChunkStatus.DONE).count()
    assert batch.completed >= 5 * done >= 5 and len(lines_of(batch.output_file_id)) == batch.completed
    assert {e["error"]["code"] for e in lines_of(batch.error_file_id)} == {"batch_expired"}
    assert status(never_started) == "expired"
    assert_every_line_once(never_started, 3, status="expired")
