"""The submit page (Django's test client): the dropdown, creating through the API's
service, line errors on the form, limits, and input a hostile user would send."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from jobs.models import Batch, BatchStatus, File, RegisteredModel
from tests.conftest import CHAT_MODEL, EMBED_MODEL, chat_line, jsonl, stored_files
from tests.web.conftest import HOOK, only_batch, submit

pytestmark = pytest.mark.django_db


def options(html: str, select: str) -> list[str]:
    block = re.search(rf'<select name="{select}".*?</select>', html, re.S)
    assert block is not None, html
    return re.findall(r'<option value="([^"]*)"', block.group(0))


def test_the_model_dropdown_lists_exactly_what_v1_models_lists(web, client, models):
    RegisteredModel.objects.create(name="off/model", source="/x", endpoints=["chat"], enabled=False)
    api = [m["id"] for m in client.get("/v1/models").json()["data"]]
    page = web.get("/submit").content.decode()
    assert [o for o in options(page, "model") if o] == api == sorted([CHAT_MODEL, EMBED_MODEL])
    # Grouped by what they serve, so an embeddings model is not among the chat ones.
    assert '<optgroup label="Chat and Completions">' in page and '<optgroup label="Embeddings">' in page
    select = page[page.index('<select name="model"') :]
    assert select.index(EMBED_MODEL) > select.index('<optgroup label="Embeddings">') > select.index(CHAT_MODEL)
    # The page's script gets each model's endpoints to filter the endpoint choice.
    assert '"sentence-transformers/all-MiniLM-L6-v2": ["/v1/embeddings"]' in page


def test_the_only_model_and_a_model_in_the_query_are_preselected(web, models):
    page = web.get(f"/submit?model={EMBED_MODEL}").content.decode()
    assert f'<option value="{EMBED_MODEL}" selected>' in page
    RegisteredModel.objects.filter(name=EMBED_MODEL).delete()
    assert f'<option value="{CHAT_MODEL}" selected>' in web.get("/submit").content.decode()


def test_a_page_with_no_model_says_how_to_add_one(web, db):
    assert b"register_model" in web.get("/submit").content


def test_submitting_creates_the_batch_through_the_apis_service_and_lands_on_its_page(
    web, client, models, user, loopback_webhooks
):
    response = submit(
        web,
        jsonl([chat_line(i) for i in range(5)]),
        endpoint="/v1/chat/completions",
        webhook_url=HOOK,
        meta_key_0="project",
        meta_value_0="demo",
        meta_key_3="run",
        meta_value_3=" 7 ",
    )
    batch = only_batch()
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.id}"
    assert batch.owner == user and batch.status == BatchStatus.IN_PROGRESS and batch.total == 5
    assert batch.metadata == {"project": "demo", "run": " 7 "}
    assert batch.webhook_url == HOOK
    # The same batch the SDK sees, input file included.
    body = client.get(f"/v1/batches/{batch.id}").json()
    assert body["model"] == CHAT_MODEL and body["endpoint"] == "/v1/chat/completions"
    assert body["queue_position"] == 1 and body["metadata"] == {"project": "demo", "run": " 7 "}
    assert client.get(f"/v1/files/{batch.input_file_id}").json()["filename"] == "requests.jsonl"
    page = web.get(response["Location"]).content.decode()
    assert batch.id in page and HOOK in page and "demo" in page


def test_lines_may_leave_out_the_model_the_form_chose(web, models):
    lines = [chat_line(i) for i in range(3)]
    for line in lines:
        del line["body"]["model"]
    assert submit(web, jsonl(lines)).status_code == 302
    assert only_batch().model == CHAT_MODEL


def test_bad_lines_are_named_on_the_form_which_keeps_the_users_choices(web, models, loopback_webhooks):
    lines: list[Any] = [chat_line(i) for i in range(6)]
    lines[1] = b"{not json"
    lines[3] = chat_line(0)  # a duplicate custom_id
    lines[4] = chat_line(4, method="GET")
    response = submit(
        web,
        jsonl(lines),
        endpoint="/v1/chat/completions",
        webhook_url=HOOK,
        meta_key_0="team",
        meta_value_0="search",
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "3 problems" in page
    for number, code in ((2, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_method")):
        assert re.search(rf"Line {number}</span>.*?{code}", page, re.S), (number, code)
    # What the user chose is still there; the file must be chosen again.
    assert f'<option value="{CHAT_MODEL}" selected>' in page
    assert '<option value="/v1/chat/completions" selected>' in page
    assert f'value="{HOOK}"' in page and 'value="team"' in page and 'value="search"' in page
    assert "Choose the file again" in page
    # As through the API (and OpenAI), the refused file is kept as a failed batch, not queued.
    batch = only_batch()
    assert batch.status == BatchStatus.FAILED and batch.id in page


def test_run_the_valid_lines_queues_them_and_counts_the_bad_ones_as_failed(web, models):
    lines: list[Any] = [chat_line(i) for i in range(4)]
    lines[2] = b"{not json"
    page = web.get("/submit").content.decode()
    assert 'name="skip_invalid"' in page and "Run the valid lines" in page
    response = submit(web, jsonl(lines), skip_invalid="on")
    assert response.status_code == 302
    batch = only_batch()
    assert batch.status == BatchStatus.IN_PROGRESS and (batch.total, batch.failed) == (4, 1)
    # Unticked, the same file fails as OpenAI fails it.
    assert submit(web, jsonl(lines)).status_code == 400


def test_many_bad_lines_show_the_first_ones_and_the_total(web, models, limits):
    limits(max_validation_errors=30)
    response = submit(web, jsonl([b"nope"] * 45))
    page = response.content.decode()
    assert "45 problems, the first 20 shown" in page
    assert "Line 20</span>" in page and "Line 21</span>" not in page


def test_a_file_without_requests_is_explained(web, models):
    page = submit(web, b"\n\n").content.decode()
    assert "The input file has no requests." in page


def test_a_model_that_does_not_serve_the_endpoint_is_refused_next_to_the_model(web, models):
    response = submit(web, jsonl([chat_line(1, model=EMBED_MODEL)]), model=EMBED_MODEL, endpoint="/v1/chat/completions")
    assert response.status_code == 400
    assert b"does not serve /v1/chat/completions" in response.content
    assert not Batch.objects.exists() and not stored_files_in_db()


def stored_files_in_db() -> bool:
    return File.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "no/such-model", "Select a valid choice"),
        ("model", "", "This field is required"),
        ("endpoint", "/v1/images", "Select a valid choice"),
        ("completion_window", "7d", "Select a valid choice"),
        ("webhook_url", "javascript:alert(1)", "Enter a valid URL"),
        ("webhook_url", "ftp://files.example.com/x", "Enter a valid URL"),
        ("webhook_url", "https://x.example/" + "a" * 2100, "at most 2048 characters"),
        ("meta_key_0", "k" * 65, "at most 64 characters"),
        ("meta_value_0", "v" * 513, "at most 512 characters"),
    ],
)
def test_wrong_or_huge_fields_are_refused_by_name_and_nothing_is_stored(web, models, settings, field, value, message):
    fields = {"meta_key_0": "k", "meta_value_0": "v", field: value}
    response = submit(web, jsonl([chat_line(1)]), **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Batch.objects.exists() and not File.objects.exists() and stored_files(settings) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local address"),
        ("http://127.0.0.1:8000/v1/batches", "loopback address"),
        ("http://10.1.2.3/hook", "private address"),
    ],
)
def test_a_webhook_url_into_the_operators_network_is_refused_next_to_the_field(web, models, settings, url, why):
    response = submit(web, jsonl([chat_line(1)]), webhook_url=url)
    assert response.status_code == 400
    page = response.content.decode()
    field = page[page.index('id="id_webhook_url"') : page.index("Metadata")]
    assert why in field
    assert not Batch.objects.exists() and stored_files(settings) == []


def test_metadata_values_need_keys_and_keys_are_unique(web, models):
    page = submit(web, jsonl([chat_line(1)]), meta_value_0="orphan", meta_key_1="a", meta_key_2="a").content.decode()
    assert "A metadata value needs a key." in page and "The key &#x27;a&#x27; is used twice." in page
    assert not Batch.objects.exists()


def test_null_characters_are_refused_before_the_database_sees_them(web, models):
    # PostgreSQL refuses NUL in text and JSON; a form value with one must be a form error, not a 500.
    for field in ("meta_key_0", "meta_value_0"):
        response = submit(web, jsonl([chat_line(1)]), **{"meta_key_0": "k", field: "a\x00b"})
        assert response.status_code == 400 and b"Null characters are not allowed" in response.content
    assert not Batch.objects.exists()


def test_a_file_past_the_upload_limit_is_shown_on_the_page_and_nothing_is_kept(web, models, limits, settings):
    limits(max_upload_bytes=2000)
    response = submit(web, jsonl([chat_line(i) for i in range(40)]), meta_key_0="team", meta_value_0="x")
    assert response.status_code == 413
    assert b"File is too large: the limit is 2000 bytes" in response.content
    assert b'id="submit-form"' in response.content  # the form again, to choose another file
    assert not Batch.objects.exists() and stored_files(settings) == []


def test_too_many_requests_for_one_batch_is_explained(web, models, limits, settings):
    limits(max_requests_per_batch=3)
    response = submit(web, jsonl([chat_line(i) for i in range(4)]))
    assert response.status_code == 400
    assert b"more than 3 requests" in response.content
    assert not Batch.objects.exists() and stored_files(settings) == []


def test_a_full_queue_is_explained_and_stores_nothing(web, models, limits, settings):
    limits(max_queued_batches=1)
    assert submit(web, jsonl([chat_line(1)])).status_code == 302
    response = submit(web, jsonl([chat_line(2)]))
    assert response.status_code == 429
    assert b"The queue is full" in response.content
    assert Batch.objects.count() == 1 and File.objects.count() == 1


def test_a_stranger_cannot_submit(models, settings):
    response = submit(Client(), jsonl([chat_line(1)]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Batch.objects.exists() and stored_files(settings) == []
