"""Hostile input (issue 9): what a hostile user sends gets an OpenAI-shaped 4xx, or a
failed batch naming the line; a refusal stores nothing; what is stored always renders."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from jobs.models import Batch, File
from tests.api.conftest import assert_openai_error
from tests.conftest import CHAT_MODEL, chat_line, housekeeper_pass, jsonl, stored_files

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


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"k": "\\ud800"}', "lone surrogate"),
        ('{"k": NaN}', "NaN"),
        ("[" * 100_000 + "]" * 100_000, "64 levels"),
        ("{not json", "not valid JSON"),
    ],
)
def test_metadata_sent_as_form_text_is_parsed_safely(raw_client, models, stored, text, words):
    error = assert_openai_error(
        shortcut(raw_client, jsonl([chat_line(1)]), metadata=text), 400, "invalid_metadata", "metadata"
    )
    assert words in error["message"]
    stored.assert_unchanged()


def test_metadata_sent_as_form_text_is_stored_like_json(raw_client, models):
    batch = shortcut(raw_client, jsonl([chat_line(1)]), metadata='{"team": "søk"}').json()
    assert batch["metadata"] == {"team": "søk"}


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


# --- what was stored before these rules still renders ----------------------------------------


@pytest.fixture
def stored_surrogates(user: Any, models: Any, upload: Any) -> Batch:
    """A batch as SQLite held it before metadata with lone surrogates was refused (every
    response carrying it was a 500), and an error message of the same kind."""
    from django.db import connection

    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL never stored one: jsonb refuses a lone surrogate")
    file = upload(jsonl([chat_line(1)]))
    return Batch.objects.create(
        owner=user,
        input_file_id=file["id"],
        endpoint=ENDPOINT,
        model=CHAT_MODEL,
        status="in_progress",
        metadata={"k\udc00": "v\ud800 é"},
        errors={"object": "list", "data": [{"code": "x", "message": "m\ud800", "param": None, "line": 1}]},
    )


def test_a_stored_lone_surrogate_renders_in_list_retrieve_and_cancel(raw_client, stored_surrogates):
    batch_id = stored_surrogates.id
    for response in (
        raw_client.get("/v1/batches"),
        raw_client.get(f"/v1/batches/{batch_id}"),
        raw_client.post(f"/v1/batches/{batch_id}/cancel"),
    ):
        assert response.status_code == 200, response.content
        body = response.json()
        batch = body["data"][0] if body["object"] == "list" else body
        # Escaped (\ud800), so the JSON is ASCII and a JSON parser gets the same text back.
        assert batch["metadata"] == {"k\udc00": "v\ud800 é"}
        assert response.content.isascii()
    assert Batch.objects.get(pk=batch_id).status == "cancelling"
    housekeeper_pass()  # its finalize writes the metadata into the event as well
    assert Batch.objects.get(pk=batch_id).status == "cancelled"


def test_a_stored_lone_surrogate_renders_in_the_admin_and_the_browsable_api(stored_surrogates, admin_client, user):
    admin_client.raise_request_exception = False
    from django.contrib.admin.utils import quote

    # quote() as the admin's own links do: it escapes the "_" in batch ids.
    change = admin_client.get(f"/admin/jobs/batch/{quote(stored_surrogates.id)}/change/")
    assert change.status_code == 200
    assert b"\\udc00" in change.content and b"\\ud800" in change.content
    assert admin_client.get("/admin/jobs/batch/").status_code == 200
    assert admin_client.get("/admin/jobs/batch/?q=%ED%A0%80").status_code == 200
    admin_client.force_login(user)
    for url in ("/v1/batches", f"/v1/batches/{stored_surrogates.id}"):
        assert admin_client.get(url, HTTP_ACCEPT="text/html").status_code == 200


# --- request bodies past Django's limits, and JSON no parser should take ---------------------


def test_a_50_mb_json_body_is_a_413_before_it_is_read(raw_client, stored):
    body = b'{"input_file_id": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    error = assert_openai_error(
        raw_client.post("/v1/batches", body, content_type="application/json"), 413, "request_too_large"
    )
    assert "2621440 bytes" in error["message"]
    stored.assert_unchanged()


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        ("a=" + "x" * (3 * 1024 * 1024), "application/x-www-form-urlencoded", 413, "request_too_large"),
        ("&".join(f"f{i}=x" for i in range(1001)), "application/x-www-form-urlencoded", 400, "too_many_fields"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400, "invalid_request_body"),
        ('{"input_file_id": NaN}', "application/json", 400, "invalid_request_body"),
        ('{"completion_window": 1e999}', "application/json", 400, "invalid_request_body"),
        (
            '{"input_file_id": "' + "9" * 5000 + '", "endpoint": "' + ENDPOINT + '"}',
            "application/json",
            404,
            "not_found",
        ),
        ('{"endpoint": ' + "9" * 5000 + "}", "application/json", 400, "invalid_request_body"),
        ('{"input_file_id": "x"}'.encode("utf-16"), "application/json", 400, "invalid_request_body"),
        (b'{"input_file_id": "x"}', "application/json; charset=bz2_codec", 400, "invalid_request_body"),
    ],
)
def test_bodies_past_the_limits_or_not_json_are_openai_errors(raw_client, stored, body, content_type, status, code):
    # generic() sends the bytes as they are, whatever charset the content type names.
    response = raw_client.generic("POST", "/v1/batches", body, content_type=content_type)
    assert_openai_error(response, status, code)
    stored.assert_unchanged()


def test_a_multipart_form_with_1001_fields_is_a_400(raw_client, stored):
    fields = {f"f{i}": "x" for i in range(1001)}
    assert_openai_error(raw_client.post("/v1/batches", fields), 400, "too_many_fields")
    assert_openai_error(raw_client.post("/v1/files", {"purpose": "batch", **fields}), 400, "too_many_fields")
    stored.assert_unchanged()


def test_a_multipart_field_past_the_memory_limit_is_a_413(raw_client, stored):
    response = raw_client.post("/v1/batches", {"model": "x" * (3 * 1024 * 1024)})
    assert_openai_error(response, 413, "request_too_large")
    stored.assert_unchanged()


@pytest.mark.parametrize("url", ["/v1/files", "/v1/batches"])
def test_101_files_are_a_400_and_leave_no_temp_file(raw_client, models, stored, url):
    files = {}
    for i in range(101):
        files[f"file{i}"] = io.BytesIO(jsonl([chat_line(i)]))
        files[f"file{i}"].name = f"{i}.jsonl"
    response = raw_client.post(url, {"purpose": "batch", "model": CHAT_MODEL, **files})
    assert_openai_error(response, 400, "too_many_files", "file")
    stored.assert_unchanged()


# --- wrong types for every field ------------------------------------------------------------

HOSTILE_VALUES = [
    None,
    1,
    -1.5,
    True,
    [],
    {},
    "",
    "x" * 100_000,
    "\ud800",
    "\x00",
    json.loads("[" * 60 + "]" * 60),
]
CREATE_FIELDS = ["input_file_id", "endpoint", "completion_window", "metadata", "model", "webhook_url", "file"]


def accepted(field: str, value: Any) -> bool:
    """The hostile values that are fine for a field: no metadata, no webhook."""
    return (field == "metadata" and value in (None, {})) or (field == "webhook_url" and value == "")


@pytest.mark.parametrize("field", CREATE_FIELDS)
def test_every_create_field_refuses_wrong_types_naming_the_field(raw_client, models, upload, stored, field):
    file = upload(jsonl([chat_line(1)]))
    stored.reset()
    for value in HOSTILE_VALUES:
        body = {"input_file_id": file["id"], "endpoint": ENDPOINT, "completion_window": "24h", field: value}
        response = create(raw_client, body)
        if accepted(field, value):
            assert response.status_code == 200, response.content
            stored.reset()
            continue
        status = response.status_code
        assert status in (400, 404), (field, repr(value)[:40], response.content[:300])
        assert_openai_error(response, status, param=field)
        stored.assert_unchanged()


@pytest.mark.parametrize(
    "fields, status, param",
    [
        ({"purpose": "\x00"}, 400, "purpose"),
        ({"purpose": "x" * 100_000}, 400, "purpose"),
        ({"purpose": "\ud800"}, 400, "purpose"),  # sent as its UTF-8-with-surrogates bytes
        ({"purpose": "batch", "file": "not a file"}, 400, "file"),
        ({"purpose": "batch", "file": ""}, 400, "file"),
    ],
)
def test_upload_fields_of_the_wrong_kind_are_a_400_naming_the_field(raw_client, stored, fields, status, param):
    if "file" not in fields:
        fields["file"] = io.BytesIO(b"{}\n")
        fields["file"].name = "in.jsonl"
    if fields.get("purpose") == "\ud800":
        fields["purpose"] = "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")
    assert_openai_error(raw_client.post("/v1/files", fields), status, param=param)
    stored.assert_unchanged()


def test_an_upload_sent_as_json_is_a_415(raw_client, stored):
    assert_openai_error(create_file_as_json(raw_client), 415, "unsupported_media_type")
    stored.assert_unchanged()


def create_file_as_json(api: Any) -> Any:
    return api.post("/v1/files", json.dumps({"file": "x", "purpose": "batch"}), content_type="application/json")


# --- ids: other users', odd and huge ---------------------------------------------------------


@pytest.fixture
def bobs(other_client: Any, models: Any) -> tuple[str, str]:
    """Bob's file and his queued batch."""
    f = io.BytesIO(jsonl([chat_line(1)]))
    f.name = "bob.jsonl"
    file_id = other_client.post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart").json()["id"]
    body = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
    return file_id, other_client.post("/v1/batches", body, format="json").json()["id"]


