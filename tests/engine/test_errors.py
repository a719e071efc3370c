"""Engine-refused lines are written in OpenAI's error vocabulary (jobs/engine/errors.py)."""

from __future__ import annotations

import json

import pytest
from openai.types.shared import ErrorObject

from jobs.engine.errors import openai_error

VLLM_400 = {
    "error": {
        "message": "max_tokens must be at least 1, got -5.",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }
}


def strict(body: dict) -> ErrorObject:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return ErrorObject.model_validate(body["error"], strict=True)


def test_a_vllm_refusal_keeps_its_message_and_param_in_openai_words():
    error = strict(openai_error(400, VLLM_400))
    assert error.message == "max_tokens must be at least 1, got -5." and error.param == "max_tokens"
    assert error.type == "invalid_request_error" and error.code is None


def test_vllm_json_bytes_and_plain_messages_are_read_alike():
    assert openai_error(400, json.dumps(VLLM_400).encode()) == openai_error(400, VLLM_400)
    assert strict(openai_error(404, "Unsupported URL")).message == "Unsupported URL"


@pytest.mark.parametrize("status", [500, 501, 503])
def test_server_side_statuses_are_server_errors(status):
    body = {"error": {"message": "boom", "type": "InternalServerError", "param": None, "code": status}}
    assert strict(openai_error(status, body)).type == "server_error"


def test_a_string_code_is_kept():
    assert strict(openai_error(400, {"error": {"message": "m", "code": "context_length_exceeded"}})).code == (
        "context_length_exceeded"
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"not json at all \xff",
        b"[1, 2]",
        b'{"error": "a string"}',
        {"error": {"message": 7, "param": ["x"], "code": {"deep": [1]}}},
        {"error": {"message": "", "type": None}},
        {"error": {"message": "lone \ud800 surrogate"}},
        {},
    ],
)
def test_hostile_or_odd_engine_bodies_still_give_a_valid_error_object(payload):
    error = strict(openai_error(400, payload))
    assert error.message and error.type == "invalid_request_error"
    assert error.param is None or isinstance(error.param, str)
