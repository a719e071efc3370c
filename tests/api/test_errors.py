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


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", ["/v1", "/v1/nothing", "/v1/batches/batch_x/nothing", "/v1/%F0%9F%98%80/\u00e9"])
@pytest.mark.parametrize("with_key", [True, False])
def test_every_method_to_an_unknown_url_is_a_json_404_without_any_csrf_page(api_key, method, path, with_key):
    # enforce_csrf_checks: as a real client, which never sends a CSRF token.
    api = Client(enforce_csrf_checks=True, raise_request_exception=False)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"} if with_key else {}
    response = api.generic(method, path, b'{"model": "x"}', content_type="application/json", **headers)
    assert response.status_code == 404, response.content
    if method != "HEAD":
        assert assert_openai_error(response, 404)["code"] == "unknown_url"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_online_endpoints_say_they_run_as_batch_lines(api_key, path, method):
    api = Client(enforce_csrf_checks=True, raise_request_exception=False)
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    response = api.generic(method, path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    error = assert_openai_error(response, 404)
    assert error["code"] == "unknown_url" and "/v1/batches" in error["message"] and f"'{path}'" in error["message"]


def test_a_session_post_to_an_unknown_api_url_is_json_too(client, user):
    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)
    browser.force_login(user)
    response = browser.post("/v1/nowhere", {"a": "b"})
    assert assert_openai_error(response, 404)["code"] == "unknown_url"
