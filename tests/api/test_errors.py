"""Every error under /v1/ is OpenAI-shaped, including DRF's and Django's own."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def assert_openai_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_unknown_url_is_a_json_404(client):
    assert_openai_error(client.get("/v1/nothing/here"), 404)


def test_unknown_url_is_a_json_404_even_with_debug(client, settings):
    settings.DEBUG = True
    assert_openai_error(client.get("/v1/chat/completions"), 404)


def test_wrong_method_is_a_json_405(client):
    assert assert_openai_error(client.put("/v1/batches"), 405)["code"] == "method_not_allowed"


def test_malformed_json_is_a_json_400(client):
    response = client.generic("POST", "/v1/batches", "{not json", content_type="application/json")
    assert assert_openai_error(response, 400)["code"] == "invalid_request_body"


def test_an_unexpected_exception_is_a_json_500(client, monkeypatch):
    from jobs.services import scheduling

    def boom():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(scheduling, "queue_plan", boom)
    api = Client(raise_request_exception=False, HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"])
    error = assert_openai_error(api.get("/v1/batches"), 500)
    assert error["type"] == "server_error" and "secret" not in error["message"]


def test_pages_outside_the_api_keep_html_errors(db):
    response = Client().get("/admin/nothing/")
    assert response.status_code in (302, 404)
    assert not response["Content-Type"].startswith("application/json")


def test_a_host_not_allowed_is_a_json_400_under_v1_and_html_elsewhere(db):
    api = Client(raise_request_exception=False)
    error = assert_openai_error(api.get("/v1/models", HTTP_HOST="evil.example"), 400)
    assert error["code"] == "invalid_host" and "ALLOWED_HOSTS" in error["message"]
    page = api.get("/admin/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and not page["Content-Type"].startswith("application/json")
