"""Per-user signing secrets: the command that shows and rotates them, and the 24 h overlap."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from datetime import timedelta

import openai
import pytest
import standardwebhooks
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs.models import WebhookDelivery, WebhookSecret
from jobs.services import webhook_secrets
from jobs.webhooks import outbox
from jobs.webhooks.sender import Sender
from tests.conftest import ROOT, subprocess_env
from tests.webhooks.conftest import create_batch

pytestmark = pytest.mark.django_db


def verifies(received, secret: str) -> bool:
    """Both verifiers agree on whether ``secret`` signed this request."""
    try:
        openai.OpenAI(api_key="x").webhooks.unwrap(received.body, received.headers, secret=secret)
        by_openai = True
    except openai.InvalidWebhookSignatureError:
        by_openai = False
    try:
        standardwebhooks.Webhook(secret).verify(received.body, received.headers)
        by_standard = True
    except standardwebhooks.WebhookVerificationError:
        by_standard = False
    assert by_openai == by_standard
    return by_openai


def test_a_secret_is_whsec_and_32_random_bytes_made_once_per_user(user, django_user_model):
    first = webhook_secrets.get_or_create(user)
    assert first.secret.startswith("whsec_") and len(base64.b64decode(first.secret[6:])) == 32
    assert webhook_secrets.get_or_create(user).secret == first.secret
    other = webhook_secrets.get_or_create(django_user_model.objects.create_user("carol"))
    assert other.secret != first.secret


def test_the_command_prints_the_secret_last_and_rotates_it(user):
    out = io.StringIO()
    call_command("webhook_secret", "alice", stdout=out, stderr=io.StringIO())
    shown = out.getvalue().strip().splitlines()[-1]
    assert shown == WebhookSecret.objects.get(user=user).secret
    out = io.StringIO()
    call_command("webhook_secret", "alice", "--rotate", stdout=out, stderr=io.StringIO())
    rotated = WebhookSecret.objects.get(user=user)
    assert out.getvalue().strip().splitlines()[-1] == rotated.secret != shown
    assert rotated.previous == shown
    assert timedelta(hours=23, minutes=59) < rotated.previous_until - timezone.now() <= timedelta(hours=24)


def test_the_command_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("webhook_secret", "nobody", stdout=io.StringIO())
    assert not WebhookSecret.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_command_as_a_user_runs_it(user, settings):
    result = subprocess.run(
        [sys.executable, "manage.py", "webhook_secret", "alice"],
        cwd=ROOT,
        env=subprocess_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == WebhookSecret.objects.get(user=user).secret


def test_during_the_overlap_both_secrets_sign_and_after_it_only_the_new_one(
    client, models, upload, receiver, allow_private, webhook_settings, user
):
    webhook_settings(backoff=(0.05,))
    old = webhook_secrets.get_or_create(user).secret
    response = create_batch(client, upload, receiver.url, lines=[b"not json"])
    delivery = WebhookDelivery.objects.get(batch_id=response.json()["id"])
    new = webhook_secrets.rotate(user).secret

    Sender("t").send_due()
    during = receiver.received[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verifies(during, new) and verifies(during, old)

    # 24 hours later (the overlap's end moved to now rather than waiting a day).
    WebhookSecret.objects.filter(user=user).update(previous_until=timezone.now() - timedelta(seconds=1))
    outbox.redeliver([delivery.pk])
    Sender("t").send_due()
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verifies(after, new) and not verifies(after, old)
    assert during.webhook_id == after.webhook_id == delivery.pk


def test_a_second_rotation_within_the_overlap_keeps_two_secrets(user):
    first = webhook_secrets.get_or_create(user).secret
    second = webhook_secrets.rotate(user).secret
    third = webhook_secrets.rotate(user).secret
    assert webhook_secrets.signing_secrets(user) == [third, second]
    assert first not in webhook_secrets.signing_secrets(user)
