"""The claim and cancel paths race without a deadlock, and concurrent cancels of one batch
all get the batch back. The deadlock needs PostgreSQL's row locks to show (SQLite
serialises the two transactions); the tests run on both."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from jobs.models import Batch, Chunk, ChunkStatus
from jobs.services import batches as batch_service
from jobs.services import queue
from tests.conftest import housekeeper_pass
from tests.worker.common import make_batch

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(errors: list[BaseException], fn: Any) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # collected for the assertion, whatever it is
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_claim_racing_a_cancel_of_the_same_batch_does_not_deadlock(client, models, upload, limits, monkeypatch):
    limits(chunk_size=5)
    batch_id = make_batch(client, upload, 20)
    queue.register_worker("racer", "", 1)
    holding = threading.Event()
    mark_cancelling = Batch.mark_cancelling

    def slow_mark_cancelling(batch: Batch) -> None:
        # (Test-only widening of the race window.) The cancel holds the batch's row
        # lock here, before it locks the batch's pending chunks; the claim runs now.
        holding.set()
        time.sleep(1.5)
        mark_cancelling(batch)

    monkeypatch.setattr(Batch, "mark_cancelling", slow_mark_cancelling)
    errors: list[BaseException] = []
    claimed: list[Any] = []
    cancel = in_thread(errors, lambda: batch_service.cancel_batch(Batch.objects.get(pk=batch_id)))
    assert holding.wait(10)
    claim = in_thread(errors, lambda: claimed.append(queue.claim_next("racer")))
    cancel.join(30)
    claim.join(30)
    assert not errors, errors  # PostgreSQL answers a lock cycle with "deadlock detected"
    batch = Batch.objects.get(pk=batch_id)
    statuses = sorted(Chunk.objects.filter(batch_id=batch_id).values_list("status", flat=True))
    if connection.vendor == "sqlite":  # the claim waited for the cancel to commit, then found nothing
        assert claimed == [None] and batch.status == "cancelling"  # its finalize is left to the housekeeper
        assert statuses == [ChunkStatus.CANCELLED] * 4
        housekeeper_pass()
        assert Batch.objects.get(pk=batch_id).status == "cancelled"
    else:  # the claim took a chunk while the cancel held the batch; the cancel left it to its worker
        assert claimed[0] is not None and batch.status == "cancelling"
        assert statuses == [ChunkStatus.CANCELLED] * 3 + [ChunkStatus.RUNNING]


def test_concurrent_cancels_of_one_batch_all_get_the_batch(client, api_key, models, upload, slow_finalize):
    batch_id = make_batch(client, upload, 10)
    slow_finalize(1.0)  # the housekeeper finishes it slowly, while the other cancels come in
    answers: list[tuple[int, dict[str, Any]]] = []
    errors: list[BaseException] = []

    def cancel() -> None:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
        response = api.post(f"/v1/batches/{batch_id}/cancel")
        answers.append((response.status_code, response.json()))

    cancel()  # the first one, then five more while the housekeeper finishes the batch
    threads = [in_thread(errors, housekeeper_pass)] + [in_thread(errors, cancel) for _ in range(5)]
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert [code for code, _ in answers] == [200] * 6, answers
    assert {body["id"] for _, body in answers} == {batch_id}
    assert {body["status"] for _, body in answers} <= {"cancelling", "finalizing", "cancelled"}
    assert Batch.objects.get(pk=batch_id).status == "cancelled"
