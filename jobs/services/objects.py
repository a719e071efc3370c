"""The OpenAI-shaped objects batchsite hands out, as plain dicts.

The API returns them, webhook events carry them and the pages read them, so
they are built here, below all three, from one field list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.models import Batch, DeliveryStatus, Priority, WebhookDelivery
from jobs.services import scheduling

# OpenAI's Batch object field by field (timestamps as Unix seconds).
BATCH_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def webhook_status(batch: Batch) -> str | None:
    """pending / delivered / failing / gave_up; null without a webhook_url.

    A batch that has not ended yet has no event, and is ``pending``. Lists
    select_related("webhook_delivery") so this reads no row of its own.
    """
    if not batch.webhook_url:
        return None
    try:
        return str(batch.webhook_delivery.status)
    except WebhookDelivery.DoesNotExist:
        return DeliveryStatus.PENDING.value


def batch_object(batch: Batch, plan: scheduling.QueuePlan | None = None) -> dict[str, Any]:
    """Every field of OpenAI's Batch object, then batchsite's additive queue fields.

    ``plan`` (from ``scheduling.queue_plan``) lets a list share one plan;
    without it the cached plan is used (fresh for a batch newer than it).
    """
    entry = scheduling.plan_for(batch, plan)
    body: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.shown_status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
    }
    body.update({name: unix(getattr(batch, name)) for name in BATCH_TIMESTAMPS})
    body.update(
        {
            "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
            "metadata": batch.metadata,
            "model": batch.model,
            "usage": batch.usage,
            # batchsite's extensions, additive so OpenAI's clients ignore them.
            "queue_position": entry.position if entry is not None else None,
            "progress_percent": batch.progress_percent,
            "estimated_completion_time": unix(entry.finishes_at) if entry is not None else None,
            "started_at": unix(batch.started_at),
            "webhook_url": batch.webhook_url or None,
            "webhook_status": webhook_status(batch),
            "retry_of": batch.retry_of,
            "priority": Priority(batch.priority).label,
        }
    )
    return body
