"""Fixtures for the web UI's tests: signed-in browsers (Django's test client) for a
user, a second user and a staff member; the demo models' registry rows come from
tests/conftest.py (``models``)."""

from __future__ import annotations

import io
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
