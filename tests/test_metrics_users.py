"""GET /metrics' per-user series: queue and worker seconds by user id, for staff scrapes only.

Worker time is given as WorkerTime rows, the record each ended claim leaves
(tests/services/test_share_report.py makes them through real claims)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import WorkerTime
from jobs.models.clock import db_now
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


def worked(user: Any, seconds: float, ago: float = 0.0) -> None:
    end = db_now() - timedelta(seconds=ago)
    WorkerTime.objects.create(user=user, started_at=end - timedelta(seconds=seconds), ended_at=end, seconds=seconds)


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, user label) -> value, for the per-user series."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "user" in sample.labels:
                out[(sample.name, sample.labels["user"])] = sample.value
    return out


@pytest.fixture
def carol(db: Any) -> Any:
    return get_user_model().objects.create_user("carol-zq7", pk=737373, email="carol.zq7@example.org")


@pytest.fixture
def staff() -> Client:
    browser = Client()
    browser.force_login(get_user_model().objects.create_user("operator", is_staff=True))
    return browser


def queue_batch(client: Any, upload: Any, n: int) -> None:
    file = upload(jsonl([chat_line(i) for i in range(n)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    assert client.post("/v1/batches", body, format="json").status_code == 200


def test_a_staff_scrape_has_each_users_queue_and_worker_seconds_by_id(staff, client, upload, models, user, carol):
    queue_batch(client, upload, 5)
    worked(user, 30)
    worked(carol, 120, ago=7200)  # long ago: still in the counter, which never forgets
    response = staff.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    got = samples(text)
    alice = str(user.pk)
    assert got[("batchsite_user_queued_batches", alice)] == 1
    assert got[("batchsite_user_queued_requests", alice)] == 5
    assert got[("batchsite_user_oldest_waiting_seconds", alice)] >= 0
    assert got[("batchsite_user_worker_seconds_total", alice)] == pytest.approx(30)
    assert got[("batchsite_user_worker_seconds_total", str(carol.pk))] == pytest.approx(120)
    assert ("batchsite_user_queued_batches", str(carol.pk)) not in got  # nothing queued: no series
    # Ids only: no name or email is ever a label.
    for secret in ("alice", "carol", "zq7", "example.org"):
        assert secret not in text, secret


def test_the_metrics_token_is_the_operators_and_reads_the_ids_too(settings, user):
    settings.BATCHSITE_METRICS_TOKEN = TOKEN
    worked(user, 12)
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert samples(response.content.decode())[("batchsite_user_worker_seconds_total", str(user.pk))] == 12


def test_a_signed_in_user_who_is_not_staff_gets_no_series_and_no_ids(settings, user, carol):
    settings.BATCHSITE_METRICS_TOKEN = TOKEN
    worked(carol, 50)
    browser = Client()
    browser.force_login(user)
    response = browser.get("/metrics")
    assert response.status_code == 403
    assert b"batchsite_user" not in response.content and b"737373" not in response.content


def test_the_worker_seconds_counter_only_grows_as_claims_end_and_age(staff, user):
    worked(user, 40, ago=10)
    first = samples(staff.get("/metrics").content.decode())[("batchsite_user_worker_seconds_total", str(user.pk))]
    # Time passes (the claim moves out of any window) and another claim ends.
    WorkerTime.objects.update(started_at=db_now() - timedelta(days=2), ended_at=db_now() - timedelta(days=2))
    worked(user, 5)
    second = samples(staff.get("/metrics").content.decode())[("batchsite_user_worker_seconds_total", str(user.pk))]
    assert first == pytest.approx(40) and second == pytest.approx(45)


def test_a_username_of_prometheus_syntax_cannot_break_the_exposition(staff):
    hostile = get_user_model().objects.create_user('x"} 1\nbatchsite_fake{user="1')
    worked(hostile, 7)
    response = staff.get("/metrics")
    assert response.status_code == 200
    got = samples(response.content.decode())  # parses: the label is the id
    assert got[("batchsite_user_worker_seconds_total", str(hostile.pk))] == 7
    assert "batchsite_fake" not in response.content.decode()
