"""The submit and keys pages: the user's usage against their quotas, a quota refusal, and priority."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from jobs.models import Batch, File, Priority, Quota
from tests.conftest import chat_line, jsonl
from tests.web.conftest import signed_in, submit
from tests.web.test_hostile_forms import SURROGATE, form_fields, multipart, post_raw

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("models")]


def options(html: str, select: str) -> list[str]:
    block = re.search(rf'<select name="{select}".*?</select>', html, re.S)
    assert block is not None, html
    return re.findall(r'<option value="([^"]*)"', block.group(0))


def usage_section(html: str) -> str:
    start = html.index('id="quota-usage"')
    return html[start : html.index("</section>", start)]


def test_alice_at_her_quota_is_refused_on_the_page_and_bob_still_submits(web, user, bob_web):
    Quota.objects.create(user=user, max_queued_batches=1)
    assert submit(web, jsonl([chat_line(0)])).status_code == 302
    before = (Batch.objects.count(), File.objects.count())
    response = submit(web, jsonl([chat_line(0)]))
    assert response.status_code == 429
    page = response.content.decode()
    assert 'role="alert"' in page and "You have 1 batches queued or running; your limit is 1." in page
    assert (Batch.objects.count(), File.objects.count()) == before
    assert submit(bob_web, jsonl([chat_line(0)])).status_code == 302


def test_the_submit_and_keys_pages_show_usage_against_the_quotas(web, user):
    Quota.objects.create(user=user, max_queued_batches=7, max_queued_requests=12345)
    submit(web, jsonl([chat_line(i) for i in range(3)]))
    for path in ("/submit", "/keys"):
        section = usage_section(web.get(path).content.decode())
        cells = re.findall(r'<td class="num"[^>]*>([^<]*)</td>', section)
        assert cells[:4] == ["1", "7", "3", "12,345"], (path, cells)


def test_a_full_quota_is_marked_full(web, user):
    Quota.objects.create(user=user, max_queued_batches=0)
    assert "full" in usage_section(web.get("/submit").content.decode())


def test_high_is_offered_only_to_those_allowed(web, user, staff_web):
    assert options(web.get("/submit").content.decode(), "priority") == ["low", "normal"]
    assert options(staff_web.get("/submit").content.decode(), "priority") == ["low", "normal", "high"]
    user.user_permissions.add(Permission.objects.get(codename="high_priority"))
    assert "high" in options(signed_in(user).get("/submit").content.decode(), "priority")


def test_a_forged_high_priority_is_refused_and_stores_nothing(web):
    response = submit(web, jsonl([chat_line(0)]), priority="high")
    assert response.status_code == 400
    assert not Batch.objects.exists() and not File.objects.exists()


@pytest.mark.parametrize("value", [b"urgent", SURROGATE, b"HIGH", b"high" * 10_000])
def test_an_unknown_priority_is_a_form_error(web, value):
    # Raw bytes, as a script can send them (a browser cannot put a lone surrogate in a form).
    body, ctype = multipart(form_fields(priority=value), [("file", "in.jsonl", jsonl([chat_line(0)]))])
    response = post_raw(web, "/submit", body, ctype)
    assert response.status_code == 400
    assert b'id="id_priority"' in response.content
    assert not Batch.objects.exists() and not File.objects.exists()


def test_the_chosen_priority_is_kept_and_shown_on_the_batch_page(web, staff_web):
    response = submit(staff_web, jsonl([chat_line(0)]), priority="high")
    assert response.status_code == 302
    batch = Batch.objects.get()
    assert batch.priority == Priority.HIGH
    assert '<dd id="priority">High</dd>' in staff_web.get(response["Location"]).content.decode()
    response = submit(web, jsonl([chat_line(0)]), priority="low")
    assert Batch.objects.get(owner__username="alice").priority == Priority.LOW


def test_the_batch_list_marks_a_batch_that_is_not_normal_priority(web):
    submit(web, jsonl([chat_line(0)]), priority="low")
    submit(web, jsonl([chat_line(0)]))
    page = web.get("/batches").content.decode()
    assert page.count("low priority") == 1 and "normal priority" not in page
