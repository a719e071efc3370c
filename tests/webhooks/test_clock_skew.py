"""A sender on a host whose clock runs ahead: leases and due times are on the database's clock.

The skewed sender is a real ``run_housekeeper --once`` subprocess under
libfaketime (Debian's ``faketime``), ten minutes ahead of everyone else; the
receiver is real, on loopback. On PostgreSQL only: SQLite's ``NOW`` is read
from the clock of the process that asks (so under faketime it is skewed too),
and a SQLite file is never shared between hosts anyway.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from django.db import connection

from jobs.models import DeliveryStatus, WebhookDelivery
from jobs.webhooks import outbox
from jobs.webhooks.sender import Sender
from tests.conftest import ROOT, subprocess_env
from tests.webhooks.conftest import Reply, create_batch

pytestmark = pytest.mark.django_db(transaction=True)

AHEAD = "+600s"  # far past any lease (2 * timeout + 10 s) and any backoff step used here


@pytest.fixture(autouse=True)
def _postgresql_and_faketime() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's NOW is the asking process's clock; the PostgreSQL pass runs this")
    assert shutil.which("faketime"), "faketime (Debian package) is needed: bin/setup --dev installs it"


def run_skewed_sender(settings: Any) -> None:
    """One pass of every housekeeping job (webhooks included) in a process ten minutes ahead."""
    env = subprocess_env(
        settings,
        BATCHSITE_WEBHOOK_ALLOW_PRIVATE="1",
        # Only the wall clock runs ahead: timeouts measured on the monotonic one stay true.
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    command = ["faketime", "-f", AHEAD, sys.executable, "manage.py", "run_housekeeper", "--once", "--name", "ahead"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The skew took: the process's own clock really was ahead.
    probe = subprocess.run(
        ["faketime", "-f", AHEAD, sys.executable, "-c", "import time; print(time.time())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(probe.stdout) - time.time() > 590


def test_a_sender_whose_clock_runs_ahead_neither_takes_a_live_lease_nor_sends_early(
    client, models, upload, receiver, allow_private, webhook_settings, settings
):
    webhook_settings(backoff=(120.0,), timeout_seconds=2.0)
    response = create_batch(client, upload, receiver.url, lines=[b"not json"])
    delivery = WebhookDelivery.objects.get(batch_id=response.json()["id"])

    # A live sender (this process, on the right clock) holds the lease, mid-POST.
    claim = outbox.claim_next("live")
    assert claim is not None and claim.delivery.pk == delivery.pk
    run_skewed_sender(settings)
    assert receiver.received == [], "the skewed sender took a live lease and sent the event a second time"
    delivery.refresh_from_db()
    assert (delivery.leased_by, delivery.attempts) == ("live", 0)

    # The live sender's attempt fails: the retry is due in 120 s of the database's clock.
    receiver.default = Reply(503)
    Sender("live").send(claim)
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILING and delivery.leased_by == ""
    run_skewed_sender(settings)
    assert len(receiver.received) == 1, "the skewed sender retried before the retry was due"

    # Once it is due, the skewed sender sends it, once, and its give-up check is the database's too.
    outbox.redeliver([delivery.pk])
    receiver.default = Reply(200)
    run_skewed_sender(settings)
    assert len(receiver.received) == 2
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert abs(int(receiver.received[-1].headers["webhook-timestamp"]) - receiver.received[-1].at) < 60, (
        "the signed timestamp is the database's time, not the skewed host's"
    )
