"""Sign-in: every page needs it, failed attempts are throttled (django-axes), the seed's
URLs still lead somewhere, and the browsable API signs in through the same page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from tests.web.conftest import signed_in

pytestmark = pytest.mark.django_db

PAGES = ["/dashboard", "/dashboard/live", "/submit", "/batches", "/batches/batch_x", "/keys"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_the_sign_in_page(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_a_refresh_from_htmx_after_the_session_ended_sends_the_browser_to_sign_in():
    # A redirect would be followed inside htmx's request and the sign-in page
    # pasted into the dashboard; HX-Redirect makes the whole page go there.
    response = Client().get("/dashboard/live", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""
    assert response["HX-Redirect"] == "/accounts/login/?next=/dashboard"
    response = Client().get("/batches/batch_abc/live", HTTP_HX_REQUEST="true")
    assert response["HX-Redirect"] == "/accounts/login/?next=/batches/batch_abc"


def test_signing_in_lands_on_the_dashboard_and_signing_out_ends_the_session(user):
    browser = Client()
    page = browser.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = browser.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302 and response["Location"] == "/dashboard"
    assert browser.get("/dashboard").status_code == 200
    assert browser.post("/accounts/logout/").status_code == 302
    assert browser.get("/dashboard").status_code == 302


def test_signing_in_returns_to_the_page_asked_for_but_never_to_another_site(user):
    browser = Client()
    response = browser.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123", "next": "/keys"})
    assert response["Location"] == "/keys"
    browser = Client()
    response = browser.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice-123", "next": "https://evil.example/x"}
    )
    assert response["Location"] == "/dashboard"


def test_a_wrong_password_is_refused_on_the_page(user):
    response = Client().post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match" in response.content


def test_failed_sign_ins_are_throttled_per_user_and_address(user, settings):
    limit = settings.AXES_FAILURE_LIMIT
    browser = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(limit - 1):
        assert browser.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    locked = browser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert locked.status_code == 429
    assert b"Sign-in paused" in locked.content
    # Even the right password is refused for that pair now...
    again = browser.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert again.status_code == 429
    assert Client(REMOTE_ADDR="203.0.113.7").get("/dashboard").status_code == 302
    # ...but neither the user from elsewhere nor others from that address are locked out.
    elsewhere = Client(REMOTE_ADDR="198.51.100.2")
    assert elsewhere.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 302
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    same_address = Client(REMOTE_ADDR="203.0.113.7")
    assert same_address.post("/accounts/login/", {"username": "carol", "password": "pw-carol-123"}).status_code == 302


def test_the_admin_sign_in_is_throttled_too(db, settings):
    get_user_model().objects.create_superuser("root", "", "pw-root-123")
    browser = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = browser.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"})
    assert response.status_code == 429
    assert (
        browser.post("/admin/login/?next=/admin/", {"username": "root", "password": "pw-root-123"}).status_code == 429
    )


def test_the_root_and_the_seed_urls_lead_to_the_new_pages(web):
    assert web.get("/")["Location"] == "/dashboard"
    old_submit = web.get("/submit_batch.html")
    assert old_submit.status_code == 301 and old_submit["Location"] == "/submit"
    old_dashboard = web.get("/dashboard.html")
    assert old_dashboard.status_code == 301 and old_dashboard["Location"] == "/dashboard"


def test_the_browsable_api_signs_in_through_the_throttled_page_not_drfs_own_view(user):
    page = Client().get("/v1/batches", HTTP_ACCEPT="text/html")
    assert page.status_code == 401
    assert b'href="/accounts/login/?next=/v1/batches"' in page.content
    assert Client().get("/api-auth/login/").status_code == 404
    browser = signed_in(user)
    html = browser.get("/v1/batches", HTTP_ACCEPT="text/html")
    assert html.status_code == 200 and b"alice" in html.content and b'action="/accounts/logout/"' in html.content


def test_a_session_never_bypasses_csrf_on_the_api(user, models):
    from jobs.models import Batch
    from tests.conftest import chat_line, jsonl
    from tests.web.conftest import jsonl_file

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post("/v1/batches", {"file": jsonl_file(jsonl([chat_line(1)])), "model": "x"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert not Batch.objects.exists()


def test_a_page_form_without_its_csrf_token_is_refused(user, models):
    from jobs.models import ApiKey, Batch
    from tests.conftest import chat_line, jsonl
    from tests.web.conftest import submit

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert submit(browser, jsonl([chat_line(1)])).status_code == 403
    assert browser.post("/keys", {"name": "k"}).status_code == 403
    assert not Batch.objects.exists() and not ApiKey.objects.exists()


def test_the_first_start_creates_one_admin_and_prints_its_password_once(db, capsys):
    call_command("ensure_admin", "--url", "http://127.0.0.1:9000/")
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9000/accounts/login/" in out
    password = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "password:" in line)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password(password)
    assert len(password) >= 16
    browser = Client()
    response = browser.post("/accounts/login/", {"username": "admin", "password": password})
    assert response.status_code == 302 and browser.get("/dashboard").status_code == 200
    call_command("ensure_admin")
    assert capsys.readouterr().out == ""
    assert get_user_model().objects.count() == 1


def test_the_first_start_adds_no_admin_when_an_operator_made_one(db, capsys):
    get_user_model().objects.create_superuser("ops", "", "pw-ops-123")
    call_command("ensure_admin")
    assert capsys.readouterr().out == ""
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["ops"]
