"""The claim under fair share and priority, in-process against the database.

Worker rows are registered directly (what the claim reads of a worker is its
row); tests/test_fair_share_live.py runs a real worker on the demo model.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobs.models import Batch, Chunk, Priority, RegisteredModel, Worker
from jobs.models.quotas import ShareUsage
from jobs.services import queue, share
from tests.conftest import CHAT_MODEL, chat_line, create_batch

pytestmark = pytest.mark.django_db

OTHER = "other-chat"


@pytest.fixture
def other_model(models: Any) -> None:
    RegisteredModel.objects.create(name=OTHER, source="/other", endpoints=["chat"])


def create(api: Any, upload: Any, model: str = CHAT_MODEL, n: int = 4) -> str:
    return create_batch(api, upload, [chat_line(i, model=model) for i in range(n)])


def drain(worker_id: str) -> list[str]:
    """Claim and end every chunk in turn, one worker: the batches in the order they were served."""
    order = []
    while (chunk := queue.claim_next(worker_id)) is not None:
        order.append(chunk.batch_id)
        assert queue.end_chunk(chunk, worker_id, None)
        share.record_claim(chunk)
    return order


def test_one_user_is_served_in_exactly_the_order_fair_share_off_gives(
    client, upload, other_model, limits, scheduler, settings
):
    limits(chunk_size=2)
    for policy in ("fifo", "affinity"):
        Batch.objects.all().delete()
        ids = [create(client, upload, m) for m in (CHAT_MODEL, OTHER, CHAT_MODEL, OTHER)]
        scheduler(policy=policy, fair_share=True)
        queue.register_worker("w1", "cuda:0", 1, loaded_model=OTHER)
        fair = drain("w1")
        Chunk.objects.filter(batch_id__in=ids).update(status="pending", worker=None)
        scheduler(fair_share=False)
        queue.register_worker("w1", "cuda:0", 1, loaded_model=OTHER)
        assert drain("w1") == fair, policy


def test_a_second_users_batch_is_served_next_not_after_the_first_users_queue(
    client, other_client, upload, models, limits, scheduler
):
    limits(chunk_size=2)
    scheduler(policy="fifo", fair_share=True)
    alices = [create(client, upload, n=6), create(client, upload, n=6)]
    bobs = create(other_client, upload, n=2)
    queue.register_worker("w1", "cuda:0", 1, loaded_model=CHAT_MODEL)
    queue.register_worker("w2", "cuda:0", 1, loaded_model=CHAT_MODEL)
    first = queue.claim_next("w1")
    assert first is not None and first.batch_id == alices[0]
    # Alice is being served; Bob has had nothing and waited longest: his turn.
    second = queue.claim_next("w2")
    assert second is not None and second.batch_id == bobs


def test_with_fair_share_off_the_queue_is_fifo_across_users(client, other_client, upload, models, limits, scheduler):
    limits(chunk_size=2)
    scheduler(policy="fifo", fair_share=False)
    alices = [create(client, upload, n=4), create(client, upload, n=2)]
    bobs = create(other_client, upload, n=2)
    queue.register_worker("w1", "cuda:0", 1)
    assert drain("w1") == [alices[0], alices[0], alices[1], bobs]


def test_users_take_turns_by_worker_time(client, other_client, upload, models, limits, scheduler):
    limits(chunk_size=1)
    scheduler(policy="fifo", fair_share=True)
    alices = create(client, upload, n=4)
    bobs = create(other_client, upload, n=4)
    queue.register_worker("w1", "cuda:0", 1)
    order = []
    while (chunk := queue.claim_next("w1")) is not None:
        order.append(chunk.batch_id)
        assert queue.end_chunk(chunk, "w1", None)
        share.record(chunk.batch.owner_id, 10.0)  # each chunk: 10 s of worker time
    assert order == [alices, bobs] * 4


@pytest.mark.parametrize("fair_share", [True, False])
def test_priority_orders_a_users_own_batches_then_fifo(client, upload, models, limits, scheduler, fair_share):
    limits(chunk_size=2)
    scheduler(policy="fifo", fair_share=fair_share)
    normal, high, low, normal2 = (create(client, upload, n=2) for _ in range(4))
    Batch.objects.filter(pk=high).update(priority=Priority.HIGH)
    Batch.objects.filter(pk=low).update(priority=Priority.LOW)
    queue.register_worker("w1", "cuda:0", 1)
    assert drain("w1") == [high, normal, normal2, low]


def test_priority_orders_within_the_owner_fair_share_chose(client, other_client, upload, models, limits, scheduler):
    limits(chunk_size=2)
    scheduler(policy="fifo", fair_share=True)
    bobs = create(other_client, upload, n=2)
    alices = [create(client, upload, n=2), create(client, upload, n=2)]
    Batch.objects.filter(pk=alices[1]).update(priority=Priority.HIGH)
    share.record(Batch.objects.get(pk=bobs).owner_id, 100.0)  # bob is above his share
    queue.register_worker("w1", "cuda:0", 1)
    assert drain("w1")[0] == alices[1]


def test_a_chunk_taken_back_from_a_dead_worker_counts_its_time_to_the_owner(client, upload, models, limits, user):
    limits(chunk_size=2)
    create(client, upload, n=2)
    queue.register_worker("dead", "cuda:0", 1)
    chunk = queue.claim_next("dead")
    assert chunk is not None
    Chunk.objects.filter(pk=chunk.pk).update(claimed_at=chunk.claimed_at - timedelta(seconds=40))
    Worker.objects.filter(pk="dead").update(heartbeat_at=chunk.claimed_at - timedelta(seconds=3600))
    assert queue.sweep_stale(stale_after=30, max_attempts=3) == [chunk.batch_id]
    assert ShareUsage.objects.get(pk=user.pk).seconds == pytest.approx(40, abs=5)
