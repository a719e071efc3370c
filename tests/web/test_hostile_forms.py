"""Hostile bodies sent to the pages' forms: never a 5xx, nothing stored on refusal, and
whatever is stored still renders everywhere (pages, list, dashboard, admin).

A browser cannot put a lone UTF-16 surrogate in a form, but a script can send
its bytes (ED A0 80, "\\ud800" encoded with surrogatepass): Django decodes form
bodies with errors="replace", and these tests hold it to that.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.test import Client

from jobs.models import ApiKey, Batch
from tests.conftest import CHAT_MODEL, chat_line, jsonl, stored_files
from tests.web.conftest import signed_in

pytestmark = pytest.mark.django_db

SURROGATE = "\ud800".encode("utf-8", "surrogatepass")


def multipart(fields: list[tuple[str, bytes]], files: list[tuple[str, str, bytes]] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body from raw bytes, as a script (not a browser) can send it."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        )
    for name, filename, content in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="'.encode()
        parts.append(
            head
            + filename.encode("utf-8", "surrogatepass")
            + b'"\r\nContent-Type: application/jsonl\r\n\r\n'
            + content
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_raw(browser: Client, path: str, body: bytes, content_type: str) -> Any:
    return browser.generic("POST", path, body, content_type=content_type)


def form_fields(**overrides: bytes) -> list[tuple[str, bytes]]:
    fields = {"model": CHAT_MODEL.encode(), "endpoint": b"", "completion_window": b"24h", "webhook_url": b""}
    fields.update(overrides)
    return list(fields.items())


def everything_renders(browser: Client, staff: Client, batch: Batch) -> None:
    for path in (f"/batches/{batch.id}", "/batches", "/dashboard", "/dashboard/live", f"/batches/{batch.id}/live"):
        assert browser.get(path).status_code == 200, path
    assert staff.get("/admin/jobs/batch/").status_code == 200
    # The admin escapes ids in its URLs ("_" is "_5F"): unescaped, "batch_25…" would read as "batch%…".
    assert staff.get(f"/admin/jobs/batch/{quote(batch.id)}/change/").status_code == 200


@pytest.fixture
def admin_browser(db: Any) -> Client:
    from django.contrib.auth import get_user_model

    return signed_in(get_user_model().objects.create_superuser("root", "", "pw-root-123"))


@pytest.mark.parametrize("field", ["meta_key_0", "meta_value_0"])
def test_lone_surrogates_in_metadata_are_stored_replaced_and_render(web, admin_browser, models, field):
    other = "meta_value_0" if field == "meta_key_0" else "meta_key_0"
    body, ctype = multipart(
        form_fields(**{field: b"x" + SURROGATE + b"y", other: b"ok"}),
        [("file", "in.jsonl", jsonl([chat_line(1)]))],
    )
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 302, response.content.decode()
    batch = Batch.objects.get()
    assert "x\ufffd\ufffd\ufffdy" in [*batch.metadata.keys(), *batch.metadata.values()]
    everything_renders(web, admin_browser, batch)


def test_a_lone_surrogate_in_the_file_name_loses_the_file_and_says_so(web, models, settings):
    # Django's multipart parser drops a file part whose name it cannot decode.
    body, ctype = multipart(form_fields(), [("file", "in\ud800.jsonl", jsonl([chat_line(1)]))])
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 400 and b"This field is required" in response.content
    assert not Batch.objects.exists() and stored_files(settings) == []


def test_a_lone_surrogate_in_the_webhook_url_is_stored_replaced_and_renders(
    web, admin_browser, models, loopback_webhooks
):
    body, ctype = multipart(
        form_fields(webhook_url=b"http://127.0.0.1:9/" + SURROGATE),
        [("file", "in.jsonl", jsonl([chat_line(1)]))],
    )
    assert post_raw(web, "/submit", body, ctype).status_code == 302
    batch = Batch.objects.get()
    assert batch.webhook_url == "http://127.0.0.1:9/\ufffd\ufffd\ufffd"
    everything_renders(web, admin_browser, batch)


def test_a_lone_surrogate_in_the_model_name_is_an_unknown_model(web, models, settings):
    body, ctype = multipart(form_fields(model=SURROGATE), [("file", "in.jsonl", jsonl([chat_line(1)]))])
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not Batch.objects.exists() and stored_files(settings) == []


def test_a_urlencoded_surrogate_in_a_key_name_is_replaced_and_renders(web, user):
    response = post_raw(web, "/keys", b"name=a%ED%A0%80b", "application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert ApiKey.objects.get().name == "a\ufffd\ufffd\ufffdb"
    assert web.get("/keys").status_code == 200


def test_a_file_field_sent_as_a_plain_value_is_a_form_error(web, models, settings):
    body, ctype = multipart(form_fields(file=b"not a file"))
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 400 and b"This field is required" in response.content
    assert not Batch.objects.exists()


@pytest.mark.parametrize("path", ["/submit", "/keys", "/accounts/login/", "/batches/batch_x/cancel"])
def test_a_thousand_and_one_fields_is_a_400_page(web, models, path):
    body = "&".join(f"f{i}=x" for i in range(1001)).encode()
    response = post_raw(web, path, body, "application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert b"too many fields" in response.content
    assert not Batch.objects.exists() and not ApiKey.objects.exists()


def test_a_hundred_and_one_files_is_a_400_page(web, models, settings):
    files = [("file", f"f{i}.jsonl", b"{}\n") for i in range(101)]
    body, ctype = multipart(form_fields(), files)
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 400 and b"too many files" in response.content
    assert not Batch.objects.exists() and stored_files(settings) == []


@pytest.mark.parametrize("path", ["/submit", "/keys", "/accounts/login/"])
def test_a_field_past_djangos_memory_limit_is_a_413_page(web, models, path):
    body, ctype = multipart([("name", b"n" * (3 * 1024 * 1024))])
    response = post_raw(web, path, body, ctype)
    assert response.status_code == 413 and b"too large" in response.content


@pytest.mark.parametrize("path", ["/keys", "/accounts/login/", "/admin/login/", "/batches/batch_x/cancel"])
def test_a_file_past_the_upload_limit_sent_to_any_form_is_a_413_page_not_a_500(web, limits, settings, path):
    limits(max_upload_bytes=1000)
    body, ctype = multipart([("name", b"k")], [("file", "big.jsonl", b"x" * 5000)])
    response = post_raw(web, path, body, ctype)
    assert response.status_code == 413 and b"File is too large" in response.content
    assert stored_files(settings) == [] and not ApiKey.objects.exists()


@pytest.mark.parametrize("path", ["/submit", "/keys"])
def test_a_malformed_multipart_body_is_a_400_page(web, models, path):
    response = post_raw(web, path, b"--x\r\nContent-Disposition: form-data\r\n\r\nabc", "multipart/form-data")
    assert response.status_code == 400
    assert not Batch.objects.exists() and not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": [CHAT_MODEL, "other"]}, "Select a valid choice"),  # repeated: the last value counts
        ({"completion_window": ""}, "This field is required"),
        ({"endpoint": "/v1/chat/completions\x00"}, "Select a valid choice"),
        ({"file": "plain text"}, "This field is required"),
    ],
)
def test_wrong_types_in_the_submit_form_are_form_errors(web, models, settings, fields, message):
    from tests.web.conftest import jsonl_file

    data: dict[str, Any] = {"model": CHAT_MODEL, "completion_window": "24h", "file": jsonl_file(jsonl([chat_line(1)]))}
    data.update(fields)
    response = web.post("/submit", data)
    assert response.status_code == 400 and message in response.content.decode()
    assert not Batch.objects.exists() and stored_files(settings) == []
