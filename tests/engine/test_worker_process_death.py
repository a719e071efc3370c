"""A worker killed with SIGKILL takes its vLLM engine processes with it (real vLLM on the CPU).

vLLM runs the model in engine-core processes of its own; if they outlived a
killed worker they would hold the GPU's memory (and here ~7 GB of RAM) until
someone found them by hand, and the next worker on that GPU could not load.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobs.engine import demo
from jobs.models import Batch, RegisteredModel, Worker
from tests.conftest import jsonl, start_worker
from tests.live import SMOL_OPTIONS, WORKER_ENV, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has exited: only its exit status is left to collect)."""
    living = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except psutil.NoSuchProcess:
            pass
    return living


def test_a_worker_killed_with_sigkill_leaves_no_engine_process(client, upload, settings, smollm2_dir: Path) -> None:
    RegisteredModel.objects.create(
        name=demo.SMOLLM2_NAME, source=str(smollm2_dir), endpoints=["chat", "completions"], engine_options=SMOL_OPTIONS
    )
    lines = [
        {
            "custom_id": f"long-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": demo.SMOLLM2_NAME,
                "messages": [{"role": "user", "content": f"Write a long story about the number {i}."}],
                "max_tokens": 256,
                "ignore_eos": True,
            },
        }
        for i in range(64)
    ]
    file = upload(jsonl(lines))
    batch = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    ).json()
    worker = start_worker(settings, "--worker-id", "victim", **WORKER_ENV)
    try:
        wait_until(
            lambda: Worker.objects.filter(pk="victim", state="running").exists(), 600, "the worker to load and run"
        )
        tree: list[Any] = psutil.Process(worker.pid).children(recursive=True)
        assert alive(tree), "vLLM started no process of its own"
        print("worker", worker.pid, "descendants:", [(p.pid, p.name()) for p in tree])
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    killed = time.monotonic()
    assert Batch.objects.get(pk=batch["id"]).status == "in_progress"
    try:
        wait_until(lambda: not alive(tree), 15, "the killed worker's engine processes to exit", every=0.05)
        print(f"the engine processes exited {time.monotonic() - killed:.2f}s after the worker was killed")
    finally:
        for proc in alive(tree):  # never leave a 7 GB engine behind for the next test
            proc.kill()
