"""A batch left ``finalizing`` with no finalizer (its finalize failed outside a worker) is
finished by the housekeeper, with no GPU worker anywhere (issue 20 item 1); the API hands
overdue batches over instead of assembling them inside a request (item 6). Real
``run_housekeeper`` processes; no engine is involved."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.models import Batch, File, WebhookDelivery, Worker
from tests.conftest import ROOT, chat_line, run_housekeeper_once, subprocess_env
from tests.webhooks.conftest import create_batch
from tests.worker.common import FAST, lines_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def allow_private(settings: Any) -> None:
    """The operator setting that lets a webhook name loopback (the event is all this test reads)."""
    settings.BATCHSITE_WEBHOOKS = dataclasses.replace(settings.BATCHSITE_WEBHOOKS, allow_private=True)


HOOK = "http://127.0.0.1:9/hook"  # nothing listens: the test looks at the event written, not its delivery


def housekeeper_once(settings: Any) -> None:
    run_housekeeper_once(settings, **FAST)


def overdue_batch(client: Any, upload: Any, lines: int = 3) -> Batch:
    response = create_batch(client, upload, HOOK, lines=[chat_line(i) for i in range(lines)])
    assert response.status_code == 200, response.content
    Batch.objects.filter(pk=response.json()["id"]).update(expires_at=timezone.now())
    return Batch.objects.get(pk=response.json()["id"])


def test_a_batch_whose_expiry_finalize_failed_is_finished_by_the_housekeeper_with_no_worker(
    client, models, upload, allow_private, settings
):
    batch = overdue_batch(client, upload)
    source = File.objects.get(pk=batch.input_file_id).storage_name
    content = default_storage.open(source).read()
    default_storage.delete(source)  # the input's bytes are briefly unreadable
    housekeeper_once(settings)
    stuck = Batch.objects.get(pk=batch.pk)
    assert (stuck.status, stuck.finalizer_id, stuck.finalize_attempts) == ("finalizing", None, 1)
    assert "could not be read" in stuck.finalize_error
    assert not WebhookDelivery.objects.filter(batch_id=batch.pk).exists()
    assert default_storage.save(source, ContentFile(content)) == source  # readable again
    time.sleep(float(FAST["BATCHSITE_STALE_AFTER_SECONDS"]) + 0.5)  # the failed finalize's lease runs out
    assert not Worker.objects.exists()  # no GPU worker, ever
    housekeeper_once(settings)
    ended = Batch.objects.get(pk=batch.pk)
    assert ended.status == "expired" and ended.expired_at is not None, (ended.status, ended.finalize_error)
    assert [line["error"]["code"] for line in lines_of(ended.error_file_id)] == ["batch_expired"] * 3
    [event] = WebhookDelivery.objects.filter(batch_id=batch.pk)
    assert event.event_type == "batch.expired"


def test_a_live_housekeeper_finishes_a_finalize_its_worker_left_and_does_it_once(
    client, models, upload, allow_private, settings
):
    # Left by a finalizer that died: finalizing, no finalizer, its lease long gone.
    batch = overdue_batch(client, upload)
    batch.chunks.update(status="cancelled", finished_at=timezone.now())
    Batch.objects.filter(pk=batch.pk).update(
        status="finalizing", finalizing_at=timezone.now(), finalize_started_at=timezone.now().replace(year=2000)
    )
    keepers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_housekeeper", "--name", f"keeper-{n}"],
            cwd=ROOT,
            env=subprocess_env(settings, **FAST),
        )
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while Batch.objects.get(pk=batch.pk).status == "finalizing":
            assert time.monotonic() < deadline, "the housekeepers did not finish the batch"
            time.sleep(0.1)
    finally:
        for keeper in keepers:
            keeper.terminate()
        for keeper in keepers:
            assert keeper.wait(timeout=30) in (0, -signal.SIGTERM)  # (stopped before its handler was set)
    ended = Batch.objects.get(pk=batch.pk)
    assert ended.status == "expired"
    assert WebhookDelivery.objects.filter(batch_id=batch.pk).count() == 1  # one finalize, one event
    assert File.objects.filter(purpose="batch_output").count() == 1  # the error file, once


def test_reading_an_overdue_batch_hands_it_over_at_once_and_the_housekeeper_finishes_it(
    client, models, upload, allow_private, settings, slow_finalize
):
    slow_finalize(30)  # a finalize in this (the API's) process would hold the request that long
    batch = overdue_batch(client, upload)
    began = time.monotonic()
    listed = client.get("/v1/batches").json()["data"]
    read = client.get(f"/v1/batches/{batch.pk}").json()
    assert time.monotonic() - began < 5
    assert [b["status"] for b in listed] == ["finalizing"] and read["status"] == "finalizing"
    assert read["output_file_id"] is None and read["error_file_id"] is None
    assert not WebhookDelivery.objects.filter(batch_id=batch.pk).exists()
    housekeeper_once(settings)
    assert client.get(f"/v1/batches/{batch.pk}").json()["status"] == "expired"
    assert WebhookDelivery.objects.filter(batch_id=batch.pk, event_type="batch.expired").count() == 1
