"""The shared live stack (tests/live.py) survives the table flushes between tests
and keeps its model loaded: what lets every real-engine test after it skip the load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.engine import demo
from jobs.models import ApiKey, Worker
from tests.live import LiveStack, sdk_batch_ended, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run_chat_batch(stack: LiveStack, user: Any, tmp_path: Path, n: int) -> list[dict[str, Any]]:
    sdk = stack.sdk(ApiKey.generate(user)[1])
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"c{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": demo.SMOLLM2_NAME, "messages": [{"role": "user", "content": f"Hi {i}"}]}
                    | {"max_tokens": 4, "temperature": 0},
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = sdk_batch_ended(sdk, batch.id)
    assert done.status == "completed", (done, stack.log_tail())
    return [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]


def test_the_live_worker_runs_a_batch_on_the_real_engine(stack, django_user_model, tmp_path):
    out = run_chat_batch(stack, django_user_model.objects.create_user("first"), tmp_path, 3)
    assert sorted(line["custom_id"] for line in out) == ["c0", "c1", "c2"]
    assert all(line["response"]["body"]["object"] == "chat.completion" for line in out)


def test_the_live_worker_comes_back_after_the_tables_are_emptied_without_reloading(stack, django_user_model, tmp_path):
    # The stack is shared by the whole session: earlier tests (the estimate's live
    # ones) may have swapped to other models and back, so what must hold is that
    # the chat model is the one loaded now and that this batch loads nothing more.
    loads_before = stack.loads()
    assert loads_before[-1:] == [demo.SMOLLM2_NAME], loads_before
    wait_until(lambda: Worker.objects.filter(pk="live-worker").exists(), 30, "the worker to register again")
    out = run_chat_batch(stack, django_user_model.objects.create_user("second"), tmp_path, 2)
    assert len(out) == 2
    assert stack.loads() == loads_before
