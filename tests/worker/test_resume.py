"""Resume from the last finished line (issue 19 item 2): a running claim records its finished
lines as segments, and a claim lost to kill -9 costs only the lines since its last one.

Real worker subprocesses killed with SIGKILL, on the SIMULATED engine (the fault is about
the queue and the parts, not inference; tests/engine/test_resume_with_vllm.py is the same
on vLLM). Run on S3 too (.ci/run: --storage s3), where segments are objects of their own.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, Chunk
from jobs.services import counters, parts
from tests.conftest import chat_line, start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, lines_of, make_batch, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

N = 2000
CHECKPOINT_LINES = 100
WINDOW = 4


def test_a_chunk_whose_worker_is_killed_at_half_keeps_its_checkpoints_and_runs_only_the_rest(
    client: Any, models: None, upload: Any, settings: Any, limits: Any, tmp_path: Path
) -> None:
    limits(chunk_size=N)
    batch_id = make_batch(client, upload, N)
    checkpoints = {"BATCHSITE_CHECKPOINT_LINES": str(CHECKPOINT_LINES), "BATCHSITE_CHECKPOINT_SECONDS": "30"}
    doomed = start_worker(
        settings, *SIM, "--worker-id", "doomed", **FAST, **checkpoints, SIM_SLEEP_SECONDS="0.01", SIM_WINDOW=str(WINDOW)
    )
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= N // 2, what="half the chunk")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    reported = Chunk.objects.get(batch_id=batch_id).completed  # its last progress report
    assert reported < N, "the doomed worker finished before it was killed: nothing tested"
    log = tmp_path / "rescuer.log"
    with log.open("w") as err:
        rescuer = start_worker(settings, *SIM, "--worker-id", "rescuer", **FAST, **checkpoints, stderr=err)
        assert finish(rescuer) == 0
    batch = assert_every_line_once(batch_id, N)  # lost 0, duplicated 0
    by_pid: dict[int, int] = {}
    for line in lines_of(batch.output_file_id):
        pid = line["response"]["body"]["pid"]
        by_pid[pid] = by_pid.get(pid, 0) + 1
    kept = by_pid.get(doomed.pid, 0)
    # Today's code kept nothing of a killed claim (kept == 0, ~1,000 lines run again).
    # The bound: what finished since the last segment (< CHECKPOINT_LINES) plus the lines in flight.
    assert kept >= reported - CHECKPOINT_LINES - WINDOW, (kept, reported)
    assert by_pid[rescuer.pid] == N - kept
    rerun = counters.value(counters.LINES_RERUN)
    assert rerun == reported - kept and 0 <= rerun < CHECKPOINT_LINES + WINDOW
    assert f"kept {kept} lines, running {N - kept}" in log.read_text()
    chunk = Chunk.objects.get(batch_id=batch_id)
    segments = [p for p in parts.recorded(chunk) if p.fence == 1]
    assert len(segments) >= kept // CHECKPOINT_LINES and [p.segment for p in segments] == list(range(len(segments)))
    assert chunk.attempts == 2


def test_a_claim_that_lost_its_chunk_cannot_record_a_checkpoint(
    client: Any, models: None, upload: Any, settings: Any, limits: Any
) -> None:
    """A worker frozen (SIGSTOP) mid-chunk is taken for dead; thawed, its next checkpoint
    is refused by the fence and its segment dropped: the winner's lines are the ones kept."""
    limits(chunk_size=60)
    lines = [chat_line(i) for i in range(60)]
    batch_id = make_batch(client, upload, lines)
    checkpoints = {"BATCHSITE_CHECKPOINT_LINES": "10", "BATCHSITE_CHECKPOINT_SECONDS": "30"}
    loser = start_worker(settings, *SIM, "--worker-id", "loser", **FAST, **checkpoints, SIM_SLEEP_SECONDS="0.05")
    try:
        wait_for(lambda: Chunk.objects.get(batch_id=batch_id).completed >= 15, what="progress")
        loser.send_signal(signal.SIGSTOP)
        kept_by_loser = len(parts.recorded(Chunk.objects.get(batch_id=batch_id)))
        winner = start_worker(settings, *SIM, "--worker-id", "winner", **FAST, **checkpoints)
        assert finish(winner) == 0
    finally:
        loser.send_signal(signal.SIGCONT)
    assert finish(loser) == 0
    batch = assert_every_line_once(batch_id, 60)
    chunk = Chunk.objects.get(batch_id=batch_id)
    fences = [p.fence for p in parts.recorded(chunk)]
    assert fences.count(1) == kept_by_loser and set(fences) <= {1, 2}
    stored = {name for name in settings.TEST_STORAGE.keys(settings) if "/parts/" in f"/{name}"}
    assert not stored  # finalize deleted every part, the loser's late segment included
    assert batch.completed == 60
