"""POST /v1/batches/{id}/retry: a new batch of exactly the input lines whose results are in the
error file. Batches run on the in-process worker with the SIMULATED engine (``sim_fail``
makes a line fail): these tests are about which lines are retried, not about inference."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, BatchStatus, File, FilePurpose
from jobs.services import files as file_service
from jobs.worker import GpuWorker
from tests.conftest import CHAT_MODEL, chat_line, housekeeper_pass, jsonl, stored_files

pytestmark = pytest.mark.django_db(transaction=True)


def create(client: Any, upload: Any, lines: list[Any], **extra: Any) -> dict[str, Any]:
    file = upload(jsonl(lines))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    response = client.post("/v1/batches", body, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def drain() -> None:
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0


def retry(client: Any, batch_id: str, **body: Any) -> Any:
    return client.post(f"/v1/batches/{batch_id}/retry", body, format="json")


def content(client: Any, file_id: str) -> bytes:
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def failing(n: int, bad: set[int]) -> list[dict[str, Any]]:
    lines = [chat_line(i) for i in range(n)]
    for i in bad:
        lines[i]["body"]["sim_fail"] = 400
    return lines


def test_retry_creates_a_batch_of_exactly_the_failed_lines_byte_for_byte(client, models, upload):
    lines = failing(6, {1, 3, 4})
    original = create(client, upload, lines, metadata={"project": "eval"})
    drain()
    response = retry(client, original["id"])
    assert response.status_code == 200, response.content
    new = response.json()
    assert new["status"] == "in_progress" and new["id"] != original["id"]
    assert new["metadata"] == {"project": "eval", "retry_of": original["id"]}
    assert (new["endpoint"], new["model"], new["completion_window"]) == ("/v1/chat/completions", CHAT_MODEL, "24h")
    assert new["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert content(client, new["input_file_id"]) == jsonl([lines[1], lines[3], lines[4]])
    retry_file = client.get(f"/v1/files/{new['input_file_id']}").json()
    assert retry_file["purpose"] == "batch" and retry_file["filename"] == f"{original['id']}_retry.jsonl"
    assert client.get(f"/v1/batches/{original['id']}").json()["status"] == "completed"  # untouched

    drain()  # the retry runs, fails the same three again, and can itself be retried
    again = retry(client, new["id"]).json()
    assert again["metadata"]["retry_of"] == new["id"] and again["request_counts"]["total"] == 3


def test_a_cancelled_batch_retries_its_cancelled_lines(client, models, upload):
    original = create(client, upload, [chat_line(i) for i in range(4)])
    assert client.post(f"/v1/batches/{original['id']}/cancel").json()["status"] == "cancelling"
    housekeeper_pass()
    assert client.get(f"/v1/batches/{original['id']}").json()["status"] == "cancelled"
    assert retry(client, original["id"], filter="failed").json()["error"]["code"] == "nothing_to_retry"
    assert retry(client, original["id"], filter="expired").status_code == 409
    new = retry(client, original["id"], filter="cancelled").json()
    assert new["request_counts"]["total"] == 4


def test_the_filter_picks_lines_by_how_they_ended(client, models, upload, settings):
    # The error file is written here, not by a worker (LABELLED FAKE): one batch whose
    # lines ended all three ways is what this test is about, and no single run makes it.
    lines = [chat_line(i) for i in range(5)]
    original = create(client, upload, lines)
    error_lines = [
        {"custom_id": "req-0", "response": {"status_code": 400, "body": {"error": {}}}, "error": None},
        {"custom_id": "req-1", "response": None, "error": {"code": "request_failed", "message": "x"}},
        {"custom_id": "req-2", "response": None, "error": {"code": "batch_cancelled", "message": "x"}},
        {"custom_id": "req-4", "response": None, "error": {"code": "batch_expired", "message": "x"}},
    ]
    path = settings.UPLOAD_TMP_DIR / "err.jsonl"
    path.write_bytes(jsonl(error_lines))
    batch = Batch.objects.get(pk=original["id"])
    error_file = file_service.save_generated(batch.owner, FilePurpose.BATCH_OUTPUT, "err.jsonl", str(path))
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.CANCELLED, error_file=error_file)

    def retried(which: str) -> list[str]:
        new = retry(client, original["id"], filter=which).json()
        return [json.loads(x)["custom_id"] for x in content(client, new["input_file_id"]).splitlines()]

    assert retried("all") == ["req-0", "req-1", "req-2", "req-4"]
    assert retried("failed") == ["req-0", "req-1"]
    assert retried("cancelled") == ["req-2"]
    assert retried("expired") == ["req-4"]


def test_a_batch_made_by_the_upload_shortcut_retries_with_its_model(client, models):
    lines = failing(3, {0})
    for line in lines:
        del line["body"]["model"]
    f = io.BytesIO(jsonl(lines))
    f.name = "in.jsonl"
    original = client.post("/v1/batches", {"file": f, "model": CHAT_MODEL}).json()
    drain()
    new = retry(client, original["id"]).json()
    assert new["status"] == "in_progress" and new["model"] == CHAT_MODEL
    assert new["request_counts"]["total"] == 1


def test_only_a_finished_batch_with_failed_lines_can_be_retried(client, models, upload):
    running = create(client, upload, [chat_line(0)])
    response = retry(client, running["id"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "batch_not_finished"
    drain()
    response = retry(client, running["id"])  # completed, nothing failed
    assert response.status_code == 409 and response.json()["error"]["code"] == "nothing_to_retry"
    invalid = create(client, upload, [{"custom_id": "x"}])
    assert invalid["status"] == "failed"
    response = retry(client, invalid["id"])
    assert response.status_code == 409 and "input file" in response.json()["error"]["message"]
    assert Batch.objects.count() == 2


def test_a_retry_needs_the_input_and_error_files(client, models, upload):
    original = create(client, upload, failing(2, {0}))
    drain()
    batch = Batch.objects.get(pk=original["id"])
    File.objects.filter(pk=batch.error_file_id).update(expires_at=batch.created_at)
    response = retry(client, original["id"])
    assert response.status_code == 409 and "error file" in response.json()["error"]["message"]
    File.objects.filter(pk=batch.error_file_id).update(expires_at=None)
    assert client.delete(f"/v1/files/{original['input_file_id']}").status_code == 200
    response = retry(client, original["id"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "file_not_available"
    assert Batch.objects.count() == 1


def test_another_users_batch_is_not_found(client, other_client, models, upload):
    original = create(client, upload, failing(2, {0}))
    drain()
    response = retry(other_client, original["id"])
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert retry(client, "batch_nope").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"filter": "everything"},
        {"filter": 1},
        {"filter": ["failed"]},
        {"filter": {"$ne": "all"}},
        {"filter": None},
        {"filter": "\ud800"},
        {"filter": "x" * 100_000},
        [{"filter": "all"}],
        "all",
    ],
)
def test_a_bad_filter_is_a_400_and_creates_nothing(client, models, upload, settings, body):
    original = create(client, upload, failing(2, {0}))
    drain()
    files_before = sorted(stored_files(settings))
    response = client.post(f"/v1/batches/{original['id']}/retry", json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert Batch.objects.count() == 1 and sorted(stored_files(settings)) == files_before


def test_a_batch_with_all_16_metadata_keys_is_retryable_with_its_metadata_unchanged(client, models, upload):
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    original = create(client, upload, failing(2, {0}), metadata=metadata)
    drain()
    response = retry(client, original["id"])
    assert response.status_code == 200, response.content
    new = response.json()
    assert new["metadata"] == metadata and new["retry_of"] == original["id"]
    drain()
    again = retry(client, new["id"]).json()  # a retry of that retry: still the owner's 16 keys
    assert again["metadata"] == metadata and again["retry_of"] == new["id"]


def test_retry_of_is_set_on_every_retry_and_null_elsewhere(client, models, upload):
    original = create(client, upload, failing(2, {0}), metadata={"project": "eval"})
    assert original["retry_of"] is None
    drain()
    new = retry(client, original["id"]).json()
    assert new["retry_of"] == original["id"] and new["metadata"] == {"project": "eval", "retry_of": original["id"]}


def test_a_retry_refused_by_the_queue_leaves_no_file(client, models, upload, limits, settings):
    original = create(client, upload, failing(2, {0}))
    drain()
    limits(max_queued_batches=1)
    create(client, upload, [chat_line(9)])  # fills the queue
    files_before = sorted(stored_files(settings))
    response = retry(client, original["id"])
    assert response.status_code == 429
    assert Batch.objects.count() == 2 and sorted(stored_files(settings)) == files_before


def test_a_retry_keeps_its_batchs_priority_unless_high_is_no_longer_the_owners(client, models, upload):
    low = create(client, upload, failing(2, {0}), priority="low")
    drain()
    assert retry(client, low["id"]).json()["priority"] == "low"
    owner = get_user_model().objects.get(pk=Batch.objects.get(pk=low["id"]).owner_id)
    owner.is_staff = True
    owner.save()
    high = create(client, upload, failing(2, {1}), priority="high")
    drain()
    owner.is_staff = False
    owner.save()
    assert retry(client, high["id"]).json()["priority"] == "normal"
