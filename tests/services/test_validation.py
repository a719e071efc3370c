"""One test per validation rule: the batch is failed, the error names the line, nothing is queued."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.models import Batch, BatchStatus, Chunk, RegisteredModel
from tests.conftest import CHAT_MODEL, EMBED_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db


def create(client: Any, upload: Any, content: bytes, endpoint: str = "/v1/chat/completions") -> dict[str, Any]:
    file = upload(content)
    response = client.post(
        "/v1/batches", {"input_file_id": file["id"], "endpoint": endpoint, "completion_window": "24h"}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def assert_failed(batch: dict[str, Any], code: str, line: int | None) -> dict[str, Any]:
    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    errors = batch["errors"]["data"]
    match = [e for e in errors if e["code"] == code]
    assert match, errors
    assert match[0]["line"] == line
    assert set(match[0]) == {"code", "message", "param", "line"}
    # Nothing queued: no chunk rows, and the queue does not count it.
    assert not Chunk.objects.filter(batch_id=batch["id"]).exists()
    assert not Batch.objects.active().filter(pk=batch["id"]).exists()
    return match[0]


GOOD = [chat_line(0), chat_line(1)]


@pytest.mark.parametrize(
    "bad_line, code",
    [
        (b'{"custom_id": "x", "method": "POST",', "invalid_json_line"),
        (b"[1, 2, 3]", "invalid_request"),
        (json.dumps({k: v for k, v in chat_line(9).items() if k != "custom_id"}).encode(), "missing_custom_id"),
        (json.dumps(chat_line(9, custom_id=17)).encode(), "invalid_custom_id"),
        (json.dumps(chat_line(0)).encode(), "duplicate_custom_id"),
        (json.dumps(chat_line(9, method="GET")).encode(), "invalid_method"),
        (json.dumps(chat_line(9, url="/v1/embeddings")).encode(), "invalid_url"),
        (json.dumps(chat_line(9, body=["not", "an", "object"])).encode(), "invalid_body"),
        (json.dumps(chat_line(9, model="another-model")).encode(), "mismatched_model"),
        (json.dumps(chat_line(9, extra="x")).encode(), "unexpected_key"),
        (b'{"custom_id": "\xff\xfe", "method": "POST"}', "invalid_encoding"),
    ],
)
def test_a_bad_third_line_fails_the_batch_and_names_line_3(client, models, upload, bad_line, code):
    error = assert_failed(create(client, upload, jsonl([*GOOD, bad_line])), code, 3)
    assert "Line 3" in error["message"]


DEEP_PATH = ("body.x" + "[0]" * 62)[:117] + "..."  # paths are cut at 120 characters


def line_with(**body: Any) -> bytes:
    line = chat_line(9)
    line["body"].update(body)
    return json.dumps(line).encode()


@pytest.mark.parametrize(
    "bad_line, code, param, words",
    [
        (line_with(temperature=float("nan")), "invalid_number", None, "NaN"),
        (line_with(temperature=float("inf")), "invalid_number", None, "Infinity"),
        (line_with(temperature=float("-inf")), "invalid_number", None, "-Infinity"),
        (line_with(top_p=1).replace(b'"top_p": 1', b'"top_p": 1e999'), "invalid_number", None, "1e999"),
        (line_with(seed=1).replace(b'"seed": 1', b'"seed": ' + b"9" * 5000), "invalid_number", None, "digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting_too_deep", None, "64 levels"),
        (line_with(x=json.loads("[" * 63 + "]" * 63)), "nesting_too_deep", DEEP_PATH, "64 levels"),
        (json.dumps(chat_line(9, custom_id="a\ud800")).encode(), "invalid_unicode", "custom_id", "\\ud800"),
        (
            json.dumps(chat_line(9, custom_id="a")).replace('"Say 9"', '"\\udc00 lone"').encode(),
            "invalid_unicode",
            "body.messages[0].content",
            "\\udc00",
        ),
        (line_with(**{"bad\ud83d key": 1}), "invalid_unicode", "body['bad\\ud83d key']", "surrogate"),
        (line_with(model="m" * 201), "invalid_model", "body.model", "1 to 200"),
        (line_with(model="chat\x00model"), "invalid_model", "body.model", "\\x00"),
    ],
)
def test_json_the_system_cannot_carry_fails_the_batch_naming_the_line(
    client, models, upload, bad_line, code, param, words
):
    error = assert_failed(create(client, upload, jsonl([*GOOD, bad_line])), code, 3)
    assert error["message"].startswith("Line 3") and words in error["message"], error
    assert error["param"] == param


def test_a_first_line_model_longer_than_the_column_fails_the_batch_not_the_server(client, models, upload):
    """It became the failed batch's model: PostgreSQL refused 300 characters in varchar(200), a 500."""
    batch = create(client, upload, jsonl([chat_line(1, model="m" * 300), chat_line(2)]))
    assert_failed(batch, "invalid_model", 1)
    assert len(batch["model"]) <= 200


