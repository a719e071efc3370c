"""The queue plan through the API: positions and ETAs from the create response on, cached.

Workers here are rows registered directly, without a process (the plan reads
rows, and these tests are about what it computes from them); the tests with
real worker processes are in tests/test_scheduler_workers.py.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Batch, Chunk, ChunkStatus, ModelMeasure, RegisteredModel, Worker
from jobs.services import scheduling
from jobs.services.scheduling import plan as plan_module
from tests.conftest import CHAT_MODEL, EMBED_MODEL, chat_line, housekeeper_pass, jsonl

pytestmark = pytest.mark.django_db


def embed_line(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"e-{i}",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBED_MODEL, "input": "x"},
    }


def create(client: Any, upload: Any, model: str = CHAT_MODEL, n: int = 10) -> dict[str, Any]:
    lines = [chat_line(i) if model == CHAT_MODEL else embed_line(i) for i in range(n)]
    file = upload(jsonl(lines))
    endpoint = "/v1/chat/completions" if model == CHAT_MODEL else "/v1/embeddings"
    response = client.post(
        "/v1/batches", {"input_file_id": file["id"], "endpoint": endpoint, "completion_window": "24h"}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def live_worker(name: str = "w1", scheduler: str = "fifo", loaded: str = "", device: str = "cuda:0") -> Worker:
    return Worker.objects.create(
        id=name,
        host="gpu-host",
        pid=1,
        device=device,
        heartbeat_at=timezone.now(),
        scheduler=scheduler,
        loaded_model=loaded,
    )


def measured(model: str, rps: float, load: float, device: str = "cuda:0") -> None:
    ModelMeasure.objects.create(
        model=model, host="gpu-host", device=device, requests_per_second=rps, load_seconds=load, chunks=1, loads=1
    )


def eta_in(batch: dict[str, Any]) -> float:
    return batch["estimated_completion_time"] - timezone.now().timestamp()


def test_without_a_live_worker_positions_follow_the_queue_and_no_time_is_promised(client, models, upload):
    ids = [create(client, upload)["id"] for _ in range(3)]
    bodies = [client.get(f"/v1/batches/{i}").json() for i in ids]
    assert [b["queue_position"] for b in bodies] == [1, 2, 3]
    assert {b["estimated_completion_time"] for b in bodies} == {None}


def test_the_json_create_response_carries_a_position_and_an_eta_from_measurements(client, models, upload):
    live_worker()
    measured(CHAT_MODEL, rps=10, load=30)
    first = create(client, upload, n=100)
    assert first["queue_position"] == 1
    assert eta_in(first) == pytest.approx(30 + 10, abs=2)  # load, then 100 requests at 10/s
    second = create(client, upload, n=50)
    assert second["queue_position"] == 2
    assert eta_in(second) == pytest.approx(30 + 10 + 5, abs=2)


def test_the_multipart_create_response_carries_them_too(client, models):
    live_worker(loaded=CHAT_MODEL)
    measured(CHAT_MODEL, rps=4, load=30)
    upload = io.BytesIO(jsonl([chat_line(i) for i in range(20)]))
    upload.name = "in.jsonl"
    body = client.post("/v1/batches", {"file": upload, "model": CHAT_MODEL}, format="multipart").json()
    assert body["status"] == "in_progress" and body["queue_position"] == 1
    assert eta_in(body) == pytest.approx(5, abs=2)  # loaded already: 20 requests at 4/s


def test_priors_give_an_eta_before_any_measurement(client, models, upload):
    live_worker()
    RegisteredModel.objects.filter(name=CHAT_MODEL).update(expected_requests_per_second=5, expected_load_seconds=60)
    assert eta_in(create(client, upload, n=50)) == pytest.approx(60 + 10, abs=2)


def test_with_nothing_to_go_on_the_eta_is_null_rather_than_made_up(client, models, upload):
    live_worker()
    body = create(client, upload)
    assert body["queue_position"] == 1 and body["estimated_completion_time"] is None


def test_a_started_batch_is_position_0_and_its_eta_counts_what_is_left_of_its_running_chunk(client, models, upload):
    live_worker(loaded=CHAT_MODEL)
    measured(CHAT_MODEL, rps=10, load=30)
    running = create(client, upload, n=100)
    queued = create(client, upload, n=100)
    Chunk.objects.filter(batch_id=running["id"]).update(
        status=ChunkStatus.RUNNING,
        worker_id="w1",
        completed=60,
        failed=0,
        claimed_at=timezone.now() - timedelta(seconds=6),
    )
    Batch.objects.filter(pk=running["id"]).update(started_at=timezone.now())
    plan = scheduling.queue_plan(refresh=True)
    assert plan.batches[running["id"]].position == 0 and plan.batches[queued["id"]].position == 1
    body = client.get(f"/v1/batches/{running['id']}").json()
    assert body["queue_position"] == 0 and eta_in(body) == pytest.approx(4, abs=2)
    assert eta_in(client.get(f"/v1/batches/{queued['id']}").json()) == pytest.approx(14, abs=2)


def test_under_affinity_positions_group_the_loaded_models_batches_first(client, models, upload):
    live_worker(scheduler="affinity", loaded=EMBED_MODEL)
    measured(CHAT_MODEL, rps=10, load=30)
    measured(EMBED_MODEL, rps=100, load=20)
    chat1, embed1, chat2, embed2 = (
        create(client, upload, m) for m in (CHAT_MODEL, EMBED_MODEL, CHAT_MODEL, EMBED_MODEL)
    )
    plan = scheduling.queue_plan(refresh=True)
    assert [plan.batches[b["id"]].position for b in (chat1, embed1, chat2, embed2)] == [3, 1, 4, 2]
    assert plan.policy == "affinity" and plan.expected_swaps == 1
    assert plan.workers[0].loads == (CHAT_MODEL,)


def test_the_policy_in_force_is_the_workers_and_a_mix_is_named(client, models):
    assert scheduling.queue_plan(refresh=True).policy == "fifo"  # nobody alive: this process's setting
    live_worker("w1", scheduler="affinity")
    assert scheduling.queue_plan(refresh=True).policy == "affinity"
    live_worker("w2", scheduler="fifo")
    assert scheduling.queue_plan(refresh=True).policy == "mixed: affinity, fifo"


def test_silent_and_stopped_workers_are_not_planned_for(client, models, upload):
    live_worker("gone")
    Worker.objects.filter(pk="gone").update(heartbeat_at=timezone.now() - timedelta(hours=1))
    live_worker("stopped")
    Worker.objects.filter(pk="stopped").update(stopped_at=timezone.now(), state="stopped")
    measured(CHAT_MODEL, rps=10, load=30)
    assert create(client, upload)["estimated_completion_time"] is None
    assert scheduling.queue_plan().workers == ()


def test_a_chunk_on_a_silent_worker_is_planned_as_coming_back(client, models, upload):
    live_worker("alive", loaded=CHAT_MODEL)
    live_worker("dead")
    Worker.objects.filter(pk="dead").update(heartbeat_at=timezone.now() - timedelta(hours=1))
    measured(CHAT_MODEL, rps=10, load=30)
    batch = create(client, upload, n=100)
    Chunk.objects.filter(batch_id=batch["id"]).update(status=ChunkStatus.RUNNING, worker_id="dead", completed=90)
    Batch.objects.filter(pk=batch["id"]).update(started_at=timezone.now())
    entry = scheduling.queue_plan(refresh=True).batches[batch["id"]]
    # All 100 lines run again on the live worker (the dead one's progress is dropped).
    assert (entry.finishes_at - timezone.now()).total_seconds() == pytest.approx(10, abs=2)


def test_the_plan_is_computed_once_per_interval_not_per_request(client, models, upload, scheduler, monkeypatch):
    scheduler(plan_seconds=60)
    live_worker()
    measured(CHAT_MODEL, rps=10, load=30)
    ids = [create(client, upload)["id"] for _ in range(3)]
    calls = []
    real = plan_module.compute_plan
    monkeypatch.setattr(plan_module, "compute_plan", lambda *a: calls.append(1) or real(*a))
    for _ in range(5):
        for batch_id in ids:
            assert client.get(f"/v1/batches/{batch_id}").json()["queue_position"] is not None
        assert len(client.get("/v1/batches").json()["data"]) == 3
    assert calls == []  # the last create's fresh plan served all 20 requests
    create(client, upload)
    assert len(calls) == 1  # a new batch is newer than the cached plan


def test_with_a_zero_interval_every_read_computes_it(client, models, upload, scheduler, monkeypatch):
    scheduler(plan_seconds=0)
    batch = create(client, upload)
    calls = []
    real = plan_module.compute_plan
    monkeypatch.setattr(plan_module, "compute_plan", lambda *a: calls.append(1) or real(*a))
    client.get(f"/v1/batches/{batch['id']}")
    client.get(f"/v1/batches/{batch['id']}")
    assert len(calls) == 2


def test_finished_expired_and_cancelled_batches_have_no_position_or_eta(client, models, upload):
    live_worker()
    measured(CHAT_MODEL, rps=10, load=30)
    expired, cancelled, done = (create(client, upload)["id"] for _ in range(3))
    Batch.objects.filter(pk=expired).update(expires_at=timezone.now() - timedelta(seconds=1))
    client.post(f"/v1/batches/{cancelled}/cancel")
    housekeeper_pass()  # ends the cancelled one (and the expired one)
    Batch.objects.filter(pk=done).update(status="completed")
    scheduling.queue_plan(refresh=True)
    for batch_id in (expired, cancelled, done):
        body = client.get(f"/v1/batches/{batch_id}").json()
        assert body["queue_position"] is None and body["estimated_completion_time"] is None


def test_positions_count_other_users_batches_but_never_show_them(client, other_client, models, upload):
    theirs = create(other_client, lambda c: upload(c, api=other_client))
    mine = create(client, upload)
    assert mine["queue_position"] == 2
    assert client.get(f"/v1/batches/{theirs['id']}").status_code == 404
    assert [b["id"] for b in client.get("/v1/batches").json()["data"]] == [mine["id"]]


@pytest.mark.parametrize(
    "scheduler_field, loaded",
    [("bogus", ""), ("\udc80", ""), ("x" * 32, CHAT_MODEL), ("affinity", "no/such-model")],
)
def test_a_worker_row_with_strange_fields_does_not_break_the_plan(client, models, upload, scheduler_field, loaded):
    worker = live_worker(loaded=loaded)
    Worker.objects.filter(pk=worker.pk).update(scheduler=scheduler_field.encode("utf-8", "replace").decode())
    measured(CHAT_MODEL, rps=10, load=30)
    body = create(client, upload)
    assert body["queue_position"] == 1 and body["estimated_completion_time"] is not None
    assert scheduling.queue_plan().policy in ("fifo", "affinity")


def test_the_dashboard_reads_the_plan_from_the_services(client, models, upload):
    live_worker(scheduler="affinity")
    measured(CHAT_MODEL, rps=10, load=30)
    batch = create(client, upload)
    plan = scheduling.queue_plan()
    entry = plan.batches[batch["id"]]
    assert entry.model == CHAT_MODEL and entry.position == 1 and entry.starts_at is not None
    assert entry.finishes_at is not None and plan.workers[0].id == "w1" and plan.workers[0].scheduler == "affinity"
    assert scheduling.queue_positions() == {batch["id"]: 1}
    assert scheduling.estimated_completion(Batch.objects.get(pk=batch["id"])) == entry.finishes_at


def test_a_worker_loading_a_model_finishes_the_load_before_its_chunk(client, models, upload):
    worker = live_worker()
    Worker.objects.filter(pk=worker.pk).update(state="loading")
    measured(CHAT_MODEL, rps=10, load=30)
    batch = create(client, upload, n=50)
    Chunk.objects.filter(batch_id=batch["id"]).update(
        status=ChunkStatus.RUNNING, worker_id="w1", claimed_at=timezone.now() - timedelta(seconds=10)
    )
    Batch.objects.filter(pk=batch["id"]).update(started_at=timezone.now() - timedelta(seconds=10))
    entry = scheduling.queue_plan(refresh=True).batches[batch["id"]]
    assert entry.position == 0
    # 20 s of the 30 s load left, then 50 requests at 10/s.
    assert (entry.finishes_at - timezone.now()).total_seconds() == pytest.approx(25, abs=2)


@pytest.mark.parametrize("fair_share", [True, False])
def test_an_estimate_is_planned_as_the_asking_users_batch_under_fair_share(
    client, other_client, models, upload, limits, scheduler, fair_share, django_user_model
):
    # Alice has three batches of 4 chunks waiting; bob asks what a batch of his would get.
    # Under fair share, alice's first chunk goes first (neither has had worker time; a tie
    # goes to the oldest wait) and bob's would-be batch takes the next claim: position 2.
    # With fair share off it is last in line, behind all of alice's: position 4.
    scheduler(policy="fifo", fair_share=fair_share)
    limits(chunk_size=10)
    live_worker(loaded=CHAT_MODEL)
    measured(CHAT_MODEL, rps=10.0, load=5.0)
    for _ in range(3):
        create(client, upload, n=40)
    bob = django_user_model.objects.get(username="bob")
    what = plan_module.what_if(CHAT_MODEL, 10, 1, owner=bob.pk)
    assert what.position == (2 if fair_share else 4)
    assert what.finishes_at is not None
    # Asked as alice, the same batch is hers: behind her own three either way.
    alice = Batch.objects.first().owner
    assert plan_module.what_if(CHAT_MODEL, 10, 1, owner=alice.pk).position == 4
