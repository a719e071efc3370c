"""Sending: signatures, retries and their schedule, Retry-After, 410, timeouts, leases, attempts recorded.

The sender runs in this process against a real receiver on loopback (with
the operator's allow-private setting); the batches are ones that fail
validation at create, the quickest way to an event.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from jobs.services import webhook_secrets
from jobs.webhooks import outbox
from jobs.webhooks.outbox import Outcome
from jobs.webhooks.sender import Sender
from tests.webhooks.conftest import Receiver, Reply, create_batch, event_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(client, models, upload, receiver, allow_private, webhook_settings):
    """A batch.failed event for the receiver, with a backoff short enough to watch."""
    webhook_settings(backoff=(0.2, 0.4), timeout_seconds=2.0)
    response = create_batch(client, upload, receiver.url, lines=[b"not json"])
    assert response.json()["status"] == "failed"
    return WebhookDelivery.objects.get(batch_id=response.json()["id"])


def send_until_settled(delivery: WebhookDelivery, timeout: float = 20) -> WebhookDelivery:
    sender = Sender("test")
    deadline = time.monotonic() + timeout
    while True:
        sender.send_due()
        delivery.refresh_from_db()
        if delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.GAVE_UP):
            return delivery
        assert time.monotonic() < deadline, f"still {delivery.status} after {timeout}s"
        time.sleep(0.05)


def test_a_2xx_delivers_once_signed_with_the_users_secret(event, receiver, user, client):
    receiver.default = Reply(204, body=b"")
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1 and delivery.delivered_at
    (got,) = receiver.received
    headers = got.headers
    assert headers["webhook-id"] == delivery.id and headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
    assert got.body.decode() == delivery.body  # byte for byte what was frozen
    event_of(got, webhook_secrets.get_or_create(user).secret)
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.number, attempt.status_code, attempt.error, attempt.sender) == (1, 204, "", "test")
    assert client.get(f"/v1/batches/{delivery.batch_id}").json()["webhook_status"] == "delivered"
    assert Sender("test").send_due() == 0  # nothing more to send


def test_another_users_secret_does_not_verify(event, receiver, other_client):
    import openai
    import standardwebhooks
    from django.contrib.auth import get_user_model

    send_until_settled(event)
    bob_secret = webhook_secrets.get_or_create(get_user_model().objects.get(username="bob")).secret
    (got,) = receiver.received
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="x").webhooks.unwrap(got.body, got.headers, secret=bob_secret)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(bob_secret).verify(got.body, got.headers)


def test_failures_are_retried_on_the_schedule_with_the_same_webhook_id(event, receiver, user, client):
    receiver.replies = [Reply(500, body=b"boom " * 400), Reply(502), Reply(201)]
    sender = Sender("test")
    assert sender.send_due() == 1
    event.refresh_from_db()
    assert event.status == DeliveryStatus.FAILING and event.last_status_code == 500
    assert client.get(f"/v1/batches/{event.batch_id}").json()["webhook_status"] == "failing"
    first = WebhookAttempt.objects.get(delivery=event)
    assert first.response == ("boom " * 400)[:500]  # the start of the answer, kept short
    assert event.next_attempt_at - timezone.now() <= timedelta(seconds=0.2)
    assert sender.send_due() == 0, "not due before its backoff"
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 3
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).values_list("number", "status_code"))
    assert attempts == [(1, 500), (2, 502), (3, 201)]
    got = receiver.received
    assert len({r.webhook_id for r in got}) == 1 and len(got) == 3
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    secret = webhook_secrets.get_or_create(user).secret
    assert {event_of(r, secret)["id"] for r in got} == {delivery.event_id}
    assert len({r.headers["webhook-timestamp"] for r in got}) >= 1  # signed afresh each attempt


def test_retry_after_is_honoured(event, receiver):
    receiver.replies = [Reply(503, {"Retry-After": "2"})]
    Sender("test").send_due()
    event.refresh_from_db()
    wait = (event.next_attempt_at - timezone.now()).total_seconds()
    assert 1.5 < wait <= 2.0, wait
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert receiver.received[1].at - receiver.received[0].at >= 2.0


def test_a_410_stops_the_retries(event, receiver, client):
    receiver.default = Reply(410, body=b"gone")
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.GAVE_UP and delivery.attempts == 1
    time.sleep(0.5)
    assert Sender("test").send_due() == 0 and len(receiver.received) == 1
    assert client.get(f"/v1/batches/{delivery.batch_id}").json()["webhook_status"] == "gave_up"


def test_it_gives_up_when_the_next_try_would_fall_past_the_retry_window(event, receiver):
    receiver.default = Reply(500)
    WebhookDelivery.objects.filter(pk=event.pk).update(give_up_at=timezone.now() + timedelta(seconds=0.5))
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.GAVE_UP
    assert 2 <= delivery.attempts <= 3 and len(receiver.received) == delivery.attempts


def test_the_default_schedule_is_openais_and_lasts_72_hours(settings):
    assert settings.BATCHSITE_WEBHOOKS.backoff == (5, 300, 1800, 7200, 18000, 36000)
    at, attempt, times = 0.0, 1, [0.0]
    while at + outbox.delay_after(attempt) <= settings.BATCHSITE_WEBHOOKS.retry_for:
        at += outbox.delay_after(attempt)
        attempt += 1
        times.append(at)
    assert times[:6] == [0, 5, 305, 2105, 9305, 27305]
    assert len(times) == 12 and 67 * 3600 < times[-1] <= 72 * 3600


@pytest.mark.parametrize(
    "header, seconds",
    [("120", 120), ("0", 0), ("soon", None), ("", None), ("-5", None), ("99999999999999999999999", 1e23)],
)
def test_retry_after_parses_seconds_and_ignores_nonsense(header, seconds):
    assert outbox.parse_retry_after(header, timezone.now()) == seconds


def test_retry_after_as_an_http_date():
    now = timezone.now()
    header = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 88 <= outbox.parse_retry_after(header, now) <= 91


def test_a_huge_retry_after_gives_up_instead_of_overflowing(event, receiver):
    receiver.default = Reply(429, {"Retry-After": "9" * 30})
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.GAVE_UP and delivery.attempts == 1


def test_a_receiver_that_never_answers_costs_one_timeout(event, receiver, webhook_settings):
    webhook_settings(timeout_seconds=0.5)
    receiver.replies = [Reply(200, delay=5)]
    began = time.monotonic()
    Sender("test").send_due()
    assert time.monotonic() - began < 2
    attempt = WebhookAttempt.objects.get(delivery=event)
    assert attempt.error == "no answer within 0.5s" and attempt.status_code is None and attempt.duration_ms < 2000


def test_a_receiver_that_drips_its_answer_cannot_hold_the_sender_past_the_timeout(event, receiver, webhook_settings):
    webhook_settings(timeout_seconds=1.0)
    receiver.replies = [Reply(200, body=b"." * 200, drip=0.1)]  # 20 s of body
    began = time.monotonic()
    Sender("test").send_due()
    assert time.monotonic() - began < 2.5
    event.refresh_from_db()
    # The status line came back in time, and it is the answer.
    assert event.status == DeliveryStatus.DELIVERED
    attempt = WebhookAttempt.objects.get(delivery=event)
    assert attempt.status_code == 200 and "cut off" in attempt.error and 0 < len(attempt.response) < 20


def test_a_receiver_that_is_down_is_a_failed_attempt(event, receiver):
    receiver.stop()
    Sender("test").send_due()
    attempt = WebhookAttempt.objects.get(delivery=event)
    assert attempt.status_code is None and "ConnectError" in attempt.error


def test_a_claim_is_a_lease_no_other_sender_can_take_until_it_runs_out(event):
    first = outbox.claim_next("a")
    assert first is not None and first.delivery.pk == event.pk
    assert outbox.claim_next("b") is None, "leased: another sender must not send the same attempt"
    # The first sender dies mid-send; once its lease has run out another takes over.
    WebhookDelivery.objects.filter(pk=event.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    second = outbox.claim_next("b")
    assert second is not None and second.token != first.token
    late = Outcome(timezone.now(), 5, status_code=200)
    assert outbox.record(first, late) is None, "the dead sender's late result is fenced off"
    assert not WebhookAttempt.objects.exists()
    recorded = outbox.record(second, late)
    assert recorded is not None and recorded.status == DeliveryStatus.DELIVERED
    assert list(WebhookAttempt.objects.values_list("sender", flat=True)) == ["b"]
    assert recorded.leased_by == "" and recorded.leased_until is None


def test_redeliver_now_sends_a_given_up_event_again(event, receiver):
    receiver.replies = [Reply(410)]
    assert send_until_settled(event).status == DeliveryStatus.GAVE_UP
    assert outbox.redeliver([event.pk]) == 1
    delivery = send_until_settled(event)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert [r.webhook_id for r in receiver.received] == [event.pk, event.pk]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_https_receivers_get_the_event_with_the_certificate_checked(
    client, models, upload, allow_private, tls_files, host
):
    import ssl

    secure = Receiver().start(tls=tls_files)
    try:
        url = f"https://{host}:{secure.port}/hook"
        response = create_batch(client, upload, url, lines=[b"not json"])
        delivery = WebhookDelivery.objects.get(batch_id=response.json()["id"])
        # Default trust (the public CAs) refuses the test's self-signed certificate...
        Sender("public-trust").send_due()
        attempt = WebhookAttempt.objects.get(delivery=delivery)
        assert "CERTIFICATE_VERIFY_FAILED" in attempt.error and secure.received == []
        # ...and a sender that trusts it (as a test-only trust root) delivers, the
        # name checked against the certificate though the connection is by address.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        trusting = Sender("test-trust")
        trusting.ssl_context = ssl.create_default_context(cafile=tls_files[0])
        assert trusting.send_due() == 1
    finally:
        secure.stop()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and [r.webhook_id for r in secure.received] == [delivery.pk]