def test_a_line_nested_as_deep_as_allowed_and_escaped_surrogate_pairs_are_accepted(client, models, upload):
    deepest = chat_line(5)
    deepest["body"]["x"] = json.loads("[" * 62 + "]" * 62)  # the line is 64 levels deep
    paired = json.dumps(chat_line(6, custom_id="\U0001f600")).encode()
    assert b'"custom_id": "\\ud83d\\ude00"' in paired  # a pair of escapes, which decodes to one character
    batch = create(client, upload, jsonl([*GOOD, deepest, paired]))
    assert batch["status"] == "in_progress", batch["errors"]


def test_messages_quote_hostile_values_short_and_escaped(client, models, upload):
    huge_id = "x" * 100_000 + "\x00"
    lines = [chat_line(1, custom_id=huge_id), chat_line(2, custom_id=huge_id, method=["GET"] * 1000)]
    lines.append(chat_line(3, **{"k" * 10_000: 1, "url": "\x00" * 10_000}))
    batch = create(client, upload, jsonl(lines))
    messages = [e["message"] for e in batch["errors"]["data"]]
    assert {e["code"] for e in batch["errors"]["data"]} >= {"duplicate_custom_id", "invalid_method", "unexpected_key"}
    assert all(len(m) < 400 for m in messages), [len(m) for m in messages]
    assert all("\x00" not in m for m in messages)


def test_stream_true_is_refused(client, models, upload):
    line = chat_line(5)
    line["body"]["stream"] = True
    error = assert_failed(create(client, upload, jsonl([*GOOD, line])), "unsupported_stream", 3)
    assert error["param"] == "body.stream"


def test_unknown_model_is_refused_on_its_first_line(client, models, upload):
    lines = [chat_line(i, model="gpt-nope") for i in range(3)]
    error = assert_failed(create(client, upload, jsonl(lines)), "model_not_found", 1)
    assert "gpt-nope" in error["message"]


def test_a_disabled_model_is_unknown(client, models, upload):
    RegisteredModel.objects.filter(name=CHAT_MODEL).update(enabled=False)
    assert_failed(create(client, upload, jsonl(GOOD)), "model_not_found", 1)


def test_a_model_that_does_not_serve_the_endpoint_is_refused(client, models, upload):
    lines = [chat_line(i, model=EMBED_MODEL) for i in range(2)]
    assert_failed(create(client, upload, jsonl(lines)), "model_not_supported", 1)


def test_the_first_line_model_sets_the_batch_model_and_others_must_match(client, models, upload):
    batch = create(client, upload, jsonl([*GOOD, chat_line(7, model=EMBED_MODEL)]))
    error = assert_failed(batch, "mismatched_model", 3)
    assert CHAT_MODEL in error["message"]


def test_empty_file_is_refused(client, models, upload):
    assert_failed(create(client, upload, b""), "empty_file", None)


