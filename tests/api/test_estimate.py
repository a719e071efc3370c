"""POST /v1/batches/estimate: refusals (no engine needed) and the time bound on a big file.

The counting child runs vLLM's renderer on the real demo chat model's tokenizer and
chat template (no weights are loaded); tests/api/test_estimate_live.py compares its
counts with a real run's usage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, File, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"


@pytest.fixture
def real_chat_model(db: Any, smollm2_dir: Path) -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        # The counting child (about 15 s each) reads no database: the SQLite pass runs these.
        pytest.skip("the SQLite pass runs the token-counting tests")
    RegisteredModel.objects.create(name=CHAT_MODEL, source=str(smollm2_dir), endpoints=["chat", "completions"])


def chat(i: int, **body: Any) -> dict[str, Any]:
    line = chat_line(i)
    line["body"].update(body)
    return line


def estimate(client: Any, **body: Any) -> Any:
    # json.dumps writes a lone surrogate as its \\ud800 escape, as a hostile client would.
    return client.post("/v1/batches/estimate", json.dumps(body), content_type="application/json")


def test_an_estimate_counts_a_chat_file_and_creates_nothing(client, upload, real_chat_model):
    file = upload(jsonl([chat(i, max_tokens=7) for i in range(5)]))
    batches, files = Batch.objects.count(), File.objects.count()
    response = estimate(client, input_file_id=file["id"], endpoint=CHAT)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["object"] == "batch.estimate"
    assert body["requests"] == body["counted_requests"] == 5 and body["complete"] is True
    assert body["model"] == CHAT_MODEL and body["failing_requests"] == 0
    assert body["max_output_tokens"] == 35
    assert body["prompt_tokens"] > 5 * 5  # a chat template and a message each
    assert body["queue_position"] == 1
    assert (Batch.objects.count(), File.objects.count()) == (batches, files)


def test_another_users_file_is_not_found(client, other_client, models):
    theirs = other_client.post(
        "/v1/files", {"purpose": "batch", "file": _named(jsonl([chat_line(0)]))}, format="multipart"
    ).json()
    response = estimate(client, input_file_id=theirs["id"], endpoint=CHAT)
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "input_file_id"


def _named(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("in.jsonl", data)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"endpoint": CHAT}, 400, "input_file_id"),
        ({"input_file_id": 12, "endpoint": CHAT}, 404, "input_file_id"),
        ({"input_file_id": ["x"], "endpoint": CHAT}, 400, "input_file_id"),
        ({"input_file_id": "file-\ud800", "endpoint": CHAT}, 400, "input_file_id"),
        ({"endpoint": "/v1/nope"}, 400, "endpoint"),
        ({"endpoint": "\ud800"}, 400, "endpoint"),
        ({"endpoint": {"a": {"b": {"c": [1]}}}}, 400, "endpoint"),
        ({"endpoint": CHAT, "model": "no-such-model"}, 404, "model"),
        ({"endpoint": CHAT, "model": "\ud800" * 1000}, 400, "model"),
        ({"endpoint": "/v1/embeddings", "model": CHAT_MODEL}, 400, "model"),
    ],
)
def test_hostile_estimates_are_refused_naming_the_param(client, upload, models, body, status, param):
    file = upload(jsonl([chat_line(0)]))
    body = {"input_file_id": file["id"], **body} if "input_file_id" not in body and param != "input_file_id" else body
    response = estimate(client, **body)
    assert response.status_code == status, response.content
    assert response.json()["error"]["param"] == param


def test_a_file_that_would_fail_is_refused_with_its_first_bad_line(client, upload, models):
    file = upload(jsonl([chat_line(0), {"custom_id": "x", "method": "POST", "url": CHAT, "body": "no"}]))
    response = estimate(client, input_file_id=file["id"], endpoint=CHAT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input_file_id" and "Line 2: body must be" in error["message"]


def test_a_200_mb_file_answers_within_its_bound_and_says_it_scaled(client, upload, real_chat_model, settings, limits):
    limits(
        max_upload_bytes=260 * 1024 * 1024,
        max_requests_per_batch=1_000_000,
        max_queued_requests=2_000_000,
        estimate_seconds=45.0,
    )
    messages = [{"role": "user", "content": "word " * 300}]
    count = 200 * 1024 * 1024 // len(jsonl([chat(0, messages=messages)])) + 1
    file = upload(jsonl([chat(i, messages=messages) for i in range(count)]))
    started = time.monotonic()
    response = estimate(client, input_file_id=file["id"], endpoint=CHAT)
    took = time.monotonic() - started
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["requests"] == count and body["complete"] is False
    assert 0 < body["counted_requests"] < count
    # Scaled from identical lines: exactly the per-line count times the lines.
    assert body["prompt_tokens"] % count == 0
    assert took < 45 + 30, took  # the bound, plus validating 200 MB and slack


def test_with_invalid_lines_skip_the_valid_lines_are_estimated_and_the_bad_ones_left_out(
    client, upload, real_chat_model
):
    valid = [chat(i, max_tokens=5) for i in range(4)]
    clean = estimate(client, input_file_id=upload(jsonl(valid))["id"], endpoint=CHAT).json()
    # A bad body, a repeated custom_id (whose body alone would count) and an unparseable line.
    bad_body = {"custom_id": "x", "method": "POST", "url": CHAT, "body": "no"}
    repeated = chat(0, max_tokens=5)
    mixed = jsonl([valid[0], bad_body, valid[1], repeated, valid[2], b'{"custom_id": ', valid[3]])
    file = upload(mixed)
    refused = estimate(client, input_file_id=file["id"], endpoint=CHAT)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input_file_id"
    body = estimate(client, input_file_id=file["id"], endpoint=CHAT, invalid_lines="skip").json()
    assert (body["requests"], body["skipped_requests"], body["complete"]) == (4, 3, True)
    # Exactly the valid lines' tokens: the same as the file of only those lines.
    assert (body["prompt_tokens"], body["max_output_tokens"]) == (clean["prompt_tokens"], clean["max_output_tokens"])
    assert clean["skipped_requests"] == 0


@pytest.mark.parametrize("value", [5, "SKIP", "\ud800", ["skip"], {"a": {"b": [1]}}, "", True])
def test_a_bad_invalid_lines_value_is_refused_naming_it(client, upload, models, value):
    file = upload(jsonl([chat_line(0)]))
    response = estimate(client, input_file_id=file["id"], endpoint=CHAT, invalid_lines=value)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "invalid_lines"
