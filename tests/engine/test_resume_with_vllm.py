"""Resume on real vLLM (CPU, the demo chat model): one 2,000-line chunk, its worker killed
with SIGKILL at about half, a second worker finishes it keeping the first one's checkpoints.

The bound (issue 19 item 2): the lines run again are at most the lines in flight (the
engine's window, 2 x max_num_seqs) plus one checkpoint interval; the counter
batchsite_lines_rerun_total counts those the killed worker had reported finished,
at most one checkpoint interval (BATCHSITE_CHECKPOINT_LINES here).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, Chunk, RegisteredModel
from jobs.services import counters
from tests.conftest import chat_line, start_worker
from tests.engine.conftest import SMOL_NAME, SMOL_OPTIONS
from tests.live import WORKER_ENV
from tests.worker.common import assert_every_line_once, finish, lines_of, make_batch, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

N = 2000
CHECKPOINT_LINES = 100


def test_a_killed_workers_chunk_on_vllm_is_resumed_from_its_last_checkpoint(
    client: Any, upload: Any, settings: Any, limits: Any, smollm2_dir: Path, tmp_path: Path
) -> None:
    RegisteredModel.objects.create(
        name=SMOL_NAME, source=str(smollm2_dir), endpoints=["chat", "completions"], engine_options=SMOL_OPTIONS
    )
    limits(chunk_size=N)
    lines = [chat_line(i, model=SMOL_NAME) for i in range(N)]
    for line in lines:
        line["body"]["max_tokens"] = 1
    batch_id = make_batch(client, upload, lines)
    env = {
        **WORKER_ENV,
        "BATCHSITE_STALE_AFTER_SECONDS": "5",
        "BATCHSITE_CHECKPOINT_LINES": str(CHECKPOINT_LINES),
        "BATCHSITE_CHECKPOINT_SECONDS": "60",
    }
    doomed = start_worker(settings, "--worker-id", "doomed", "--exit-when-idle", **env)
    try:
        wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= N // 2, timeout=600, what="half the chunk")
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
    reported = Chunk.objects.get(batch_id=batch_id).completed
    assert reported < N, "finished before it was killed: nothing tested"
    log = tmp_path / "rescuer.log"
    with log.open("w") as err:
        rescuer = start_worker(settings, "--worker-id", "rescuer", "--exit-when-idle", **env, stderr=err)
        assert finish(rescuer, timeout=600) == 0
    batch = assert_every_line_once(batch_id, N)  # lost 0, duplicated 0
    text = log.read_text()
    assert "resumed: kept " in text, text[-3000:]
    kept = int(text.split("resumed: kept ", 1)[1].split()[0])
    assert f"kept {kept} lines, running {N - kept}" in text
    rerun = counters.value(counters.LINES_RERUN)
    print(f"reported {reported} at the kill, kept {kept}, rerun counted {rerun}")
    assert kept >= reported - CHECKPOINT_LINES and rerun == reported - kept < CHECKPOINT_LINES
    assert sum(1 for line in lines_of(batch.output_file_id) if line["response"]["status_code"] == 200) == N
