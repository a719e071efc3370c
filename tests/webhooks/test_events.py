"""One event per terminal transition, whichever path made it, written with the transition (the outbox).

The worker here is the SIMULATED engine in this process: these tests are
about which events exist and what they say, not about inference.
"""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, BatchStatus, DeliveryStatus, RegisteredModel, WebhookDelivery
from jobs.services import lifecycle, webhook_secrets
from jobs.webhooks.sender import Sender
from jobs.worker import GpuWorker
from tests.conftest import chat_line
from tests.webhooks.conftest import create_batch, event_of

EVENT_KEYS = {"id", "object", "type", "created_at", "data"}


def make(client, upload, url: str, lines=None, **extra) -> dict:
    response = create_batch(client, upload, url, lines=lines, **extra)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_each_terminal_path_produces_exactly_one_verified_event(client, models, upload, receiver, allow_private, user):
    RegisteredModel.objects.create(name="broken", source="missing:/nowhere", endpoints=["chat"])
    url = receiver.url
    ids = {
        "validation failure": make(client, upload, url, lines=[b"{not json"])["id"],
        "api cancel": make(client, upload, url)["id"],
        "completed by the worker": make(client, upload, url)["id"],
        "load failure": make(client, upload, url, lines=[chat_line(i, model="broken") for i in range(2)])["id"],
        "expiry": make(client, upload, url)["id"],
    }
    # The cancel answers at once; the worker below finalizes it with the rest.
    assert client.post(f"/v1/batches/{ids['api cancel']}/cancel").json()["status"] == "cancelling"
    Batch.objects.filter(pk=ids["expiry"]).update(expires_at=timezone.now())
    # The worker ends the other three; its own sender thread may send some events meanwhile.
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0
    Sender("test").send_due()

    expected = {
        "validation failure": "batch.failed",
        "api cancel": "batch.cancelled",
        "completed by the worker": "batch.completed",
        "load failure": "batch.failed",
        "expiry": "batch.expired",
    }
    assert WebhookDelivery.objects.count() == 5
    received = receiver.wait_for(5)
    secret = webhook_secrets.get_or_create(user).secret
    events = {event["data"]["id"]: event for event in (event_of(r, secret) for r in received)}
    assert len(received) == 5 and len(events) == 5, "one event per batch, each sent once"
    for path, batch_id in ids.items():
        event = events[batch_id]
        assert set(event) == EVENT_KEYS and event["object"] == "event", path
        assert event["type"] == expected[path], path
        assert event["id"].startswith("evt_")
        # The whole batch object, as it was when the batch ended.
        batch = client.get(f"/v1/batches/{batch_id}").json()
        assert event["data"]["status"] == batch["status"] == expected[path].split(".")[1], path
        for key in ("output_file_id", "error_file_id", "request_counts", "errors", "completed_at", "failed_at"):
            assert event["data"][key] == batch[key], (path, key)
        assert batch["webhook_status"] == "delivered", path
    assert events[ids["load failure"]]["data"]["errors"]["data"][0]["code"] == "model_load_failed"
    assert events[ids["validation failure"]]["data"]["errors"]["data"][0]["line"] == 1
    assert events[ids["completed by the worker"]]["data"]["output_file_id"]
    assert len({r.webhook_id for r in received}) == 5


@pytest.mark.django_db
def test_the_event_is_written_in_the_transaction_of_the_transition_or_not_at_all(client, models, upload):
    batch_id = make(client, upload, "https://hooks.example.test/b")["id"]
    with pytest.raises(RuntimeError), transaction.atomic():
        assert lifecycle.end_batch(batch_id, BatchStatus.CANCELLED, Q()) is not None
        assert WebhookDelivery.objects.filter(batch_id=batch_id).exists()
        raise RuntimeError("the transaction fails after the transition")
    assert Batch.objects.get(pk=batch_id).status == "in_progress"
    assert not WebhookDelivery.objects.exists()
    ended = lifecycle.end_batch(batch_id, BatchStatus.CANCELLED, Q())
    assert ended is not None and ended.webhook_delivery.event_type == "batch.cancelled"


@pytest.mark.django_db
def test_a_transition_that_lost_the_race_writes_no_second_event(client, models, upload):
    batch_id = make(client, upload, "https://hooks.example.test/b")["id"]
    assert lifecycle.end_batch(batch_id, BatchStatus.CANCELLED, Q()) is not None
    assert lifecycle.end_batch(batch_id, BatchStatus.COMPLETED, Q()) is None
    assert lifecycle.mark_failing(batch_id, "x", "y") is False
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["batch.cancelled"]


@pytest.mark.django_db
def test_no_webhook_url_means_no_event_and_a_null_status(client, models, upload):
    response = client.post(
        "/v1/batches", {"input_file_id": upload(b"{bad\n")["id"], "endpoint": "/v1/chat/completions"}
    )
    assert response.json()["status"] == "failed" and response.json()["webhook_status"] is None
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_the_event_body_is_frozen_ascii_json_with_the_batch_object_under_data(client, models, upload):
    metadata = {"project": "naïve ☃ \u202e rtl", "quote": '"}\\', "emoji": "\U0001f600"}
    batch = make(client, upload, "https://hooks.example.test/b", lines=[b"[1]"], metadata=metadata)
    delivery = WebhookDelivery.objects.get(batch_id=batch["id"])
    assert delivery.body.isascii()
    event = json.loads(delivery.body)
    assert event["id"] == delivery.event_id and event["type"] == "batch.failed" == delivery.event_type
    assert event["data"]["metadata"] == metadata
    assert event["data"] | {"webhook_status": "pending"} == batch
    assert delivery.status == DeliveryStatus.PENDING and delivery.url == "https://hooks.example.test/b"
    window = (delivery.give_up_at - delivery.created_at).total_seconds()
    assert window == 72 * 3600 and delivery.next_attempt_at == delivery.created_at


@pytest.mark.django_db
def test_the_list_reads_every_webhook_status_without_a_query_per_batch(
    client, models, upload, django_assert_max_num_queries
):
    for _ in range(3):
        make(client, upload, "https://hooks.example.test/b", lines=[b"[1]"])
    make(client, upload, "https://hooks.example.test/b")
    with django_assert_max_num_queries(4):  # 3 today; one per batch would be 7
        data = client.get("/v1/batches").json()["data"]
    assert [b["webhook_status"] for b in data] == ["pending"] * 4
