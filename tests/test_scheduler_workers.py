"""The scheduler with real worker processes, on the SIMULATED engine (jobs.engine.simulated):
the seed's eight alternating batches under fifo and affinity, the wait bound, two workers.

These are about which chunk each worker claims and what it costs in model
swaps, not about inference: models "load" by sleeping (engine option
``sim_load_seconds``) and requests sleep ``sim_sleep`` seconds each.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from jobs.models import Batch, RegisteredModel, Worker
from jobs.services import scheduling
from tests.conftest import CHAT_MODEL, chat_line, jsonl, start_worker
from tests.live import wait_until
from tests.worker.common import FAST as FAST_BEATS
from tests.worker.common import SIM_ENGINE

pytestmark = pytest.mark.django_db(transaction=True)

SIM = SIM_ENGINE
FAST = {**FAST_BEATS, "BATCHSITE_STALE_AFTER_SECONDS": "5"}
A, B = CHAT_MODEL, "sim/model-b"
# Model A is the slower one to run and to load, as in the seed (18 vs 37 req/s, 35 vs 28 s).
SLEEP = {A: 0.1, B: 0.05}
SEED = (A, B, A, B, A, B, A, B)


@pytest.fixture
def two_models(models: Any, limits: Any) -> None:
    limits(chunk_size=2)
    RegisteredModel.objects.filter(name=A).update(engine_options={"sim_load_seconds": 0.3})
    RegisteredModel.objects.create(
        name=B, source="/sim/b", endpoints=["chat"], engine_options={"sim_load_seconds": 0.2}
    )


def submit(client: Any, upload: Any, models: tuple[str, ...], lines: int = 6) -> list[str]:
    """The batches in one transaction, so a running worker sees the whole queue at once."""
    ids = []
    with transaction.atomic():
        for model in models:
            body = [chat_line(i, model=model) for i in range(lines)]
            for line in body:
                line["body"]["sim_sleep"] = SLEEP[model]
            file = upload(jsonl(body))
            response = client.post(
                "/v1/batches",
                {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
                format="json",
            )
            assert response.status_code == 200, response.content
            ids.append(response.json()["id"])
    return ids


class Workers:
    def __init__(self, settings: Any, tmp_path: Path, names: list[str], **env: str) -> None:
        self.logs = {name: tmp_path / f"{name}.log" for name in names}
        self.processes = {}
        for name, log in self.logs.items():
            with log.open("wb") as out:
                self.processes[name] = start_worker(settings, *SIM, "--worker-id", name, stderr=out, **FAST, **env)
        # Started: registered, and its first heartbeat has published its policy.
        policy = env.get("BATCHSITE_SCHEDULER", "fifo")
        wait_until(
            lambda: Worker.objects.filter(pk__in=names, state="idle", scheduler=policy).count() == len(names),
            60,
            "workers to start",
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                assert process.wait(timeout=30) == 0
            except subprocess.TimeoutExpired:
                process.kill()
                raise

    def swaps(self, name: str) -> int:
        stopped = re.search(r"worker \S+ stopped \(swaps=(\d+) scheduler=(\w+)\)", self.logs[name].read_text())
        assert stopped, self.logs[name].read_text()[-2000:]
        return int(stopped.group(1))

    def loads(self, name: str) -> list[str]:
        return re.findall(r"model (\S+) ready in [\d.]+s \(swaps=\d+ scheduler=\w+\)", self.logs[name].read_text())


def run_to_the_end(ids: list[str], workers: Workers) -> list[Batch]:
    try:
        wait_until(
            lambda: all(b.is_terminal for b in Batch.objects.filter(pk__in=ids)), 120, "the batches to end", every=0.1
        )
    finally:
        workers.stop()
    batches = {b.id: b for b in Batch.objects.filter(pk__in=ids)}
    assert {b.status for b in batches.values()} == {"completed"}
    return [batches[i] for i in ids]


def waits(batches: list[Batch]) -> list[float]:
    return [(b.started_at - b.created_at).total_seconds() for b in batches]


def start_order(batches: list[Batch]) -> list[int]:
    return sorted(range(len(batches)), key=lambda i: batches[i].started_at)


def test_fifo_runs_the_seeds_eight_alternating_batches_in_order_with_seven_swaps(
    client, upload, two_models, settings, tmp_path
):
    workers = Workers(settings, tmp_path, ["w1"], BATCHSITE_SCHEDULER="fifo")
    ids = submit(client, upload, SEED)
    expected = scheduling.queue_plan(refresh=True)
    batches = run_to_the_end(ids, workers)
    assert workers.swaps("w1") == 7 and workers.loads("w1") == list(SEED)
    assert start_order(batches) == list(range(8))
    assert expected.policy == "fifo" and expected.expected_swaps == 7
    assert [expected.batches[i].position for i in ids] in ([1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7])


def test_affinity_runs_them_with_one_swap_and_no_batch_waits_past_the_bound(
    client, upload, two_models, settings, tmp_path
):
    workers = Workers(settings, tmp_path, ["w1"], BATCHSITE_SCHEDULER="affinity")
    ids = submit(client, upload, SEED)
    expected = scheduling.queue_plan(refresh=True)
    batches = run_to_the_end(ids, workers)
    assert workers.swaps("w1") == 1 and workers.loads("w1") == [A, B]
    assert start_order(batches) == [0, 2, 4, 6, 1, 3, 5, 7]  # FIFO within each model
    assert max(waits(batches)) < 1800
    assert expected.policy == "affinity" and expected.expected_swaps == 1
    # The plan's order is the order they ran in.
    planned = sorted(ids, key=lambda i: (expected.batches[i].position, expected.batches[i].starts_at))
    assert planned == [ids[i] for i in start_order(batches)]
    print("waits (s):", [round(w, 2) for w in waits(batches)])


def test_a_short_bound_forces_affinity_to_switch_to_a_batch_that_waited_too_long(
    client, upload, two_models, settings, tmp_path
):
    bound = 1.5
    workers = Workers(
        settings, tmp_path, ["w1"], BATCHSITE_SCHEDULER="affinity", BATCHSITE_AFFINITY_MAX_WAIT_SECONDS=str(bound)
    )
    ids = submit(client, upload, SEED)
    batches = run_to_the_end(ids, workers)
    order = start_order(batches)
    # A's four batches take 0.3 s to load and 4 x 0.6 s to run: without the bound the
    # first B batch (index 1) would start after the last A batch (index 6).
    assert order.index(1) < order.index(6), order
    assert workers.swaps("w1") >= 2
    # It switched at the first chunk boundary past the bound (chunks of A take 0.2 s).
    assert waits(batches)[1] < bound + 0.2 + 1.0, waits(batches)
    print("start order:", order, "swaps:", workers.swaps("w1"), "waits:", [round(w, 2) for w in waits(batches)])


def test_two_workers_settle_on_one_model_each_under_affinity(client, upload, two_models, settings, tmp_path):
    workers = Workers(settings, tmp_path, ["w1", "w2"], BATCHSITE_SCHEDULER="affinity")
    ids = submit(client, upload, SEED)
    batches = run_to_the_end(ids, workers)
    swaps = workers.swaps("w1") + workers.swaps("w2")
    first_loads = sorted(workers.loads(name)[0] for name in ("w1", "w2"))
    print("loads:", {name: workers.loads(name) for name in ("w1", "w2")}, "swaps:", swaps)
    assert swaps <= 2
    assert first_loads == sorted([A, B])  # each took one model
    assert len(batches) == 8
