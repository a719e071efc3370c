"""run_gpu_worker --device/--devices: the environment the engine gets, the Worker row, and the
models a worker leaves to others.

No GPU here: the environment is read by a PROBE engine (tests/probe.py) in the
worker process and in a child process started as vLLM starts its engine core;
the queue tests run the SIMULATED engine in-process. Both are about what the
worker does with its devices, not about inference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from jobs.engine.pinning import parse
from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, BatchStatus, Chunk, RegisteredModel, Worker
from jobs.worker import GpuWorker
from tests.conftest import CHAT_MODEL, ROOT, chat_line, jsonl, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

BIG_MODEL = "big-model-tp2"
PROBE = ("--engine", "tests.probe.ProbeEngine", "--exit-when-idle")


def run_worker(settings: Any, tmp_path: Any, *flags: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "probe.json"
    base = subprocess_env(settings, PROBE_OUT=str(out))
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        base.pop(key, None)
    base.update(env)
    result = subprocess.run(
        [sys.executable, "manage.py", "run_gpu_worker", *PROBE, *flags],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize(
    "flags, operator_env, visible, order, label",
    [
        (["--device", "cuda:1"], {}, "1", "PCI_BUS_ID", "cuda:1"),
        (["--devices", "0,1"], {}, "0,1", "PCI_BUS_ID", "cuda:0,1"),
        (["--devices", "2,3"], {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, "2,3", "FASTEST_FIRST", "cuda:2,3"),
        (["--device", "cpu"], {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "", None, "cpu"),
        ([], {"CUDA_VISIBLE_DEVICES": "3"}, "3", None, "auto"),
    ],
)
def test_the_engine_process_gets_the_workers_devices(settings, tmp_path, flags, operator_env, visible, order, label):
    result, probe = run_worker(settings, tmp_path, *flags, **operator_env)
    assert result.returncode == 0, result.stderr
    expected = {"CUDA_VISIBLE_DEVICES": visible, "CUDA_DEVICE_ORDER": order}
    assert probe["worker"] == expected and probe["engine_process"] == expected
    assert probe["torch_imported_before"] is False  # nothing could have started CUDA before the pin
    assert Worker.objects.get().device == label
    if flags:
        assert f"engine pinned to {label}" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "cuda:x"], "--device: 'x' is not a GPU index"),
        (["--device", "gpu0"], "--device: 'gpu0' is not cpu, cuda:N or auto"),
        (["--devices", "0,0"], "--devices: '0,0' names a GPU twice"),
        (["--device", "cuda:0", "--devices", "0,1"], "use --device or --devices, not both"),
        (["--devices", "1" * 5000], "out of range"),
    ],
)
def test_a_bad_device_stops_the_worker_before_it_registers(settings, tmp_path, flags, message):
    result, probe = run_worker(settings, tmp_path, *flags)
    assert result.returncode == 1 and message in result.stderr and len(result.stderr) < 2000
    assert probe is None and not Worker.objects.exists()


def test_a_gpu_device_on_a_host_whose_vllm_runs_on_the_cpu_is_refused(settings):
    """The real vLLM of this CPU-only host: pinning a GPU it cannot use is an error at start, not at load."""
    env = subprocess_env(settings)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "run_gpu_worker", "--device", "cuda:0", "--exit-when-idle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "--device cuda:0: vLLM here runs on the CPU" in result.stderr and not Worker.objects.exists()


def make_batch(client: Any, upload: Any, model: str, n: int) -> str:
    file = upload(jsonl([chat_line(i, model=model) for i in range(n)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = client.post("/v1/batches", body, format="json")
    assert response.json()["status"] == "in_progress", response.content
    return str(response.json()["id"])


@pytest.mark.parametrize("policy", ["fifo", "affinity"])
def test_a_model_that_needs_two_gpus_is_left_to_a_worker_with_two(client, upload, models, caplog, settings, policy):
    settings.BATCHSITE_SCHEDULER = dataclasses.replace(settings.BATCHSITE_SCHEDULER, policy=policy, policy_file="")
    RegisteredModel.objects.create(
        name=BIG_MODEL, source="/models/big", endpoints=["chat"], engine_options={"tensor_parallel_size": 2}
    )
    big = make_batch(client, upload, BIG_MODEL, 3)  # first in the queue
    small = make_batch(client, upload, CHAT_MODEL, 3)
    one_gpu = GpuWorker(SimulatedEngine(), worker_id="w-one", devices=parse("cuda:0"))
    cpu = GpuWorker(SimulatedEngine(), worker_id="w-cpu", devices=parse("cpu"))
    with caplog.at_level(logging.WARNING, logger="batchsite.worker"):
        assert one_gpu.tick() is True  # it takes the small batch, behind the big one
        assert one_gpu.tick() is False and cpu.tick() is False  # and nothing else: the big one does not fit
    refusals = [r.getMessage() for r in caplog.records if "needs 2 GPUs" in r.getMessage()]
    assert len(refusals) == 2  # once per worker, not once per poll
    assert (
        "w-one: model 'big-model-tp2' needs 2 GPUs (tensor_parallel_size=2 x pipeline_parallel_size=1)" in (refusals[0])
    )
    assert Batch.objects.get(pk=small).status == BatchStatus.COMPLETED
    untouched = Chunk.objects.get(batch_id=big)
    assert (untouched.status, untouched.attempts, untouched.worker_id) == ("pending", 0, None)
    assert Batch.objects.get(pk=big).started_at is None

    two_gpus = GpuWorker(SimulatedEngine(), worker_id="w-two", devices=parse(None, "0,1"))
    assert two_gpus.tick() is True
    assert Batch.objects.get(pk=big).status == BatchStatus.COMPLETED
    assert dict(Worker.objects.values_list("id", "device")) == {"w-one": "cuda:0", "w-cpu": "cpu", "w-two": "cuda:0,1"}
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # in-process workers pin nothing; the command does
