"""Webhooks across real processes: a receiver down for 30 s, senders killed with SIGKILL, several senders at once.

The workers are real ``run_gpu_worker`` subprocesses on the SIMULATED engine
(webhooks are not about inference); their sender threads, and
``run_housekeeper`` subprocesses, post to a real receiver on loopback with
the operator's allow-private setting.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from jobs.models import Batch, DeliveryStatus, WebhookAttempt, WebhookDelivery
from jobs.services import webhook_secrets
from tests.conftest import ROOT, free_port, start_worker, subprocess_env
from tests.live import wait_until
from tests.webhooks.conftest import Receiver, Reply, create_batch, event_of
from tests.worker.common import FAST as FAST_BEATS
from tests.worker.common import SIM_ENGINE

pytestmark = pytest.mark.django_db(transaction=True)

SIM = SIM_ENGINE
FAST = {**FAST_BEATS, "BATCHSITE_WEBHOOK_ALLOW_PRIVATE": "1", "BATCHSITE_WEBHOOK_POLL_SECONDS": "0.1"}


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def start_housekeeper(settings: Any, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_housekeeper", *args],
        cwd=ROOT,
        env=subprocess_env(settings, **{**FAST, **env}),
    )


def new_batch(client: Any, upload: Any, url: str, **kwargs: Any) -> str:
    response = create_batch(client, upload, url, **kwargs)
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


def delivery_of(batch_id: str) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(batch_id=batch_id).first()


def test_a_receiver_down_for_30_s_gets_the_event_once_after_a_worker_restart(
    client, models, upload, allow_private, settings, user
):
    receiver = Receiver(port=free_port())  # not started: down
    batch_id = new_batch(client, upload, receiver.url)
    hooks = {**FAST, "BATCHSITE_WEBHOOK_BACKOFF": "1s,2s,4s"}
    first = start_worker(settings, *SIM, "--worker-id", "first", **hooks)
    try:
        wait_until(lambda: Batch.objects.get(pk=batch_id).status == "completed", 60, "the batch to complete")
        delivery = delivery_of(batch_id)
        assert delivery is not None
        down_since = time.monotonic()
        wait_until(lambda: WebhookAttempt.objects.filter(delivery=delivery).count() >= 2, 30, "two failed attempts")
        assert stop(first) == 0
        second = start_worker(settings, *SIM, "--worker-id", "second", **hooks)
        try:
            time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
            receiver.replies = [Reply(503, {"Retry-After": "1"}, body=b"deploying")]
            receiver.start()
            wait_until(
                lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.DELIVERED,
                30,
                "delivery after the receiver came back",
            )
            time.sleep(3)  # longer than any backoff step: nothing more may arrive
        finally:
            assert stop(second) == 0
    finally:
        stop(first, signal.SIGKILL)
        receiver.stop()

    got = receiver.received
    assert len(got) == 2, "one 503 while deploying, then the 2xx: delivered exactly once"
    secret = webhook_secrets.get_or_create(user).secret
    assert {r.webhook_id for r in got} == {delivery.pk}
    assert {event_of(r, secret)["type"] for r in got} == {"batch.completed"}
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert [a.status_code for a in attempts][-2:] == [503, 200]
    assert all(a.status_code is None and "ConnectError" in a.error for a in attempts[:-2])
    assert {"first", "second"} <= {a.sender for a in attempts}
    assert attempts[-1].sender == "second"
    assert sum(1 for a in attempts if a.ok) == 1
    print(f"{len(attempts)} attempts, the last two {got[1].at - got[0].at:.1f}s apart")


def test_a_sender_killed_after_the_row_is_written_loses_nothing(client, models, upload, allow_private, settings, user):
    receiver = Receiver().start()
    try:
        batch_id = new_batch(client, upload, receiver.url)
        # Its sender looks at the outbox when it starts, then not for an hour.
        worker = start_worker(
            settings, *SIM, **{**FAST, "BATCHSITE_WEBHOOK_POLL_SECONDS": "3600", "SIM_SLEEP_SECONDS": "0.3"}
        )
        wait_until(lambda: delivery_of(batch_id) is not None, 60, "the event row")
        assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
        delivery = delivery_of(batch_id)
        assert delivery is not None and delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0
        assert receiver.received == []
        keeper = start_housekeeper(settings, "--once")
        assert keeper.wait(timeout=60) == 0
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
        assert [r.webhook_id for r in receiver.received] == [delivery.pk]
        assert event_of(receiver.received[0], webhook_secrets.get_or_create(user).secret)["type"] == "batch.completed"
    finally:
        receiver.stop()


def test_a_sender_killed_mid_post_is_replaced_once_its_lease_runs_out(
    client, models, upload, allow_private, settings, user
):
    receiver = Receiver().start()
    receiver.replies = [Reply(200, delay=30)]  # the first POST hangs
    hooks = {**FAST, "BATCHSITE_WEBHOOK_TIMEOUT_SECONDS": "2"}  # lease: 2 * 2 + 10 s
    keeper = None
    try:
        batch_id = new_batch(client, upload, receiver.url)
        worker = start_worker(settings, *SIM, "--worker-id", "doomed", **hooks)
        receiver.wait_for(1, timeout=60)
        assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
        delivery = delivery_of(batch_id)
        assert delivery is not None and delivery.leased_by == "doomed" and delivery.attempts == 0
        keeper = start_housekeeper(settings, "--name", "rescuer", **hooks)
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.DELIVERED, 40, "the rescue"
        )
        took = time.time() - receiver.received[0].at
        assert stop(keeper) == 0
    finally:
        if keeper is not None:
            stop(keeper, signal.SIGKILL)
        receiver.stop()
    assert took >= 13, "nobody may send while the dead sender's lease runs"
    assert [r.webhook_id for r in receiver.received] == [delivery.pk, delivery.pk]
    secret = webhook_secrets.get_or_create(user).secret
    assert [event_of(r, secret)["id"] for r in receiver.received] == [delivery.event_id] * 2
    assert list(WebhookAttempt.objects.filter(delivery=delivery).values_list("sender", "status_code")) == [
        ("rescuer", 200)
    ]


def test_several_senders_share_the_outbox_and_send_each_event_once(
    client, models, upload, allow_private, settings, user
):
    receiver = Receiver().start()
    receiver.default = Reply(200, delay=0.05)
    count = 30
    for _ in range(count):
        new_batch(client, upload, receiver.url, lines=[b"not json"])  # failed at create: its event is due now
    keepers = [start_housekeeper(settings, "--name", f"keeper-{i}") for i in range(3)]
    try:
        wait_until(
            lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == count,
            90,
            "every event delivered",
        )
        time.sleep(0.5)
        assert [stop(k) for k in keepers] == [0, 0, 0]
    finally:
        for keeper in keepers:
            stop(keeper, signal.SIGKILL)
        receiver.stop()
    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == count and len(set(ids)) == count, "each event sent once"
    secret = webhook_secrets.get_or_create(user).secret
    assert {event_of(r, secret)["type"] for r in receiver.received} == {"batch.failed"}
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}
    per_sender = collections.Counter(WebhookAttempt.objects.values_list("sender", flat=True))
    print("events per sender:", dict(per_sender))
    assert sum(per_sender.values()) == count
