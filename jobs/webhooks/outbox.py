"""Claiming due deliveries, recording attempts, and the retry schedule.

A sender claims one delivery at a time with a lease, the way a worker claims
a chunk: the claim is a guarded UPDATE (still due, lease free or past its
time) whose row count decides, inside one short transaction (FOR UPDATE SKIP
LOCKED on PostgreSQL; SQLite's IMMEDIATE transaction serialises it), and the
POST happens after it commits. So no two senders send the same attempt; a
sender killed mid-POST leaves a lease that runs out, and the next sender
sends the same bytes under the same webhook-id. Recording an attempt is
fenced by the claim's token: a sender that lost its lease records nothing.

Every time here (due, lease, retry, give-up) is the database's clock
(``jobs.models.clock``), as chunk leases are: senders run on many hosts, and
one whose clock ran ahead would see a live lease as run out and send the
same event a second time.
"""

from __future__ import annotations

import email.utils
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from jobs.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from jobs.models.clock import Now, db_now, later

# How much of a receiver's answer is kept with each attempt.
RESPONSE_EXCERPT_CHARS = 500


@dataclass(frozen=True)
class Claim:
    delivery: WebhookDelivery
    sender: str
    token: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code and the start of the body, or an error."""

    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    response: str = ""
    error: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_next(sender: str) -> Claim | None:
    """Lease the delivery that has been due longest; None if none is due."""
    # The plain read answers "nothing due" (nearly every poll) without a
    # transaction, which on SQLite would take the database's write lock.
    if not WebhookDelivery.objects.due().exists():
        return None
    token = secrets.token_hex(16)
    lease = settings.BATCHSITE_WEBHOOKS.lease_seconds
    with transaction.atomic():
        candidates = WebhookDelivery.objects.due().in_send_order()
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        delivery_id = candidates.values_list("pk", flat=True).first()
        if delivery_id is None:
            return None
        claimed = (
            WebhookDelivery.objects.due()
            .filter(pk=delivery_id)
            .update(leased_by=sender, leased_until=later(lease), lease_token=token)
        )
        if claimed != 1:
            return None
    delivery = WebhookDelivery.objects.select_related("batch").get(pk=delivery_id)
    return Claim(delivery, sender, token)


def delay_after(attempt: int) -> float:
    """Seconds before the attempt after attempt number ``attempt`` (1-based); the last step repeats."""
    backoff = settings.BATCHSITE_WEBHOOKS.backoff
    return backoff[min(attempt, len(backoff)) - 1]


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from ``now``: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def record(claim: Claim, outcome: Outcome) -> WebhookDelivery | None:
    """Store the attempt and what follows from it; None if the claim was lost meanwhile."""
    delivery = claim.delivery
    number = delivery.attempts + 1
    now = db_now()
    fields: dict[str, object] = {}
    if outcome.ok:
        status = DeliveryStatus.DELIVERED
        fields["delivered_at"] = now
    elif outcome.status_code == 410:
        status = DeliveryStatus.GAVE_UP  # Gone: the receiver says never again
    else:
        wait = delay_after(number)
        if outcome.retry_after is not None:
            # Never sooner than the receiver asked, nor sooner than the schedule;
            # a wait past the retry window gives up (and is capped to stay a date).
            retry_for = settings.BATCHSITE_WEBHOOKS.retry_for
            wait = max(wait, min(outcome.retry_after, retry_for + 1.0))
        next_at = now + timedelta(seconds=wait)
        if next_at > delivery.give_up_at:
            status = DeliveryStatus.GAVE_UP
        else:
            status = DeliveryStatus.FAILING
            fields["next_attempt_at"] = next_at
    with transaction.atomic():
        changed = WebhookDelivery.objects.filter(pk=delivery.pk, lease_token=claim.token).update(
            status=status,
            attempts=F("attempts") + 1,
            last_status_code=outcome.status_code,
            last_error=outcome.error,
            leased_by="",
            leased_until=None,
            lease_token="",
            **fields,
        )
        if not changed:
            return None
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk,
            number=number,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            sender=claim.sender,
            status_code=outcome.status_code,
            response=outcome.response[:RESPONSE_EXCERPT_CHARS],
            error=outcome.error,
        )
    return WebhookDelivery.objects.get(pk=delivery.pk)


def redeliver(delivery_ids: list[str]) -> int:
    """The operator's "redeliver now": due at once, with a fresh retry window.

    Delivered and given-up events are sent again too (same webhook-id, so a
    receiver that already has it can tell). A send in progress keeps its
    lease, and its result, when it comes, decides the status.
    """
    window = settings.BATCHSITE_WEBHOOKS.retry_for
    return WebhookDelivery.objects.filter(pk__in=delivery_ids).update(
        status=DeliveryStatus.PENDING, next_attempt_at=Now(), give_up_at=later(window)
    )
