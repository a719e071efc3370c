"""Big uploads validate in a child process: the same verdict, errors and chunks as in-process.

The child is a real ``python -m jobs.services.validation_child`` fed through a pipe;
why it exists (the API's other requests are not starved while a big file validates)
is measured in bench/api_load.py --upload-mb, not here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from typing import Any

import pytest

from jobs.errors import InvalidRequest
from jobs.models import Batch, BatchStatus, Chunk
from jobs.services import validation_child
from jobs.services.validation import Catalog, validate_input
from tests.conftest import CHAT_MODEL, chat_line, jsonl

CATALOG = Catalog(
    endpoint_kinds={"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"},
    models={CHAT_MODEL: ("chat", "completions"), "embedder": ("embeddings",)},
)
GOOD = [chat_line(i) for i in range(7)]
FILES = {
    "good": jsonl(GOOD),
    "bom, crlf, blank lines, no last newline": b"\xef\xbb\xbf" + jsonl(GOOD).replace(b"\n", b"\r\n\r\n").rstrip(),
    "hostile lines": jsonl(
        [
            *GOOD[:2],
            b'{"custom_id": "n", "method": "POST", "url": "/v1/chat/completions", "body": {"x": NaN}}',
            b'["\\ud800"]',
            b"[" * 200 + b"]" * 200,
            b"\xff\xfe",
            json.dumps(chat_line(1)).encode(),  # duplicate custom_id
            json.dumps(chat_line(9, model="embedder")).encode(),
            json.dumps(chat_line(10, body={"model": CHAT_MODEL, "seed": 10**40, "stream": True})).encode(),
            b"x" * 3000,  # longer than max_line_bytes below
            json.dumps(chat_line(11, custom_id="\u00e9\U0001f600")).encode(),
        ]
    ),
    "unknown model first": jsonl([chat_line(0, model="nope"), *GOOD[1:]]),
    "no model anywhere": jsonl([{**chat_line(0), "body": {"messages": []}}]),
    "empty": b"\n\n",
}


@pytest.fixture
def small_limits(settings: Any) -> Any:
    return dataclasses.replace(settings.BATCHSITE, chunk_size=3, max_line_bytes=2048, max_validation_errors=4)


@pytest.mark.parametrize("name", list(FILES))
def test_the_child_finds_what_the_in_process_pass_finds(name, small_limits):
    content = FILES[name]
    inline = validate_input(io.BytesIO(content), None, None, small_limits, CATALOG)
    child = validation_child.in_child(io.BytesIO(content), None, None, small_limits, CATALOG)
    assert child.to_json() == inline.to_json()
    if name == "good":
        assert child.ok and [c.request_count for c in child.chunks] == [3, 3, 1]
    if name == "hostile lines":
        assert child.error_count == 8 and len(child.errors) == 4  # capped list, full count
        codes = ["invalid_number", "invalid_unicode", "nesting_too_deep", "invalid_encoding"]
        assert [(e["line"], e["code"]) for e in child.errors] == list(zip(range(3, 7), codes, strict=True))


def test_too_many_requests_is_the_same_refusal_from_the_child(small_limits):
    limits = dataclasses.replace(small_limits, max_requests_per_batch=5)
    with pytest.raises(InvalidRequest) as refused:
        validation_child.in_child(io.BytesIO(jsonl(GOOD * 3)), None, None, limits, CATALOG)
    assert refused.value.code == "too_many_requests_in_batch"


def test_a_child_that_cannot_run_falls_back_to_validating_in_process(small_limits, monkeypatch, caplog):
    monkeypatch.setattr(validation_child, "CHILD_MIN_BYTES", 0)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # starts, says nothing, exits 1
    result = validation_child.validate(io.BytesIO(FILES["good"]), 1, None, None, small_limits, CATALOG)
    assert result.ok and result.total == 7
    assert "validating in this process instead" in caplog.text


@pytest.mark.django_db
def test_a_batch_created_through_the_api_is_validated_in_a_child(client, models, upload, monkeypatch, limits):
    calls = []
    real = validation_child.in_child
    monkeypatch.setattr(validation_child, "CHILD_MIN_BYTES", 1)
    monkeypatch.setattr(validation_child, "in_child", lambda *a: calls.append(1) or real(*a))
    limits(chunk_size=2)
    good = upload(jsonl(GOOD))
    bad = upload(jsonl([*GOOD[:2], b'{"custom_id": 5}']))
    created = [
        client.post(
            "/v1/batches", {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        ).json()
        for f in (good, bad)
    ]
    assert len(calls) == 2
    assert created[0]["status"] == "in_progress" and created[0]["request_counts"]["total"] == 7
    assert list(
        Chunk.objects.filter(batch_id=created[0]["id"]).order_by("index").values_list("request_count", flat=True)
    ) == [
        2,
        2,
        2,
        1,
    ]
    assert created[1]["status"] == "failed"
    errors = created[1]["errors"]["data"]
    assert errors[0]["code"] == "invalid_custom_id" and {e["line"] for e in errors} == {3}
    assert not Chunk.objects.filter(batch_id=created[1]["id"]).exists()
    assert Batch.objects.get(pk=created[1]["id"]).status == BatchStatus.FAILED