def test_another_users_ids_are_not_found_on_every_endpoint(raw_client, bobs):
    file_id, batch_id = bobs
    for response, param in [
        (raw_client.get(f"/v1/files/{file_id}"), "file_id"),
        (raw_client.get(f"/v1/files/{file_id}/content"), "file_id"),
        (raw_client.delete(f"/v1/files/{file_id}"), "file_id"),
        (raw_client.get(f"/v1/batches/{batch_id}"), "batch_id"),
        (raw_client.post(f"/v1/batches/{batch_id}/cancel"), "batch_id"),
        (create(raw_client, {"input_file_id": file_id, "endpoint": ENDPOINT}), "input_file_id"),
    ]:
        assert_openai_error(response, 404, "not_found", param)
    assert_openai_error(raw_client.get(f"/v1/batches?after={batch_id}"), 400, "invalid_value", "after")
    assert_openai_error(raw_client.get(f"/v1/files?after={file_id}"), 400, "invalid_value", "after")
    assert File.objects.filter(pk=file_id).exists()
    assert Batch.objects.get(pk=batch_id).status == "in_progress"
    assert Batch.objects.count() == 1


@pytest.mark.parametrize("object_id", ["x" * 3000, "%ED%A0%80", "%FF", "..", "batch_%0A", "file-%20"])
def test_odd_ids_in_urls_are_404_not_500(raw_client, object_id):
    for response in (
        raw_client.get(f"/v1/files/{object_id}"),
        raw_client.get(f"/v1/files/{object_id}/content"),
        raw_client.delete(f"/v1/files/{object_id}"),
        raw_client.get(f"/v1/batches/{object_id}"),
        raw_client.post(f"/v1/batches/{object_id}/cancel"),
    ):
        assert_openai_error(response, 404)


