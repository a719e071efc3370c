"""/v1/responses batches on the real engine (issue 14, acceptance).

A batch of 20 Responses lines runs on the shared live stack (the web server and a real
worker, the demo chat model); vLLM's own api_server answers the same 20 requests
meanwhile, and every body must be equal, ids and timestamps aside. One over-long
prompt fails alone, with the error vllm serve gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.engine import demo
from jobs.engine.base import ModelSpec
from jobs.engine.errors import openai_error
from jobs.models import ApiKey
from tests.live import LiveStack, sdk_batch_ended

from .conftest import Background, api_server_reference
from .test_vllm_engine import assert_same_body

pytestmark = pytest.mark.django_db(transaction=True)

RESPONSES = "/v1/responses"
SMOL = demo.SMOLLM2_NAME


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


BODIES: dict[str, dict[str, Any]] = {
    "plain": {"input": "What is the capital of France?"},
    "instructions": {"instructions": "Answer in one word.", "input": "What colour is the sky?"},
    "message-list": {"input": [_user("Name a primary colour.")]},
    "multi-turn": {
        "input": [_user("My name is Ada."), {"role": "assistant", "content": "Hello Ada."}, _user("What is my name?")]
    },
    "system-role": {"input": [{"role": "system", "content": "You are terse."}, _user("Name three fruits.")]},
    "developer-role": {"input": [{"role": "developer", "content": "Reply in French."}, _user("Good morning")]},
    "content-parts": {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Count to five."}]}]},
    "short": {"input": "Tell me a story.", "max_output_tokens": 3},
    "one-token": {"input": "Hi", "max_output_tokens": 1},
    "logprobs": {"input": "Say hi.", "include": ["message.output_text.logprobs"], "top_logprobs": 2},
    "json-schema": {
        "input": "Give a city and its country as JSON.",
        "text": {
            "format": {
                "type": "json_schema",
                "name": "place",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city", "country"],
                },
            }
        },
        "max_output_tokens": 40,
    },
    "metadata": {"input": "Hello", "metadata": {"project": "batchsite"}},
    "user": {"input": "Hello", "user": "user-42"},
    "presence-penalty": {"input": "List animals.", "presence_penalty": 1.0},
    "frequency-penalty": {"input": "List colours.", "frequency_penalty": 1.0},
    "top-p-top-k": {"input": "Write a haiku.", "top_p": 0.5, "top_k": 5},
    "truncation-auto": {"input": "Summarise: the cat sat on the mat.", "truncation": "auto"},
    "store-false": {"input": "What is two plus two?", "store": False},
    "unicode": {"input": "Traduis « bonjour » en japonais 🙂"},
    "too-long": {"input": "hello " * 3000},
}
for _body in BODIES.values():
    _body["model"] = SMOL
    _body.setdefault("temperature", 0)
    _body.setdefault("max_output_tokens", 16)

# Differ between any two runs by design: ids of the response and of its output
# items, timestamps. system_fingerprint as in test_vllm_engine.
VOLATILE = {"id", "created_at", "created", "request_id", "system_fingerprint"}


def test_a_responses_batch_gives_the_bodies_vllm_serve_gives(
    stack: LiveStack, smol_spec: ModelSpec, django_user_model: Any, tmp_path: Path
) -> None:
    assert len(BODIES) == 20
    reference = Background()
    reference.submit("responses", api_server_reference, smol_spec, RESPONSES, BODIES, tmp_path)
    try:
        sdk = stack.sdk(ApiKey.generate(django_user_model.objects.create_user("resp"))[1])
        path = tmp_path / "responses.jsonl"
        path.write_text(
            "".join(
                json.dumps({"custom_id": cid, "method": "POST", "url": RESPONSES, "body": body}) + "\n"
                for cid, body in BODIES.items()
            )
        )
        file = sdk.files.create(file=path.open("rb"), purpose="batch")
        batch = sdk.batches.create(input_file_id=file.id, endpoint=RESPONSES, completion_window="24h")
        assert batch.status == "in_progress", batch
        done = sdk_batch_ended(sdk, batch.id, timeout=900, what="the responses batch to end")
        assert done.status == "completed", (done, stack.log_tail())
        assert done.request_counts.model_dump() == {"total": 20, "completed": 19, "failed": 1}
        output = [json.loads(x) for x in sdk.files.content(done.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in sdk.files.content(done.error_file_id).text.splitlines()]
        theirs = reference.result("responses")
    finally:
        reference.close()

    assert [line["custom_id"] for line in errors] == ["too-long"]
    assert sorted(line["custom_id"] for line in output) == sorted(set(BODIES) - {"too-long"})
    for line in output + errors:
        cid = line["custom_id"]
        status, body = theirs[cid]
        assert line["response"]["status_code"] == status, (cid, line, body)
        expected = body if status == 200 else openai_error(status, body)
        assert_same_body(line["response"]["body"], expected, cid, VOLATILE)
    too_long = errors[0]["response"]["body"]["error"]
    assert too_long["type"] == "invalid_request_error" and too_long["code"] is None
    assert "maximum context length" in too_long["message"]
    for line in output:
        assert line["response"]["body"]["object"] == "response"
        assert line["response"]["body"]["status"] in ("completed", "incomplete")
    # Batch usage adds up the Responses bodies' input/output tokens.
    bodies = [line["response"]["body"] for line in output]
    assert done.usage.input_tokens == sum(b["usage"]["input_tokens"] for b in bodies) > 0
    assert done.usage.output_tokens == sum(b["usage"]["output_tokens"] for b in bodies) > 0
