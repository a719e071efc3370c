"""Batch events: tell a batch's webhook_url when the batch ends.

The body is shaped like OpenAI's webhook events (``batch.completed``,
``batch.failed``, ``batch.expired``, ``batch.cancelled``) with the whole batch
object as ``data``, so a receiver needs no second request. Delivery runs on a
daemon thread with a few retries: a slow or dead receiver must never hold up
a worker or lose the batch's results, which are already stored.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.models import Batch
from jobs.services.objects import batch_object

log = logging.getLogger("batchsite.webhooks")

ATTEMPTS = 4
TIMEOUT_SECONDS = 10.0


def event_for(batch: Batch) -> dict[str, Any]:
    return {
        "object": "event",
        "id": "evt_" + secrets.token_hex(12),
        "type": f"batch.{batch.status}",
        "created_at": int(timezone.now().timestamp()),
        "data": batch_object(batch),
    }


def deliver(url: str, event: dict[str, Any], backoff: float = 1.0) -> bool:
    payload = json.dumps(event).encode()
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(
            url,
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "batchsite-webhook", "webhook-id": event["id"]},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                if 200 <= response.status < 300:
                    log.info("webhook %s for %s delivered to %s", event["type"], event["data"]["id"], url)
                    return True
        except (urllib.error.URLError, OSError) as exc:
            log.warning("webhook to %s failed (attempt %d/%d): %s", url, attempt, ATTEMPTS, exc)
        time.sleep(backoff * 2 ** (attempt - 1))
    log.error("webhook %s for %s to %s given up after %d attempts", event["type"], event["data"]["id"], url, ATTEMPTS)
    return False


def batch_ended(batch: Batch) -> None:
    """Called inside the transaction that made ``batch`` terminal; sends once it commits."""
    if not batch.webhook_url or not batch.is_terminal:
        return
    event = event_for(batch)

    def send() -> None:
        threading.Thread(
            target=deliver, args=(batch.webhook_url, event), daemon=True, name=f"webhook-{batch.id}"
        ).start()

    transaction.on_commit(send)
