"""Each user's webhook signing secret: shown, rotated, and the ones that sign right now.

The web UI's keys page and ``manage.py webhook_secret`` call these; the
sender calls ``signing_secrets`` for every attempt, so a rotation applies to
retries of events written before it too.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction

from jobs.models import WebhookSecret
from jobs.models.clock import db_now

PREFIX = "whsec_"
# After a rotation the old secret signs beside the new one this long, so a
# receiver can deploy the new secret without rejecting events meanwhile.
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """``whsec_`` and 32 random bytes in base64, the Standard Webhooks (and OpenAI) format."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def get_or_create(user: Any) -> WebhookSecret:
    """The user's secret (a user or a user id), made on first use (by the sender or by the user looking at it)."""
    user_id = getattr(user, "pk", user)
    secret, _ = WebhookSecret.objects.get_or_create(user_id=user_id, defaults={"secret": new_secret()})
    return secret


def rotate(user: Any) -> WebhookSecret:
    """A new secret; the current one keeps signing beside it for ROTATION_OVERLAP.

    A second rotation within the overlap drops the oldest secret: receivers
    keep at most two secrets, and so do the signatures.
    """
    with transaction.atomic():
        current = get_or_create(user)
        current = WebhookSecret.objects.select_for_update().get(pk=current.pk)
        now = db_now()  # compared by senders on other hosts: the shared clock
        current.previous = current.secret
        current.previous_until = now + ROTATION_OVERLAP
        current.secret = new_secret()
        current.rotated_at = now
        current.save(update_fields=["previous", "previous_until", "secret", "rotated_at"])
    return current


def signing_secrets(user: Any) -> list[str]:
    """The secrets that sign a message sent now: the current one, then the previous one during the overlap."""
    return get_or_create(user).signing_secrets(db_now())
