"""Result lines: the engine's encoded body goes into the line as it is, and the line is OpenAI's shape."""

from __future__ import annotations

import json

import pytest

from jobs.engine.base import EngineRequest, EngineResult
from jobs.services import jsonl
from jobs.services.results import error_line, result_line


@pytest.mark.parametrize(
    "body",
    [
        {"object": "chat.completion", "choices": [{"message": {"content": 'h\u00e9llo \U0001f600 "q" \\ \n'}}]},
        {"object": "list", "data": [{"embedding": [0.1, -2.5e-7, 1e300, 0.0]}], "usage": {"prompt_tokens": 3}},
        {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}},
    ],
)
def test_a_result_line_holds_the_body_whether_given_as_a_dict_or_as_its_json(body):
    custom_id = 'odd "id" \u00e9\U0001f600\\'
    from_dict = result_line(custom_id, 200, "vllm-batch-1", body)
    from_bytes = result_line(custom_id, 200, "vllm-batch-1", json.dumps(body).encode())
    for line in (from_dict, from_bytes):
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        parsed = json.loads(line)
        assert parsed["id"].startswith("batch_req_") and len(parsed["id"]) == len("batch_req_") + 24
        assert parsed["custom_id"] == custom_id and parsed["error"] is None
        assert parsed["response"] == {"status_code": 200, "request_id": "vllm-batch-1", "body": body}
    assert json.loads(from_dict)["id"] != json.loads(from_bytes)["id"]


def test_an_error_line_is_openai_shape():
    parsed = json.loads(error_line("c\u00e9", "batch_expired", "too late"))
    assert parsed["response"] is None and parsed["error"] == {"code": "batch_expired", "message": "too late"}


def test_an_engine_result_reads_its_encoded_body_back():
    request = EngineRequest("a", "/v1/embeddings", {}, tag=("run", 0))
    encoded = EngineResult("a", 200, b'{"object":"list","data":[]}', "r", None, request.tag)
    plain = EngineResult("a", 200, {"object": "list", "data": []}, "r", None, request.tag)
    assert encoded.body == plain.body == {"object": "list", "data": []}
    assert json.loads(encoded.body_json()) == json.loads(plain.body_json())
    assert EngineResult.aborted_for(request).body == {}


def test_input_lines_reach_the_engine_with_their_exact_numbers():
    line = b'{"custom_id":"a","body":{"seed":123456789012345678901234567890,"temperature":0.1,"n":1}}'
    body = jsonl.loads(line)["body"]
    assert body == {"seed": 123456789012345678901234567890, "temperature": 0.1, "n": 1}
    assert type(body["seed"]) is int and type(body["n"]) is int
