"""Finalize of a 50,000-line batch on S3 (moto's server on loopback): the worker's memory does not grow
with the output. The output (~110 MB) is more than the limit, so holding it, or a chunk's worth of
parts at a time in several copies, would show.

The 50,000 results are written as parts with the workers' own code (jobs.services.parts.write) instead
of being run: this test is about assembling them, not about running requests. The finalize is a real
worker subprocess's (SIMULATED engine).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest
from django.utils import timezone

from jobs.models import Batch, Chunk, ChunkStatus, File, Worker
from jobs.services import files as file_service
from jobs.services import parts, queue
from jobs.services.results import result_line
from tests.conftest import ROOT, chat_line, jsonl, subprocess_env
from tests.s3 import S3Server
from tests.worker.common import FAST, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LINES = 50_000
CHUNK = 5_000
PAD = "x" * 2_000  # ~2.2 KB per output line: ~110 MB of output
LIMIT = 100 * 1024 * 1024


def rss(process: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def test_finalizing_50000_lines_on_s3_keeps_the_workers_memory_flat(
    client: Any, upload: Any, models: None, limits: Any, settings: Any, s3_server: S3Server
):
    prefix = s3_server.new_prefix("memory")
    settings.STORAGES = {**settings.STORAGES, "default": s3_server.storage(prefix)}
    limits(chunk_size=CHUNK)
    file = upload(jsonl([chat_line(i) for i in range(LINES)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = client.post("/v1/batches", body, format="json").json()["id"]
    # The chunks are held by a stand-in for the workers that ran them, so the worker under test
    # finds nothing to run and sits idle until they end: its memory then is the baseline.
    queue.register_worker("earlier-workers", "cpu", 1)
    Chunk.objects.filter(batch_id=batch_id).update(status=ChunkStatus.RUNNING, worker_id="earlier-workers", fence=1)

    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_gpu_worker", "--engine", "jobs.engine.simulated.SimulatedEngine"]
        + ["--worker-id", "finalizer", "--device", "cpu"],
        cwd=ROOT,
        env=subprocess_env(settings, **{**FAST, **s3_server.env(prefix), "BATCHSITE_STALE_AFTER_SECONDS": "600"}),
    )
    try:
        process = psutil.Process(worker.pid)
        written = []
        for chunk in Chunk.objects.filter(batch_id=batch_id).order_by("index"):
            output = [
                result_line(
                    f"req-{chunk.index * CHUNK + seq}", 200, f"r-{seq}", {"object": "chat.completion", "pad": PAD}
                )
                for seq in range(chunk.request_count)
            ]
            part = parts.write(
                batch_id, chunk.index, 1, output, [], range(chunk.request_count), {"completion_tokens": 1}
            )
            written.append((chunk.pk, part))
        wait_for(lambda: Worker.objects.filter(pk="finalizer").exists(), what="the worker to start")
        time.sleep(2)  # a few idle looks at the queue: imports done, threads started
        baseline = 0
        for _ in range(5):
            baseline = max(baseline, rss(process))
            time.sleep(0.2)
        now = timezone.now()
        for chunk_id, part in written:
            Chunk.objects.filter(pk=chunk_id).update(
                status=ChunkStatus.DONE,
                parts=[part.to_json()],
                completed=part.completed,
                failed=0,
                usage=part.usage,
                finished_at=now,
            )
        peak = baseline
        started = time.monotonic()
        while Batch.objects.get(pk=batch_id).status != "completed":
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() - started < 300, "finalize did not end"
            peak = max(peak, rss(process))
            time.sleep(0.02)
        took = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    batch = Batch.objects.get(pk=batch_id)
    output = File.objects.get(pk=batch.output_file_id)
    print(
        f"finalize of {LINES} lines ({output.bytes / 1e6:.0f} MB of output) on S3 in {took:.1f}s: "
        f"worker RSS {baseline / 1e6:.0f} MB -> peak {peak / 1e6:.0f} MB (+{(peak - baseline) / 1e6:.1f} MB)"
    )
    assert output.bytes > LIMIT  # more than the limit: holding it whole would fail the test
    assert peak - baseline < LIMIT
    assert (batch.completed, batch.failed) == (LINES, 0)
    # Every line once, in input order, read back streamed from the store.
    with file_service.open_content(output) as fh:
        ids = [json.loads(line)["custom_id"] for line in fh]
    assert ids == [f"req-{i}" for i in range(LINES)]
    assert [k for k in s3_server.keys(prefix) if k.startswith("parts/")] == []  # parts deleted once published
