"""Results survive faults between the engine and the output file: a batch whose handling
raises fails alone, a lost or overwritten part is caught before publishing, and a finalize
has one finalizer at a time. Real worker subprocesses on the SIMULATED engine."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.models import Batch, Chunk, ChunkStatus, File, Worker
from jobs.models.clock import ago
from tests.conftest import chat_line, housekeeper_pass, run_housekeeper_once, start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, lines_of, make_batch, status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_whose_input_vanished_fails_after_its_attempts_and_the_worker_goes_on(
    client, models, upload, settings, tmp_path: Path
):
    broken = make_batch(client, upload, 5)
    good = make_batch(client, upload, 5)
    input_file = File.objects.get(pk=Batch.objects.get(pk=broken).input_file_id)
    default_storage.delete(input_file.storage_name)  # the bytes are gone; the row is not
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = start_worker(settings, *SIM, stderr=err, **FAST, BATCHSITE_MAX_ATTEMPTS="3")
        assert finish(worker) == 0, log.read_text()[-3000:]
    assert_every_line_once(good, 5)
    batch = Batch.objects.get(pk=broken)
    assert batch.status == "failed"
    [error] = batch.errors["data"]
    assert error["code"] == "finalize_failed"
    assert f"the input file {input_file.id} could not be read" in error["message"]
    assert "BATCHSITE_MAX_ATTEMPTS=3" in error["message"]
    assert batch.finalize_attempts == 3 and batch.failed_at is not None
    text = log.read_text()
    # Each fault was logged with the batch it belongs to.
    assert f"batch {broken}: the input of chunk" in text and f"batch {broken}: finalize failed" in text
    # The chunk's lines were tried BATCHSITE_MAX_ATTEMPTS times, then failed with the reason.
    chunk = Chunk.objects.get(batch_id=broken)
    assert chunk.status == ChunkStatus.FAILED and chunk.attempts == 3 and "FileNotFoundError" in chunk.last_error


def test_a_deleted_part_sends_its_chunk_back_and_the_output_has_every_line_once(
    client, models, upload, settings, limits
):
    limits(chunk_size=5)
    lines = [chat_line(i) for i in range(10)]
    for line in lines[5:]:
        line["body"]["sim_sleep"] = 0.3  # chunk 1 keeps the batch open while chunk 0's part goes
    batch_id = make_batch(client, upload, lines)
    worker = start_worker(settings, *SIM, **FAST)
    wait_for(lambda: Chunk.objects.filter(batch_id=batch_id, index=0, status=ChunkStatus.DONE).exists(), what="chunk 0")
    # In the file store (a folder on disk, or a prefix in the bucket), wherever the session's storage is.
    files = default_storage.listdir(f"parts/{batch_id}")[1]
    lost = [name for name in files if name.startswith("000000-") and name.endswith(".out.jsonl")]
    assert len(lost) == 1
    default_storage.delete(f"parts/{batch_id}/{lost[0]}")
    assert finish(worker) == 0
    batch = assert_every_line_once(batch_id, 10)
    assert batch.completed == 10
    chunk = Chunk.objects.get(batch_id=batch_id, index=0)
    assert chunk.attempts == 2 and chunk.fence == 2 and "is missing" in chunk.last_error


def test_a_worker_that_lost_its_chunk_cannot_overwrite_the_winners_part(client, models, upload, settings, limits):
    limits(chunk_size=5)
    lines = [chat_line(i) for i in range(10)]
    for line in lines[5:]:
        line["body"]["sim_sleep"] = 0.5  # keeps the batch open until the loser has written
    batch_id = make_batch(client, upload, lines)
    loser = start_worker(settings, *SIM, "--worker-id", "loser", **FAST, FAULT_PART_PAUSE_SECONDS="3")
    try:
        # The loser has finished chunk 0 and is about to write its part: freeze it there,
        # so it stops heart-beating and the winner takes the chunk over.
        wait_for(
            lambda: Chunk.objects.filter(batch_id=batch_id, index=0, worker_id="loser", completed=5).exists(),
            what="the loser to finish chunk 0",
        )
        loser.send_signal(signal.SIGSTOP)
        # Once it looks dead, the winner's first look at the queue takes chunk 0 back and
        # runs it, then goes on with the slow chunk 1 while the loser writes.
        wait_for(lambda: Worker.objects.filter(pk="loser", heartbeat_at__lt=ago(2.5)).exists(), what="silence")
        winner = start_worker(settings, *SIM, "--worker-id", "winner", **FAST)
        wait_for(
            lambda: Chunk.objects.filter(batch_id=batch_id, index=0, status=ChunkStatus.DONE).exists(),
            what="the winner to finish chunk 0",
        )
    finally:
        loser.send_signal(signal.SIGCONT)  # it writes its stale part now
    assert finish(winner) == 0 and finish(loser) == 0
    batch = assert_every_line_once(batch_id, 10)
    by_line = {line["custom_id"]: line["response"]["body"]["pid"] for line in lines_of(batch.output_file_id)}
    assert {by_line[f"req-{i}"] for i in range(5)} == {winner.pid}
    chunk = Chunk.objects.get(batch_id=batch_id, index=0)
    # The winner's part was published as it was: not lost and run a third time.
    assert chunk.worker_id == "winner" and chunk.attempts == 2 and [part["fence"] for part in chunk.parts] == [2]


def test_a_housekeeper_finishing_a_cancel_is_not_taken_over_by_a_worker(
    client, models, upload, settings, slow_finalize
):
    batch_id = make_batch(client, upload, 20)
    # The cancel answers at once and assembles nothing (issue 20 item 6).
    assert client.post(f"/v1/batches/{batch_id}/cancel").json()["status"] == "cancelling"
    slow_finalize(3.0)  # the housekeeper's finalize takes a while
    keeper = threading.Thread(target=housekeeper_pass)
    keeper.start()
    wait_for(lambda: status(batch_id) == "finalizing", what="the housekeeper to start finalizing")
    worker = start_worker(settings, *SIM, **{**FAST, "BATCHSITE_STALE_AFTER_SECONDS": "30"})
    keeper.join(timeout=30)
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "cancelled" and batch.finalize_attempts == 0
    assert batch.finalizer_id is None  # the housekeeper's finalize ended it; the worker did not take it over
    codes = [e["error"]["code"] for e in lines_of(batch.error_file_id)]
    assert codes == ["batch_cancelled"] * 20  # every line once: nobody assembled it twice


def test_a_finalize_whose_finalizer_died_is_taken_over_by_the_housekeeper_and_not_by_a_get(
    client, models, upload, settings
):
    batch_id = make_batch(client, upload, 5)
    Chunk.objects.filter(batch_id=batch_id).update(status=ChunkStatus.CANCELLED)
    # An API process died while it finalized a cancel: no worker, and its lease ran out.
    Batch.objects.filter(pk=batch_id).update(
        status="finalizing",
        cancelling_at=timezone.now(),
        finalizer=None,
        finalize_started_at=timezone.now() - timezone.timedelta(minutes=5),
    )
    # The API answers at once and never assembles a batch inside a request (issue 20 item 6).
    shown = client.get(f"/v1/batches/{batch_id}").json()
    # (Stored as finalizing; a cancelled batch shows OpenAI's cancelling until it is cancelled.)
    assert (shown["status"], shown["error_file_id"], shown["output_file_id"]) == ("cancelling", None, None)
    [listed] = [b for b in client.get("/v1/batches").json()["data"] if b["id"] == batch_id]
    assert listed["status"] == "cancelling"
    assert Batch.objects.get(pk=batch_id).finalize_attempts == 0  # nobody tried to finalize it
    # One housekeeper pass (a real run_housekeeper process, no worker anywhere) takes it over.
    run_housekeeper_once(settings, **FAST)
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "cancelled" and batch.finalizer_id is None and batch.cancelled_at is not None
    assert (batch.total, batch.completed, batch.failed) == (5, 0, 5)
    assert [e["error"]["code"] for e in lines_of(batch.error_file_id)] == ["batch_cancelled"] * 5
