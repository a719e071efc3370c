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


PROXY = "127.0.0.1"


@pytest.fixture
def behind_proxy(settings):
    import ipaddress

    settings.BATCHSITE_TRUSTED_PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


def via_proxy(client_address: str, **extra: str) -> Client:
    return Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=client_address, **extra)


def fail_until_locked(browser: Client, limit: int, username: str = "alice") -> None:
    for _ in range(limit):
        response = browser.post("/accounts/login/", {"username": username, "password": "wrong"})
    assert response.status_code == 429


def test_behind_a_trusted_proxy_a_guesser_locks_out_only_its_own_address(user, settings, behind_proxy):
    fail_until_locked(via_proxy("203.0.113.7"), settings.AXES_FAILURE_LIMIT)
    # The real user, through the same proxy from their own address, still signs in.
    response = via_proxy("198.51.100.2").post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302
    # A guesser that writes its own X-Forwarded-For is still known by the address the proxy appended.
    spoofing = via_proxy("198.51.100.2, 203.0.113.7")
    assert spoofing.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 429
    # A chain of trusted proxies: the first untrusted address from the right is the client.
    chained = via_proxy("203.0.113.7, 10.1.2.3")
    assert chained.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 429


def test_x_forwarded_for_from_a_peer_that_is_not_a_proxy_is_ignored(user, settings, behind_proxy):
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit):
        # A new made-up address each time: were the header believed, nothing would lock.
        browser = Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
        response = browser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 429
    honest = Client(REMOTE_ADDR="203.0.113.9")
    assert honest.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 429


def test_without_trusted_proxies_the_header_is_ignored_even_from_loopback(user, settings):
    assert settings.BATCHSITE_TRUSTED_PROXIES == ()
    fail_until_locked(via_proxy("203.0.113.7"), settings.AXES_FAILURE_LIMIT)
    # Everyone behind that address shares the peer's lockout: the documented reason to set the proxies.
    response = via_proxy("198.51.100.2").post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 429


@pytest.mark.parametrize(
    "header, expected",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("  203.0.113.7  ", "203.0.113.7"),
        ("2001:db8::5", "2001:db8::5"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("", PROXY),
        ("not-an-address", PROXY),
        ("203.0.113.7, garbage", PROXY),  # unreadable after the proxy's own hop: the proxy's address
        ("garbage, 203.0.113.7", "203.0.113.7"),
        ("\ud800", PROXY),
        ("1.2.3.4," * 10000 + "203.0.113.7", "203.0.113.7"),
        ("10.0.0.1, 10.0.0.2", "10.0.0.1"),  # only proxies: the farthest one
    ],
)
def test_the_client_address_read_from_a_trusted_proxys_header(behind_proxy, rf, header, expected):
    from jobs.web.client_ip import client_ip

    request = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=header)
    assert client_ip(request) == expected
    assert client_ip(rf.get("/", REMOTE_ADDR="203.0.113.50", HTTP_X_FORWARDED_FOR=header)) == "203.0.113.50"
