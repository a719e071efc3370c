"""A bad environment value stops startup with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchsite.env import EnvError, Reader, read_limits

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, value",
    [
        ("DEBUG", "ture"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("DATABASE_URL", "not a url"),
        ("SECRET_KEY", "short"),
        ("BATCHSITE_CHUNK_SIZE", "5k"),
        ("BATCHSITE_CHUNK_SIZE", "0"),
        ("BATCHSITE_MAX_UPLOAD_BYTES", "-1"),
        ("BATCHSITE_COMPLETION_WINDOWS", "tomorrow"),
        ("BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS", "30d"),
        ("BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS", "-1"),
        ("ALLOWED_HOSTS", ","),
    ],
)
def test_manage_py_refuses_to_start_and_names_the_variable(tmp_path, name, value):
    env = {**os.environ, "BATCHSITE_DATA_DIR": str(tmp_path), name: value}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert name in result.stderr


def test_defaults_run_on_a_laptop():
    limits = read_limits(Reader({}))
    assert limits.chunk_size == 5000
    assert limits.max_requests_per_batch == 50_000
    assert limits.max_queued_batches == 10
    assert limits.max_queued_requests == 500_000
    assert limits.max_upload_bytes == 200 * 1024 * 1024
    assert limits.completion_windows == ("24h",)


def test_values_parse_strictly():
    reader = Reader({"A": "1_000", "B": "off", "C": "x, y"})
    assert reader.integer("A", 0) == 1000
    assert reader.flag("B", True) is False
    assert reader.items("C", []) == ["x", "y"]
    with pytest.raises(EnvError, match="A="):
        Reader({"A": "1.5"}).integer("A", 0)


def test_a_secret_key_is_generated_once_and_kept(tmp_path):
    from batchsite.env import secret_key

    first = secret_key(Reader({}), tmp_path)
    assert len(first) >= 50 and secret_key(Reader({}), tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
