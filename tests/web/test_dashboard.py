"""The dashboard page (Django's test client): what each viewer sees, workers, the chart, the refresh."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Batch, Chunk, ChunkStatus, ModelMeasure, Worker, WorkerState
from tests.conftest import CHAT_MODEL, chat_line, jsonl
from tests.web.conftest import submit

pytestmark = pytest.mark.django_db


def queue_two(web, bob_web) -> tuple[Batch, Batch]:
    submit(web, jsonl([chat_line(i) for i in range(6)]), meta_key_0="codename", meta_value_0="bluebird")
    submit(bob_web, jsonl([chat_line(i) for i in range(2)]))
    alices = Batch.objects.get(owner__username="alice")
    bobs = Batch.objects.get(owner__username="bob")
    return alices, bobs


def test_other_users_batches_appear_only_as_position_model_size_and_eta(web, bob_web, models):
    alices, bobs = queue_two(web, bob_web)
    page = bob_web.get("/dashboard").content.decode()
    queue = page[page.index('id="queue"') : page.index('id="workers"')]
    rows = re.findall(r"<tr.*?</tr>", queue, re.S)[1:]
    assert len(rows) == 2
    assert "Another user's batch" in rows[0] and CHAT_MODEL in rows[0] and ">6<" in rows[0] and ">1<" in rows[0]
    assert bobs.id in rows[1] and ">2<" in rows[1]
    # Nothing that identifies alice's batch reaches bob's browser.
    for secret in (alices.id, alices.input_file_id, "bluebird", "codename", "alice"):
        assert secret not in page, secret


def test_a_running_batch_shows_progress_rate_and_eta_to_its_owner_only(web, bob_web, models):
    alices, _ = queue_two(web, bob_web)
    now = timezone.now()
    Batch.objects.filter(pk=alices.pk).update(started_at=now - timedelta(seconds=30), completed=3)
    # A live worker with a measured rate, so the queue plan gives the running batch an ETA.
    Worker.objects.create(id="w1", host="h", pid=1, device="cpu", heartbeat_at=now, loaded_model=CHAT_MODEL)
    ModelMeasure.objects.create(
        model=CHAT_MODEL, host="h", device="cpu", requests_per_second=1.0, load_seconds=5, chunks=1, loads=1
    )
    page = web.get("/dashboard").content.decode()
    running = page[page.index('id="running"') : page.index('id="queue"')]
    assert alices.id in running and "3 / 6" in running and "50.0%" in running and "/s" in running
    assert 'data-mode="relative"' in running  # the ETA
    theirs = bob_web.get("/dashboard").content.decode()
    running = theirs[theirs.index('id="running"') : theirs.index('id="queue"')]
    assert "Another user's batch" in running and "6 requests" in running
    assert alices.id not in theirs and "50.0%" not in running


def test_staff_see_every_batch_with_its_owner(web, bob_web, staff_web, models):
    alices, bobs = queue_two(web, bob_web)
    page = staff_web.get("/dashboard").content.decode()
    assert alices.id in page and bobs.id in page and "alice" in page and "bob" in page
    assert "Another user" not in page


def test_workers_show_gpu_memory_and_use_or_cpu_and_process_memory(web, models):
    now = timezone.now()
    Worker.objects.create(
        id="gpu-worker",
        host="node-a",
        pid=10,
        device="cuda:1",
        state=WorkerState.RUNNING,
        loaded_model=CHAT_MODEL,
        heartbeat_at=now,
        stats={
            "kind": "gpu",
            "gpu_name": "NVIDIA L4",
            "gpu_memory_used_bytes": 17 * 2**30,
            "gpu_memory_total_bytes": 24 * 2**30,
            "gpu_utilization_percent": 93,
            "rss_bytes": 3 * 2**30,
        },
    )
    Worker.objects.create(
        id="cpu-worker",
        host="laptop",
        pid=11,
        device="cpu",
        heartbeat_at=now,
        stats={"kind": "cpu", "rss_bytes": 900 * 2**20},
    )
    Worker.objects.create(id="new-worker", host="laptop", pid=12, heartbeat_at=now)  # no beat published yet
    page = web.get("/dashboard").content.decode()
    workers = page[page.index('id="workers"') : page.index('id="throughput"')]
    gpu = re.search(r'<tr data-worker="gpu-worker">.*?</tr>', workers, re.S).group(0)
    for text in ("node-a", "NVIDIA L4", "cuda:1", "running", CHAT_MODEL, "17.0 GiB / 24.0 GiB", "93%"):
        assert text in gpu, text
    cpu = re.search(r'<tr data-worker="cpu-worker">.*?</tr>', workers, re.S).group(0)
    assert ">CPU<" in cpu and "900 MiB" in cpu and "idle" in cpu
    assert '<tr data-worker="new-worker">' in workers


def test_the_chart_draws_a_line_per_model_from_the_chunks_records(web, models):
    submit(web, jsonl([chat_line(i) for i in range(4)]))
    batch = Batch.objects.get()
    now = timezone.now()
    Chunk.objects.filter(batch=batch).update(
        status=ChunkStatus.DONE,
        completed=4,
        claimed_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=1),
    )
    page = web.get("/dashboard").content.decode()
    chart = page[page.index('id="throughput"') : page.index('id="recent"')]
    assert chart.count("<polyline") == 1 and f"<title>{CHAT_MODEL}</title>" in chart
    assert "4 in 3 h" in chart
    assert "data-clock=" in chart  # hour labels, shown in the viewer's time zone by the page's script


def test_an_empty_site_says_so_instead_of_drawing_nothing(web, db):
    page = web.get("/dashboard").content.decode()
    for text in ("Nothing is running.", "The queue is empty.", "No worker is running.", "No requests finished"):
        assert text in page


@pytest.mark.parametrize("hours", ["abc", "-1", "0", "7", "99999999999999999999", "%ED%A0%80", "3.5"])
def test_a_bad_time_span_falls_back_to_three_hours(web, db, hours):
    response = web.get(f"/dashboard?hours={hours}")
    assert response.status_code == 200
    assert 'href="?hours=3" aria-current="true"' in response.content.decode()


def test_the_live_part_is_a_fragment_that_polls_itself(web, db):
    fragment = web.get("/dashboard/live?hours=6").content.decode()
    assert fragment.lstrip().startswith('<div id="dashboard-live"') and "<html" not in fragment
    assert 'hx-get="/dashboard/live?hours=6"' in fragment and 'hx-trigger="every 3s"' in fragment
    page = web.get("/dashboard").content.decode()
    assert 'hx-trigger="every 3s"' in page and "/static/web/vendor/htmx-2.0.11.min.js" in page


def test_the_scheduler_policy_and_expected_swaps_are_shown(web, models, settings):
    import dataclasses

    from jobs.engine import demo

    settings.BATCHSITE_SCHEDULER = dataclasses.replace(settings.BATCHSITE_SCHEDULER, policy="affinity")
    now = timezone.now()
    # A live worker holding the embeddings model, a chat batch waiting: it will have to load chat.
    Worker.objects.create(id="w1", host="h", pid=1, device="cpu", heartbeat_at=now, loaded_model=demo.MINILM_NAME)
    submit(web, jsonl([chat_line(i) for i in range(3)]))
    page = web.get("/dashboard").content.decode()
    scheduler = page[page.index('id="scheduler"') :]
    assert "<strong>affinity</strong>" in scheduler[:200] and 'id="expected-swaps">1<' in scheduler[:300]
    row = re.search(r'<tr data-worker="w1">.*?</tr>', page, re.S).group(0)
    assert CHAT_MODEL in row.split('data-label="Loads next"')[1]
