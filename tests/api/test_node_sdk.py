"""The official openai Node SDK (npm `openai`, pinned in tests/node/package-lock.json) against the
session's live web server and real worker: the documented streamed upload, batches, paging, files and errors.

bin/setup --dev installs Node (Debian's nodejs where missing) and runs `npm ci` in tests/node; without
them this test fails, it does not skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.engine import demo
from jobs.models import ApiKey
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def test_the_node_sdk_uploads_a_stream_runs_a_batch_and_reads_openai_errors(stack, django_user_model, tmp_path):
    node = shutil.which("node")
    assert node, "node is not installed: run bin/setup --dev"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "the Node SDK is not installed: run bin/setup --dev"
    lines = [chat_line(i, model=demo.SMOLLM2_NAME) for i in range(4)]
    for line in lines:
        line["body"] |= {"max_tokens": 4, "temperature": 0}
    lines[3]["body"]["max_tokens"] = -5  # the engine refuses it: a line of the error file
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl(lines))
    key = ApiKey.generate(django_user_model.objects.create_user("node-user"))[1]
    run = subprocess.run(
        [node, "sdk_check.mjs", stack.url + "/v1", key, str(path), demo.SMOLLM2_NAME],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{stack.log_tail()}"
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary == {"output": ["req-0", "req-1", "req-2"], "errors": ["req-3"], "ok": True}
