"""Running bin/batchsite as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs.models import ApiKey
from tests.conftest import ROOT

BIN = str(ROOT / "bin" / "batchsite")


def cli_env(url: str, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    # The project's interpreter (bin/batchsite defaults to .venv/bin/python beside it).
    return {**env, "BATCHSITE_PYTHON": sys.executable, "OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": api_key}


class Cli:
    def __init__(self, url: str, api_key: str, cwd: Path) -> None:
        self.env = cli_env(url, api_key)
        self.cwd = cwd
        self.server_data_dir: Path | None = None

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [BIN, *args], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture
def cli_user(transactional_db: Any, django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("cli-user")


@pytest.fixture
def cli_key(cli_user: Any) -> str:
    return ApiKey.generate(cli_user)[1]
