"""An estimate's prompt_tokens equals the real run's usage (real vLLM on the CPU, the demo models).

The estimate's child renders each line with vLLM's renderer and no weights; the
live worker then runs the same file: the sums of usage.prompt_tokens must match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.engine import demo
from jobs.models import ApiKey
from tests.live import LiveStack, sdk_batch_ended

pytestmark = pytest.mark.django_db(transaction=True)


def estimate_then_run(stack: LiveStack, user: Any, tmp_path: Path, url: str, bodies: list[dict[str, Any]]) -> Any:
    sdk = stack.sdk(ApiKey.generate(user)[1])
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"custom_id": f"c{i}", "method": "POST", "url": url, "body": body}) + "\n"
            for i, body in enumerate(bodies)
        )
    )
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    estimate = sdk.post("/batches/estimate", body={"input_file_id": file.id, "endpoint": url}, cast_to=object)
    batch = sdk.batches.create(input_file_id=file.id, endpoint=url, completion_window="24h")  # type: ignore[arg-type]
    done = sdk_batch_ended(sdk, batch.id)
    assert done.status == "completed", (done, stack.log_tail())
    lines = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
    return estimate, lines


def test_a_chat_estimate_counts_the_prompt_tokens_the_run_uses(stack, django_user_model, tmp_path):
    model = demo.SMOLLM2_NAME
    bodies = [
        {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "You answer in French, briefly."},
                {"role": "user", "content": "What is the capital of Italy? " * 5},
                {"role": "assistant", "content": "Rome."},
                {"role": "user", "content": "And of Spain? ünïcödé ✓ 漢字"},
            ],
            "max_completion_tokens": 2,
        },
        {"model": model, "messages": [{"role": "user", "content": "Count"}], "max_tokens": 2, "n": 2},
    ]
    estimate, lines = estimate_then_run(
        stack, django_user_model.objects.create_user("est-chat"), tmp_path, "/v1/chat/completions", bodies
    )
    used = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    assert estimate["complete"] is True and estimate["requests"] == 3 and estimate["failing_requests"] == 0
    assert estimate["prompt_tokens"] == used
    assert estimate["max_output_tokens"] == 3 + 2 + 2 * 2


def test_an_embeddings_estimate_counts_the_prompt_tokens_the_run_uses(stack, django_user_model, tmp_path):
    model = demo.MINILM_NAME
    bodies = [
        {"model": model, "input": "A short sentence."},
        {"model": model, "input": ["two inputs", "in one line, ünïcödé ✓"]},
        {"model": model, "input": "word " * 100},
    ]
    estimate, lines = estimate_then_run(
        stack, django_user_model.objects.create_user("est-embed"), tmp_path, "/v1/embeddings", bodies
    )
    used = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    assert estimate["complete"] is True and estimate["requests"] == 3
    assert estimate["prompt_tokens"] == used and estimate["max_output_tokens"] == 0
