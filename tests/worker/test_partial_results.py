"""GET /v1/batches/{id}/results (issue 19 item 1): the lines finished so far, from the stored
parts, each once and byte for byte as the final file holds them. A real worker subprocess
on the SIMULATED engine (tests/engine/test_resume_with_vllm.py reads them on vLLM)."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from jobs.models import Batch, Chunk
from jobs.services import files as file_service
from jobs.services import parts, results
from tests.conftest import start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, make_batch, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def so_far(client: Any, batch_id: str, **params: str) -> list[bytes]:
    response = client.get(f"/v1/batches/{batch_id}/results", params)
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content).splitlines(keepends=True)


def stored(file_id: str | None) -> bytes:
    if not file_id:
        return b""
    with file_service.open_content(Batch.objects.get(output_file_id=file_id).output_file) as fh:
        return bytes(fh.read())


def test_results_so_far_are_lines_of_the_final_file_each_once(client, models, upload, settings, limits):
    limits(chunk_size=50)
    n = 200
    batch_id = make_batch(client, upload, n)
    checkpoints = {"BATCHSITE_CHECKPOINT_LINES": "10", "BATCHSITE_CHECKPOINT_SECONDS": "30"}
    worker = start_worker(settings, *SIM, **FAST, **checkpoints, SIM_SLEEP_SECONDS="0.02")
    try:
        early = wait_for(lambda: (lines := so_far(client, batch_id)) and len(lines) >= 30 and lines, what="results")
    finally:
        assert finish(worker) == 0
    assert len(early) < n  # some, not all: read while it ran
    batch = assert_every_line_once(batch_id, n)
    final = stored(batch.output_file_id)
    counts = collections.Counter(final.splitlines(keepends=True))
    assert all(counts[line] == 1 for line in early), "a partial line is not in the final file exactly once"
    assert len(set(early)) == len(early)
    # Once it has ended: the file itself, byte for byte; and its (empty) error file.
    assert b"".join(so_far(client, batch_id)) == final
    assert so_far(client, batch_id, file="error") == []


def test_results_so_far_include_lines_settled_at_create_time_and_kept_checkpoints(client, models, upload, limits):
    """A part with fence 0 (the lines ``invalid_lines: skip`` settles when the batch is
    created) and a killed claim's segments are read like any part."""
    limits(chunk_size=10)
    batch_id = make_batch(client, upload, 20)
    chunk = Chunk.objects.get(batch_id=batch_id, index=1)
    bad = results.error_line("req-12", "invalid_line", "Line 13 is not valid.")
    settled = parts.write(batch_id, 1, 0, [], [bad], [2], {})
    ok = results.result_line("req-10", 200, "r1", {"ok": True})
    segment = parts.write(batch_id, 1, 1, [ok], [], [0], {})
    Chunk.objects.filter(pk=chunk.pk).update(parts=[settled.to_json(), segment.to_json()], fence=2)
    assert so_far(client, batch_id, file="error") == [bad]
    assert so_far(client, batch_id) == [ok]


# Raw query strings: a lone surrogate's UTF-8 bytes, a NUL, a huge value, an empty one, a list.
@pytest.mark.parametrize("query", ["bogus", "OUTPUT", "%ED%A0%80", "output%00", "x" * 10000, "", "output&file[]=1"])
def test_a_bad_file_parameter_is_refused_naming_it(client, models, upload, query):
    batch_id = make_batch(client, upload, 3)
    response = client.get(f"/v1/batches/{batch_id}/results?file={query}")
    if query == "output&file[]=1":  # the file parameter itself is good; the other is not ours
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    if query == "output%00":  # refused before any view, for every URL
        assert error["code"] == "invalid_url"
        return
    assert error["param"] == "file" and "file" in error["message"]


def test_another_users_batch_results_are_not_found(client, other_client, models, upload):
    batch_id = make_batch(client, upload, 3)
    for path in (f"/v1/batches/{batch_id}/results", "/v1/batches/batch_nope/results", "/v1/batches/%ED%A0%80/results"):
        response = other_client.get(path)
        assert response.status_code == 404, (path, response.content)
        assert response.json()["error"]["code"] == "not_found"