@pytest.mark.parametrize(
    "query, param",
    [
        ("limit=" + "9" * 5000, "limit"),
        ("limit=" + "9" * 30, "limit"),
        ("limit=-1", "limit"),
        ("limit=1e3", "limit"),
        ("after=" + "x" * 3000, "after"),
        ("after=%ED%A0%80", "after"),
    ],
)
@pytest.mark.parametrize("url", ["/v1/batches", "/v1/files"])
def test_huge_or_odd_list_parameters_are_a_400_naming_them(raw_client, url, query, param):
    error = assert_openai_error(raw_client.get(f"{url}?{query}"), 400, "invalid_value", param)
    assert len(error["message"]) < 300


def test_an_odd_purpose_filter_lists_nothing(raw_client, upload):
    upload(jsonl([chat_line(1)]))
    for purpose in ("x" * 3000, "%ED%A0%80"):
        response = raw_client.get(f"/v1/files?purpose={purpose}")
        assert response.status_code == 200 and response.json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/v1/batches/ab%00cd",
        "/v1/batches/ab%00cd/cancel",
        "/v1/files/ab%00cd",
        "/v1/files/ab%00cd/content",
        "/v1/batches?after=%00",
        "/v1/batches?limit=%00",
        "/v1/files?purpose=batch%00",
        "/v1/files?x%00=1",
    ],
)
def test_a_nul_in_the_url_is_a_400_before_any_query(raw_client, url):
    """PostgreSQL text cannot hold NUL: every query that used one failed, a 500."""
    for response in (raw_client.get(url), raw_client.post(url), raw_client.delete(url)):
        assert_openai_error(response, 400, "invalid_url")


def test_a_nul_in_an_admin_url_is_a_400_page(admin_client):
    admin_client.raise_request_exception = False
    for url in ("/admin/jobs/batch/ab%00c/change/", "/admin/jobs/file/ab%00c/change/", "/admin/jobs/batch/?status=%00"):
        response = admin_client.get(url)
        assert response.status_code == 400 and response["Content-Type"].startswith("text/html")


def test_a_create_with_neither_input_file_id_nor_file_says_one_is_required(raw_client, stored):
    for response in (create(raw_client, {"endpoint": ENDPOINT}), raw_client.post("/v1/batches", {"model": CHAT_MODEL})):
        error = assert_openai_error(response, 400, "invalid_value", "input_file_id")
        assert "one is required" in error["message"]
    stored.assert_unchanged()
