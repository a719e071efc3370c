"""GET /metrics: who may read it (a bearer token or a staff session) and in which format."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from batchsite.env import EnvError, Reader, metrics_token
from jobs.models import ApiKey

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def token(settings):
    settings.BATCHSITE_METRICS_TOKEN = TOKEN
    return TOKEN


def get(client: Client, authorization: str | None = None, **extra: str):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    return client.get("/metrics", **headers, **extra)


def refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code
    assert b"batchsite_" not in response.content


def test_the_token_reads_the_metrics_in_prometheus_text_format(token):
    response = get(Client(), f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert {"batchsite_batches", "batchsite_queued_requests", "batchsite_requests", "batchsite_workers"} <= set(
        families
    )
    assert families["batchsite_requests"].type == "counter"
    assert families["batchsite_queue_wait_seconds"].type == "histogram"
    assert all(name.startswith("batchsite_") for name in families)  # no per-process python_/process_ series
    assert get(Client(), f"bearer   {TOKEN}  ").status_code == 200  # the scheme is case-insensitive


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(token):
    response = get(Client(), f"Bearer {TOKEN}", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_without_credentials_it_is_a_401_with_a_bearer_challenge(token):
    response = get(Client())
    refused(response, 401, "missing_token")
    assert response["WWW-Authenticate"] == 'Bearer realm="batchsite metrics"'
    assert "BATCHSITE_METRICS_TOKEN" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        "Bearer",
        f"Bearer {TOKEN.upper()}",
        "Bearer " + "a" * 100_000,
        "Bearer \u00e9t\u00e9-" + TOKEN,
        "Bearer \udcff" + TOKEN,
        f"Bearer {TOKEN} {TOKEN}",
    ],
)
def test_a_wrong_token_is_refused(token, authorization):
    response = get(Client(), authorization)
    refused(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert TOKEN not in response.content.decode()


@pytest.mark.parametrize("authorization", ["Basic " + "dXNlcjpwYXNz", TOKEN, "Token " + TOKEN])
def test_other_schemes_are_not_a_token(token, authorization):
    refused(get(Client(), authorization), 401, "missing_token")


def test_a_users_api_key_is_not_the_metrics_token(token, user):
    refused(get(Client(), f"Bearer {ApiKey.generate(user)[1]}"), 401, "invalid_token")


def test_with_no_token_configured_a_bearer_is_refused_and_says_so(settings):
    settings.BATCHSITE_METRICS_TOKEN = ""
    response = get(Client(), "Bearer anything-at-all-here")
    refused(response, 401, "invalid_token")
    assert "No metrics token is configured" in response.json()["error"]["message"]
    refused(get(Client()), 401, "missing_token")


def test_a_staff_session_reads_them_and_other_users_get_a_403(django_user_model, settings):
    settings.BATCHSITE_METRICS_TOKEN = ""  # staff sessions work without a token
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("op", is_staff=True))
    assert get(staff).status_code == 200
    user = Client()
    user.force_login(django_user_model.objects.create_user("someone"))
    refused(get(user), 403, "not_staff")
    gone = Client()
    gone.force_login(django_user_model.objects.create_user("old-op", is_staff=True, is_active=False))
    refused(get(gone), 401, "missing_token")  # Django signs out an inactive user


def test_only_get(token):
    client = Client()
    for method in (client.post, client.put, client.delete):
        assert method("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.parametrize(
    "value, problem",
    [
        ("short", "at least 16"),
        ("has a space in it, long enough", "without spaces"),
        ("\u00e9" * 20, "printable ASCII"),
        ("tab\tinside-the-token-xx", "printable ASCII"),
        ("\udcff" * 20, "printable ASCII"),
    ],
)
def test_a_bad_metrics_token_stops_startup_naming_the_variable(value, problem):
    with pytest.raises(EnvError, match="BATCHSITE_METRICS_TOKEN") as info:
        metrics_token(Reader({"BATCHSITE_METRICS_TOKEN": value}))
    assert problem in str(info.value)
    assert metrics_token(Reader({})) == "" and metrics_token(Reader({"BATCHSITE_METRICS_TOKEN": TOKEN})) == TOKEN
