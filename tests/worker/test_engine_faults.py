"""Faults between the worker and its engine: a hang, a cancel while other batches share the
engine, a SIGTERM mid-chunk. Real worker subprocesses on the SIMULATED engine, which runs
SIM_WINDOW lines at once, hangs on ``sim_hang`` and logs every abort to SIM_ABORT_LOG."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest

from jobs.models import Batch, Chunk, ChunkStatus
from tests.conftest import chat_line, start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, lines_of, make_batch, status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_hung_engine_is_restarted_its_lines_retried_and_a_line_that_always_hangs_fails_alone(
    client, models, upload, settings, tmp_path: Path
):
    lines = [chat_line(i) for i in range(6)]
    lines[2]["body"]["sim_hang"] = "once"  # the engine hangs on it once: retried, it answers
    lines[4]["body"]["sim_hang"] = True  # it hangs the engine every time
    batch_id = make_batch(client, upload, lines)
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = start_worker(settings, *SIM, stderr=err, **FAST, BATCHSITE_ENGINE_STALL_SECONDS="1", SIM_WINDOW="3")
        assert finish(worker, timeout=60) == 0, log.read_text()[-3000:]
    batch = assert_every_line_once(batch_id, 6)
    assert batch.completed == 5 and batch.failed == 1
    [error] = lines_of(batch.error_file_id)
    # batchsite failed it, not the engine's answer: as OpenAI writes such lines, no response.
    assert error["custom_id"] == "req-4" and error["response"] is None
    assert error["error"]["code"] == "engine_crashed" and "stopped answering" in error["error"]["message"]
    assert "req-2" in {line["custom_id"] for line in lines_of(batch.output_file_id)}
    assert "engine for HuggingFaceTB/SmolLM2-135M-Instruct hangs" in log.read_text()


def test_cancelling_one_batch_aborts_only_its_lines_in_the_engine_it_shares(
    client, models, upload, settings, limits, tmp_path: Path
):
    limits(chunk_size=4)
    first = make_batch(client, upload, [chat_line(i, custom_id=f"a-{i}") for i in range(4)])
    second = make_batch(client, upload, [chat_line(i, custom_id=f"b-{i}") for i in range(4)])
    aborted = tmp_path / "aborted.txt"
    worker = start_worker(settings, *SIM, **FAST, SIM_WINDOW="8", SIM_SLEEP_SECONDS="2", SIM_ABORT_LOG=str(aborted))
    # Both batches' lines are in the one engine at once.
    wait_for(lambda: Chunk.objects.filter(status=ChunkStatus.RUNNING).count() == 2, what="both chunks to run")
    assert client.post(f"/v1/batches/{first}/cancel").json()["status"] == "cancelling"
    wait_for(lambda: status(first) == "cancelled", timeout=10, what="the cancel")
    assert status(second) == "in_progress"
    assert finish(worker) == 0
    assert set(aborted.read_text().split()) == {f"a-{i}" for i in range(4)}
    assert_every_line_once(second, 4, prefix="b-")
    # The second batch's chunk ran once, on its first claim: never handed back and rerun.
    chunk = Chunk.objects.get(batch_id=second)
    assert chunk.fence == 1 and chunk.attempts == 1
    cancelled = assert_every_line_once(first, 4, status="cancelled", prefix="a-")
    assert {e["error"]["code"] for e in lines_of(cancelled.error_file_id)} == {"batch_cancelled"}


def test_sigterm_keeps_the_lines_finished_within_the_grace_and_runs_only_the_rest_again(
    client, models, upload, settings, limits, tmp_path: Path
):
    limits(chunk_size=60)
    n = 60
    lines = [chat_line(i) for i in range(n)]
    for line in lines[7::8]:
        line["body"]["sim_sleep"] = 3  # in flight when the grace runs out: aborted, run by the next worker
    batch_id = make_batch(client, upload, lines)
    aborted = tmp_path / "aborted.txt"
    leaver = start_worker(
        settings,
        *SIM,
        **FAST,
        SIM_WINDOW="8",
        SIM_SLEEP_SECONDS="0.05",
        SIM_ABORT_LOG=str(aborted),
        BATCHSITE_SHUTDOWN_GRACE_SECONDS="0.5",
    )
    wait_for(lambda: Batch.objects.get(pk=batch_id).completed >= 10, what="progress")
    leaver.send_signal(signal.SIGTERM)
    assert finish(leaver, timeout=20) == 0
    chunk = Chunk.objects.get(batch_id=batch_id)
    assert chunk.status == ChunkStatus.PENDING and chunk.worker_id is None
    [kept] = chunk.parts
    assert kept["completed"] >= 10 and chunk.completed == kept["completed"]
    stopped_by_grace = set(aborted.read_text().split())
    assert stopped_by_grace  # some lines were cut off by the grace period
    finisher = start_worker(settings, *SIM, **FAST, SIM_WINDOW="8")
    assert finish(finisher) == 0
    batch = assert_every_line_once(batch_id, n)
    ran_by = collections.Counter(line["response"]["body"]["pid"] for line in lines_of(batch.output_file_id))
    # The leaver's finished lines are in the output as it ran them; the finisher ran only the rest.
    assert ran_by == {leaver.pid: kept["completed"], finisher.pid: n - kept["completed"]}
    by_line = {line["custom_id"]: line["response"]["body"]["pid"] for line in lines_of(batch.output_file_id)}
    assert {by_line[custom_id] for custom_id in stopped_by_grace} == {finisher.pid}
