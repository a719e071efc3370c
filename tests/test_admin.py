from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.test import Client

from jobs.models import ApiKey, Batch
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    get_user_model().objects.create_superuser("admin", "admin@example.test", "pw-admin-123")
    browser = Client()
    assert browser.login(request=HttpRequest(), username="admin", password="pw-admin-123")
    return browser


@pytest.mark.parametrize("model", ["batch", "chunk", "file", "registeredmodel", "worker", "modelloadfailure", "apikey"])
def test_every_model_has_an_admin_list_and_add_page(staff, model):
    assert staff.get(f"/admin/jobs/{model}/").status_code == 200
    assert staff.get(f"/admin/jobs/{model}/add/").status_code == 200


def test_batch_list_shows_status_model_counts_owner_and_is_searchable_by_metadata(staff, client, models, upload):
    file = upload(jsonl([chat_line(1), chat_line(2)]))
    for tag in ("alpha-run", "beta-run"):
        client.post(
            "/v1/batches",
            {
                "input_file_id": file["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"experiment": tag},
            },
            format="json",
        )
    page = staff.get("/admin/jobs/batch/").content.decode()
    for text in ("in_progress", "HuggingFaceTB/SmolLM2-135M-Instruct", "alice"):
        assert text in page
    found = staff.get("/admin/jobs/batch/?q=beta-run").content.decode()
    beta = Batch.objects.get(metadata__experiment="beta-run")
    alpha = Batch.objects.get(metadata__experiment="alpha-run")
    assert beta.id in found and alpha.id not in found
    assert alpha.id in staff.get(f"/admin/jobs/batch/?q={alpha.id}").content.decode()


def test_adding_a_key_in_the_admin_shows_it_once(staff, user):
    response = staff.post("/admin/jobs/apikey/add/", {"user": user.pk, "name": "ci"}, follow=True)
    assert response.status_code == 200
    message = next(str(m) for m in response.context["messages"])
    raw = message.rsplit(" ", 1)[-1]
    from jobs.models.keys import hash_key

    assert ApiKey.objects.filter(user=user, key_hash=hash_key(raw)).exists()
