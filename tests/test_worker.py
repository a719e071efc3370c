"""The worker's queue logic, in-process, on the SIMULATED engine (the tests are about the queue, not inference)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, Chunk, ChunkStatus, File, RegisteredModel, Worker
from jobs.services import files as file_service
from jobs.worker import GpuWorker
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)


def make_batch(client: Any, upload: Any, lines: list[Any]) -> str:
    file = upload(jsonl(lines))
    response = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 200 and response.json()["status"] == "in_progress", response.content
    return response.json()["id"]


def read_file(file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    with file_service.open_content(File.objects.get(pk=file_id)) as fh:
        return [json.loads(line) for line in fh]


def drain(engine: SimulatedEngine | None = None) -> GpuWorker:
    worker = GpuWorker(engine or SimulatedEngine(), exit_when_idle=True)
    assert worker.run() == 0
    return worker


def test_a_batch_runs_to_completed_with_every_line_once_in_input_order(client, models, upload, limits):
    limits(chunk_size=7)
    batch_id = make_batch(client, upload, [chat_line(i) for i in range(30)])
    drain()
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    assert batch["usage"]["total_tokens"] == 150 and batch["completed_at"] is not None
    lines = read_file(batch["output_file_id"])
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(30)]
    first = lines[0]
    assert set(first) == {"id", "custom_id", "response", "error"} and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["id"].startswith("batch_req_")
    assert batch["error_file_id"] is None
    assert set(Chunk.objects.values_list("status", flat=True)) == {ChunkStatus.DONE}
    assert Worker.objects.get().state == "stopped"


def test_failed_lines_go_to_the_error_file_in_openai_error_shape(client, models, upload):
    from openai.types.shared import ErrorObject

    lines = [chat_line(i) for i in range(5)]
    lines[2]["body"]["sim_fail"] = 400
    lines[3]["body"]["sim_fail"] = 503
    batch_id = make_batch(client, upload, lines)
    drain()
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    errors = {e["custom_id"]: e for e in read_file(batch["error_file_id"])}
    assert sorted(errors) == ["req-2", "req-3"]
    for cid, status, kind in (("req-2", 400, "invalid_request_error"), ("req-3", 503, "server_error")):
        line = errors[cid]
        assert line["response"]["status_code"] == status and line["error"] is None
        error = ErrorObject.model_validate(line["response"]["body"]["error"], strict=True)
        assert error.type == kind and error.code is None and error.message == "simulated failure"


def test_a_line_that_kills_the_engine_fails_alone(client, models, upload, limits):
    limits(chunk_size=4)
    lines = [chat_line(i) for i in range(10)]
    lines[5]["body"]["sim_crash"] = True
    batch_id = make_batch(client, upload, lines)
    drain()
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 10, "completed": 9, "failed": 1}
    errors = read_file(batch["error_file_id"])
    assert [e["custom_id"] for e in errors] == ["req-5"]
    assert errors[0]["response"] is None and errors[0]["error"]["code"] == "engine_crashed"
    assert "crashed" in errors[0]["error"]["message"]


def test_a_model_that_fails_to_load_fails_its_batch_and_the_worker_goes_on(client, models, upload, settings):
    # Retried (BATCHSITE_MODEL_LOAD_ATTEMPTS) with a backoff, short here; tests/worker/test_model_loads.py has more.
    settings.BATCHSITE_WORKER = dataclasses.replace(settings.BATCHSITE_WORKER, model_load_backoff_seconds=0.01)
    RegisteredModel.objects.create(name="broken", source="missing:/nowhere", endpoints=["chat"])
    bad = make_batch(client, upload, [chat_line(i, model="broken") for i in range(3)])
    good = make_batch(client, upload, [chat_line(i) for i in range(3)])
    drain()
    failed = client.get(f"/v1/batches/{bad}").json()
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "model_load_failed"
    assert "missing:/nowhere" in failed["errors"]["data"][0]["message"]
    assert client.get(f"/v1/batches/{good}").json()["status"] == "completed"


def test_batches_of_one_model_share_a_load_and_a_swap_happens_once_per_model_change(client, models, upload):
    RegisteredModel.objects.create(name="other", source="/x", endpoints=["chat"])
    ids = [
        make_batch(client, upload, [chat_line(i, model=m) for i in range(3)]) for m in (CHAT_MODEL, CHAT_MODEL, "other")
    ]
    engine = SimulatedEngine()
    drain(engine)
    assert engine.loads == 2
    assert {client.get(f"/v1/batches/{i}").json()["status"] for i in ids} == {"completed"}


def test_an_expired_batch_writes_batch_expired_errors_for_lines_that_never_ran(client, models, upload, limits):
    from django.utils import timezone

    limits(chunk_size=2)
    batch_id = make_batch(client, upload, [chat_line(i) for i in range(5)])
    Batch.objects.filter(pk=batch_id).update(expires_at=timezone.now())
    drain()
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "expired" and batch["expired_at"] is not None
    assert batch["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    errors = read_file(batch["error_file_id"])
    assert [e["custom_id"] for e in errors] == [f"req-{i}" for i in range(5)]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert all(e["response"] is None for e in errors)


def test_the_queue_stays_fifo_across_models_even_when_that_costs_a_swap(client, models, upload):
    RegisteredModel.objects.create(name="other", source="/x", endpoints=["chat"])
    ids = [
        make_batch(client, upload, [chat_line(i, model=m) for i in range(3)]) for m in (CHAT_MODEL, "other", CHAT_MODEL)
    ]
    engine = SimulatedEngine()
    drain(engine)
    assert engine.loads == 3
    finished = [Batch.objects.get(pk=i).completed_at for i in ids]
    assert finished == sorted(finished)


def test_lines_are_fed_grouped_by_prompt_prefix_within_the_engine_window_and_each_keeps_its_answer(
    client, models, upload
):
    systems = ["You are terse. " * 30, "You are verbose. " * 30]
    lines = [
        chat_line(i, body={"model": CHAT_MODEL, "messages": [{"role": "system", "content": systems[i % 2]}]})
        for i in range(12)
    ]
    batch_id = make_batch(client, upload, lines)
    engine = SimulatedEngine()
    engine.window = 8  # the feeder reads this far ahead and groups what it read
    drain(engine)
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 12, batch
    out = read_file(batch["output_file_id"])
    # The simulated engine answers in the order it was fed: the first 8 lines (one window)
    # grouped by system prompt, input order within a group, then the last 4 likewise.
    assert [line["custom_id"] for line in out] == [f"req-{i}" for i in (0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 9, 11)]
    assert all(line["response"]["body"]["echo"] == line["custom_id"] for line in out)  # each line its own answer