def test_blank_lines_only_count_as_empty(client, models, upload):
    assert_failed(create(client, upload, b"\n  \n\r\n"), "empty_file", None)


def test_errors_are_capped_with_a_count_of_the_rest(client, models, upload, limits):
    limits(max_validation_errors=5)
    batch = create(client, upload, b"not json\n" * 12)
    data = batch["errors"]["data"]
    assert [e["line"] for e in data[:5]] == [1, 2, 3, 4, 5]
    assert data[5]["code"] == "too_many_errors"
    assert data[5]["message"].startswith("7 more errors")


def test_a_line_longer_than_the_limit_is_named_without_reading_it_whole(client, models, upload, limits):
    limits(max_line_bytes=1000)
    long_line = chat_line(2)
    long_line["body"]["messages"][0]["content"] = "x" * 5000
    assert_failed(create(client, upload, jsonl([*GOOD, long_line, chat_line(3)])), "line_too_long", 3)


def test_bom_crlf_and_blank_lines_are_accepted_and_chunks_cover_every_line(client, models, upload, limits):
    limits(chunk_size=2)
    lines = [json.dumps(chat_line(i)).encode() for i in range(5)]
    content = b"\xef\xbb\xbf" + lines[0] + b"\r\n" + lines[1] + b"\r\n\r\n" + b"\r\n".join(lines[2:])
    batch = create(client, upload, content)
    assert batch["status"] == "in_progress", batch["errors"]
    assert batch["request_counts"] == {"total": 5, "completed": 0, "failed": 0}
    chunks = list(Chunk.objects.filter(batch_id=batch["id"]).order_by("index"))
    assert [c.request_count for c in chunks] == [2, 2, 1]
    assert [c.first_line for c in chunks] == [1, 4, 6]
    assert chunks[0].start_byte == 0
    assert chunks[-1].end_byte == len(content)
    for before, after in zip(chunks, chunks[1:], strict=False):
        # Only blank lines may lie between two chunks.
        assert content[before.end_byte : after.start_byte].strip() == b""
    # Each span parses back into exactly its own lines.
    for chunk in chunks:
        part = content[chunk.start_byte : chunk.end_byte].decode("utf-8-sig")
        ids = [json.loads(x)["custom_id"] for x in part.splitlines() if x.strip()]
        assert len(ids) == chunk.request_count


def test_a_valid_batch_is_queued_with_chunks_of_the_configured_size(client, models, upload, limits):
    limits(chunk_size=4)
    batch = create(client, upload, jsonl([chat_line(i) for i in range(10)]))
    assert batch["status"] == "in_progress"
    assert batch["model"] == CHAT_MODEL
    assert list(
        Chunk.objects.filter(batch_id=batch["id"]).values_list("request_count", flat=True).order_by("index")
    ) == [4, 4, 2]
    assert Batch.objects.get(pk=batch["id"]).status == BatchStatus.IN_PROGRESS


def test_validation_memory_does_not_grow_with_line_size(models, tmp_path, settings):
    """50,000 lines of ~200 B and of ~1 KB peak at about the same memory: the
    file is streamed, only an 8-byte digest per custom_id is kept."""
    import tracemalloc

    from jobs.services.validation import validate_input

    peaks = {}
    for size in (200, 1000):
        path = tmp_path / f"in-{size}.jsonl"
        with path.open("wb") as out:
            for i in range(50_000):
                line = chat_line(i)
                line["body"]["messages"][0]["content"] = "x" * size
                out.write(json.dumps(line).encode() + b"\n")
        tracemalloc.start()
        with path.open("rb") as fh:
            result = validate_input(fh, "/v1/chat/completions", None, settings.BATCHSITE)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.ok and result.total == 50_000
        assert peaks[size] < 10_000_000  # ~140 B per line for the custom_id digests
    print(f"validation peak memory: {peaks}")
    assert peaks[1000] < peaks[200] * 1.25
