"""Fixtures for the web UI's tests: signed-in browsers (Django's test client) for a
user, a second user and a staff member; the demo models' registry rows come from
tests/conftest.py (``models``)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from jobs.models import Batch


def signed_in(user: Any, **kwargs: Any) -> Client:
    browser = Client(**kwargs)
    browser.force_login(user)
    return browser


@pytest.fixture
def web(user: Any) -> Client:
    """alice (the ``user`` fixture), signed in."""
    return signed_in(user)


@pytest.fixture
def bob(db: Any) -> Any:
    return get_user_model().objects.create_user(username="bob", password="pw-bob-123")


@pytest.fixture
def bob_web(bob: Any) -> Client:
    return signed_in(bob)


@pytest.fixture
def staff_web(db: Any) -> Client:
    return signed_in(get_user_model().objects.create_user(username="operator", password="pw-op-123", is_staff=True))


# A loopback receiver nobody listens on: tests never send traffic off this machine.
HOOK = "http://127.0.0.1:9/hooks/batch"


@pytest.fixture
def loopback_webhooks(settings: Any) -> None:
    """The operator setting that lets webhook URLs point at loopback (the SSRF guard refuses it otherwise)."""
    import dataclasses

    settings.BATCHSITE_WEBHOOKS = dataclasses.replace(settings.BATCHSITE_WEBHOOKS, allow_private=True)


def jsonl_file(content: bytes, name: str = "requests.jsonl") -> io.BytesIO:
    f = io.BytesIO(content)
    f.name = name
    return f


def submit(browser: Client, content: bytes, **fields: Any) -> Any:
    """POST the submit page's form as a browser would (model defaults to the demo chat model)."""
    from tests.conftest import CHAT_MODEL

    data = {"model": CHAT_MODEL, "endpoint": "", "completion_window": "24h", "webhook_url": "", **fields}
    data["file"] = jsonl_file(content)
    return browser.post("/submit", data)


def only_batch() -> Batch:
    return Batch.objects.get()


# -- a real browser: Playwright driving Debian's Chromium ----------------------

CHROMIUM = os.environ.get("BATCHSITE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Chromium per test module. A missing browser FAILS the tests, never skips them."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the browser tests need it. On Debian/Ubuntu run "
            "`bin/setup --dev` as root (it installs the `chromium` package), or install Chromium "
            "and set BATCHSITE_CHROMIUM to its path."
        )
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an asyncio loop running in this thread, which
        # makes Django refuse the (synchronous) ORM calls the tests make between steps.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


def server_user(username: str, password: str, **fields: Any) -> Any:
    """A user who can sign in on the live server, whose settings do not accept the
    fast MD5 hashes of tests/settings.py: a PBKDF2 hash, with few iterations for speed."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    user = get_user_model().objects.create_user(username, **fields)
    user.password = hasher.encode(password, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


class Browser:
    """A signed-in person at a real browser: one context (cookies, viewport, time zone) per user."""

    def __init__(self, chromium: Any, base_url: str, user: Any, password: str, **context: Any) -> None:
        options = {"viewport": {"width": 1280, "height": 900}, "timezone_id": "Europe/Berlin", **context}
        self.context = chromium.new_context(base_url=base_url, accept_downloads=True, **options)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Chromium reports each thing the Content-Security-Policy refused on the console:
        # any one is a failure, so every browser test checks its pages work under the CSP.
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if "Content Security Policy" in message.text else None,
        )
        self.page.goto("/accounts/login/")
        self.page.fill("#id_username", user.get_username())
        self.page.fill("#id_password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/dashboard")

    def close(self) -> None:
        assert self.errors == [], f"script errors on the page: {self.errors}"
        self.context.close()


@pytest.fixture
def browser_for(chromium: Any) -> Iterator[Callable[..., Browser]]:
    opened: list[Browser] = []

    def open_for(server_url: str, user: Any, password: str, **context: Any) -> Browser:
        browser = Browser(chromium, server_url, user, password, **context)
        opened.append(browser)
        return browser

    yield open_for
    for browser in opened:
        browser.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Take a screenshot; with BATCHSITE_UPDATE_SCREENSHOTS=1 it replaces the README's copy in docs/screenshots/."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BATCHSITE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path
