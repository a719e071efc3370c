"""``invalid_lines: "skip"`` (issue 19 item 3): a file with bad lines is not refused; each bad
line goes to the error file and the valid lines run. In-process (no worker) for what the
create does; tests/worker/test_invalid_lines.py runs the rest through a worker."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from jobs.models import Batch, Chunk, ChunkStatus, File
from jobs.services import parts
from tests.conftest import chat_line, housekeeper_pass, jsonl

pytestmark = pytest.mark.django_db

LONG = 200  # BATCHSITE_MAX_LINE_BYTES for these tests: a line past it is bad, not the file


def mixed() -> list[Any]:
    """Ten lines, four bad in four different ways: positions 1, 4, 5 and 8."""
    lines: list[Any] = [chat_line(i) for i in range(10)]
    lines[1] = b'{"custom_id": "req-1", "method": "POST", not json'
    lines[4] = {**chat_line(4), "method": "GET"}
    lines[5] = {**chat_line(5), "custom_id": "req-0"}  # a duplicate: the first one runs
    lines[8]["body"]["messages"][0]["content"] = "x" * LONG  # too long
    return lines


def create(client: Any, upload: Any, lines: list[Any], **extra: Any) -> Any:
    file = upload(jsonl(lines))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    return client.post("/v1/batches", body, format="json")


def settled_errors(batch_id: str) -> list[dict[str, Any]]:
    lines = []
    for chunk in Chunk.objects.filter(batch_id=batch_id).order_by("index"):
        for part in parts.recorded(chunk):
            assert part.fence == 0 and part.completed == 0
            _, err = parts.names_of(batch_id, chunk.index, part)
            with parts.open_part(err) as fh:
                lines += [json.loads(line) for line in fh.read().splitlines()]
    return lines


def test_by_default_a_bad_line_fails_the_batch_as_openai_does(client, models, upload, limits):
    limits(max_line_bytes=LONG)
    response = create(client, upload, mixed())
    assert response.status_code == 200
    batch = response.json()
    assert batch["status"] == "failed"
    assert [e["line"] for e in batch["errors"]["data"]] == [2, 5, 6, 9]


def test_skip_queues_the_valid_lines_and_settles_each_bad_one_in_the_error_file(client, models, upload, limits):
    limits(max_line_bytes=LONG, chunk_size=3)
    response = create(client, upload, mixed(), invalid_lines="skip")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "in_progress" and body["errors"] is None
    assert body["request_counts"] == {"total": 10, "completed": 0, "failed": 4}
    errors = settled_errors(body["id"])
    by_line = {int(e["error"]["message"].split()[1].rstrip(":")): e for e in errors}
    assert sorted(by_line) == [2, 5, 6, 9]
    assert by_line[2]["custom_id"] is None and by_line[2]["error"]["code"] == "invalid_json_line"
    assert by_line[5]["custom_id"] == "req-4" and by_line[5]["error"]["code"] == "invalid_method"
    assert by_line[6]["custom_id"] == "req-0" and by_line[6]["error"]["code"] == "duplicate_custom_id"
    assert by_line[9]["custom_id"] is None and by_line[9]["error"]["code"] == "line_too_long"
    assert all(e["response"] is None and e["id"].startswith("batch_req_") for e in errors)
    # The parts sit at each line's place in its chunk (chunks of 3: positions 1 | 4, 5 | 8).
    done = {c.index: sorted(parts.done_seqs(parts.recorded(c))) for c in Chunk.objects.filter(batch_id=body["id"])}
    assert done == {0: [1], 1: [1, 2], 2: [2], 3: []}
    assert not Chunk.objects.filter(batch_id=body["id"], status=ChunkStatus.DONE).exists()


def test_a_chunk_of_only_bad_lines_is_done_at_once(client, models, upload, limits):
    limits(chunk_size=2)
    lines: list[Any] = [b"not json", b"[1]", chat_line(2), chat_line(3)]
    body = create(client, upload, lines, invalid_lines="skip").json()
    first, second = Chunk.objects.filter(batch_id=body["id"]).order_by("index")
    assert first.status == ChunkStatus.DONE and first.failed == 2
    assert second.status == ChunkStatus.PENDING and second.parts == []


def test_a_file_of_only_bad_lines_ends_completed_with_every_line_failed(client, models, upload):
    body = create(client, upload, [b"nope", b"{}", b'"str"'], invalid_lines="skip").json()
    # Nothing to run: handed straight to finalize, which the housekeeper (or a worker) does.
    assert body["status"] == "finalizing", body
    housekeeper_pass()
    body = client.get(f"/v1/batches/{body['id']}").json()
    assert body["status"] == "completed", body
    assert body["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert body["output_file_id"] is None or File.objects.get(pk=body["output_file_id"]).bytes == 0
    content = client.get(f"/v1/files/{body['error_file_id']}/content")
    errors = b"".join(content.streaming_content).splitlines()
    assert [json.loads(e)["error"]["message"].split()[1] for e in errors] == ["1", "2", "3"]


def test_what_fails_the_whole_file_still_refuses_it_with_skip(client, models, upload, limits):
    # An empty file, and a file past the batch's line limit: nothing to skip to.
    empty = create(client, upload, [b"", b"  "], invalid_lines="skip").json()
    assert empty["status"] == "failed" and empty["errors"]["data"][0]["code"] == "empty_file"
    limits(max_requests_per_batch=2)
    response = create(client, upload, [chat_line(0), b"bad", chat_line(2)], invalid_lines="skip")
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_requests_in_batch"
    assert not Batch.objects.filter(status="in_progress").exists()


def test_skip_on_the_one_call_multipart_create(client, models):
    f = io.BytesIO(jsonl([chat_line(0), b"bad", chat_line(2)]))
    f.name = "in.jsonl"
    data = {"file": f, "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "invalid_lines": "skip"}
    response = client.post("/v1/batches", data, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["request_counts"]["failed"] == 1


@pytest.mark.parametrize("value", ["SKIP", "", "ignore", 1, True, ["skip"], {"mode": "skip"}, "\ud800", "s" * 10000])
def test_a_bad_invalid_lines_is_refused_naming_it_and_nothing_is_stored(client, models, upload, value):
    before = Batch.objects.count()
    file = upload(jsonl([chat_line(0)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    # json.dumps writes a lone surrogate as its \\u escape, as a hostile client would send it.
    raw = json.dumps({**body, "invalid_lines": value})
    response = client.post("/v1/batches", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "invalid_lines" and "invalid_lines must be one of: fail, skip" in error["message"]
    assert Batch.objects.count() == before


def test_another_users_file_is_not_found_with_skip(client, other_client, models, upload):
    file = upload(jsonl([chat_line(0), b"bad"]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = other_client.post("/v1/batches", {**body, "invalid_lines": "skip"}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
