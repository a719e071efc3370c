"""Hostile input (issue 9): what a hostile user sends gets an OpenAI-shaped 4xx, or a
failed batch naming the line; a refusal stores nothing; what is stored always renders."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from jobs.models import Batch, File
from tests.api.conftest import assert_openai_error
from tests.conftest import CHAT_MODEL, chat_line, jsonl, stored_files

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"


def create(api: Any, body: dict[str, Any] | str) -> Any:
    """POST /v1/batches with a JSON body (a str is sent as is: for escapes json.dumps would not write)."""
    text = body if isinstance(body, str) else json.dumps(body)
    return api.post("/v1/batches", text, content_type="application/json")


def shortcut(api: Any, content: bytes, **fields: Any) -> Any:
    f = io.BytesIO(content)
    f.name = "in.jsonl"
    return api.post("/v1/batches", {"file": f, "model": CHAT_MODEL, **fields})


# --- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        '{"k": "\\ud800"}',
        '{"\\udfff": "v"}',
        '{"k": "ok \\ud83d"}',
        '{"k": "a\\u0000b"}',
        '{"k\\u0000": "v"}',
        '["k", "v"]',
        '"k=v"',
        '{"k": 1}',
        '{"k": {"nested": "v"}}',
        '{"k": "' + "v" * 513 + '"}',
    ],
)
def test_metadata_that_cannot_be_stored_is_a_400_invalid_metadata_and_stores_nothing(
    raw_client, models, upload, stored, metadata
):
    file = upload(jsonl([chat_line(1)]))
    stored.reset()
    body = f'{{"input_file_id": "{file["id"]}", "endpoint": "{ENDPOINT}", "metadata": {metadata}}}'
    error = assert_openai_error(create(raw_client, body), 400, "invalid_metadata", "metadata")
    assert "\x00" not in error["message"]
    stored.assert_unchanged()
    assert raw_client.get("/v1/batches").status_code == 200


# --- the upload-and-create shortcut ----------------------------------------------------------


def test_the_shortcut_leaves_no_file_behind_when_creating_fails_unexpectedly(raw_client, models, settings, monkeypatch):
    """Fault injection: validation raises what no rule expects (a bug, a lost database)."""
    from jobs.services import batches

    def broken(*args: Any) -> Any:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(batches, "_validate", broken)
    assert_openai_error(shortcut(raw_client, jsonl([chat_line(1)])), 500, "server_error")
    assert not File.objects.exists() and not Batch.objects.exists()
    assert stored_files(settings) == []
