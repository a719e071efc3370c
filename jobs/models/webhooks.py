"""Webhook secrets, and the outbox of webhook deliveries with their attempts."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from jobs.models.batches import Batch


class WebhookSecret(models.Model):
    """A user's Standard Webhooks signing secret (``whsec_`` + base64 of 32 random bytes).

    Stored as is, not hashed: signing needs the secret itself. After a
    rotation the previous secret keeps signing beside the new one until
    ``previous_until``, so receivers can switch over without losing events.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=100)
    previous = models.CharField(max_length=100, blank=True)
    previous_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.user}"

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a message sent at ``now``: the current one first."""
        if self.previous and self.previous_until is not None and now < self.previous_until:
            return [self.secret, self.previous]
        return [self.secret]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # not yet tried, or tried and not yet failed
    DELIVERED = "delivered"  # a 2xx came back
    FAILING = "failing"  # an attempt failed; another one is due at next_attempt_at
    GAVE_UP = "gave_up"  # the receiver answered 410, or the retry window ran out


SENDABLE = (DeliveryStatus.PENDING, DeliveryStatus.FAILING)


class WebhookDeliveryQuerySet(models.QuerySet["WebhookDelivery"]):
    def due(self) -> WebhookDeliveryQuerySet:
        """Waiting to be sent and not held by a live sender (a lease past its time is a dead sender's).

        Compared with the database's clock: a sender whose own clock runs ahead
        must not see a live lease as run out.
        """
        return self.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lt=Now()),
            status__in=SENDABLE,
            next_attempt_at__lte=Now(),
        )

    def in_send_order(self) -> WebhookDeliveryQuerySet:
        return self.order_by("next_attempt_at", "created_at")


class WebhookDelivery(models.Model):
    """One event to one batch's webhook_url: the outbox row.

    Written in the transaction that makes the batch terminal, with the event
    body frozen as the exact text that is signed and sent, so every retry
    sends the same bytes under the same ``webhook-id`` (this row's id).
    """

    id = models.CharField(primary_key=True, max_length=40, editable=False, help_text="The webhook-id header")
    # One terminal transition per batch, so one event: the constraint makes a
    # second one an error rather than a duplicate delivery.
    batch = models.OneToOneField(Batch, on_delete=models.CASCADE, related_name="webhook_delivery")
    event_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=40)
    url = models.URLField(max_length=2048)
    body = models.TextField(help_text="The JSON text sent, byte for byte, on every attempt")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    give_up_at = models.DateTimeField(help_text="No attempt is started after this time")
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The claim: the sender holding it, until when, and a token that fences
    # its writes (a sender whose lease was taken over records nothing).
    leased_by = models.CharField(max_length=100, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event_type} {self.batch_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: when, by whom, what came back or what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.IntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.IntegerField()
    sender = models.CharField(max_length=100)
    status_code = models.IntegerField(null=True, blank=True)
    response = models.TextField(blank=True, help_text="The start of the response body")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
