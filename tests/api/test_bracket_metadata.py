"""metadata[key]=value form fields on POST /v1/batches, as `curl -F` and the openai SDKs send them."""

from __future__ import annotations

import io

import pytest
from django.test import Client

from jobs.models import Batch, File
from tests.conftest import CHAT_MODEL, chat_line, jsonl, stored_files

pytestmark = pytest.mark.django_db


def jsonl_file() -> io.BytesIO:
    f = io.BytesIO(jsonl([chat_line(i) for i in range(2)]))
    f.name = "in.jsonl"
    return f


def test_bracket_metadata_is_kept_with_an_uploaded_file(client, models):
    form = {"file": jsonl_file(), "model": CHAT_MODEL, "metadata[project]": "alpha", "metadata[run]": "7"}
    response = client.post("/v1/batches", form, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["metadata"] == {"project": "alpha", "run": "7"}


def test_bracket_metadata_is_kept_with_an_input_file_id(client, models, upload):
    file = upload(jsonl([chat_line(1)]))
    form = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "metadata[team]": "search \u00e9\U0001f600",
    }
    response = client.post("/v1/batches", form, format="multipart")
    assert response.status_code == 200 and response.json()["metadata"] == {"team": "search \u00e9\U0001f600"}


def test_sixteen_bracket_keys_at_the_limits_are_accepted(client, models):
    form = {f"metadata[{'k' * 62}{i:02d}]": "v" * 512 for i in range(16)}
    response = client.post("/v1/batches", {"file": jsonl_file(), "model": CHAT_MODEL, **form}, format="multipart")
    assert response.status_code == 200 and len(response.json()["metadata"]) == 16


@pytest.mark.parametrize(
    "fields, says",
    [
        ({f"metadata[k{i}]": "v" for i in range(17)}, "at most 16 keys"),
        ({"metadata[" + "k" * 65 + "]": "v"}, "at most 64 characters"),
        ({"metadata[k]": "v" * 513}, "at most 512 characters"),
        ({"metadata[a][b]": "v"}, "nested"),
        ({"metadata[k]": "v", "metadata": '{"k": "v"}'}, "not both"),
        ({"metadata[k]": "a\x00b"}, "NUL"),
    ],
)
def test_bracket_metadata_past_the_rules_is_a_400_and_stores_nothing(client, models, settings, fields, says):
    before = stored_files(settings)
    response = client.post("/v1/batches", {"file": jsonl_file(), "model": CHAT_MODEL, **fields}, format="multipart")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_metadata" and error["param"] == "metadata" and says in error["message"]
    assert Batch.objects.count() == 0 and File.objects.count() == 0 and stored_files(settings) == before


def test_a_bracket_key_sent_twice_is_refused(client, models):
    body = (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + CHAT_MODEL.encode() + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="metadata[k]"\r\n\r\none\r\n'
        b'--B\r\nContent-Disposition: form-data; name="metadata[k]"\r\n\r\ntwo\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
        + jsonl([chat_line(1)])
        + b"\r\n--B--\r\n"
    )
    response = client.generic("POST", "/v1/batches", body, content_type="multipart/form-data; boundary=B")
    assert response.status_code == 400 and "sent 2 times" in response.json()["error"]["message"]
    assert Batch.objects.count() == 0


@pytest.mark.parametrize("encoded", [b"\xed\xa0\x80", b"\xff\xfe"])
def test_a_lone_surrogate_or_bad_utf8_in_a_bracket_value_is_stored_as_valid_text(api_key, models, encoded):
    # A surrogate has no UTF-8 form (clients send its CESU-8 bytes, or U+FFFD): Django decodes
    # form values with replacement characters, so what is stored is valid text, never a 500.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + CHAT_MODEL.encode() + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="metadata[k\xef\xbf\xbd]"\r\n\r\nv' + encoded + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
        + jsonl([chat_line(1)])
        + b"\r\n--B--\r\n"
    )
    api = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_key}")
    response = api.generic("POST", "/v1/batches", body, content_type="multipart/form-data; boundary=B")
    assert response.status_code == 200, response.content
    [(key, value)] = response.json()["metadata"].items()
    assert key == "k\ufffd" and value.startswith("v\ufffd")
    assert Batch.objects.get().metadata == {key: value}


def test_a_json_metadata_with_a_lone_surrogate_escape_is_still_refused(client, models):
    form = {"file": jsonl_file(), "model": CHAT_MODEL, "metadata": '{"k": "\\ud800"}'}
    response = client.post("/v1/batches", form, format="multipart")
    assert response.status_code == 400 and "lone surrogate" in response.json()["error"]["message"]
