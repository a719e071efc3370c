"""The batch page's Retry (Django's test client): the same service as POST /v1/batches/{id}/retry.
The worker runs in-process with the SIMULATED engine (``sim_fail`` makes a line fail): these
tests are about which lines are retried from the page, not about inference."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch
from jobs.worker import GpuWorker
from tests.conftest import chat_line, jsonl
from tests.web.conftest import submit

# The in-process worker closes its database connections when it stops.
pytestmark = pytest.mark.django_db(transaction=True)


def finished_with_failures(browser: Client, failing: set[int], n: int = 5) -> str:
    lines = [chat_line(i) for i in range(n)]
    for i in failing:
        lines[i]["body"]["sim_fail"] = 400  # the SIMULATED engine answers these lines with an error
    batch_id = str(submit(browser, jsonl(lines))["Location"].rsplit("/", 1)[1])
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0
    return batch_id


def test_retry_from_the_page_makes_a_batch_of_exactly_the_failed_lines(web, models, settings):
    batch_id = finished_with_failures(web, {1, 3})
    page = web.get(f"/batches/{batch_id}").content.decode()
    assert 'id="retry"' in page and f'action="/batches/{batch_id}/retry"' in page
    response = web.post(f"/batches/{batch_id}/retry", {"filter": "failed"})
    assert response.status_code == 302
    retried = Batch.objects.get(pk=response["Location"].rsplit("/", 1)[1])
    assert retried.pk != batch_id and retried.total == 2 and retried.metadata == {"retry_of": batch_id}
    lines = b"".join(web.get(f"/batches/{retried.pk}/files/input").streaming_content).splitlines()
    assert [json.loads(x)["custom_id"] for x in lines] == ["req-1", "req-3"]
    assert "Retrying 2 lines" in web.get(response["Location"]).content.decode()


def test_retry_is_offered_only_when_there_is_something_to_retry_and_says_why_not(web, models):
    clean = finished_with_failures(web, set())
    assert 'id="retry"' not in web.get(f"/batches/{clean}").content.decode()
    response = web.post(f"/batches/{clean}/retry", {"filter": "all"}, follow=True)
    assert "none of its lines failed" in response.content.decode()
    assert Batch.objects.count() == 1


def test_retry_of_another_users_batch_is_not_found_and_staff_are_not_offered_it(web, bob_web, staff_web, models):
    batch_id = finished_with_failures(web, {0})
    assert bob_web.post(f"/batches/{batch_id}/retry", {"filter": "all"}).status_code == 404
    assert 'id="retry"' not in staff_web.get(f"/batches/{batch_id}").content.decode()
    assert Batch.objects.count() == 1


# A lone surrogate cannot be encoded by a browser or the test client; its UTF-8 bytes
# (invalid UTF-8) are what a hostile client can send.
@pytest.mark.parametrize(
    "body", ["filter=bogus", "filter=%ED%A0%80", "filter=" + "x" * 5000, "filter=", "filter=a&filter=b"]
)
def test_a_hostile_retry_filter_is_refused_in_plain_words(web, models, body):
    batch_id = finished_with_failures(web, {0})
    response = web.post(
        f"/batches/{batch_id}/retry", body, content_type="application/x-www-form-urlencoded", follow=True
    )
    assert response.status_code == 200 and "filter must be one of" in response.content.decode()
    assert Batch.objects.count() == 1


def test_retry_needs_a_post(web, models):
    batch_id = finished_with_failures(web, {0})
    assert web.get(f"/batches/{batch_id}/retry").status_code == 405


def test_retry_from_the_page_works_for_a_batch_using_all_16_metadata_keys(web, models):
    batch_id = finished_with_failures(web, {2})
    metadata = {f"k{i}": "v" for i in range(16)}
    Batch.objects.filter(pk=batch_id).update(metadata=metadata)  # as a batch created by the API with 16 keys
    response = web.post(f"/batches/{batch_id}/retry", {"filter": "failed"})
    assert response.status_code == 302, response.content
    retried = Batch.objects.get(pk=response["Location"].rsplit("/", 1)[1])
    assert retried.metadata == metadata and retried.retry_of == batch_id and retried.total == 1
