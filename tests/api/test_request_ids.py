"""Every /v1 answer carries an x-request-id (also in its log line), and final refusals say x-should-retry: false."""

from __future__ import annotations

import logging
import re

import pytest
from django.test import Client

from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


def test_successes_and_errors_carry_unique_request_ids_named_in_the_log(client, caplog):
    caplog.set_level(logging.INFO, logger="batchsite.requests")
    answers = [client.get("/v1/batches"), client.get("/v1/batches/batch_nope"), client.get("/v1/nothing")]
    answers.append(Client().get("/v1/models"))  # no key: 401
    answers.append(Client(raise_request_exception=False).get("/v1/models", HTTP_HOST="evil.example"))  # 400 by Django
    assert [a.status_code for a in answers] == [200, 404, 404, 401, 400]
    ids = [a["x-request-id"] for a in answers]
    assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
    lines = [r.getMessage() for r in caplog.records if r.name == "batchsite.requests"]
    for request_id, answer in zip(ids, answers, strict=True):
        [line] = [x for x in lines if x.startswith(request_id)]
        assert f" {answer.status_code} " in line


def test_a_hostile_path_cannot_forge_a_log_line(client, caplog):
    caplog.set_level(logging.INFO, logger="batchsite.requests")
    client.get("/v1/a%0Afake%20line%0D%E2%80%A8" + "x" * 5000)
    [line] = [r.getMessage() for r in caplog.records if r.name == "batchsite.requests"]
    assert "\n" not in line and "\r" not in line and len(line) < 500


def test_a_client_sent_request_id_is_not_echoed(client):
    response = client.get("/v1/batches", HTTP_X_REQUEST_ID="req_chosen_by_client")
    assert response["x-request-id"] != "req_chosen_by_client" and REQUEST_ID.match(response["x-request-id"])


def test_final_refusals_say_do_not_retry_and_retryable_answers_do_not(client, models, upload, limits):
    file = upload(jsonl([chat_line(1)]))
    create = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    bad = upload(jsonl([{"custom_id": "a", "method": "POST"}]))  # no url or body: the batch fails at create
    failed = client.post("/v1/batches", {**create, "input_file_id": bad["id"]}, format="json").json()
    assert failed["status"] == "failed"
    finished = client.post(f"/v1/batches/{failed['id']}/cancel")  # a finished batch: 409, final
    refusals = [
        finished,
        client.post("/v1/batches", {**create, "completion_window": "1h"}, format="json"),  # 400
        client.get("/v1/batches/batch_nope"),  # 404
        client.put("/v1/batches"),  # 405
        Client().get("/v1/models"),  # 401
    ]
    assert [r.status_code for r in refusals] == [409, 400, 404, 405, 401]
    assert all(r["x-should-retry"] == "false" for r in refusals)
    limits(max_queued_batches=1)
    assert client.post("/v1/batches", create, format="json").status_code == 200
    full = client.post("/v1/batches", create, format="json")
    assert full.status_code == 429 and "x-should-retry" not in full  # trying later can work
    assert "x-should-retry" not in client.get("/v1/batches")
