"""Quotas are edited in the admin: their own list, and inline on a user's and a group's page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from jobs.models import Quota
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db


def inline_form(prefix: str, **values: str) -> dict[str, str]:
    form = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1"}
    form.update({f"{prefix}-0-{name}": value for name, value in values.items()})
    return form


def test_the_quota_list_and_add_page_answer(staff):
    Quota.objects.create(group=Group.objects.create(name="team"), max_queued_batches=2)
    page = staff.get("/admin/jobs/quota/")
    assert page.status_code == 200 and b"quota for team" in page.content
    assert staff.get("/admin/jobs/quota/add/").status_code == 200


def test_a_group_quota_is_set_on_the_groups_page(staff):
    team = Group.objects.create(name="team")
    assert b"max_queued_batches" in staff.get(f"/admin/auth/group/{team.pk}/change/").content
    form = {"name": "team", **inline_form("quota", max_queued_batches="4", max_stored_bytes=str(10**18))}
    response = staff.post(f"/admin/auth/group/{team.pk}/change/", form)
    assert response.status_code == 302, response.content[:3000]
    quota = Quota.objects.get(group=team)
    assert (quota.max_queued_batches, quota.max_stored_bytes, quota.max_queued_requests) == (4, 10**18, None)


def test_a_user_quota_is_set_on_the_users_page(staff):
    alice = get_user_model().objects.create_user("alice")
    assert b"max_queued_requests" in staff.get(f"/admin/auth/user/{alice.pk}/change/").content


def test_a_negative_quota_is_refused_in_the_admin(staff):
    team = Group.objects.create(name="team")
    form = {"name": "team", **inline_form("quota", max_queued_batches="-1")}
    response = staff.post(f"/admin/auth/group/{team.pk}/change/", form)
    assert response.status_code == 200 and not Quota.objects.exists()


def test_the_batch_list_shows_priority(staff, client, models, upload):
    file = upload(jsonl([chat_line(1)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    client.post("/v1/batches", {**body, "priority": "low"}, format="json")
    page = staff.get("/admin/jobs/batch/?priority__exact=-1").content.decode()
    assert "column-priority" in page and ">low<" in page


def test_fair_share_usage_and_worker_time_are_listed_read_only(staff):
    from django.utils import timezone

    from jobs.models import ShareUsage, WorkerTime

    alice = get_user_model().objects.create_user("alice")
    now = timezone.now()
    usage = ShareUsage.objects.create(user=alice, seconds=1234.0, updated_at=now)
    spent = WorkerTime.objects.create(user=alice, started_at=now, ended_at=now, seconds=56.5)
    for url, shown in (("/admin/jobs/shareusage/", "1234.0"), ("/admin/jobs/workertime/", "56.5")):
        page = staff.get(url)
        assert page.status_code == 200 and "alice" in page.content.decode() and shown in page.content.decode()
        assert staff.get(url + "?q=alice").status_code == 200
        assert staff.get(url + "?q=%ED%A0%80").status_code == 200  # a lone surrogate's bytes, percent-encoded
        assert staff.get(url + "add/").status_code == 403
    view = staff.get(f"/admin/jobs/shareusage/{alice.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()  # shown, not editable
    assert staff.post(f"/admin/jobs/shareusage/{alice.pk}/change/", {"seconds": "0"}).status_code == 403
    assert staff.post(f"/admin/jobs/workertime/{spent.pk}/delete/", {"post": "yes"}).status_code == 403
    usage.refresh_from_db()
    assert usage.seconds == 1234.0 and WorkerTime.objects.filter(pk=spent.pk).exists()
