"""/v1 and per-user quotas and priority: 429 with the quota's code, nothing stored; priority checked."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from jobs.models import ApiKey, Batch, Priority, Quota
from tests.api.conftest import assert_openai_error
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("models")]


def shortcut(client: Any, lines: int = 2, **fields: Any) -> Any:
    f = io.BytesIO(jsonl([chat_line(i) for i in range(lines)]))
    f.name = "in.jsonl"
    return client.post("/v1/batches", {"file": f, "model": CHAT_MODEL, **fields}, format="multipart")


def create(client: Any, file_id: str, **fields: Any) -> Any:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
    # json.dumps escapes a lone surrogate (\\ud800), as a client's JSON would.
    return client.post("/v1/batches", json.dumps(body), content_type="application/json")


def api_for(user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiKey.generate(user)[1]}")
    return api


def test_alice_at_her_batch_quota_gets_a_429_and_bob_still_submits(client, user, other_client, upload, stored):
    Quota.objects.create(user=user, max_queued_batches=3)
    file = upload(jsonl([chat_line(i) for i in range(2)]))
    for _ in range(3):
        assert create(client, file["id"]).status_code == 200
    stored.reset()
    error = assert_openai_error(create(client, file["id"]), 429, "user_queue_full")
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("You have 3 batches queued or running; your limit is 3.")
    error = assert_openai_error(shortcut(client), 429, "user_queue_full")
    stored.assert_unchanged()
    assert shortcut(other_client).status_code == 200


def test_the_request_quota_answers_429_naming_it(client, user, stored):
    Quota.objects.create(user=user, max_queued_requests=3)
    assert shortcut(client, lines=2).status_code == 200
    stored.reset()
    error = assert_openai_error(shortcut(client, lines=2), 429, "user_too_many_queued_requests")
    assert "2 requests" in error["message"] and "3" in error["message"]
    stored.assert_unchanged()


def test_the_storage_quota_refuses_an_upload_and_stores_nothing(client, user, upload, stored):
    content = jsonl([chat_line(0)])
    Quota.objects.create(user=user, max_stored_bytes=len(content))
    upload(content)
    stored.reset()
    f = io.BytesIO(content)
    f.name = "again.jsonl"
    response = client.post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart")
    error = assert_openai_error(response, 429, "user_storage_full")
    assert f"You keep {len(content)} bytes" in error["message"]
    assert_openai_error(shortcut(client, lines=1), 429, "user_storage_full")
    stored.assert_unchanged()


def test_priority_defaults_to_normal_and_is_shown(client):
    batch = shortcut(client).json()
    assert batch["priority"] == "normal"
    assert client.get(f"/v1/batches/{batch['id']}").json()["priority"] == "normal"


def test_low_priority_in_json_and_multipart(client, upload):
    file = upload(jsonl([chat_line(0)]))
    batch = create(client, file["id"], priority="low").json()
    assert batch["priority"] == "low" and Batch.objects.get(pk=batch["id"]).priority == Priority.LOW
    assert shortcut(client, priority="low").json()["priority"] == "low"


@pytest.mark.parametrize("value", [1, True, [], {}, ["high"], {"x": "high"}, "HIGH", "urgent", "", "\ud800"])
def test_a_wrong_priority_is_a_400_naming_it(client, upload, stored, value):
    file = upload(jsonl([chat_line(0)]))
    stored.reset()
    assert_openai_error(create(client, file["id"], priority=value), 400, param="priority")
    stored.assert_unchanged()


def test_a_null_priority_is_the_default(client, upload):
    file = upload(jsonl([chat_line(0)]))
    assert create(client, file["id"], priority=None).json()["priority"] == "normal"


def test_an_unknown_multipart_priority_is_a_400_and_leaves_no_file(client, stored):
    assert_openai_error(shortcut(client, priority="urgent"), 400, param="priority")
    stored.assert_unchanged()


def test_high_priority_is_refused_without_the_permission(client, upload, stored):
    file = upload(jsonl([chat_line(0)]))
    stored.reset()
    error = assert_openai_error(create(client, file["id"], priority="high"), 400, "priority_not_allowed", "priority")
    assert "high" in error["message"]
    assert_openai_error(shortcut(client, priority="high"), 400, param="priority")
    stored.assert_unchanged()


def test_high_priority_for_staff_and_for_the_permission(db):
    users = get_user_model().objects
    staff = users.create_user(username="root", is_staff=True)
    carol = users.create_user(username="carol")
    carol.user_permissions.add(Permission.objects.get(codename="high_priority"))
    for who in (staff, carol):
        batch = shortcut(api_for(who), priority="high").json()
        assert batch["priority"] == "high"
        assert Batch.objects.get(pk=batch["id"]).priority == Priority.HIGH


def test_the_openapi_schema_lists_priority_as_an_extension(client):
    spec = client.get("/v1/openapi.json").json()
    prop = spec["components"]["schemas"]["BatchObject"]["properties"]["priority"]
    assert prop["x-batchsite-extension"] is True
    enum = spec["components"]["schemas"][prop["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert enum == ["low", "normal", "high"]
    create_body = spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    for kind in ("application/json", "multipart/form-data"):
        assert create_body[kind]["schema"]["properties"]["priority"]["enum"] == ["low", "normal", "high"]
