"""Operators see each delivery with its attempts, and can redeliver now."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote

from jobs.models import DeliveryStatus, WebhookDelivery
from jobs.webhooks.sender import Sender
from tests.webhooks.conftest import Reply, create_batch

pytestmark = pytest.mark.django_db


def test_the_admin_lists_deliveries_shows_attempts_and_redelivers_now(
    staff, client, models, upload, receiver, allow_private
):
    receiver.replies = [Reply(410, body=b"this hook is gone")]
    batch_id = create_batch(client, upload, receiver.url, lines=[b"not json"]).json()["id"]
    delivery = WebhookDelivery.objects.get(batch_id=batch_id)
    Sender("sender-1").send_due()

    listing = staff.get("/admin/jobs/webhookdelivery/?status=gave_up").content.decode()
    assert delivery.id in listing and "batch.failed" in listing and batch_id in listing
    assert staff.get(f"/admin/jobs/webhookdelivery/?q={batch_id}").content.decode().count(delivery.id) >= 1
    # Escaped as the admin escapes ids: "wh_25…" unescaped reads as "wh%…", a flaky miss.
    page = staff.get(f"/admin/jobs/webhookdelivery/{quote(delivery.pk)}/change/").content.decode()
    for text in ("410", "this hook is gone", "sender-1", receiver.url, delivery.event_id):
        assert text in page, text
    assert staff.get("/admin/jobs/webhookdelivery/add/").status_code == 403  # events come from batches only

    response = staff.post(
        "/admin/jobs/webhookdelivery/",
        {"action": "redeliver_now", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert "1 event(s) will be sent again" in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    Sender("sender-2").send_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert [r.webhook_id for r in receiver.received] == [delivery.pk, delivery.pk]
