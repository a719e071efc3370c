"""Every object the Python SDK gets from the live stack, and every line of the output and error
files, validates strictly against the SDK's own types (Batch, FileObject, ChatCompletion,
Completion, Response, ErrorObject): what a typed client relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import Batch, Completion, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from openai.types.shared import ErrorObject

from jobs.engine import demo
from jobs.models import ApiKey
from tests.conftest import jsonl
from tests.live import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = demo.SMOLLM2_NAME


def line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": MODEL, **body}}


def strict(model: Any, raw: Any) -> Any:
    # A plain dict through the SDK's model, strict: no coercion of a wrong type.
    return model.model_validate(raw, strict=True)


def test_objects_and_file_lines_validate_strictly_against_the_sdk_types(stack, django_user_model, tmp_path):
    sdk = stack.sdk(ApiKey.generate(django_user_model.objects.create_user("typed-user"))[1])
    chat = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}
    lines = [
        line("chat", "/v1/chat/completions", chat),
        line("completion", "/v1/completions", {"prompt": "Once upon", "max_tokens": 4, "temperature": 0}),
        line("response", "/v1/responses", {"input": "Say hi", "max_output_tokens": 16, "temperature": 0}),
        line("bad-tokens", "/v1/chat/completions", {**chat, "max_tokens": -5}),
        line("bad-type", "/v1/completions", {"prompt": "x", "temperature": "hot"}),
    ]
    by_endpoint: dict[str, list[dict[str, Any]]] = {}
    for each in lines:
        by_endpoint.setdefault(each["url"], []).append(each)  # one endpoint per batch, as OpenAI's
    batch_ids = []
    for endpoint, group in by_endpoint.items():
        path = tmp_path / f"{len(batch_ids)}.jsonl"
        path.write_bytes(jsonl(group))
        file = sdk.files.with_raw_response.create(file=path.open("rb"), purpose="batch")
        strict(FileObject, file.http_response.json())
        created = sdk.batches.with_raw_response.create(
            input_file_id=file.parse().id, endpoint=endpoint, completion_window="24h"
        )
        strict(Batch, created.http_response.json())
        batch_ids.append(created.parse().id)

    def ended(batch_id: str) -> Any:
        raw = sdk.batches.with_raw_response.retrieve(batch_id).http_response.json()
        return raw if raw["status"] in ("completed", "failed", "expired", "cancelled") else None

    output: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    published = set()
    for batch_id in batch_ids:
        done = strict(Batch, wait_until(lambda b=batch_id: ended(b), 300, "the batch to end", every=0.5))
        assert done.status == "completed", (done, stack.log_tail())
        for file_id in (done.output_file_id, done.error_file_id, done.input_file_id):
            if file_id is not None:
                strict(FileObject, sdk.files.with_raw_response.retrieve(file_id).http_response.json())
        published |= {done.output_file_id, done.error_file_id} - {None}
        output |= {o["custom_id"]: o for o in map(json.loads, sdk.files.content(done.output_file_id).text.splitlines())}
        if done.error_file_id:
            errors |= {
                e["custom_id"]: e for e in map(json.loads, sdk.files.content(done.error_file_id).text.splitlines())
            }
    listed = sdk.files.with_raw_response.list(purpose="batch_output").http_response.json()["data"]
    assert {f["id"] for f in listed} == published
    for raw in listed:
        strict(FileObject, raw)

    assert sorted(output) == ["chat", "completion", "response"] and sorted(errors) == ["bad-tokens", "bad-type"]
    strict(ChatCompletion, output["chat"]["response"]["body"])
    strict(Completion, output["completion"]["response"]["body"])
    strict(Response, output["response"]["response"]["body"])
    for custom_id, error_line in errors.items():
        assert error_line["error"] is None and error_line["response"]["status_code"] == 400, custom_id
        error = strict(ErrorObject, error_line["response"]["body"]["error"])
        assert error.type == "invalid_request_error" and error.message
    assert "max_tokens" in errors["bad-tokens"]["response"]["body"]["error"]["message"]
