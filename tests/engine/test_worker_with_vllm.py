"""End to end on real vLLM (CPU): the openai SDK against the web server, a real
``run_gpu_worker`` subprocess, the demo models."""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from jobs.models import ApiKey, Batch, RegisteredModel
from tests.conftest import start_worker
from tests.engine.conftest import MINILM_NAME, SMOL_NAME, SMOL_OPTIONS

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "BATCHSITE_HEARTBEAT_SECONDS": "1",
    "BATCHSITE_STALE_AFTER_SECONDS": "30",
    "BATCHSITE_PROGRESS_SECONDS": "0.5",
    "BATCHSITE_POLL_SECONDS": "0.2",
}


@pytest.fixture
def sdk(
    live_server_process: Any, transactional_db: Any, django_user_model: Any, smollm2_dir: Path, minilm_path: Path
) -> openai.OpenAI:
    RegisteredModel.objects.create(
        name=SMOL_NAME, source=str(smollm2_dir), endpoints=["chat", "completions"], engine_options=SMOL_OPTIONS
    )
    RegisteredModel.objects.create(name=MINILM_NAME, source=str(minilm_path), endpoints=["embeddings"])
    user = django_user_model.objects.create_user(username="e2e")
    return openai.OpenAI(base_url=live_server_process.url + "/v1", api_key=ApiKey.generate(user)[1], max_retries=0)


def chat(i: int, max_tokens: int = 8) -> dict[str, Any]:
    topics = ["the sea", "a cat", "Paris", "numbers", "the moon", "bread"]
    return {
        "custom_id": f"chat-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": SMOL_NAME,
            "temperature": 0,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"Write {i % 5 + 1} words about {topics[i % 6]}."}],
        },
    }


def embed(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"emb-{i}",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": MINILM_NAME, "input": f"sentence number {i} about {'abc'[i % 3]}"},
    }


def submit(sdk: openai.OpenAI, tmp_path: Path, name: str, lines: list[dict[str, Any]], endpoint: str) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    batch = sdk.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    assert batch.status == "in_progress"
    return batch.id


def lines_of(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [json.loads(x) for x in sdk.files.content(file_id).text.splitlines()] if file_id else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_chat_and_embeddings_batches_complete_with_one_swap(sdk, live_server_process, settings, tmp_path):
    chat_id = submit(sdk, tmp_path, "chat.jsonl", [chat(i) for i in range(300)], "/v1/chat/completions")
    embed_id = submit(sdk, tmp_path, "embed.jsonl", [embed(i) for i in range(200)], "/v1/embeddings")
    log = tmp_path / "worker.log"
    started = time.monotonic()
    with log.open("w") as err:
        worker = start_worker(
            settings, "--exit-when-idle", data_dir=live_server_process.data_dir, stderr=err, **WORKER_ENV
        )
        assert worker.wait(timeout=900) == 0
    print(f"worker drained 300 chats + 200 embeddings in {time.monotonic() - started:.1f}s")
    text = log.read_text()
    print("\n".join(line for line in text.splitlines() if "batchsite.worker" in line and "claimed" not in line))

    chat_batch = sdk.batches.retrieve(chat_id)
    assert chat_batch.status == "completed", chat_batch
    assert chat_batch.request_counts.completed == 300 and chat_batch.request_counts.failed == 0
    out = lines_of(sdk, chat_batch.output_file_id)
    assert collections.Counter(x["custom_id"] for x in out) == {f"chat-{i}": 1 for i in range(300)}
    for line in out:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion" and body["model"] == SMOL_NAME
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert 0 < body["usage"]["completion_tokens"] <= 8
    assert chat_batch.usage.output_tokens == sum(x["response"]["body"]["usage"]["completion_tokens"] for x in out)

    embed_batch = sdk.batches.retrieve(embed_id)
    assert embed_batch.status == "completed", embed_batch
    out = lines_of(sdk, embed_batch.output_file_id)
    assert collections.Counter(x["custom_id"] for x in out) == {f"emb-{i}": 1 for i in range(200)}
    body = out[0]["response"]["body"]
    assert body["object"] == "list" and body["model"] == MINILM_NAME
    assert len(body["data"][0]["embedding"]) == 384 and body["usage"]["prompt_tokens"] > 0
    assert embed_batch.usage.input_tokens > 0

    loads = re.findall(r"model (\S+) ready in", text)
    assert loads == [SMOL_NAME, MINILM_NAME], loads  # one load, then exactly one swap


def test_cancel_and_expiry_keep_finished_lines_and_error_the_rest(sdk, live_server_process, settings, tmp_path):
    from django.utils import timezone

    cancel_id = submit(sdk, tmp_path, "a.jsonl", [chat(i, 24) for i in range(200)], "/v1/chat/completions")
    expire_id = submit(sdk, tmp_path, "b.jsonl", [chat(i, 24) for i in range(200)], "/v1/chat/completions")
    worker = start_worker(settings, "--exit-when-idle", data_dir=live_server_process.data_dir, **WORKER_ENV)
    try:
        wait_for(lambda: Batch.objects.get(pk=cancel_id).completed >= 10, 600, "progress on the first batch")
        assert sdk.batches.cancel(cancel_id).status == "cancelling"
        wait_for(lambda: Batch.objects.get(pk=cancel_id).status == "cancelled", 30, "cancelled")
        wait_for(lambda: Batch.objects.get(pk=expire_id).completed >= 10, 600, "progress on the second batch")
        Batch.objects.filter(pk=expire_id).update(expires_at=timezone.now())
        wait_for(lambda: Batch.objects.get(pk=expire_id).status == "expired", 30, "expired")
        assert worker.wait(timeout=120) == 0
    finally:
        worker.kill()
    for batch_id, status, code in (
        (cancel_id, "cancelled", "batch_cancelled"),
        (expire_id, "expired", "batch_expired"),
    ):
        batch = sdk.batches.retrieve(batch_id)
        assert batch.status == status
        counts = batch.request_counts
        assert 10 <= counts.completed < 200 and counts.completed + counts.failed == 200
        out, errors = lines_of(sdk, batch.output_file_id), lines_of(sdk, batch.error_file_id)
        assert len(out) == counts.completed and len(errors) == counts.failed
        ids = [x["custom_id"] for x in out + errors]
        assert sorted(ids) == sorted(f"chat-{i}" for i in range(200))
        assert {e["error"]["code"] for e in errors} == {code}
        assert all(x["response"]["body"]["object"] == "chat.completion" for x in out)
        print(f"{status}: {counts.completed} done, {counts.failed} {code}")
