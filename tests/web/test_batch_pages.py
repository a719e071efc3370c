"""Batch pages (Django's test client): who sees what, cancel, downloads, the live part, the list."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, BatchStatus, Chunk, File
from jobs.services import parts, results, stranded
from jobs.worker import GpuWorker
from tests.conftest import chat_line, housekeeper_pass, jsonl
from tests.web.conftest import HOOK, submit

pytestmark = pytest.mark.django_db


def make_batch(browser: Client, n: int = 3, **fields: Any) -> Batch:
    response = submit(browser, jsonl([chat_line(i) for i in range(n)]), **fields)
    assert response.status_code == 302, response.content.decode()
    return Batch.objects.get(pk=response["Location"].rsplit("/", 1)[1])


def test_the_owner_sees_the_whole_batch(web, models, loopback_webhooks):
    batch = make_batch(web, 4, webhook_url=HOOK, meta_key_0="team", meta_value_0="search")
    page = web.get(f"/batches/{batch.id}").content.decode()
    for text in (
        batch.id,
        "in progress",
        '<span id="done-count">0</span> / 4',
        "Queue position",
        HOOK,
        "team",
        "search",
    ):
        assert text in page, text
    assert "Created" in page and "Queued" in page and "Expires if not done" in page
    assert f'href="/batches/{batch.id}/files/input"' in page
    assert "Cancel batch" in page
    # The live part polls while the batch can still change.
    assert f'hx-get="/batches/{batch.id}/live"' in page and 'hx-trigger="every 2s"' in page


@pytest.mark.parametrize("path", ["", "/live", "/files/input"])
def test_another_users_batch_is_not_found_anywhere(web, bob_web, models, path):
    batch = make_batch(web, meta_key_0="codename", meta_value_0="bluebird")
    response = bob_web.get(f"/batches/{batch.id}{path}")
    assert response.status_code == 404
    assert b"bluebird" not in response.content and b"alice" not in response.content


def test_another_user_cannot_cancel_and_the_batch_is_untouched(web, bob_web, models):
    batch = make_batch(web)
    assert bob_web.post(f"/batches/{batch.id}/cancel").status_code == 404
    batch.refresh_from_db()
    assert batch.status == BatchStatus.IN_PROGRESS


def test_staff_see_and_cancel_anyones_batch(web, staff_web, models):
    batch = make_batch(web)
    page = staff_web.get(f"/batches/{batch.id}").content.decode()
    assert "<strong>alice</strong>'s batch" in page and "Cancel batch" in page
    assert staff_web.get(f"/batches/{batch.id}/files/input").status_code == 200
    response = staff_web.post(f"/batches/{batch.id}/cancel", follow=True)
    assert response.status_code == 200 and b"Cancelling:" in response.content
    housekeeper_pass()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELLED


def test_cancelling_a_queued_batch_from_its_page_answers_at_once_and_the_housekeeper_ends_it(web, client, models):
    batch = make_batch(web, 3)
    response = web.post(f"/batches/{batch.id}/cancel", follow=True)
    page = response.content.decode()
    assert "Cancelling:" in page and "Cancel batch" not in page
    # Once handed over to be finalized (an API read does it) it is stored as finalizing, and
    # still shown as OpenAI's cancelling, on the page and in the list.
    assert stranded.hand_over(batch.id)
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.FINALIZING
    assert 'class="status status-cancelling"' in web.get(f"/batches/{batch.id}/live").content.decode()
    assert batch.id in web.get("/batches?status=cancelling").content.decode()
    assert batch.id not in web.get("/batches?status=finalizing").content.decode()
    housekeeper_pass()
    assert client.get(f"/v1/batches/{batch.id}").json()["status"] == "cancelled"
    # The cancelled lines are in the error file, downloadable from the page.
    lines = b"".join(web.get(f"/batches/{batch.id}/files/error").streaming_content).splitlines()
    assert [json.loads(x)["error"]["code"] for x in lines] == ["batch_cancelled"] * 3
    # The page stops polling once the batch has ended.
    assert 'hx-trigger="every' not in web.get(f"/batches/{batch.id}/live").content.decode()


def test_cancelling_a_finished_batch_says_why_not(web, models):
    batch = make_batch(web)
    web.post(f"/batches/{batch.id}/cancel")
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.COMPLETED)
    response = web.post(f"/batches/{batch.id}/cancel", follow=True)
    assert response.status_code == 200
    assert b"Cannot cancel a batch with status &#x27;completed&#x27;." in response.content


def test_cancel_needs_a_post(web, models):
    batch = make_batch(web)
    assert web.get(f"/batches/{batch.id}/cancel").status_code == 405
    assert Batch.objects.get().status == BatchStatus.IN_PROGRESS


@pytest.mark.django_db(transaction=True)
def test_a_finished_batch_offers_its_output_and_error_files(web, models, user):
    lines = [chat_line(i) for i in range(4)]
    lines[2]["body"]["sim_fail"] = 400  # the SIMULATED engine answers this line with an error
    response = submit(web, jsonl(lines))
    batch_id = response["Location"].rsplit("/", 1)[1]
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0
    page = web.get(f"/batches/{batch_id}").content.decode()
    assert "completed" in page and "100%" in page and "Output file" in page and "Error file" in page
    assert 'hx-trigger="every' not in page
    output = web.get(f"/batches/{batch_id}/files/output")
    assert output["Content-Disposition"] == f'attachment; filename="{batch_id}_output.jsonl"'
    custom_ids = [json.loads(x)["custom_id"] for x in b"".join(output.streaming_content).splitlines()]
    assert custom_ids == ["req-0", "req-1", "req-3"]
    errors = b"".join(web.get(f"/batches/{batch_id}/files/error").streaming_content).splitlines()
    assert [json.loads(x)["custom_id"] for x in errors] == ["req-2"]
    assert web.get(f"/batches/{batch_id}/files/input").status_code == 200


def test_downloads_of_missing_expired_or_unknown_files_are_not_found(web, client, models):
    from datetime import timedelta

    from django.utils import timezone

    batch = make_batch(web)
    assert web.get(f"/batches/{batch.id}/files/output").status_code == 404  # not finished yet
    assert web.get(f"/batches/{batch.id}/files/secrets").status_code == 404
    File.objects.filter(pk=batch.input_file_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert web.get(f"/batches/{batch.id}/files/input").status_code == 404  # expired, not yet swept
    File.objects.filter(pk=batch.input_file_id).update(expires_at=None)
    web.post(f"/batches/{batch.id}/cancel")
    housekeeper_pass()  # ends it: the input of a running batch cannot be deleted
    assert client.delete(f"/v1/files/{batch.input_file_id}").status_code == 200
    assert web.get(f"/batches/{batch.id}/files/input").status_code == 404
    assert web.get(f"/batches/{batch.id}").status_code == 200  # the page still renders


def test_a_failed_batch_shows_its_line_errors(web, models):
    submit(web, jsonl([chat_line(0), b"[1, 2]", chat_line(0)]))
    batch = Batch.objects.get()
    page = web.get(f"/batches/{batch.id}").content.decode()
    assert "failed" in page and "2 problems" in page
    assert "Line 2</span> Line 2 is a JSON list, not an object." in page
    assert "duplicate_custom_id" in page and "Cancel batch" not in page


def test_the_webhook_and_its_delivery_state_are_followed_until_the_event_is_out(web, models, loopback_webhooks):
    from jobs.models import DeliveryStatus, WebhookDelivery

    batch = make_batch(web, webhook_url=HOOK)
    live = web.get(f"/batches/{batch.id}/live").content.decode()
    assert '<span class="status status-pending">pending</span>' in live
    web.post(f"/batches/{batch.id}/cancel")
    housekeeper_pass()  # the batch ends: its event is written to the outbox
    delivery = WebhookDelivery.objects.get(batch=batch)
    live = web.get(f"/batches/{batch.id}/live").content.decode()
    assert "cancelled" in live and 'hx-trigger="every 2s"' in live  # still following: the event is not out
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILING)
    live = web.get(f"/batches/{batch.id}/live").content.decode()
    assert '<span class="status status-failing">failing</span>' in live and "hx-trigger" not in live
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.DELIVERED)
    assert "status-delivered" in web.get(f"/batches/{batch.id}").content.decode()


def test_a_batch_without_a_webhook_shows_no_delivery_state(web, models):
    batch = make_batch(web)
    page = web.get(f"/batches/{batch.id}").content.decode()
    assert 'id="webhook-status"' not in page and '<dd id="webhook">—</dd>' in page


@pytest.mark.parametrize(
    ("batch_id", "status"),
    [
        ("x" * 5000, 404),
        ("batch_%F0%9F%98%80", 404),
        ("..%2F..%2Fetc%2Fpasswd", 404),
        ("%ED%A0%80", 404),
        ("%00", 400),  # refused before any view (jobs.api.errors.RefuseNulMiddleware)
        ("batch_%00abc", 400),
    ],
)
def test_hostile_batch_ids_are_refused_or_simply_not_found(web, batch_id, status):
    for path in (f"/batches/{batch_id}", f"/batches/{batch_id}/live", f"/batches/{batch_id}/files/input"):
        assert web.get(path).status_code == status, path
    assert web.post(f"/batches/{batch_id}/cancel").status_code == status


def test_the_list_pages_and_filters_by_status(web, models, limits):
    limits(max_queued_batches=100, user_max_queued_batches=100)
    made = [make_batch(web, 1) for _ in range(27)]
    web.post(f"/batches/{made[0].id}/cancel")
    housekeeper_pass()
    first = web.get("/batches").content.decode()
    assert "Page 1 of 2 · 27 batches" in first
    assert made[-1].id in first and made[0].id not in first  # newest first
    second = web.get("/batches?page=2").content.decode()
    assert made[0].id in second and made[1].id in second
    cancelled = web.get("/batches?status=cancelled").content.decode()
    assert "1 batch" in cancelled and made[0].id in cancelled and made[1].id not in cancelled
    # Nonsense in the query string is survivable.
    assert "Page 1 of 2" in web.get("/batches?page=abc").content.decode()
    assert "Page 2 of 2" in web.get("/batches?page=99999999999999999999999999").content.decode()
    bogus = web.get("/batches?status=bogus").content.decode()
    assert "That status does not exist" in bogus and "27 batches" in bogus


def test_the_list_shows_only_ones_own_unless_staff_asks_for_everyone(web, bob_web, staff_web, models):
    mine = make_batch(web)
    bobs = make_batch(bob_web)
    page = web.get("/batches?everyone=on").content.decode()
    assert mine.id in page and bobs.id not in page
    assert bobs.id not in staff_web.get("/batches").content.decode()
    everyone = staff_web.get("/batches?everyone=on").content.decode()
    assert mine.id in everyone and bobs.id in everyone and "<th>Owner</th>" in everyone


def test_a_stored_file_row_without_bytes_is_a_404_not_a_500(web, models, settings):
    batch = make_batch(web)
    web.post(f"/batches/{batch.id}/cancel")
    File.objects.filter(pk=batch.input_file_id).update(storage_name="gone/away.jsonl")
    assert web.get(f"/batches/{batch.id}/files/input").status_code == 404


def test_a_running_batch_offers_its_results_so_far_from_its_page(web, bob_web, models):
    """The page's "Download results so far" link (issue 19 item 1): the same lines as
    GET /v1/batches/{id}/results, here a chunk's recorded part while the batch still runs."""
    batch = make_batch(web, 3)
    ok = results.result_line("req-0", 200, "r0", {"ok": True})
    bad = results.error_line("req-1", "invalid_line", "Line 2 is not valid.")
    part = parts.write(batch.id, 0, 1, [ok], [bad], [0, 1], {})
    Chunk.objects.filter(batch=batch, index=0).update(parts=[part.to_json()], fence=2)
    page = web.get(f"/batches/{batch.id}/live").content.decode()
    assert f'href="/batches/{batch.id}/results/output"' in page and "Download results so far" in page
    output = web.get(f"/batches/{batch.id}/results/output")
    assert output["Content-Disposition"] == f'attachment; filename="{batch.id}_output_so_far.jsonl"'
    assert b"".join(output.streaming_content) == ok
    assert b"".join(web.get(f"/batches/{batch.id}/results/error").streaming_content) == bad
    # Hostile kinds and other users' batches are not found; a finished batch no longer offers it.
    for path in (
        f"/batches/{batch.id}/results/input",
        f"/batches/{batch.id}/results/%ED%A0%80",
        "/batches/batch_nope/results/output",
    ):
        assert web.get(path).status_code == 404, path
    assert bob_web.get(f"/batches/{batch.id}/results/output").status_code == 404
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.CANCELLED)
    assert "results so far" not in web.get(f"/batches/{batch.id}/live").content.decode()


def test_cancelling_with_nothing_running_does_not_promise_running_requests(web, models):
    batch = make_batch(web, 2)
    page = web.post(f"/batches/{batch.id}/cancel", follow=True).content.decode()
    assert "none of its requests had started" in page and "already running finish" not in page
