"""Fair share on a real worker (issue 18's acceptance): the demo chat model on vLLM, chunks of 50.

Alice's 600-line batch is running when Bob submits 5 lines. Bob has had no
worker time, so the worker's next claim is his: his batch completes while
Alice's still runs, and he waits no longer than one of Alice's chunks (the
one running at his submit) plus a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, RegisteredModel
from jobs.models.batches import TERMINAL_STATUSES
from jobs.models.clock import db_now
from tests.conftest import chat_line, jsonl, start_worker
from tests.engine.conftest import SMOL_NAME, SMOL_OPTIONS
from tests.live import WORKER_ENV
from tests.worker.common import finish, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

CHUNK = 50
SLACK_SECONDS = 5.0  # a claim poll, the feed's turn, a database round trip or two


def submit(api: Any, upload: Any, n: int) -> str:
    lines = [chat_line(i, model=SMOL_NAME) for i in range(n)]
    for line in lines:
        line["body"]["max_tokens"] = 1  # short answers: the test is about who runs when
    file = upload(jsonl(lines), api=api)
    response = api.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 200 and response.json()["status"] == "in_progress", response.content
    return str(response.json()["id"])


def test_a_small_batch_of_another_user_runs_next_while_a_big_one_is_running(
    client: Any, other_client: Any, upload: Any, settings: Any, limits: Any, smollm2_dir: Path
) -> None:
    RegisteredModel.objects.create(
        name=SMOL_NAME,
        source=str(smollm2_dir),
        endpoints=["chat", "completions"],
        # The engine's own window (2 x max_num_seqs = 512 lines, past all of alice's 600 but one
        # chunk): the feeder claims ahead only while fewer lines than the engine runs at once are
        # in flight, so alice's chunks are not all claimed at the start and bob's claim comes next.
        engine_options=SMOL_OPTIONS,
    )
    limits(chunk_size=CHUNK)  # the chunks are cut when the batch is created, here
    alices = submit(client, upload, 600)
    worker = start_worker(settings, "--worker-id", "fair", "--exit-when-idle", **WORKER_ENV, BATCHSITE_FAIR_SHARE="on")
    try:
        # Alice's batch is running: its first chunk has ended (the model is loaded, the run is steady).
        wait_for(
            lambda: Chunk.objects.filter(batch_id=alices, status=ChunkStatus.DONE).exists(),
            timeout=300,
            what="alice's first chunk",
        )
        submitted = db_now()
        bobs = submit(other_client, upload, 5)
        # Claims made while bob's create was still in flight could not see his batch.
        accepted = db_now()
        wait_for(
            lambda: Batch.objects.get(pk=bobs).status in TERMINAL_STATUSES,
            timeout=120,
            what="bob's batch to end",
        )
        bob = Batch.objects.get(pk=bobs)
        assert bob.status == BatchStatus.COMPLETED and bob.completed == 5
        assert Batch.objects.get(pk=alices).status == BatchStatus.IN_PROGRESS, "alice's batch ended first"
        bob_claimed = Chunk.objects.get(batch_id=bobs).claimed_at
        assert bob_claimed is not None
        # The worker's next claim after bob's submit was his, not another of alice's chunks.
        between = Chunk.objects.filter(batch_id=alices, claimed_at__gt=accepted, claimed_at__lt=bob_claimed)
        assert not between.exists(), [c.index for c in between]
        waited = (bob_claimed - submitted).total_seconds()
        around = Chunk.objects.filter(batch_id=alices, claimed_at__gt=submitted).order_by("claimed_at")
        print(f"alice's claims after bob's submit: {[(c.index, c.claimed_at) for c in around]}; bob's {bob_claimed}")
        alice_chunks = [
            (c.finished_at - c.claimed_at).total_seconds()
            for c in Chunk.objects.filter(batch_id=alices, status=ChunkStatus.DONE)
            if c.finished_at is not None and c.claimed_at is not None
        ]
        print(f"bob waited {waited:.1f} s to start; alice's chunks took {sorted(round(s, 1) for s in alice_chunks)}")
        assert waited <= max(alice_chunks) + SLACK_SECONDS
    finally:
        # Alice's rest is not this test's business: stop the worker (it hands her chunks back).
        worker.terminate()
        finish(worker, timeout=120)
