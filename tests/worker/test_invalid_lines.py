"""``invalid_lines: "skip"`` through a real worker subprocess on the SIMULATED engine (the test
is about which lines run and where each one ends, not inference): the valid lines run, the bad
ones are in the error file once each, and the counts match the files."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Batch, Chunk
from tests.api.test_invalid_lines import LONG, mixed
from tests.conftest import chat_line, create_batch, start_worker
from tests.worker.common import FAST, SIM, finish, lines_of

pytestmark = pytest.mark.django_db(transaction=True)


def create_skipping(client: Any, upload: Any, lines: list[Any]) -> str:
    return create_batch(client, upload, lines, invalid_lines="skip")


def test_the_valid_lines_run_and_every_bad_line_is_in_the_error_file_once(client, models, upload, limits, settings):
    limits(max_line_bytes=LONG, chunk_size=3)
    batch_id = create_skipping(client, upload, mixed())
    worker = start_worker(settings, *SIM, **FAST, BATCHSITE_MAX_LINE_BYTES=str(LONG), SIM_WINDOW="4")
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "completed", batch.errors
    output, errors = lines_of(batch.output_file_id), lines_of(batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == [f"req-{i}" for i in (0, 2, 3, 6, 7, 9)]
    assert all(line["response"]["status_code"] == 200 for line in output)
    named = sorted(int(e["error"]["message"].split()[1].rstrip(":")) for e in errors)
    assert named == [2, 5, 6, 9]  # each bad line once, by its line number
    assert (batch.completed, batch.failed, batch.total) == (6, 4, 10)
    assert len(output) + len(errors) == 10
    # Each chunk ran once: no chunk was handed back for the lines it did not have to run.
    assert set(Chunk.objects.filter(batch_id=batch_id).values_list("attempts", flat=True)) <= {0, 1}


def test_a_bad_line_between_two_good_chunks_keeps_their_lines_apart(client, models, upload, limits, settings):
    # Bad lines at the very start and end of chunks, and a blank line (not a request) between.
    limits(chunk_size=2)
    lines: list[Any] = [b"{", chat_line(1), b"", chat_line(2), b"[]", chat_line(4), chat_line(5), b"null"]
    batch_id = create_skipping(client, upload, lines)
    worker = start_worker(settings, *SIM, **FAST, SIM_WINDOW="3")
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    output, errors = lines_of(batch.output_file_id), lines_of(batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == ["req-1", "req-2", "req-4", "req-5"]
    assert [e["custom_id"] for e in errors] == [None, None, None]
    assert sorted(int(e["error"]["message"].split()[1].rstrip(":")) for e in errors) == [1, 5, 8]
    assert (batch.completed, batch.failed, batch.total) == (4, 3, 7)


def test_a_line_past_a_line_limit_lowered_after_acceptance_ends_in_the_error_file(client, models, upload, settings):
    # Accepted under the default limit; the worker then runs with a limit the line breaks.
    lines = [chat_line(0), chat_line(1), chat_line(2)]
    lines[1]["body"]["messages"][0]["content"] = "x" * 400
    batch_id = create_batch(client, upload, lines)
    worker = start_worker(settings, *SIM, **FAST, BATCHSITE_MAX_LINE_BYTES="300")
    assert finish(worker) == 0
    batch = Batch.objects.get(pk=batch_id)
    assert (batch.status, batch.completed, batch.failed) == ("completed", 2, 1)
    [error] = lines_of(batch.error_file_id)
    assert error["error"]["code"] == "line_too_long" and "Line 2 is longer than 300 bytes" in error["error"]["message"]
