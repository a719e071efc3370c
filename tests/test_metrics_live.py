"""/metrics scraped from the live web server while the live worker runs a batch on the real engine (vLLM on
the CPU): the queue and worker gauges move, the counters only grow; vLLM's own metrics are on the
worker's --metrics-port; the engine process runs with the CPU worker's environment."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.engine import demo
from jobs.models import Batch
from tests.conftest import LIVE_METRICS_TOKEN, chat_line, jsonl
from tests.live import LiveStack, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SMOL = demo.SMOLLM2_NAME
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(stack: LiveStack) -> Samples:
    status, text = fetch(stack.url + "/metrics", LIVE_METRICS_TOKEN)
    assert status == 200, text
    return parse(text)


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_while_the_real_engine_runs_a_batch(stack, client, upload, limits):
    status, body = fetch(stack.url + "/metrics")
    assert status == 401 and "batchsite_" not in body
    assert fetch(stack.url + "/metrics", "not-the-token-but-long-enough")[0] == 401

    limits(chunk_size=6)  # several chunks, so counters move while the batch runs
    lines = [
        chat_line(i, model=SMOL, body={"model": SMOL, "messages": [{"role": "user", "content": f"Count to {i}."}]})
        for i in range(36)
    ]
    for i, line in enumerate(lines):
        # Lengths that differ, so requests (and chunks) finish one after another, not all at one step.
        line["body"].update(max_tokens=4 + (i * 7) % 60, temperature=0, ignore_eos=True)
    file = upload(jsonl(lines))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = client.post("/v1/batches", body, format="json").json()["id"]

    seen: list[Samples] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen.append(scrape(stack))
        if Batch.objects.get(pk=batch_id).status in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.3)
    seen.append(scrape(stack))
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "completed", stack.log_tail()

    queued = [get(s, "batchsite_queued_requests", model=SMOL) for s in seen]
    completed = [get(s, "batchsite_requests_total", model=SMOL, outcome="completed") for s in seen]
    tokens = [get(s, "batchsite_tokens_total", model=SMOL, kind="output") for s in seen]
    running = [get(s, "batchsite_workers", state="running", model=SMOL) for s in seen]
    rates = [get(s, "batchsite_request_rate", model=SMOL) for s in seen]
    print(f"{len(seen)} scrapes; queued {sorted(set(queued), reverse=True)}; completed {sorted(set(completed))}")
    # Gauges: the queue drains step by step while the worker runs.
    assert queued[0] == 36 and queued[-1] == 0 and len(set(queued)) >= 4
    assert all(a >= b for a, b in zip(queued, queued[1:], strict=False))
    assert max(running) == 1 and running[-1] == 0 and max(rates) > 0
    # Counters: they grow during the batch (chunk by chunk) and never go down.
    assert completed[-1] == 36 and len({c for c in completed if 0 < c < 36}) >= 2
    assert all(a <= b for a, b in zip(completed, completed[1:], strict=False))
    assert all(a <= b for a, b in zip(tokens, tokens[1:], strict=False))
    assert tokens[-1] == batch.usage["output_tokens"] > 0
    assert get(seen[-1], "batchsite_queue_wait_seconds_count", model=SMOL) == 1
    assert get(seen[-1], "batchsite_batches", status="completed") >= 1
    info = [dict(labels) for (name, labels) in seen[-1] if name == "batchsite_worker_info"]
    assert {"worker": "live-worker", "device": "cpu", "model": SMOL}.items() <= info[0].items()

    # vLLM's own counters, on the worker's --metrics-port (no token: it binds to loopback).
    status, text = fetch(stack.engine_metrics_url)
    engine = parse(text)
    assert status == 200
    successes = sum(v for (name, labels), v in engine.items() if name == "vllm:request_success_total")
    assert successes >= 36 and any(dict(labels).get("model_name") == SMOL for (_, labels) in engine)

    # What the worker's children were started with: the CPU worker hides every GPU. (vLLM retitles
    # its engine core with setproctitle, which overwrites the memory /proc shows as its environment;
    # the processes that keep theirs, such as multiprocessing's resource tracker, started the same way.)
    children = []
    for child in psutil.Process(stack.worker.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children.append((child.name(), child.environ()))
    readable = [(name, env.get("CUDA_VISIBLE_DEVICES")) for name, env in children if env]
    assert readable and all(value == "" for _, value in readable), (readable, [name for name, _ in children])


def test_the_live_worker_is_visible_with_its_device_before_any_batch(stack):
    samples = wait_until(
        lambda: (s := scrape(stack)) and any(name == "batchsite_worker_info" for name, _ in s) and s,
        timeout=30,
        what="the live worker in /metrics",
    )
    info = [dict(labels) for (name, labels) in samples if name == "batchsite_worker_info"]
    assert [(i["worker"], i["device"]) for i in info] == [("live-worker", "cpu")]
