"""Batch events: the outbox row written when a batch ends.

``batch_ended`` runs inside the transaction that makes a batch terminal
(``lifecycle``), so the event commits with the status or not at all: no
terminal batch is ever without its event, whichever process ended it, and a
crash right after the commit loses nothing. Sending is someone else's job
(``jobs.webhooks``, running in every worker and in ``run_housekeeper``).

The body is OpenAI's webhook event (``batch.completed``, ``batch.failed``,
``batch.expired``, ``batch.cancelled``; ``data.id`` is the batch id) with the
whole batch object under ``data`` as a documented extension, so a receiver
needs no second request. It is frozen here, as the exact text every attempt
signs and sends.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

from django.conf import settings

from jobs.models import Batch, WebhookDelivery
from jobs.models.clock import db_now
from jobs.services.objects import batch_object


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(16)


def event_body(batch: Batch, event_id: str, created_at: int) -> str:
    event = {
        "id": event_id,
        "object": "event",
        "type": f"batch.{batch.status}",
        "created_at": created_at,
        "data": batch_object(batch),
    }
    # ASCII only: a lone surrogate in a user's metadata is escaped instead of
    # making the body unencodable, and the bytes sent are the text stored.
    return json.dumps(event, ensure_ascii=True, separators=(",", ":"))


def batch_ended(batch: Batch) -> WebhookDelivery | None:
    """Record the event of a batch that just became terminal, if it has a webhook_url.

    Call inside the transaction that made ``batch`` terminal.
    """
    if not batch.webhook_url or not batch.is_terminal:
        return None
    # The database's clock: the due and give-up times are compared by senders
    # on other hosts (jobs.webhooks.outbox), never with this host's clock.
    now = db_now()
    event_id = new_event_id()
    return WebhookDelivery.objects.create(
        id=new_webhook_id(),
        batch=batch,
        event_id=event_id,
        event_type=f"batch.{batch.status}",
        url=batch.webhook_url,
        body=event_body(batch, event_id, int(now.timestamp())),
        created_at=now,
        next_attempt_at=now,
        give_up_at=now + timedelta(seconds=settings.BATCHSITE_WEBHOOKS.retry_for),
    )
