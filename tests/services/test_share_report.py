"""Worker time per user over the last hour, and who waits how long (jobs/services/share_report.py).

Claims go through the queue's own claim and end (queue.claim_next, queue.end_chunk,
share.record_claim); no engine runs, as none is needed to time a claim. Where a test
needs a claim of a given length, it moves the claim's start back in the database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from jobs.models import Batch, Chunk, Quota, Worker, WorkerTime
from jobs.models.clock import db_now
from jobs.services import queue, share, share_report
from tests.conftest import chat_line, create_batch

pytestmark = pytest.mark.django_db


def create(api: Any, upload: Any, n: int = 4) -> str:
    return create_batch(api, upload, [chat_line(i) for i in range(n)])


def run_claim(worker_id: str, seconds: float) -> Chunk:
    """Claim the next chunk, make its claim ``seconds`` old, and end it as a worker does."""
    chunk = queue.claim_next(worker_id)
    assert chunk is not None
    Chunk.objects.filter(pk=chunk.pk).update(claimed_at=db_now() - timedelta(seconds=seconds))
    chunk.refresh_from_db()
    assert queue.end_chunk(chunk, worker_id, None)
    share.record_claim(chunk)
    return chunk


def test_an_ended_claim_is_recorded_once_with_its_run_seconds(client, upload, models, limits):
    limits(chunk_size=2)
    create(client, upload)
    queue.register_worker("w1", "cpu", 1)
    chunk = run_claim("w1", 40)
    row = WorkerTime.objects.get()
    assert row.user_id == chunk.batch.owner_id and row.seconds == pytest.approx(40, abs=2)
    assert share_report.worker_seconds_total() == {chunk.batch.owner_id: pytest.approx(40, abs=2)}


def test_the_last_hour_counts_only_the_part_of_a_claim_inside_it(user):
    now = db_now()
    # 90 to 30 minutes ago: only its last 30 minutes are in the hour.
    WorkerTime.objects.create(
        user=user, started_at=now - timedelta(minutes=90), ended_at=now - timedelta(minutes=30), seconds=3600
    )
    # Wholly before the hour: not counted at all.
    WorkerTime.objects.create(
        user=user, started_at=now - timedelta(hours=3), ended_at=now - timedelta(hours=2), seconds=3600
    )
    seconds = share_report.worker_seconds(now - timedelta(hours=1), now)
    assert seconds == {user.pk: pytest.approx(1800)}
    # The counter keeps every claim, in or out of the window.
    assert share_report.worker_seconds_total() == {user.pk: pytest.approx(7200)}


def test_a_running_claim_counts_up_to_now(client, upload, models, limits, user):
    limits(chunk_size=2)
    create(client, upload)
    queue.register_worker("w1", "cpu", 1)
    chunk = queue.claim_next("w1")
    assert chunk is not None
    Chunk.objects.filter(pk=chunk.pk).update(claimed_at=db_now() - timedelta(seconds=25))
    load = share_report.loads()[user.pk]
    assert load.seconds == pytest.approx(25, abs=2)
    assert load.oldest_wait is None  # its batch is being served: not waiting
    assert WorkerTime.objects.count() == 0  # nothing ended: the counter has not moved


def test_shares_add_to_100_and_follow_the_seconds(client, other_client, upload, models, limits, user):
    limits(chunk_size=2)
    create(client, upload)
    bob = get_user_model().objects.get(username="bob")
    create(other_client, upload)
    Quota.objects.create(user=bob, weight=2)
    queue.register_worker("w1", "cpu", 1)
    chunks = [run_claim("w1", seconds) for seconds in (30, 30, 60, 60)]
    owners = {c.batch.owner_id for c in chunks}
    assert owners == {user.pk, bob.pk}
    report = share_report.report(get_user_model().objects.create_user("op", is_staff=True))
    assert sum(row.percent for row in report.rows) == pytest.approx(100.0)
    by_name = {row.label: row for row in report.rows}
    assert by_name["alice"].seconds + by_name["bob"].seconds == pytest.approx(180, abs=4)
    assert by_name["bob"].weight == 2 and by_name["alice"].weight == 1


def test_with_no_worker_time_every_share_is_zero_and_waits_are_shown(client, upload, models, user):
    create(client, upload)
    report = share_report.report(user)
    assert [row.label for row in report.rows] == ["you"]
    row = report.rows[0]
    assert row.percent == 0.0 and row.seconds == 0.0
    assert row.queued_batches == 1 and row.queued_requests == 4
    assert row.oldest_wait is not None and row.oldest_wait >= 0
    assert row.due_percent == pytest.approx(100.0)


def test_a_non_staff_viewer_gets_no_name_or_id_of_anyone_else(other_client, upload, models):
    # An id no count on the page could equal by chance.
    carol = get_user_model().objects.create_user("carol", pk=424242, email="carol@example.org")
    WorkerTime.objects.create(user=carol, started_at=db_now() - timedelta(seconds=50), ended_at=db_now(), seconds=50)
    create(other_client, upload)
    bob = get_user_model().objects.get(username="bob")
    report = share_report.report(bob)
    assert sorted(row.label for row in report.rows) == ["another user", "you"]
    assert not report.named
    # The rows carry no user at all: nothing a template could print by mistake.
    for row in report.rows:
        assert not {carol.pk, "carol", carol.email} & {v for v in vars(row).values() if not isinstance(v, bool)}


def test_a_wait_runs_from_acceptance_and_restarts_when_a_chunk_of_the_batch_is_served(
    client, upload, models, limits, user
):
    limits(chunk_size=2)
    batch_id = create(client, upload)
    Batch.objects.filter(pk=batch_id).update(created_at=db_now() - timedelta(minutes=5))
    assert share_report.loads()[user.pk].oldest_wait == pytest.approx(300, abs=5)
    queue.register_worker("w1", "cpu", 1)
    run_claim("w1", 10)  # its first chunk ran and ended just now; the second waits since then
    assert share_report.loads()[user.pk].oldest_wait == pytest.approx(0, abs=5)


def test_a_claim_the_stale_sweep_takes_back_is_timed_like_one_that_ended(client, upload, models, limits, user):
    limits(chunk_size=2)
    create(client, upload, n=2)
    queue.register_worker("dead", "cpu", 1)
    chunk = queue.claim_next("dead")
    assert chunk is not None
    Chunk.objects.filter(pk=chunk.pk).update(claimed_at=db_now() - timedelta(seconds=40))
    Worker.objects.filter(pk="dead").update(heartbeat_at=db_now() - timedelta(hours=1))
    assert queue.sweep_stale(stale_after=30, max_attempts=3) == [chunk.batch_id]
    assert share_report.worker_seconds_total() == {user.pk: pytest.approx(40, abs=5)}
    # Handed back, it runs no more: the hour holds its 40 s once, not also as a running claim.
    assert share_report.loads()[user.pk].seconds == pytest.approx(40, abs=5)
