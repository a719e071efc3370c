"""The dashboard's Sharing section (Django's test client): each user's part of the last
hour's worker time and their wait, with other users anonymous to anyone but staff.

Worker time is given as WorkerTime rows, the record a worker's ended claim leaves
(tests/services/test_share_report.py makes them through real claims)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from jobs.models import Quota, WorkerTime
from jobs.models.clock import db_now
from tests.conftest import chat_line, jsonl
from tests.web.conftest import signed_in, submit

pytestmark = pytest.mark.django_db


def worked(user: Any, seconds: float, ago: float = 0.0) -> None:
    end = db_now() - timedelta(seconds=ago)
    WorkerTime.objects.create(user=user, started_at=end - timedelta(seconds=seconds), ended_at=end, seconds=seconds)


def sharing(page: str) -> str:
    return page[page.index('id="sharing"') : page.index('id="throughput"')]


def rows(section: str) -> list[str]:
    return re.findall(r"<tr[ >].*?</tr>", section, re.S)[1:]


@pytest.fixture
def carol(db: Any) -> Any:
    # An id, a name and an email no other text on the page could contain by chance.
    return get_user_model().objects.create_user(
        "carol-zq7", pk=737373, email="carol.zq7@example.org", first_name="Carolyn", password="pw-carol-1"
    )


def test_a_user_sees_themself_as_you_and_everyone_else_as_another_user(web, user, carol, models):
    worked(user, 600)
    worked(carol, 1800)
    submit(signed_in(carol), jsonl([chat_line(i) for i in range(3)]))
    page = web.get("/dashboard").content.decode()
    section = sharing(page)
    lines = rows(section)
    assert len(lines) == 2
    # Largest share first: carol's 30 min (75%) then alice's 10 min (25%).
    assert "another user" in lines[0] and "30 min 00 s" in lines[0] and "75.0%" in lines[0]
    assert ">3<" in lines[0] and "not waiting" not in lines[0]  # her batch waits for a worker
    assert "you" in lines[1] and "10 min 00 s" in lines[1] and "25.0%" in lines[1] and "not waiting" in lines[1]
    # Nothing that identifies carol reaches alice's browser: not in text, attributes or scripts.
    for secret in ("carol", "zq7", "737373", "Carolyn", "example.org"):
        assert secret not in page, secret


def test_staff_see_each_user_by_name(staff_web, user, carol):
    worked(user, 100)
    worked(carol, 300)
    section = sharing(staff_web.get("/dashboard").content.decode())
    lines = rows(section)
    assert "carol-zq7" in lines[0] and "75.0%" in lines[0]
    assert "alice" in lines[1] and "25.0%" in lines[1]
    assert "another user" not in section


def test_shares_on_the_page_add_to_100_percent(staff_web, user, carol, bob):
    for person, seconds in ((user, 100), (carol, 200), (bob, 400)):
        worked(person, seconds)
    section = sharing(staff_web.get("/dashboard").content.decode())
    shares = [float(m) for m in re.findall(r'data-label="Share">([\d.]+)%', section)]
    assert len(shares) == 3 and sum(shares) == pytest.approx(100.0, abs=0.2)


def test_time_before_the_last_hour_is_not_counted_and_weights_are_shown(web, user, carol):
    worked(user, 600)
    worked(carol, 3000, ago=2 * 3600)  # ended two hours ago
    Quota.objects.create(user=user, weight=2.5)
    lines = rows(sharing(web.get("/dashboard").content.decode()))
    assert len(lines) == 1 and "you" in lines[0] and "100%" in lines[0] and ">2.5<" in lines[0]


def test_the_live_fragment_has_the_section_too(bob_web, user, bob):
    worked(user, 60)
    page = bob_web.get("/dashboard/live").content.decode()
    assert "another user" in sharing(page) and "alice" not in page


def test_a_username_of_html_is_escaped_for_staff(staff_web):
    hostile = get_user_model().objects.create_user('<img src=x onerror="alert(1)">\u202e')
    worked(hostile, 10)
    response = staff_web.get("/dashboard")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in sharing(page)


@pytest.mark.parametrize("query", ["?hours=%ED%A0%80", "?hours=%F0%9F%98", "?hours=99999999999999999999", "?hours[]=1"])
def test_hostile_query_strings_still_show_the_page(web, user, query):
    worked(user, 10)
    response = web.get("/dashboard" + query)
    assert response.status_code == 200 and 'id="sharing"' in response.content.decode()


def test_with_nothing_run_or_queued_the_section_says_so(web):
    assert "No worker time in the last hour" in sharing(web.get("/dashboard").content.decode())
