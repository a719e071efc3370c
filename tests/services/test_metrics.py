"""What /metrics reports (jobs/services/metrics.py), from the rows real runs leave behind.

Batches run on the in-process worker with the SIMULATED engine: these tests
are about what is counted, not about inference (tests/test_metrics_live.py
scrapes a real engine's batch through the web server).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.db.models import F
from django.utils import timezone

from jobs.engine.simulated import SimulatedEngine
from jobs.models import (
    Batch,
    Chunk,
    DeliveryStatus,
    ModelLoad,
    RegisteredModel,
    WebhookAttempt,
    WebhookDelivery,
    Worker,
)
from jobs.services import metrics, parts, queue, results
from jobs.worker import GpuWorker
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)

OTHER = "other-chat-model"


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in metrics.collect()
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def make_batch(client: Any, upload: Any, lines: list[Any]) -> str:
    file = upload(jsonl(lines))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = client.post("/v1/batches", body, format="json")
    assert response.json()["status"] == "in_progress", response.content
    return str(response.json()["id"])


def drain() -> None:
    assert GpuWorker(SimulatedEngine(), worker_id="w-drain", device="cuda:0", exit_when_idle=True).run() == 0


def test_a_run_moves_the_queue_gauges_and_the_counters(client, upload, models, limits):
    limits(chunk_size=4)
    lines = [chat_line(i) for i in range(10)]
    lines[3]["body"]["sim_fail"] = 400
    make_batch(client, upload, lines)
    make_batch(client, upload, [chat_line(i) for i in range(6)])
    before = scrape()
    assert value(before, "batchsite_batches", status="in_progress") == 2
    assert value(before, "batchsite_batches", status="completed") == 0
    assert value(before, "batchsite_queued_requests", model=CHAT_MODEL) == 16
    assert (value(before, "batchsite_oldest_waiting_batch_seconds") or 0) >= 0
    assert value(before, "batchsite_requests_total", model=CHAT_MODEL, outcome="completed") is None

    drain()

    after = scrape()
    assert value(after, "batchsite_batches", status="in_progress") == 0
    assert value(after, "batchsite_batches", status="completed") == 2
    assert value(after, "batchsite_queued_requests", model=CHAT_MODEL) is None
    assert value(after, "batchsite_oldest_waiting_batch_seconds") == 0
    assert value(after, "batchsite_requests_total", model=CHAT_MODEL, outcome="completed") == 15
    assert value(after, "batchsite_requests_total", model=CHAT_MODEL, outcome="failed") == 1
    assert value(after, "batchsite_requests_total", model=CHAT_MODEL, outcome="not_run") == 0
    output_tokens = sum(b.usage["output_tokens"] for b in Batch.objects.all())
    assert output_tokens > 0
    assert value(after, "batchsite_tokens_total", model=CHAT_MODEL, kind="output") == output_tokens
    assert value(after, "batchsite_model_loads_total", model=CHAT_MODEL) == 1
    assert value(after, "batchsite_model_swaps_total", model=CHAT_MODEL) == 0
    assert value(after, "batchsite_model_load_seconds_count", model=CHAT_MODEL) == 1
    assert value(after, "batchsite_queue_wait_seconds_count", model=CHAT_MODEL) == 2
    assert value(after, "batchsite_queue_wait_seconds_bucket", model=CHAT_MODEL, le="+Inf") == 2
    load = ModelLoad.objects.get()
    assert (load.worker_id, load.device, load.model, load.replaced) == ("w-drain", "cuda:0", CHAT_MODEL, "")
    # The worker stopped: it is no longer counted.
    assert value(after, "batchsite_workers", state="idle", model="") == 0


COUNTERS = [
    ("batchsite_requests_total", {"outcome": "completed"}),
    ("batchsite_requests_total", {"outcome": "failed"}),
    ("batchsite_tokens_total", {"kind": "input"}),
    ("batchsite_tokens_total", {"kind": "output"}),
]


def counter_values() -> list[float]:
    samples = scrape()
    return [value(samples, name, model=CHAT_MODEL, **labels) or 0 for name, labels in COUNTERS]


def test_a_chunk_finalize_sends_back_neither_lowers_the_counters_nor_counts_its_lines_twice(
    client, upload, models, limits, monkeypatch
):
    """Issue 20 item 4. The fault (chunk 0's part lost after its chunk ended) is injected here,
    just before finalize checks the parts; the counters are read just before and just after
    that check sends chunk 0 back, then once the rerun has ended the batch."""
    limits(chunk_size=5)
    lines = [chat_line(i) for i in range(10)]
    lines[7]["body"]["sim_fail"] = 400
    batch_id = make_batch(client, upload, lines)
    send_back = results._send_back
    seen: list[list[float]] = []

    def lose_part_then_send_back(batch: Batch, worker_id: str | None, chunks: list[Any]) -> bool:
        if not seen:  # the first finalize: both chunks ended and counted
            seen.append(counter_values())
            for part in parts.recorded(batch.chunks.get(index=0)):
                for name in parts.names_of(batch_id, 0, part):
                    default_storage.delete(name)
        requeued = send_back(batch, worker_id, chunks)
        if len(seen) == 1:
            assert requeued and Chunk.objects.get(batch_id=batch_id, index=0).status == "pending"
            seen.append(counter_values())
        return requeued

    monkeypatch.setattr(results, "_send_back", lose_part_then_send_back)
    drain()
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "completed" and (batch.completed, batch.failed) == (9, 1)
    assert Chunk.objects.get(batch_id=batch_id, index=0).attempts == 2  # it did run again
    first, sent_back, final = seen[0], seen[1], counter_values()
    assert first[:2] == [9, 1] and first[3] > 0
    # Counters only rise: the send-back lowers none of them.
    assert all(b >= a for a, b in zip(first, sent_back, strict=True)), (first, sent_back)
    # Each line counted once: the rerun of chunk 0's five lines adds nothing.
    assert final == first, (first, final)


def test_lines_of_a_cancelled_batch_that_never_ran_count_as_not_run(client, upload, models, limits):
    limits(chunk_size=4)
    batch_id = make_batch(client, upload, [chat_line(i) for i in range(8)])
    assert client.post(f"/v1/batches/{batch_id}/cancel").status_code == 200
    drain()
    samples = scrape()
    assert Batch.objects.get(pk=batch_id).status == "cancelled"
    assert value(samples, "batchsite_requests_total", model=CHAT_MODEL, outcome="not_run") == 8
    assert value(samples, "batchsite_batches", status="cancelled") == 1


def test_hot_swaps_are_counted_with_their_load_times(client, upload, models, monkeypatch):
    RegisteredModel.objects.create(name=OTHER, source="/models/other", endpoints=["chat"])
    for model in (CHAT_MODEL, OTHER, CHAT_MODEL):
        make_batch(client, upload, [chat_line(i, model=model) for i in range(2)])
    monkeypatch.setenv("SIM_LOAD_SECONDS", "0.05")
    drain()
    samples = scrape()
    assert value(samples, "batchsite_model_loads_total", model=CHAT_MODEL) == 2
    assert value(samples, "batchsite_model_swaps_total", model=CHAT_MODEL) == 1
    assert value(samples, "batchsite_model_swaps_total", model=OTHER) == 1
    assert value(samples, "batchsite_model_load_seconds_bucket", model=CHAT_MODEL, le="1.0") == 2
    assert (value(samples, "batchsite_model_load_seconds_sum", model=CHAT_MODEL) or 0) >= 0.1
    assert list(ModelLoad.objects.order_by("loaded_at").values_list("model", "replaced")) == [
        (CHAT_MODEL, ""),
        (OTHER, CHAT_MODEL),
        (CHAT_MODEL, OTHER),
    ]


def test_the_queue_wait_histogram_puts_each_batch_in_its_buckets(client, upload, models):
    ids = [make_batch(client, upload, [chat_line(0)]) for _ in range(3)]
    for batch_id, wait in zip(ids, (3, 100, 5000), strict=True):
        Batch.objects.filter(pk=batch_id).update(started_at=F("in_progress_at") + timedelta(seconds=wait))
    samples = scrape()

    def bucket(le: str) -> float | None:
        return value(samples, "batchsite_queue_wait_seconds_bucket", model=CHAT_MODEL, le=le)

    assert [bucket("1.0"), bucket("5.0"), bucket("60.0"), bucket("120.0"), bucket("3600.0"), bucket("7200.0")] == [
        0,
        1,
        1,
        2,
        2,
        3,
    ]
    assert value(samples, "batchsite_queue_wait_seconds_sum", model=CHAT_MODEL) == pytest.approx(5103, abs=0.01)


def test_only_live_workers_are_counted_by_state_and_model(db, settings):
    queue.register_worker("w-run", "cuda:0", 11, state="running", loaded_model=CHAT_MODEL)
    queue.register_worker("w-idle", "cuda:1", 12)
    queue.register_worker("w-silent", "cuda:2", 13, state="running", loaded_model=CHAT_MODEL)
    queue.register_worker("w-gone", "cpu", 14)
    stale = timezone.now() - timedelta(seconds=settings.BATCHSITE_WORKER.stale_after_seconds + 5)
    Worker.objects.filter(pk="w-silent").update(heartbeat_at=stale)
    queue.stop_worker("w-gone")
    samples = scrape()
    assert value(samples, "batchsite_workers", state="running", model=CHAT_MODEL) == 1
    assert value(samples, "batchsite_workers", state="idle", model="") == 1
    assert value(samples, "batchsite_workers", state="loading", model="") == 0
    info = {dict(labels)["worker"]: dict(labels) for (name, labels) in samples if name == "batchsite_worker_info"}
    assert sorted(info) == ["w-idle", "w-run"]
    assert info["w-run"]["device"] == "cuda:0" and info["w-run"]["model"] == CHAT_MODEL


def test_webhook_deliveries_by_status_and_attempts_by_result(client, upload, models):
    batch_id = make_batch(client, upload, [chat_line(0)])
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        id="wh_1",
        batch_id=batch_id,
        event_id="evt_1",
        event_type="batch.completed",
        url="https://example.com/hook",
        body="{}",
        status=DeliveryStatus.FAILING,
        created_at=now,
        next_attempt_at=now,
        give_up_at=now + timedelta(hours=72),
    )
    for number, status_code in enumerate((None, 500, 503, 200), start=1):
        WebhookAttempt.objects.create(
            delivery=delivery, number=number, started_at=now, duration_ms=5, sender="w", status_code=status_code
        )
    samples = scrape()
    assert value(samples, "batchsite_webhook_deliveries", status="failing") == 1
    assert value(samples, "batchsite_webhook_deliveries", status="delivered") == 0
    assert value(samples, "batchsite_webhook_attempts_total", result="network_error") == 1
    assert value(samples, "batchsite_webhook_attempts_total", result="http_error") == 2
    assert value(samples, "batchsite_webhook_attempts_total", result="success") == 1
