"""Hostile input against the real web server (batchsite.serve, as bin/start runs it): what only
shows over a socket (a body refused before it is read, bytes that no test client would send)
and a few fuzzed examples."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.models import ApiKey, Batch, File, RegisteredModel
from tests.api.test_fuzz import LINE, METADATA, fuzz_settings
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)


class Live:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def create(self, content: bytes) -> httpx.Response:
        return self.http.post("/v1/batches", content=content, headers={"Content-Type": "application/json"})

    def shortcut(self, lines: bytes, **fields: str) -> httpx.Response:
        return self.http.post("/v1/batches", data={"model": CHAT_MODEL, **fields}, files={"file": ("in.jsonl", lines)})

    def upload(self, lines: bytes) -> str:
        response = self.http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", lines)})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def assert_list_renders(self) -> None:
        response = self.http.get("/v1/batches?limit=100")
        assert response.status_code == 200, response.text[:500]


@pytest.fixture
def live(live_server_process: Any, transactional_db: Any, django_user_model: Any) -> Iterator[Live]:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    user = django_user_model.objects.create_user(username="mallory")
    client = Live(live_server_process.url, ApiKey.generate(user)[1])
    yield client
    client.http.close()


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return dict(error)


def test_a_50_mb_body_is_refused_before_it_is_read(live):
    """The server answers 413 having read 64 KB of a body that claims 50 MB."""
    address = urlsplit(live.url)
    head = (
        "POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {live.key}\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"input_file_id": "' + b"x" * 65_536)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65_536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"request_too_large"' in answer and time.monotonic() - started < 5


def test_the_sdk_sending_50_mb_gets_the_413_as_an_openai_error(live):
    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key=live.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        sdk.batches.create(
            input_file_id="x" * (50 * 1024 * 1024), endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    assert not Batch.objects.exists()


def test_hostile_requests_over_a_socket_get_openai_errors_and_store_nothing(live):
    file_id = live.upload(jsonl([chat_line(1)]))
    body = f'{{"input_file_id": "{file_id}", "endpoint": "/v1/chat/completions", "metadata": {{"k": "\\ud800"}}}}'
    error_of(live.create(body.encode()), 400, "invalid_metadata")
    error_of(live.create(b"[" * 100_000 + b"]" * 100_000), 400, "invalid_request_body")
    error_of(live.create(b'{"input_file_id": NaN}'), 400, "invalid_request_body")
    error_of(live.create(b'{"input_file_id": "\xed\xa0\x80"}'), 400, "invalid_request_body")  # UTF-8 of a surrogate
    error_of(live.http.post("/v1/batches", data={f"f{i}": "x" for i in range(1001)}), 400, "too_many_fields")
    files = [("file", (f"{i}.jsonl", b"{}\n")) for i in range(101)]
    error_of(live.http.post("/v1/files", data={"purpose": "batch"}, files=files), 400, "too_many_files")
    error_of(live.http.get("/v1/batches/ab%00cd"), 400, "invalid_url")
    assert not Batch.objects.exists() and File.objects.count() == 1
    live.assert_list_renders()


def test_lines_that_crashed_the_server_fail_their_batch_naming_the_line(live):
    for bad, code in [
        (b'{"custom_id": "\\ud800", "method": "POST", "url": "/v1/chat/completions", "body": {}}', "invalid_unicode"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting_too_deep"),
        (json.dumps(chat_line(2, body={"temperature": float("nan")})).encode(), "invalid_number"),
    ]:
        batch = live.shortcut(jsonl([chat_line(1), bad])).json()
        assert batch["status"] == "failed", batch
        assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, code)]
    live.assert_list_renders()


@fuzz_settings(15)
@given(lines=st.lists(LINE, min_size=1, max_size=2), metadata=METADATA)
def test_fuzzed_lines_and_metadata_never_get_a_5xx_from_the_server(live, lines, metadata):
    before = Batch.objects.count()
    batch = live.shortcut(jsonl([chat_line(0), *lines]))
    assert batch.status_code < 500, batch.text[:500]
    file_id = live.upload(jsonl([chat_line(0)]))
    text = json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "metadata": metadata})
    created = live.create(text.encode("utf-8", "surrogatepass"))
    assert created.status_code < 500, created.text[:500]
    if created.status_code != 200:
        assert Batch.objects.count() == before + (batch.status_code == 200)
    live.assert_list_renders()
    Batch.objects.all().delete()  # the server's queue limits must not turn later examples into 429s
