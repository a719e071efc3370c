"""A model that will not load fails nothing at once: its worker backs off from it, other
workers and other batches go on, and only a deterministic failure fails its batch, which
keeps what ran. Real worker subprocesses on the SIMULATED engine (its loads fail on cue:
a "missing:" source always, "flaky:N:" N times, SIM_UNLOADABLE on one worker only)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from jobs.models import Batch, Chunk, ModelLoadFailure, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, lines_of, make_batch, status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RETRY_FAST = {**FAST, "BATCHSITE_MODEL_LOAD_ATTEMPTS": "3", "BATCHSITE_MODEL_LOAD_BACKOFF_SECONDS": "0.2"}


def test_a_broken_model_is_retried_with_backoff_while_the_next_batch_runs_then_fails_its_batch(
    client, models, upload, settings, tmp_path: Path
):
    RegisteredModel.objects.create(name="broken", source="missing:/nowhere", endpoints=["chat"])
    broken = make_batch(client, upload, [chat_line(i, model="broken") for i in range(3)])
    good = make_batch(client, upload, 3)
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = start_worker(settings, *SIM, stderr=err, **RETRY_FAST, SIM_SLEEP_SECONDS="0.1")
        assert finish(worker) == 0
    failed, completed = Batch.objects.get(pk=broken), Batch.objects.get(pk=good)
    assert completed.status == "completed"
    assert failed.status == "failed", failed.errors
    [error] = failed.errors["data"]
    assert error["code"] == "model_load_failed" and "missing:/nowhere" in error["message"]
    # It backed off instead of failing the batch at once: the good batch, queued
    # after it, finished first, and the broken model was tried the configured 3 times.
    assert completed.completed_at < failed.failed_at
    assert log.read_text().count("model broken failed to load:") == 3
    # Its unrun lines are in its error file, with the code.
    assert {line["error"]["code"] for line in lines_of(failed.error_file_id)} == {"model_load_failed"}
    assert failed.failed == 3 and failed.output_file_id is None
    assert not ModelLoadFailure.objects.exists()  # a batch submitted later gets its own tries


def test_a_model_one_worker_cannot_load_is_run_by_another(client, models, upload, settings, limits):
    limits(chunk_size=5)
    batch_id = make_batch(client, upload, 20)
    slow = {**FAST, "BATCHSITE_MODEL_LOAD_BACKOFF_SECONDS": "60", "SIM_SLEEP_SECONDS": "0.02"}
    small = start_worker(settings, *SIM, "--worker-id", "small-gpu", **slow, SIM_UNLOADABLE=CHAT_MODEL)
    wait_for(lambda: ModelLoadFailure.objects.filter(worker_id="small-gpu").exists(), what="the first failed load")
    big = start_worker(settings, *SIM, "--worker-id", "big-gpu", **slow)
    assert finish(big) == 0 and finish(small) == 0
    assert_every_line_once(batch_id, 20)
    assert set(Chunk.objects.filter(batch_id=batch_id).values_list("worker_id", flat=True)) == {"big-gpu"}
    # The chunk small-gpu handed back was not counted as a try of its lines.
    assert set(Chunk.objects.filter(batch_id=batch_id).values_list("attempts", flat=True)) == {1}
    assert ModelLoadFailure.objects.get(worker_id="small-gpu").failures == 1


def test_a_load_that_fails_once_is_retried_and_the_batch_completes(client, models, upload, settings):
    RegisteredModel.objects.filter(name=CHAT_MODEL).update(source="flaky:2:/models/smollm2")
    batch_id = make_batch(client, upload, 4)
    worker = start_worker(settings, *SIM, **RETRY_FAST)
    assert finish(worker) == 0
    assert_every_line_once(batch_id, 4)


def test_a_batch_whose_model_breaks_after_work_was_done_keeps_that_work(client, models, upload, settings, limits):
    limits(chunk_size=10)
    n = 40
    batch_id = make_batch(client, upload, n)
    first = start_worker(settings, *SIM, **FAST, SIM_SLEEP_SECONDS="0.02", BATCHSITE_SHUTDOWN_GRACE_SECONDS="0")
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 15, what="progress")
    first.send_signal(signal.SIGTERM)
    assert finish(first) == 0
    done_before = Batch.objects.get(pk=batch_id).completed
    # The operator moves the model's files away; every load fails the same way from now on.
    RegisteredModel.objects.filter(name=CHAT_MODEL).update(source="missing:/models/moved")
    second = start_worker(settings, *SIM, **RETRY_FAST)
    assert finish(second) == 0
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "failed" and batch.errors["data"][0]["code"] == "model_load_failed"
    out, errors = lines_of(batch.output_file_id), lines_of(batch.error_file_id)
    assert len(out) == batch.completed == done_before >= 15
    assert {e["error"]["code"] for e in errors} == {"model_load_failed"}
    assert sorted(x["custom_id"] for x in out + errors) == sorted(f"req-{i}" for i in range(n))
    assert status(batch_id) == "failed" and batch.failed == n - done_before
