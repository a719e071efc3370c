"""Fixtures for the API tests: clients that show a 500 as a response, and a record of what is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from jobs.models import Batch, Chunk, File
from tests.conftest import stored_files


@pytest.fixture
def raw_client(api_key: str) -> Client:
    """Alice's Django client that answers a 500 with the response a user gets, instead of raising."""
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_key}")


class Stored:
    """What the database and the file store hold, to show that a refusal stored nothing."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.before = self.now()

    def now(self) -> tuple[int, int, int, list[Path]]:
        return (Batch.objects.count(), Chunk.objects.count(), File.objects.count(), sorted(stored_files(self.settings)))

    def assert_unchanged(self) -> None:
        assert self.now() == self.before

    def reset(self) -> None:
        self.before = self.now()


@pytest.fixture
def stored(db: Any, settings: Any) -> Stored:
    return Stored(settings)


def assert_openai_error(
    response: Any, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error with this status (and code and param, when given)."""
    assert response.status_code == status, response.content[:2000]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error
