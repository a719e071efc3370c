from __future__ import annotations

import pytest

from jobs.models import ApiKey, Batch
from tests.conftest import chat_line, housekeeper_pass, jsonl

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["chunk", "file", "registeredmodel", "worker", "modelloadfailure", "apikey"])
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


def webhook_batch(client, upload, webhook_url: str = "https://hooks.example.test/b") -> Batch:
    file = upload(jsonl([chat_line(1), chat_line(2)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = client.post("/v1/batches", {**body, "webhook_url": webhook_url}, format="json")
    assert response.status_code == 200, response.content
    return Batch.objects.get(pk=response.json()["id"])


def test_a_batch_cannot_be_added_in_the_admin(staff):
    # It would skip validation and the lifecycle; batches come from the API and the pages.
    assert staff.get("/admin/jobs/batch/add/").status_code == 403
    assert staff.get("/admin/jobs/batch/").status_code == 200


def test_status_owner_and_files_are_read_only_in_the_admin(staff, client, models, upload, django_user_model):
    batch = webhook_batch(client, upload)
    mallory = django_user_model.objects.create_user("mallory")
    page = staff.get(f"/admin/jobs/batch/{batch.pk}/change/")
    assert page.status_code == 200
    form = page.content.decode()
    for field in ("status", "owner", "input_file", "output_file", "error_file", "completed", "metadata"):
        assert f'name="{field}"' not in form, field
    response = staff.post(
        f"/admin/jobs/batch/{batch.pk}/change/",
        {"status": "completed", "owner": mallory.pk, "output_file": "", "completed": 2, "total": 2},
    )
    assert response.status_code in (200, 302)
    after = Batch.objects.get(pk=batch.pk)
    assert (after.status, after.owner_id, after.completed) == ("in_progress", batch.owner_id, 0)
    from jobs.models import WebhookDelivery

    assert not WebhookDelivery.objects.filter(batch=after).exists()


def test_the_cancel_action_ends_the_batch_through_the_service_and_writes_its_webhook(staff, client, models, upload):
    from jobs.models import WebhookDelivery

    mine = webhook_batch(client, upload)
    response = staff.post(
        "/admin/jobs/batch/", {"action": "cancel_batches", "_selected_action": [mine.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "1 batch(es) cancelling or cancelled." in [str(m) for m in response.context["messages"]]
    mine.refresh_from_db()
    assert mine.status == "cancelling" and mine.cancelling_at is not None
    housekeeper_pass()  # the action left the finalize to the housekeeper (or a worker)
    mine.refresh_from_db()
    assert mine.status == "cancelled" and mine.cancelled_at is not None
    delivery = WebhookDelivery.objects.get(batch=mine)
    assert delivery.event_type == "batch.cancelled" and delivery.url == mine.webhook_url
    # The owner sees it as the API's cancel would leave it, error file and all.
    got = client.get(f"/v1/batches/{mine.pk}").json()
    assert got["status"] == "cancelled" and got["webhook_status"] == "pending" and got["error_file_id"]

    # A second cancel is the service's idempotent answer: no second event.
    again = staff.post("/admin/jobs/batch/", {"action": "cancel_batches", "_selected_action": [mine.pk]}, follow=True)
    assert again.status_code == 200 and WebhookDelivery.objects.filter(batch=mine).count() == 1


def test_the_retry_action_makes_a_new_batch_for_the_owner_not_the_admin(staff, client, models, upload, user):
    batch = webhook_batch(client, upload)
    staff.post("/admin/jobs/batch/", {"action": "cancel_batches", "_selected_action": [batch.pk]})
    housekeeper_pass()  # ends the cancelled batch: only a finished one can be retried
    response = staff.post(
        "/admin/jobs/batch/", {"action": "retry_batches", "_selected_action": [batch.pk]}, follow=True
    )
    assert "1 batch(es) retried." in [str(m) for m in response.context["messages"]]
    new = Batch.objects.exclude(pk=batch.pk).get()
    assert new.owner_id == user.pk and new.status == "in_progress" and new.total == 2


def test_an_action_the_lifecycle_refuses_is_reported_and_changes_nothing(staff, client, models, upload):
    batch = webhook_batch(client, upload)
    response = staff.post(
        "/admin/jobs/batch/", {"action": "retry_batches", "_selected_action": [batch.pk]}, follow=True
    )
    text = " ".join(str(m) for m in response.context["messages"])
    assert batch.pk in text and "only a finished batch can be retried" in text
    assert Batch.objects.count() == 1
