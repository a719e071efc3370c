from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from rest_framework.test import APIClient

from jobs.models import ApiKey
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches", "/v1/models", "/v1/batches/batch_x"])
def test_no_key_is_401_in_openai_shape(path):
    response = APIClient().get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "missing_api_key" and "API key" in error["message"]


def test_a_wrong_key_is_401_invalid_api_key(db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer bs-not-a-real-key")
    response = api.get("/v1/batches")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "bs-not-a-real-key" not in response.json()["error"]["message"]  # never echo a whole key


def test_a_revoked_key_is_401(user):
    key, raw = ApiKey.generate(user)
    key.revoke()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/v1/batches").status_code == 401


def test_keys_are_stored_hashed(user):
    key, raw = ApiKey.generate(user)
    assert raw not in (key.key_hash, key.prefix) and key.prefix == raw[:10]
    assert not ApiKey.objects.filter(key_hash=raw).exists()


def test_another_users_objects_answer_404(client, other_client, models, upload):
    file = upload(jsonl([chat_line(1)]))
    batch = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    ).json()
    for method, path in [
        ("get", f"/v1/files/{file['id']}"),
        ("get", f"/v1/files/{file['id']}/content"),
        ("delete", f"/v1/files/{file['id']}"),
        ("get", f"/v1/batches/{batch['id']}"),
        ("post", f"/v1/batches/{batch['id']}/cancel"),
    ]:
        response = getattr(other_client, method)(path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    # Using another user's file as input is a 404 too.
    response = other_client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 404
    assert other_client.get("/v1/files").json()["data"] == []
    assert other_client.get("/v1/batches").json()["data"] == []
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "in_progress"


def test_the_browsable_api_works_with_a_session_login(user):
    browser = APIClient()
    assert browser.login(request=HttpRequest(), username="alice", password="pw-alice-123")
    response = browser.get("/v1/batches", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Batch" in response.content and b"<html" in response.content


def test_create_api_key_prints_the_key_last(db, capsys):
    from django.core.management import call_command

    call_command("create_api_key", "carol")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/v1/batches").status_code == 200
    assert get_user_model().objects.filter(username="carol").exists()
