"""The dashboard's data: anonymised rows for other users' batches, workers, throughput per minute."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, File, ModelMeasure, Worker, WorkerState
from jobs.services import overview, scheduling

pytestmark = pytest.mark.django_db


def batch(owner: Any, model: str = "m", total: int = 10, **fields: Any) -> Batch:
    now = timezone.now()
    file = File.objects.create(owner=owner, purpose="batch", filename="in.jsonl", storage_name="x")
    values: dict[str, Any] = dict(
        owner=owner,
        model=model,
        endpoint="/v1/chat/completions",
        input_file=file,
        status=BatchStatus.IN_PROGRESS,
        in_progress_at=now,
        total=total,
        expires_at=now + timedelta(hours=24),
    )
    values.update(fields)
    return Batch.objects.create(**values)


@pytest.fixture
def people(db: Any) -> tuple[Any, Any, Any]:
    User = get_user_model()
    return (
        User.objects.create_user("ann"),
        User.objects.create_user("ben"),
        User.objects.create_user("ops", is_staff=True),
    )


def test_other_users_batches_carry_no_batch_only_position_model_size_and_eta(people):
    ann, ben, ops = people
    now = timezone.now()
    running = batch(ann, "chat-model", 100, started_at=now - timedelta(seconds=50), completed=40, failed=10)
    queued = batch(ben, "embed-model", 7)
    # A live worker with measured rates, so the queue plan promises times.
    Worker.objects.create(id="w1", host="h", pid=1, device="cpu", heartbeat_at=now, loaded_model="chat-model")
    for model in ("chat-model", "embed-model"):
        ModelMeasure.objects.create(
            model=model, host="h", device="cpu", requests_per_second=1.0, load_seconds=5, chunks=1, loads=1
        )
    view = overview.queue_view(ben, now)
    (theirs,) = view.running
    assert theirs.batch is None and theirs.anonymous
    assert (theirs.model, theirs.total, theirs.position, theirs.done, theirs.rate) == ("chat-model", 100, 0, 0, None)
    assert theirs.eta is not None and theirs.eta > now and theirs.eta == scheduling.estimated_completion(running)
    (mine,) = view.queued
    assert mine.batch == queued and mine.position == 1
    own = overview.queue_view(ann, now).running[0]
    assert own.batch == running and own.done == 50 and own.rate == pytest.approx(1.0, rel=0.01)
    assert overview.queue_view(ann, now).queued[0].batch is None
    # Staff see every batch in full.
    assert all(
        row.batch is not None for row in overview.queue_view(ops, now).running + overview.queue_view(ops, now).queued
    )


def test_recent_batches_are_the_viewers_own_unless_staff(people):
    ann, ben, ops = people
    now = timezone.now()
    done = batch(ann, status=BatchStatus.COMPLETED, completed_at=now - timedelta(hours=1))
    batch(ann, status=BatchStatus.FAILED, failed_at=now - timedelta(days=2))  # too old
    assert overview.queue_view(ann, now).recent == [done]
    assert overview.queue_view(ben, now).recent == []
    assert overview.queue_view(ops, now).recent == [done]


def test_workers_show_state_device_status_and_their_batch_anonymised_for_others(people, settings):
    ann, ben, _ = people
    now = timezone.now()
    stale = settings.BATCHSITE_WORKER.stale_after_seconds
    gpu = Worker.objects.create(
        id="w-gpu",
        host="gpu-1",
        pid=1,
        device="cuda:0",
        state=WorkerState.RUNNING,
        heartbeat_at=now,
        stats={"kind": "gpu"},
    )
    Worker.objects.create(id="w-silent", host="cpu-1", pid=2, heartbeat_at=now - timedelta(seconds=stale + 5))
    Worker.objects.create(
        id="w-gone",
        host="cpu-1",
        pid=3,
        state=WorkerState.STOPPED,
        heartbeat_at=now,
        stopped_at=now - timedelta(hours=2),
    )
    anns = batch(ann, "chat-model")
    Chunk.objects.create(
        batch=anns,
        index=0,
        first_line=1,
        start_byte=0,
        end_byte=1,
        request_count=10,
        status=ChunkStatus.RUNNING,
        worker=gpu,
    )
    rows = {row.worker.id: row for row in overview.worker_rows(ann, now)}
    assert set(rows) == {"w-gpu", "w-silent"}  # a worker stopped hours ago is no longer listed
    assert rows["w-gpu"].current_batch == anns and rows["w-gpu"].stats == {"kind": "gpu"}
    assert rows["w-silent"].state == "silent" and rows["w-gpu"].state == "running"
    theirs = {row.worker.id: row for row in overview.worker_rows(ben, now)}["w-gpu"]
    assert theirs.current_batch is None and theirs.current_is_other and theirs.current_model == "chat-model"


def test_throughput_spreads_each_chunks_requests_over_its_run_per_model(people):
    ann, _, _ = people
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    chat, embed = batch(ann, "chat-model", 600), batch(ann, "embed-model", 60)

    def chunk(b: Batch, index: int, **fields: Any) -> None:
        Chunk.objects.create(batch=b, index=index, first_line=1, start_byte=0, end_byte=1, request_count=400, **fields)

    # 400 requests over exactly four whole minutes, ended 10 minutes ago: 100 a minute.
    chunk(
        chat,
        0,
        status=ChunkStatus.DONE,
        completed=390,
        failed=10,
        claimed_at=minute - timedelta(minutes=14),
        finished_at=minute - timedelta(minutes=10),
    )
    # Running now: 60 done in its first two minutes, counted up to now.
    chunk(embed, 0, status=ChunkStatus.RUNNING, completed=60, claimed_at=now - timedelta(minutes=2))
    # Ended before the window: not drawn.
    chunk(
        chat,
        1,
        status=ChunkStatus.DONE,
        completed=400,
        claimed_at=now - timedelta(hours=5),
        finished_at=now - timedelta(hours=4),
    )
    data = overview.throughput(hours=1, now=now)
    assert data.minutes == 60 and list(data.series) == ["chat-model", "embed-model"]
    chat_counts = data.series["chat-model"]
    assert sum(chat_counts) == pytest.approx(400)
    assert [round(c) for c in chat_counts[-15:-11]] == [100, 100, 100, 100]
    assert sum(data.series["embed-model"]) == pytest.approx(60)
    assert data.total == pytest.approx(460)


def test_a_chunk_that_ended_in_an_instant_counts_in_its_minute(people):
    ann, _, _ = people
    now = timezone.now()
    b = batch(ann, "m")
    Chunk.objects.create(
        batch=b,
        index=0,
        first_line=1,
        start_byte=0,
        end_byte=1,
        request_count=5,
        status=ChunkStatus.DONE,
        completed=5,
        claimed_at=now,
        finished_at=now,
    )
    assert overview.throughput(hours=1, now=now).series["m"][-1] == 5
