"""A real worker's claims leave the per-user worker time the dashboard and /metrics report.
Real worker subprocess on the SIMULATED engine (about the queue, not inference), with its
clock an hour off: worker time is the database's, so it still lands in the last hour."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum

from jobs.models import Chunk, WorkerTime
from tests.conftest import chat_line, jsonl, start_worker
from tests.web.conftest import signed_in
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, make_batch

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_claim_of_two_users_is_timed_and_shown_as_their_share(
    client, other_client, models, upload, settings, limits
):
    limits(chunk_size=5)
    alices = make_batch(client, upload, 10)
    file = upload(jsonl([chat_line(i) for i in range(10)]), api=other_client)
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    bobs = other_client.post("/v1/batches", body, format="json").json()["id"]
    worker = start_worker(
        settings, *SIM, "--worker-id", "w1", **FAST, SIM_SLEEP_SECONDS="0.05", FAULT_CLOCK_OFFSET_SECONDS="-3600"
    )
    assert finish(worker) == 0
    assert_every_line_once(alices, 10)
    assert_every_line_once(bobs, 10)
    alice, bob = (get_user_model().objects.get(username=name) for name in ("alice", "bob"))
    # One row per claim: 2 chunks each, each at least its 5 lines' simulated 0.05 s.
    assert Chunk.objects.count() == 4 and set(Chunk.objects.values_list("attempts", flat=True)) == {1}
    for person in (alice, bob):
        rows = WorkerTime.objects.filter(user=person)
        assert rows.count() == 2 and all(0.2 <= r.seconds < 60 for r in rows)
    page = signed_in(bob).get("/dashboard").content.decode()
    section = page[page.index('id="sharing"') : page.index('id="throughput"')]
    shares = [float(m) for m in re.findall(r'data-label="Share">([\d.]+)%', section)]
    assert len(shares) == 2 and sum(shares) == pytest.approx(100.0, abs=0.2) and min(shares) > 0
    assert "another user" in section and "alice" not in page
    staff = signed_in(get_user_model().objects.create_user("operator", is_staff=True))
    metrics = staff.get("/metrics").content.decode()
    total = WorkerTime.objects.filter(user=alice).aggregate(n=Sum("seconds"))["n"]
    value = re.search(rf'^batchsite_user_worker_seconds_total\{{user="{alice.pk}"\}} ([\d.e+-]+)$', metrics, re.M)
    assert value is not None and float(value.group(1)) == pytest.approx(total, abs=1e-3)
