"""The pages in a real browser: Playwright driving Debian's Chromium against the web server
(DEBUG=0, static files through WhiteNoise), as a person uses them.

These need no inference: nothing here is run by a worker (the submit-and-watch
test with a real worker is tests/web/test_browser_live.py). The registry rows
name demo models that no worker loads here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jobs.models import ApiKey, Batch, BatchStatus, RegisteredModel
from tests.conftest import CHAT_MODEL, EMBED_MODEL, chat_line, jsonl, run_housekeeper_once
from tests.web.conftest import screenshot, server_user

pytestmark = pytest.mark.django_db(transaction=True)


class Site:
    def __init__(self, server: Any, browser_for: Any) -> None:
        self.url = server.url
        self.server = server
        self.browser_for = browser_for
        self.alice = server_user("alice", "pw-alice-123")
        self.bob = server_user("bob", "pw-bob-123")
        RegisteredModel.objects.create(name=CHAT_MODEL, source="/unused", endpoints=["chat", "completions"])
        RegisteredModel.objects.create(name=EMBED_MODEL, source="/unused", endpoints=["embeddings"])
        RegisteredModel.objects.create(name="retired/model", source="/unused", endpoints=["chat"], enabled=False)

    def sign_in(self, user: Any, password: str, **context: Any) -> Any:
        return self.browser_for(self.url, user, password, **context).page

    def api(self, key: str, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


@pytest.fixture
def site(live_server_process: Any, transactional_db: Any, browser_for: Any) -> Site:
    return Site(live_server_process, browser_for)


def write(tmp_path: Path, lines: list[Any], name: str = "requests.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(jsonl(lines))
    return path


def submit_file(page: Any, path: Path, model: str = CHAT_MODEL) -> None:
    page.goto("/submit")
    page.set_input_files("#id_file", str(path))
    page.select_option("#id_model", model)
    page.click("#submit-button")


def test_the_dropdown_lists_exactly_the_models_of_v1_models_and_fits_the_endpoint(site, tmp_path):
    page = site.sign_in(site.alice, "pw-alice-123")
    status, models = site.api(ApiKey.generate(site.alice)[1], "/v1/models")
    assert status == 200
    page.goto("/submit")
    offered = page.eval_on_selector_all("#id_model option", "els => els.map(e => e.value).filter(Boolean)")
    assert offered == [m["id"] for m in models["data"]] == [CHAT_MODEL, EMBED_MODEL]
    groups = page.eval_on_selector_all("#id_model optgroup", "els => els.map(e => e.label)")
    assert groups == ["Chat and Completions", "Embeddings"]

    def usable_endpoints() -> list[str]:
        return page.eval_on_selector_all("#id_endpoint option:not([disabled])", "els => els.map(e => e.value)")

    # An embeddings model: the one endpoint it serves is chosen, chat is not offered.
    page.select_option("#id_model", EMBED_MODEL)
    assert page.input_value("#id_endpoint") == "/v1/embeddings"
    assert usable_endpoints() == ["", "/v1/embeddings"]
    # A chat model serves two: the user picks (or the file's lines decide).
    page.select_option("#id_model", CHAT_MODEL)
    assert page.input_value("#id_endpoint") == ""
    assert usable_endpoints() == ["", "/v1/chat/completions", "/v1/completions", "/v1/responses"]
    page.click("#add-pair")
    page.click("#add-pair")
    assert page.locator(".pair:not([hidden])").count() == 5
    page.fill("[name=meta_key_0]", "project")
    page.fill("[name=meta_value_0]", "demo")
    page.set_input_files("#id_file", str(write(tmp_path, [chat_line(i) for i in range(20)])))
    page.select_option("#id_endpoint", "/v1/chat/completions")
    page.fill("#id_webhook_url", "https://hooks.example.com/batches")
    page.locator("h1").click()  # no focus ring in the picture
    screenshot(page, "submit", tmp_path)


def test_a_file_with_bad_lines_is_refused_on_the_page_naming_each_line(site, tmp_path):
    page = site.sign_in(site.alice, "pw-alice-123")
    lines: list[Any] = [chat_line(i) for i in range(8)]
    lines[2] = b"{broken json"
    lines[4] = chat_line(1)  # custom_id req-1 again
    lines[6] = chat_line(6, url="/v1/embeddings")
    page.goto("/submit")
    page.set_input_files("#id_file", str(write(tmp_path, lines)))
    page.select_option("#id_model", CHAT_MODEL)
    page.fill("[name=meta_key_0]", "run")
    page.fill("[name=meta_value_0]", "nightly")
    page.click("#submit-button")
    errors = page.locator("#line-errors")
    errors.wait_for()
    assert "3 problems" in errors.inner_text()
    named = page.eval_on_selector_all("#line-errors li .line-no", "els => els.map(e => e.textContent)")
    assert named == ["Line 3", "Line 5", "Line 7"]
    text = errors.inner_text()
    assert "not valid JSON" in text and "already used on line 2" in text and "url must be /v1/chat/completions" in text
    # The choices survive the refusal.
    assert page.input_value("#id_model") == CHAT_MODEL
    assert (page.input_value("[name=meta_key_0]"), page.input_value("[name=meta_value_0]")) == ("run", "nightly")
    assert Batch.objects.get().status == BatchStatus.FAILED


def test_a_queued_batch_is_cancelled_from_its_page(site, tmp_path, settings):
    page = site.sign_in(site.alice, "pw-alice-123")
    submit_file(page, write(tmp_path, [chat_line(i) for i in range(5)]))
    page.wait_for_url("**/batches/batch_*")
    batch_id = page.url.rsplit("/", 1)[1]
    assert "in progress" in page.inner_text("#batch-live h2")
    page.click("#cancel summary")
    confirm = page.locator("#confirm-cancel")
    assert confirm.is_visible() and "cannot be undone" in page.inner_text("#cancel")
    confirm.click()
    page.wait_for_selector(".message.success")
    # The cancel answers at once; with nothing running, the housekeeper ends the batch.
    assert "cancel" in page.inner_text("#batch-live h2")
    assert page.locator("#cancel").count() == 0
    run_housekeeper_once(settings, site.server.data_dir, **site.server.storage.env)
    page.reload()
    assert "cancelled" in page.inner_text("#batch-live h2")
    status, body = site.api(ApiKey.generate(site.alice)[1], f"/v1/batches/{batch_id}")
    assert status == 200 and body["status"] == "cancelled"


def test_a_second_user_cannot_open_the_first_users_batch_and_sees_the_queue_anonymised(site, tmp_path):
    alice = site.sign_in(site.alice, "pw-alice-123")
    submit_file(alice, write(tmp_path, [chat_line(i) for i in range(7)]))
    alice.wait_for_url("**/batches/batch_*")
    batch_id = alice.url.rsplit("/", 1)[1]
    bob = site.sign_in(site.bob, "pw-bob-123")
    response = bob.goto(f"/batches/{batch_id}")
    assert response is not None and response.status == 404
    assert "Not found" in bob.inner_text("h1")
    bob.goto("/dashboard")
    row = bob.locator("#queue tbody tr").first
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:4] == ["1", "Another user's batch", CHAT_MODEL, "7"]
    html = bob.content()
    assert batch_id not in html and "alice" not in html
    # Alice sees the same row as hers, with its link.
    alice.goto("/dashboard")
    assert alice.locator(f"#queue a[href='/batches/{batch_id}']").count() == 1


def test_a_key_made_on_the_page_works_until_it_is_revoked(site):
    page = site.sign_in(site.alice, "pw-alice-123")
    page.goto("/keys")
    page.fill("#id_name", "notebook")
    page.click("#create-key")
    secret = page.input_value("#secret")
    assert secret.startswith("bs-")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("[data-copy='#secret']")
    page.wait_for_function("document.querySelector(\"[data-copy='#secret']\").textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert site.api(secret, "/v1/batches")[0] == 200
    page.goto("/keys")
    assert secret not in page.content()
    row = page.locator("#keys tbody tr", has_text="notebook")
    row.locator("summary").click()
    row.locator("button[type=submit]").click()
    page.wait_for_selector(".message.success")
    status, body = site.api(secret, "/v1/batches")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "revoked" in page.locator("#keys tbody tr", has_text="notebook").inner_text()


def test_times_are_shown_in_the_viewers_zone_with_the_absolute_time_on_hover(site, tmp_path):
    page = site.sign_in(site.alice, "pw-alice-123", timezone_id="Asia/Kolkata")
    submit_file(page, write(tmp_path, [chat_line(1)]))
    page.wait_for_url("**/batches/batch_*")
    created = page.locator(".timeline time").first
    utc = created.get_attribute("datetime")
    shown, title = created.inner_text(), created.get_attribute("title")
    assert "UTC" not in shown and title is not None and "GMT+5:30" in title
    local_clock = page.evaluate(
        "iso => new Date(iso).toLocaleTimeString(undefined, {hour: '2-digit', minute: '2-digit', second: '2-digit'})",
        utc,
    )
    assert local_clock in shown


def test_a_phone_sized_screen_shows_every_page_without_sideways_scrolling(site, tmp_path):
    page = site.sign_in(site.alice, "pw-alice-123", viewport={"width": 390, "height": 844})
    submit_file(page, write(tmp_path, [chat_line(1)]))
    page.wait_for_url("**/batches/batch_*")
    for path in ("/dashboard", "/submit", "/batches", "/keys", page.url):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)


def test_every_page_works_under_the_content_security_policy(site, tmp_path):
    # The console listener (tests/web/conftest.py) fails the test on any refused
    # script or style; here every kind of page is opened under the policy.
    staff = server_user("root", "pw-root-123", is_staff=True, is_superuser=True)
    browser = site.browser_for(site.url, staff, "pw-root-123")
    page = browser.page
    submit_file(page, write(tmp_path, [chat_line(i) for i in range(3)]))
    page.wait_for_url("**/batches/batch_*")
    batch_path = "/batches/" + page.url.rsplit("/batches/", 1)[1]
    for path in ["/dashboard", "/submit", "/batches", batch_path, "/keys", "/admin/", "/admin/jobs/batch/"]:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, (path, policy)
        assert "unsafe-inline" not in policy, path
        page.wait_for_load_state("load")
        assert browser.errors == [], path
    # The progress bar is drawn, and the live part is swapped in by htmx.
    page.goto(batch_path)
    assert page.locator("#batch-live .progress svg rect.fill").count() >= 1
    # An injected inline script is refused, and the refusal is what the listener catches.
    injected = page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        " document.head.appendChild(s); return window.injected === undefined; }"
    )
    assert injected is True
    page.wait_for_timeout(200)
    assert any("Content Security Policy" in error for error in browser.errors), browser.errors
    browser.errors.clear()


def test_estimate_first_shows_the_tokens_and_the_confirm_button_queues_the_stored_file(site, tmp_path, smollm2_dir):
    # The counting child renders with the demo chat model's real tokenizer and chat template.
    RegisteredModel.objects.filter(name=CHAT_MODEL).update(source=str(smollm2_dir))
    page = site.sign_in(site.alice, "pw-alice-123")
    page.goto("/submit")
    page.set_input_files("#id_file", str(write(tmp_path, [chat_line(i) for i in range(3)])))
    page.select_option("#id_model", CHAT_MODEL)
    page.fill("[name=meta_key_0]", "run")
    page.fill("[name=meta_value_0]", "estimated")
    page.click("#estimate-button")
    page.locator("#estimate").wait_for(timeout=90_000)
    assert page.inner_text("#estimate-requests") == "3"
    assert int(page.inner_text("#estimate-prompt-tokens").replace(",", "")) > 3
    assert not Batch.objects.exists()
    page.click("#submit-button")
    page.wait_for_url("**/batches/batch_*")
    batch = Batch.objects.get()
    assert batch.metadata == {"run": "estimated"} and batch.total == 3
