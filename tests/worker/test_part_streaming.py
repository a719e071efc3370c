"""A chunk's results go to its part in the file store as they arrive, not into the worker's memory.

The results are made up here (embedding-sized encoded bodies) and handed to the
worker's ChunkRun directly: these tests are about where result lines go, not
about running requests (the worker suites run them end to end).
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import orjson
import pytest
from django.core.files.storage import default_storage

from jobs.engine.base import EngineResult
from jobs.models import Chunk
from jobs.services import parts
from jobs.worker_feed import ChunkRun
from tests.worker.common import make_batch

pytestmark = pytest.mark.django_db

LINES = 5_000  # the default chunk size
VECTOR = [0.123456789 * (i % 7 - 3) for i in range(384)]  # all-MiniLM-L6-v2's width: ~4.5 KB per line, ~22 MiB a chunk


def embedding_result(seq: int, ok: bool = True) -> EngineResult:
    if ok:
        body = orjson.dumps({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": VECTOR}]})
        return EngineResult(f"req-{seq}", 200, body, f"r{seq}", {"prompt_tokens": 5, "total_tokens": 5}, None)
    error = {"error": {"message": "too long", "type": "BadRequestError", "param": None, "code": 400}}
    return EngineResult(f"req-{seq}", 400, error, f"r{seq}", None, None)


def stored_files(batch_id: str) -> list[str]:
    try:
        return sorted(default_storage.listdir(f"{parts.PREFIX}/{batch_id}")[1])
    except FileNotFoundError:
        return []


@pytest.fixture
def chunk(client: Any, upload: Any, limits: Any, models: None) -> Chunk:
    limits(chunk_size=LINES)
    batch_id = make_batch(client, upload, LINES)
    return Chunk.objects.get(batch_id=batch_id)


def test_a_chunks_40_mb_of_embeddings_never_sit_in_the_workers_memory(chunk: Chunk):
    run = ChunkRun(chunk)
    # Arrival order is not input order: the engine finishes lines as it can.
    order = [*range(1, LINES, 2), *range(0, LINES, 2)]
    tracemalloc.start()
    try:
        for seq in order:
            run.add(seq, embedding_result(seq, ok=seq % 500 != 0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB held"

    part = run.part.commit()
    assert part is not None
    assert (part.completed, part.failed) == (LINES - 10, 10)
    assert part.done == ((0, LINES),) and part.usage["prompt_tokens"] == 5 * (LINES - 10)
    assert parts.problem(chunk.batch_id, chunk.index, part, LINES) is None
    out_name, err_name = parts.names(chunk.batch_id, chunk.index, chunk.fence)
    with parts.open_part(out_name) as fh:
        output = [json.loads(line) for line in fh]
    with parts.open_part(err_name) as fh:
        errors = [json.loads(line) for line in fh]
    assert sorted(int(o["custom_id"][4:]) for o in output + errors) == list(range(LINES))
    assert output[0]["custom_id"] == "req-1"  # in the order they finished
    assert output[0]["response"]["body"]["data"][0]["embedding"] == VECTOR
    assert {e["response"]["status_code"] for e in errors} == {400}


def test_a_part_is_stored_only_when_committed_and_a_dropped_one_leaves_nothing(chunk: Chunk):
    run = ChunkRun(chunk)
    for seq in range(50):
        run.add(seq, embedding_result(seq))
    assert stored_files(chunk.batch_id) == [] or all(name.endswith(".tmp") for name in stored_files(chunk.batch_id))
    for name in parts.names(chunk.batch_id, chunk.index, chunk.fence):
        assert not default_storage.exists(name)
    run.abandon()  # taken by another worker
    assert run.abandoned
    assert stored_files(chunk.batch_id) == []
    run.part.discard()  # twice is harmless


def test_a_claim_that_finished_nothing_stores_no_part(chunk: Chunk):
    run = ChunkRun(chunk)
    assert run.part.empty
    run.abandon()
    assert stored_files(chunk.batch_id) == []
