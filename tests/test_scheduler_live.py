"""The scheduler and its ETAs on the real engine (vLLM on the CPU, the demo models), through the
openai SDK against the session's live stack, with its worker switched to affinity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from jobs.engine import demo
from jobs.models import ApiKey, Batch, Chunk, ModelMeasure, RegisteredModel, Worker
from jobs.services import scheduling
from jobs.services.objects import batch_object
from tests.live import LiveStack, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CHAT, EMBED = demo.SMOLLM2_NAME, demo.MINILM_NAME
ENDED = ("completed", "failed", "expired", "cancelled")


def chat_file(tmp_path: Path, tag: str, n: int) -> Path:
    path = tmp_path / f"{tag}.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"{tag}-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": CHAT,
                        "messages": [{"role": "user", "content": f"Batch {tag}, item {i}: name a colour and a fruit."}],
                        "max_tokens": 16,
                        "temperature": 0,
                    },
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def embed_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "embed.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"e-{i}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": EMBED, "input": f"sentence number {i}"},
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def create(sdk: Any, path: Path, endpoint: str) -> Any:
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    return sdk.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")


def ended(sdk: Any, batch_id: str, timeout: float = 600) -> Any:
    return wait_until(
        lambda: (b := sdk.batches.retrieve(batch_id)).status in ENDED and b, timeout, f"{batch_id} to end", every=0.5
    )


def test_affinity_loads_each_model_once_and_the_eta_holds_from_creation(stack: LiveStack, django_user_model, tmp_path):
    sdk = stack.sdk(ApiKey.generate(django_user_model.objects.create_user("sched"))[1])
    # A warm-up of the same shape as the work measured below: the chat model is
    # loaded (once, if it was not) and has run batches of this size. Its
    # measurement is dropped: on this CPU the engine's first pass at each batch
    # size is much slower than later ones (oneDNN prepares kernels per shape),
    # which would dominate batches this small (production chunks are 5,000 lines).
    assert ended(sdk, create(sdk, chat_file(tmp_path, "warm", 144), "/v1/chat/completions").id).status == "completed"
    ModelMeasure.objects.all().delete()
    # What an operator would write down before these models ran here (priors):
    # all the plan has until the first measurement.
    RegisteredModel.objects.filter(name=CHAT).update(expected_requests_per_second=2, expected_load_seconds=50)
    RegisteredModel.objects.filter(name=EMBED).update(expected_requests_per_second=20, expected_load_seconds=45)
    loads_before = len(stack.loads())
    with stack.use_scheduler("affinity"):
        # The user's four batches are queued behind other work, as on a busy
        # server: a chat batch already running, all its lines in the engine.
        busy = create(sdk, chat_file(tmp_path, "busy", 144), "/v1/chat/completions")
        wait_until(
            lambda: (
                Chunk.objects.filter(batch_id=busy.id, status="running").exists()
                and Worker.objects.filter(pk="live-worker", state="running").exists()
            ),
            300,
            "the first batch to run",
        )
        created = [
            create(sdk, chat_file(tmp_path, "c1", 48), "/v1/chat/completions"),
            create(sdk, chat_file(tmp_path, "c2", 48), "/v1/chat/completions"),
            create(sdk, embed_file(tmp_path, 32), "/v1/embeddings"),
            create(sdk, chat_file(tmp_path, "c3", 48), "/v1/chat/completions"),
        ]
        # Every create response says where the batch stands and when it should finish.
        for batch in created:
            assert batch.model_extra["queue_position"] in (1, 2, 3, 4), batch
            assert batch.model_extra["estimated_completion_time"] is not None, batch
        c1, c2, embedding, c3 = (b.id for b in created)
        positions = [sdk.batches.retrieve(i).model_extra["queue_position"] for i in (c1, c2, embedding, c3)]
        assert positions == [1, 2, 4, 3], positions  # the last chat batch goes before the embeddings

        # The running batch's end measures the chat model's throughput: the ETA
        # from then on (the API's field, from a plan made now rather than one the
        # server may have cached for up to 5 s) must hold for the last batch.
        wait_until(lambda: Batch.objects.get(pk=busy.id).is_terminal, 300, "the running batch to end", every=0.05)
        wait_until(lambda: ModelMeasure.objects.filter(model=CHAT).exists(), 30, "its measurement", every=0.05)
        asked_at = timezone.now()
        plan = scheduling.queue_plan(refresh=True)
        shown = batch_object(Batch.objects.get(pk=c3), plan)["estimated_completion_time"]
        done = {batch_id: ended(sdk, batch_id) for batch_id in (c1, c2, embedding, c3)}
    assert {b.status for b in done.values()} == {"completed"}
    loads = stack.loads()[loads_before:]
    assert loads == [EMBED], (loads, stack.log_tail())  # the chat model stayed loaded for all of them
    assert done[c3].completed_at <= done[embedding].model_extra["started_at"] + 1
    # The API shows whole seconds; compare the plan's exact time with the exact end.
    eta = plan.batches[c3].finishes_at
    assert eta is not None and shown == int(eta.timestamp())
    actual = Batch.objects.get(pk=c3).completed_at
    ahead, took = (eta - asked_at).total_seconds(), (actual - asked_at).total_seconds()
    error = abs(ahead - took) / took
    print(f"last batch: predicted {ahead:.1f}s ahead, took {took:.1f}s: error {error:.1%}")
    print("\n".join(line for line in stack.log_tail(400).splitlines() if " done: " in line or " ready in " in line))
    assert error <= 0.25
