"""Each queue limit gives a clear OpenAI-style error and stores nothing."""

from __future__ import annotations

import io
from typing import Any

import pytest

from jobs.models import Batch, Chunk, File
from tests.conftest import chat_line, housekeeper_pass, jsonl, stored_files

pytestmark = pytest.mark.django_db


def create(client: Any, file_id: str) -> Any:
    return client.post(
        "/v1/batches",
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )


def shortcut(client: Any, content: bytes) -> Any:
    f = io.BytesIO(content)
    f.name = "in.jsonl"
    from tests.conftest import CHAT_MODEL

    return client.post("/v1/batches", {"file": f, "model": CHAT_MODEL}, format="multipart")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_too_many_requests_in_one_batch_is_a_400_and_queues_nothing(client, models, upload, limits):
    limits(max_requests_per_batch=5)
    file = upload(jsonl([chat_line(i) for i in range(6)]))
    error = assert_error(create(client, file["id"]), 400, "too_many_requests_in_batch")
    assert "5" in error["message"]
    assert not Batch.objects.exists() and not Chunk.objects.exists()


def test_exactly_the_request_limit_is_accepted(client, models, upload, limits):
    limits(max_requests_per_batch=5)
    file = upload(jsonl([chat_line(i) for i in range(5)]))
    assert create(client, file["id"]).json()["status"] == "in_progress"


def test_shortcut_over_the_request_limit_leaves_no_file_behind(client, models, limits, settings):
    limits(max_requests_per_batch=3)
    assert_error(shortcut(client, jsonl([chat_line(i) for i in range(4)])), 400, "too_many_requests_in_batch")
    assert not File.objects.exists() and not Batch.objects.exists()
    assert stored_files(settings) == []


def test_a_full_queue_of_batches_answers_429(client, models, upload, limits):
    limits(max_queued_batches=2)
    file = upload(jsonl([chat_line(i) for i in range(2)]))
    assert create(client, file["id"]).status_code == 200
    assert create(client, file["id"]).status_code == 200
    error = assert_error(create(client, file["id"]), 429, "queue_full")
    assert error["type"] == "rate_limit_error"
    assert Batch.objects.count() == 2 and Chunk.objects.count() == 2


def test_finished_batches_free_their_queue_slot(client, models, upload, limits):
    limits(max_queued_batches=1)
    file = upload(jsonl([chat_line(i) for i in range(2)]))
    first = create(client, file["id"]).json()
    assert client.post(f"/v1/batches/{first['id']}/cancel").json()["status"] == "cancelling"
    housekeeper_pass()  # ends it (the cancel leaves the finalize to a worker or the housekeeper)
    assert Batch.objects.get(pk=first["id"]).status == "cancelled"
    assert create(client, file["id"]).status_code == 200


def test_too_many_queued_requests_answers_429(client, models, upload, limits):
    limits(max_queued_requests=10)
    file = upload(jsonl([chat_line(i) for i in range(6)]))
    assert create(client, file["id"]).status_code == 200
    error = assert_error(create(client, file["id"]), 429, "too_many_queued_requests")
    assert "10" in error["message"]
    assert Batch.objects.count() == 1 and Chunk.objects.count() == 1


def test_an_upload_over_the_byte_limit_is_a_413_and_stores_nothing(client, limits, settings):
    limits(max_upload_bytes=1000)
    f = io.BytesIO(jsonl([chat_line(i) for i in range(30)]))
    f.name = "big.jsonl"
    response = client.post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart")
    error = assert_error(response, 413, "file_too_large")
    assert "1000 bytes" in error["message"]
    assert not File.objects.exists()
    assert stored_files(settings) == []


def test_the_byte_limit_is_counted_while_streaming_not_from_the_header(client, limits, settings):
    # Content-Length within the slack, body over the limit: only counting the
    # streamed bytes catches it.
    limits(max_upload_bytes=1000)
    f = io.BytesIO(b"x" * 1500)
    f.name = "big.jsonl"
    assert_error(client.post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart"), 413, "file_too_large")
    assert stored_files(settings) == []


def test_shortcut_upload_over_the_byte_limit_stores_nothing(client, models, limits, settings):
    limits(max_upload_bytes=1000)
    assert_error(shortcut(client, jsonl([chat_line(i) for i in range(30)])), 413, "file_too_large")
    assert not File.objects.exists() and not Batch.objects.exists()
    assert stored_files(settings) == []
