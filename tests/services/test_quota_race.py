"""Two submits at once by a user one batch short of their quota: exactly one passes.

Needs PostgreSQL (``bin/with-postgres``): the queue's advisory lock is what
serialises the check there; on SQLite the write transaction already does, and
threads cannot share its in-memory test database.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections

from jobs.models import Batch, Quota, RegisteredModel
from jobs.services import batches as batch_service
from jobs.services import quotas
from jobs.services.batches import BatchRequest
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="run with bin/with-postgres")
def test_concurrent_submits_at_the_quota_do_not_both_pass(settings):
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    alice = get_user_model().objects.create_user(username="alice")
    Quota.objects.create(user=alice, max_queued_batches=1)
    content = jsonl([chat_line(i) for i in range(50)])
    barrier = threading.Barrier(4)
    outcomes: list[Any] = []

    def submit() -> None:
        try:
            barrier.wait()
            upload = SimpleUploadedFile("in.jsonl", content)
            request = BatchRequest(None, "24h", model=CHAT_MODEL)
            outcomes.append(batch_service.create_batch_from_upload(alice, upload, request).status)
        except quotas.QuotaReached as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["in_progress"] + ["user_queue_full"] * 3
    assert Batch.objects.filter(owner=alice).count() == 1
