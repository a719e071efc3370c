"""The claim asks the policy: which chunk each worker takes, in-process against the database.

Worker rows are registered directly (what the claim reads of a worker is
its row); tests/test_scheduler_workers.py runs real worker processes.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Batch, Chunk, RegisteredModel, Worker
from jobs.services import queue
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db

OTHER = "other-chat"


@pytest.fixture
def other_model(models: Any) -> None:
    RegisteredModel.objects.create(name=OTHER, source="/other", endpoints=["chat"])


def create(client: Any, upload: Any, model: str, n: int = 4) -> str:
    file = upload(jsonl([chat_line(i, model=model) for i in range(n)]))
    response = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


def worker(name: str, loaded: str = "") -> Worker:
    return queue.register_worker(name, "cuda:0", 1, loaded_model=loaded)


def claimed_batch(worker_id: str, model: str | None = None) -> str | None:
    chunk = queue.claim_next(worker_id, model=model)
    return chunk.batch_id if chunk is not None else None


@pytest.fixture
def alternating(client: Any, upload: Any, other_model: None, limits: Any) -> list[str]:
    """A (chat), B (other), A, B: two chunks each."""
    limits(chunk_size=2)
    return [create(client, upload, m) for m in (CHAT_MODEL, OTHER, CHAT_MODEL, OTHER)]


def test_fifo_takes_the_queue_head_whatever_the_worker_has_loaded(alternating, scheduler):
    scheduler(policy="fifo")
    worker("w1", loaded=OTHER)
    assert claimed_batch("w1") == alternating[0]
    # Keeping its engine fed with OTHER, it gets nothing while the head is for another model.
    assert claimed_batch("w1", model=OTHER) is None
    assert claimed_batch("w1", model=CHAT_MODEL) == alternating[0]


def test_affinity_claims_the_loaded_models_chunks_in_fifo_order_first(alternating, scheduler):
    scheduler(policy="affinity")
    worker("w1", loaded=OTHER)
    order = [claimed_batch("w1") for _ in range(4)]
    assert order == [alternating[1], alternating[1], alternating[3], alternating[3]]
    assert claimed_batch("w1", model=OTHER) is None  # nothing left for it
    Worker.objects.filter(pk="w1").update(loaded_model="")
    assert claimed_batch("w1") == alternating[0]


def test_affinity_feeding_the_engine_continues_with_the_loaded_model_past_the_queue_head(alternating, scheduler):
    scheduler(policy="affinity")
    worker("w1")
    assert claimed_batch("w1", model=OTHER) == alternating[1]


def test_a_batch_past_the_bound_stops_the_feed_and_is_claimed_next(alternating, scheduler):
    scheduler(policy="affinity", affinity_max_wait_seconds=60)
    worker("w1", loaded=OTHER)
    Batch.objects.filter(pk=alternating[0]).update(created_at=timezone.now() - timedelta(seconds=61))
    assert claimed_batch("w1", model=OTHER) is None
    assert claimed_batch("w1") == alternating[0]


def test_an_idle_worker_leaves_a_model_held_by_another_worker_to_it(alternating, scheduler):
    scheduler(policy="affinity")
    worker("holder", loaded=CHAT_MODEL)
    worker("idle")
    assert claimed_batch("idle") == alternating[1]


def test_a_model_being_claimed_and_loaded_by_another_worker_counts_as_held(alternating, scheduler):
    scheduler(policy="affinity")
    worker("first")
    worker("second")
    assert claimed_batch("first") == alternating[0]  # nothing loaded anywhere yet: the head
    assert claimed_batch("second") == alternating[1]  # CHAT_MODEL's chunk is running on "first"


def test_a_silent_workers_model_is_not_held(alternating, scheduler):
    scheduler(policy="affinity")
    worker("ghost", loaded=CHAT_MODEL)
    Worker.objects.filter(pk="ghost").update(heartbeat_at=timezone.now() - timedelta(hours=1))
    worker("idle")
    assert claimed_batch("idle") == alternating[0]


def test_when_every_waiting_model_is_held_an_idle_worker_helps_with_the_head(alternating, scheduler):
    scheduler(policy="affinity")
    worker("a", loaded=CHAT_MODEL)
    worker("b", loaded=OTHER)
    worker("idle", loaded="third-model")
    assert claimed_batch("idle") == alternating[0]


def test_the_claim_log_line_names_the_policy_and_its_reason(alternating, scheduler, caplog):
    scheduler(policy="affinity")
    worker("w1", loaded=OTHER)
    with caplog.at_level(logging.INFO, logger="batchsite.worker"):
        claimed_batch("w1")
    assert "scheduler=affinity (loaded model)" in caplog.text


def test_the_policy_file_switches_the_next_claim(alternating, scheduler, tmp_path):
    knob = tmp_path / "scheduler"
    scheduler(policy="fifo", policy_file=str(knob))
    worker("w1", loaded=OTHER)
    knob.write_text("affinity")
    assert claimed_batch("w1") == alternating[1]
    knob.unlink()
    assert claimed_batch("w1") == alternating[0]


def test_expired_and_cancelled_batches_are_never_picked(alternating, scheduler, client):
    scheduler(policy="affinity")
    worker("w1", loaded=OTHER)
    Batch.objects.filter(pk=alternating[1]).update(expires_at=timezone.now())
    client.post(f"/v1/batches/{alternating[3]}/cancel")
    assert claimed_batch("w1") == alternating[0]
    assert not Chunk.objects.filter(batch_id__in=alternating[1::2], status="running").exists()
