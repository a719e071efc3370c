"""The Ray fleet on a real Ray cluster on loopback (tests/fleet/ray_cluster.py): placement per node,
nodes joining and leaving, Ray restarting a worker killed with SIGKILL, the drain on stop, and
--autoscale. The workers run the SIMULATED engine (labelled: these are about scheduling and the
queue, not inference); test_ray_fleet_engine.py runs one actor on the real CPU engine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter

import openai
import pytest

from jobs.engine import demo
from jobs.models import Batch, Chunk, ChunkStatus, RegisteredModel, Worker
from tests.conftest import chat_line, jsonl
from tests.fleet.common import SIM_ENGINE, FleetProcess, alive, sim_fleet
from tests.live import SMOL_OPTIONS, WORKER_ENV
from tests.worker.common import assert_every_line_once, make_batch, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_worker_per_cpu_slot_follows_a_node_joining_survives_sigkill_and_drains_on_stop(
    ray_cluster, client, models, upload, limits, settings, tmp_path
):
    limits(chunk_size=10)
    n = 300
    fleet = sim_fleet(
        settings,
        ray_cluster,
        tmp_path,
        "t",
        SIM_SLEEP_SECONDS="0.02",
    )
    try:
        # The head has 2 CPUs: two workers, both on it.
        head = fleet.wait_workers(2)
        assert len({w.ray_node for w in head}) == 1 and re.fullmatch(r"\S+ [0-9a-f]{12}", head[0].ray_node)
        # A node joins (another host, other resources): the fleet places a worker there.
        ray_cluster.add_node("side", cpus=1, resources={"side": 1})
        everyone = fleet.wait_workers(3)
        assert len({w.ray_node for w in everyone}) == 2
        batch_id = make_batch(client, upload, n)
        wait_for(lambda: 60 <= Batch.objects.get(pk=batch_id).completed <= 200, what="progress")
        # SIGKILL one worker's actor process while it holds a chunk: Ray starts it again.
        running = Chunk.objects.filter(batch_id=batch_id, status=ChunkStatus.RUNNING).exclude(worker=None).first()
        assert running is not None
        victim = Worker.objects.get(pk=running.worker_id)
        slot = victim.id.rsplit("-", 1)[0]
        os.kill(victim.pid, signal.SIGKILL)
        reborn = wait_for(
            lambda: Worker.objects.filter(id__startswith=slot + "-").exclude(pk=victim.id).first(),
            timeout=90,
            what="Ray restarting the killed actor",
        )
        assert reborn.ray_node == victim.ray_node  # restarted where its place is
        wait_for(lambda: Batch.objects.get(pk=batch_id).status == "completed", timeout=120, what="the batch")
        assert_every_line_once(batch_id, n)
        # The killed worker's chunk was taken back (a second attempt) and run once more.
        assert Chunk.objects.get(pk=running.pk).attempts >= 2
        survivors = fleet.wait_workers(3)  # the killed one is silent now
        assert victim.pid not in {w.pid for w in survivors} and not alive([victim.pid])
        pids = [w.pid for w in survivors]
    finally:
        status = fleet.stop()
    assert status == 0, fleet.log_tail()
    # The drain: every worker stopped as after SIGTERM, and no process of theirs is left.
    assert not fleet.workers()
    wait_for(lambda: not alive(pids), timeout=30, what="the actors' processes to end")
    ray_cluster.stop_node("side")


def test_a_node_that_leaves_has_its_workers_chunks_taken_back(
    ray_cluster, client, models, upload, limits, settings, tmp_path
):
    ray_cluster.add_node("gone", cpus=1, resources={"gone": 1})
    limits(chunk_size=10)
    n = 200
    fleet = sim_fleet(
        settings,
        ray_cluster,
        tmp_path,
        "l",
        SIM_SLEEP_SECONDS="0.03",
    )
    try:
        workers = fleet.wait_workers(3)
        assert len({w.ray_node for w in workers}) == 2
        batch_id = make_batch(client, upload, n)

        # The head holds two workers, the node that will leave one.
        leaving = next(node for node, count in Counter(w.ray_node for w in workers).items() if count == 1)
        held = wait_for(
            lambda: Chunk.objects.filter(
                batch_id=batch_id, status=ChunkStatus.RUNNING, worker__ray_node=leaving
            ).first(),
            what="a chunk on the node that will leave",
        )
        leaver = Worker.objects.get(pk=held.worker_id)
        ray_cluster.stop_node("gone")
        wait_for(lambda: Batch.objects.get(pk=batch_id).status == "completed", timeout=120, what="the batch")
        assert_every_line_once(batch_id, n)
        again = Chunk.objects.get(pk=held.pk)
        assert again.attempts >= 2 and again.worker_id != leaver.id
        wait_for(lambda: "left" in fleet.log.read_text(), timeout=30, what="the fleet noticing the node left")
        assert all(w.ray_node != leaver.ray_node for w in fleet.workers())
    finally:
        status = fleet.stop()
    assert status == 0, fleet.log_tail()


def test_autoscale_starts_workers_for_queued_work_up_to_max_and_gives_them_back(
    ray_cluster, client, models, upload, limits, settings, tmp_path
):
    limits(chunk_size=10)
    fleet = sim_fleet(
        settings,
        ray_cluster,
        tmp_path,
        "a",
        "--autoscale",
        "--max-workers",
        "1",
        "--chunks-per-worker",
        "1",
        "--idle-seconds",
        "0",
        SIM_SLEEP_SECONDS="0.01",
    )
    try:
        wait_for(lambda: "connected to Ray" in fleet.log.read_text(), timeout=60, what="the fleet")
        time.sleep(2)  # a few rounds with an empty queue: no worker is started
        assert not fleet.workers()
        batch_id = make_batch(client, upload, [chat_line(i) for i in range(100)])
        started = fleet.wait_workers(1)  # 10 chunks want 10 workers: --max-workers 1
        wait_for(lambda: Batch.objects.get(pk=batch_id).status == "completed", timeout=120, what="the batch")
        assert_every_line_once(batch_id, 100)
        # The queue is empty: the worker is drained and its process ends.
        fleet.wait_workers(0, timeout=60)
        wait_for(lambda: not alive([started[0].pid]), timeout=30, what="the drained actor's process")
        assert "asking Ray's autoscaler for them" in fleet.log.read_text()
    finally:
        status = fleet.stop()
    assert status == 0, fleet.log_tail()


def test_a_model_on_two_gpus_gets_a_placement_group_across_two_one_gpu_nodes_and_its_gpus_go_back(
    ray_cluster, client, models, upload, limits, settings, tmp_path
):
    """Two nodes declaring one GPU each (Ray's resources only: no GPU here, the SIMULATED engine):
    a tensor_parallel_size=2 model is larger than either host, so the fleet drains the one-GPU
    workers, makes a PACK placement group of the two GPUs and runs the model's batch on a group
    worker (whose engine gets vLLM's Ray executor); the GPUs come back once the queue is empty.
    A CPU fleet refuses such a model with a log line."""
    RegisteredModel.objects.create(
        name="big", source="/m/big", endpoints=["chat"], engine_options={"tensor_parallel_size": 2}
    )
    RegisteredModel.objects.create(
        name="huge", source="/m/huge", endpoints=["chat"], engine_options={"tensor_parallel_size": 4}
    )
    ray_cluster.add_node("g1", cpus=1, resources={"g1": 1}, gpus=1)
    ray_cluster.add_node("g2", cpus=1, resources={"g2": 1}, gpus=1)
    limits(chunk_size=10)
    fleet = FleetProcess(
        settings,
        ray_cluster.address,
        tmp_path / "fleet.log",
        "--engine",
        SIM_ENGINE,
        "--name",
        "gp",
        "--idle-seconds",
        "1",
        SIM_SLEEP_SECONDS="0.01",
    )
    try:
        singles = fleet.wait_workers(2, device="cuda:0")  # one per GPU node, none on the head
        assert len({w.ray_node for w in singles}) == 2
        batch_id = make_batch(client, upload, [chat_line(i, model="big") for i in range(40)])
        (group,) = fleet.wait_workers(1, timeout=120, device="ray-group:2")
        # Its placement group took both GPUs: the one-GPU workers were drained to free them.
        assert not fleet.workers(device="cuda:0")
        wait_for(lambda: Batch.objects.get(pk=batch_id).status == "completed", timeout=120, what="the batch")
        assert_every_line_once(batch_id, 40)
        assert set(Chunk.objects.filter(batch_id=batch_id).values_list("worker_id", flat=True)) == {group.id}
        log = fleet.log.read_text()
        assert "group worker gp-g2-" in log and "(PACK)" in log, fleet.log_tail()
        assert "model 'huge' needs 4 GPUs and the cluster has 2" in log
        # The queue is empty: after the idle time the group is drained and one-GPU workers return.
        fleet.wait_workers(2, timeout=120, device="cuda:0")
        assert not fleet.workers(device="ray-group:2")
    finally:
        status = fleet.stop()
    assert status == 0, fleet.log_tail()
    (tmp_path / "cpu").mkdir()
    cpu = sim_fleet(settings, ray_cluster, tmp_path / "cpu", "gc", "--max-workers", "1")
    try:
        cpu.wait_workers(1)
        wait_for(lambda: "a CPU fleet cannot run it" in cpu.log.read_text(), timeout=30, what="the CPU refusal")
    finally:
        assert cpu.stop() == 0, cpu.log_tail()
    ray_cluster.stop_node("g1")
    ray_cluster.stop_node("g2")


@pytest.mark.engine
def test_one_actor_on_the_real_cpu_engine_completes_a_batch_through_the_sdk(
    ray_cluster, live_server_process, smollm2_dir, api_key, settings, tmp_path
):
    """vLLM on the CPU with the demo model, in one Ray actor (one only: each loads the model)."""
    live = live_server_process
    RegisteredModel.objects.update_or_create(
        name=demo.SMOLLM2_NAME,
        defaults={"source": str(smollm2_dir), "endpoints": ["chat", "completions"], "engine_options": SMOL_OPTIONS},
    )
    fleet = FleetProcess(
        settings,
        ray_cluster.address,
        tmp_path / "fleet.log",
        "--cpu",
        "--cpus-per-worker",
        "2",
        "--max-workers",
        "1",
        data_dir=live.data_dir,
        **WORKER_ENV,
        **live.storage.env,
    )
    try:
        sdk = openai.OpenAI(base_url=live.url + "/v1", api_key=api_key, max_retries=0)
        lines = [chat_line(i, model=demo.SMOLLM2_NAME) for i in range(12)]
        file = sdk.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 300
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline and fleet.process.poll() is None, fleet.log_tail()
            time.sleep(1)
            batch = sdk.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.request_counts.completed == 12, (batch, fleet.log_tail())
        output = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
        assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(12))
        for line in output:
            assert line["response"]["status_code"] == 200
            assert line["response"]["body"]["choices"][0]["message"]["content"]
        (worker,) = fleet.workers()
        assert worker.device == "cpu" and worker.ray_node and worker.loaded_model == demo.SMOLLM2_NAME
        pid = worker.pid
    finally:
        status = fleet.stop(timeout=120)
    assert status == 0, fleet.log_tail()
    wait_for(lambda: not alive([pid]), timeout=30, what="the actor's process")
