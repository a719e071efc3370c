from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from jobs.models import ApiKey, RegisteredModel

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(autouse=True)
def isolated_storage(settings: Any, tmp_path: Path) -> None:
    """A fresh file store per test, so "nothing was stored" can be checked on disk."""
    settings.FILES_DIR = tmp_path / "files"
    settings.UPLOAD_TMP_DIR = tmp_path / "tmp"
    for directory in (settings.FILES_DIR, settings.UPLOAD_TMP_DIR):
        directory.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(settings.UPLOAD_TMP_DIR)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"location": str(settings.FILES_DIR)}},
    }


@pytest.fixture
def user(db: Any) -> Any:
    return get_user_model().objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def api_key(user: Any) -> str:
    return ApiKey.generate(user)[1]


@pytest.fixture
def client(api_key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return api


@pytest.fixture
def other_client(db: Any) -> APIClient:
    bob = get_user_model().objects.create_user(username="bob")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiKey.generate(bob)[1]}")
    return api


@pytest.fixture
def models(db: Any) -> None:
    """Registry rows for the demo models (no engine is loaded by API tests)."""
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    RegisteredModel.objects.create(name=EMBED_MODEL, source="/models/minilm", endpoints=["embeddings"])


def chat_line(i: int, model: str = CHAT_MODEL, **overrides: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 8},
    }
    line.update(overrides)
    return line


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines)


@pytest.fixture
def upload(client: APIClient) -> Callable[..., dict[str, Any]]:
    def do(content: bytes, name: str = "input.jsonl", api: APIClient | None = None) -> dict[str, Any]:
        f = io.BytesIO(content)
        f.name = name
        response = (api or client).post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart")
        assert response.status_code == 200, response.content
        return response.json()

    return do


@pytest.fixture
def limits(settings: Any) -> Callable[..., None]:
    """Override some of settings.BATCHSITE for one test."""

    def set_limits(**changes: Any) -> None:
        settings.BATCHSITE = dataclasses.replace(settings.BATCHSITE, **changes)

    return set_limits


def stored_files(settings: Any) -> list[Path]:
    """Every file under the storage and upload temp dirs (to prove nothing was left)."""
    return [p for d in (settings.FILES_DIR, settings.UPLOAD_TMP_DIR) for p in Path(d).rglob("*") if p.is_file()]
