from __future__ import annotations

import io

import pytest

from jobs.models import File
from tests.conftest import chat_line, jsonl, stored_files

pytestmark = pytest.mark.django_db


def test_upload_returns_openai_file_object(client, upload):
    content = jsonl([chat_line(1)])
    file = upload(content, name="prompts.jsonl")
    assert file["object"] == "file" and file["id"].startswith("file-")
    assert file["bytes"] == len(content)
    assert file["filename"] == "prompts.jsonl" and file["purpose"] == "batch"
    assert isinstance(file["created_at"], int) and file["status"] == "processed"


def test_content_returns_the_exact_bytes(client, upload):
    content = b"\xef\xbb\xbf" + jsonl([chat_line(i) for i in range(3)])
    file = upload(content)
    response = client.get(f"/v1/files/{file['id']}/content")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content


def test_retrieve_and_delete(client, upload, settings):
    file = upload(jsonl([chat_line(1)]))
    assert client.get(f"/v1/files/{file['id']}").json() == file
    response = client.delete(f"/v1/files/{file['id']}")
    assert response.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file['id']}").status_code == 404
    assert stored_files(settings) == []


def test_a_file_read_by_a_running_batch_cannot_be_deleted(client, models, upload):
    file = upload(jsonl([chat_line(1)]))
    client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    response = client.delete(f"/v1/files/{file['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "file_in_use"
    assert File.objects.filter(pk=file["id"]).exists()


def test_list_pages_with_after_and_filters_by_purpose(client, upload):
    ids = [upload(jsonl([chat_line(i)]))["id"] for i in range(5)]
    first = client.get("/v1/files?limit=2").json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [f["id"] for f in first["data"]] == ids[::-1][:2]
    second = client.get(f"/v1/files?limit=2&after={first['data'][-1]['id']}").json()
    assert [f["id"] for f in second["data"]] == ids[::-1][2:4]
    oldest_first = client.get("/v1/files?order=asc").json()
    assert [f["id"] for f in oldest_first["data"]] == ids
    assert client.get("/v1/files?purpose=batch_output").json()["data"] == []


def test_wrong_purpose_is_a_400_naming_purpose(client):
    f = io.BytesIO(b"{}\n")
    f.name = "x.jsonl"
    response = client.post("/v1/files", {"file": f, "purpose": "fine-tune"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"
    assert not File.objects.exists()


def test_missing_file_field_is_a_400_naming_file(client):
    response = client.post("/v1/files", {"purpose": "batch"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "order=sideways", "after=file-nope"])
def test_bad_list_parameters_are_400(client, upload, query):
    upload(jsonl([chat_line(1)]))
    response = client.get(f"/v1/files?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == query.split("=")[0]
