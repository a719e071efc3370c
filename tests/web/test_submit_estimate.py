"""The submit page's "Estimate first": the numbers before anything is queued, then one click
to submit the stored file (the counting child runs vLLM's renderer on the demo chat model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, BatchStatus, File, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl
from tests.web.conftest import submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def real_chat_model(db: Any, smollm2_dir: Path) -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        # The counting child (about 15 s each) reads no database: the SQLite pass runs these.
        pytest.skip("the SQLite pass runs the token-counting tests")
    RegisteredModel.objects.create(name=CHAT_MODEL, source=str(smollm2_dir), endpoints=["chat", "completions"])


def test_estimate_first_shows_the_numbers_queues_nothing_and_confirm_submits_the_stored_file(web, real_chat_model):
    response = submit(web, jsonl([chat_line(i) for i in range(4)]), action="estimate", meta_key_0="k", meta_value_0="v")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="estimate"' in page and 'id="estimate-requests">4<' in page
    assert "Submit this batch" in page
    assert not Batch.objects.exists()
    stored = File.objects.get()
    assert f'value="{stored.id}"' in page  # the confirm form carries the stored file
    assert 'value="v"' in page  # and the user's choices
    confirm = web.post(
        "/submit",
        {"input_file_id": stored.id, "model": CHAT_MODEL, "endpoint": "", "completion_window": "24h"}
        | {"meta_key_0": "k", "meta_value_0": "v"},
    )
    assert confirm.status_code == 302, confirm.content.decode()[:2000]
    batch = Batch.objects.get()
    assert batch.input_file_id == stored.id and batch.status == BatchStatus.IN_PROGRESS
    assert batch.metadata == {"k": "v"} and File.objects.count() == 1


def test_estimate_first_with_run_the_valid_lines_counts_only_the_valid_ones(web, real_chat_model):
    lines = [chat_line(0), {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": "no"}]
    refused = submit(web, jsonl(lines), action="estimate")
    assert "Line 2: body must be" in refused.content.decode() and 'id="estimate"' not in refused.content.decode()
    page = submit(web, jsonl(lines), action="estimate", skip_invalid="on").content.decode()
    assert 'id="estimate-requests">1<' in page and 'id="estimate-skipped">1 ' in page
    assert not Batch.objects.exists()


def test_confirming_with_another_users_file_is_refused_and_queues_nothing(web, bob_web, real_chat_model):
    submit(bob_web, jsonl([chat_line(0)]), action="estimate")
    theirs = File.objects.get()
    response = web.post("/submit", {"input_file_id": theirs.id, "model": CHAT_MODEL, "completion_window": "24h"})
    assert response.status_code in (400, 404)
    assert "No such file" in response.content.decode()
    assert not Batch.objects.exists()


@pytest.mark.parametrize("file_id", [b"", b"file-%ED%A0%80", b"x" * 65, b"..%2F..%2Fetc%2Fpasswd", b"file-%00"])
def test_a_hostile_input_file_id_on_the_form_queues_nothing(web, models, file_id):
    # Raw form bytes: %ED%A0%80 is a lone surrogate's UTF-8 (surrogatepass), which no browser sends.
    body = b"input_file_id=" + file_id + b"&model=" + CHAT_MODEL.encode() + b"&completion_window=24h&action=estimate"
    response = web.post("/submit", body, content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500
    assert not Batch.objects.exists() and not File.objects.exists()
