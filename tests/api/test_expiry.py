"""Expiry, OpenAI's way: expires_after on upload, output_expires_after on batch create,
expires_at on file objects; an expired file answers 404 before the sweep deletes it."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import F

from jobs.models import Batch, File
from tests.conftest import chat_line, jsonl, stored_files

pytestmark = pytest.mark.django_db

DAY = 86400


def post_file(client: Any, fields: dict[str, Any], content: bytes | None = None) -> Any:
    f = io.BytesIO(content if content is not None else jsonl([chat_line(0)]))
    f.name = "in.jsonl"
    return client.post("/v1/files", {"file": f, "purpose": "batch", **fields}, format="multipart")


def pass_time(file_id: str, seconds: float) -> None:
    """Move a file's clock: as if ``seconds`` had passed since it was stored."""
    delta = timedelta(seconds=seconds)
    File.objects.filter(pk=file_id).update(created_at=F("created_at") - delta, expires_at=F("expires_at") - delta)


def test_expires_after_sets_expires_at_as_the_sdk_sends_it(client):
    # The openai SDK sends the object as expires_after[anchor] / expires_after[seconds] form fields.
    response = post_file(client, {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["expires_at"] == body["created_at"] + 3600
    assert client.get(f"/v1/files/{body['id']}").json()["expires_at"] == body["expires_at"]


def test_batch_inputs_expire_after_thirty_days_by_default_and_the_setting_changes_it(client, settings):
    body = post_file(client, {}).json()
    assert body["expires_at"] == body["created_at"] + 30 * DAY
    settings.BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS = 0
    assert post_file(client, {}).json()["expires_at"] is None
    settings.BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS = 7200
    body = post_file(client, {}).json()
    assert body["expires_at"] == body["created_at"] + 7200


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "-3600"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1e4"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "9" * 5000}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "٣٦٠٠"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after[anchor]": b"\xed\xa0\x80", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after": "3600"}, "expires_after"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600", "expires_after[x]": "1"},
            "expires_after.x",
        ),
    ],
)
def test_a_bad_expires_after_is_a_400_naming_the_field_and_stores_nothing(client, settings, fields, param):
    response = post_file(client, fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert not File.objects.exists() and stored_files(settings) == []


def test_an_expired_file_answers_404_everywhere_before_it_is_deleted(client, models):
    file = post_file(client, {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}).json()
    kept = post_file(client, {}).json()
    pass_time(file["id"], 3600)
    for path in (f"/v1/files/{file['id']}", f"/v1/files/{file['id']}/content"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert client.delete(f"/v1/files/{file['id']}").status_code == 404
    assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [kept["id"]]
    response = client.post(
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "input_file_id"
    assert File.objects.filter(pk=file["id"]).exists()  # only the sweep deletes it
    assert not Batch.objects.exists()


def test_a_file_one_second_before_expiry_is_still_there(client):
    file = post_file(client, {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}).json()
    pass_time(file["id"], 3599)
    assert client.get(f"/v1/files/{file['id']}").status_code == 200


def test_output_expires_after_is_kept_on_the_batch(client, models, upload):
    file = upload(jsonl([chat_line(0)]))
    body = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "output_expires_after": {"anchor": "created_at", "seconds": 7200},
    }
    response = client.post("/v1/batches", body, format="json")
    assert response.status_code == 200, response.content
    assert Batch.objects.get(pk=response.json()["id"]).output_expires_after == 7200


@pytest.mark.parametrize(
    "value, param",
    [
        ({"anchor": "created_at", "seconds": 60}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 10**30}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": True}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 3600.5}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": None}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": [3600]}, "output_expires_after.seconds"),
        ({"anchor": "completed_at", "seconds": 3600}, "output_expires_after.anchor"),
        ({"anchor": {"a": {"b": {"c": []}}}, "seconds": 3600}, "output_expires_after.anchor"),
        ({"seconds": 3600}, "output_expires_after.anchor"),
        ("3600", "output_expires_after"),
        ([{"anchor": "created_at", "seconds": 3600}], "output_expires_after"),
        ({"anchor": "created_at", "seconds": 3600, "\ud800": 1}, "output_expires_after.\\ud800"),
    ],
)
def test_a_bad_output_expires_after_is_a_400_naming_the_field_and_stores_nothing(client, models, upload, value, param):
    file = upload(jsonl([chat_line(0)]))
    body = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "output_expires_after": value,
    }
    # json.dumps escapes lone surrogates (\\ud800), as any client's JSON would.
    response = client.post("/v1/batches", json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not Batch.objects.exists()


def test_the_upload_shortcut_takes_output_expires_after_as_form_fields(client, models):
    f = io.BytesIO(jsonl([chat_line(0)]))
    f.name = "in.jsonl"
    fields = {"output_expires_after[anchor]": "created_at", "output_expires_after[seconds]": "3600"}
    response = client.post("/v1/batches", {"file": f, "model": chat_line(0)["body"]["model"], **fields})
    assert response.status_code == 200, response.content
    assert Batch.objects.get().output_expires_after == 3600


def test_a_refused_upload_shortcut_stores_no_file(client, models, settings):
    f = io.BytesIO(jsonl([chat_line(0)]))
    f.name = "in.jsonl"
    fields = {"output_expires_after[anchor]": "created_at", "output_expires_after[seconds]": "5"}
    response = client.post("/v1/batches", {"file": f, "model": chat_line(0)["body"]["model"], **fields})
    assert response.status_code == 400
    assert not File.objects.exists() and not Batch.objects.exists() and stored_files(settings) == []
