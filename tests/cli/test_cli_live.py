"""bin/batchsite as a subprocess against the live stack: the web server and a real worker running the
demo chat model on vLLM (issue 14, acceptance)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from jobs.engine import demo
from jobs.models import Batch
from tests.live import LiveStack, wait_until

from .conftest import Cli

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = ("completed", "failed", "expired", "cancelled")


def line(i: int, **body: Any) -> str:
    request = {
        "custom_id": f"q{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 8, "temperature": 0} | body,
    }
    return json.dumps(request) + "\n"


@pytest.fixture
def cli(stack: LiveStack, cli_key: str, tmp_path: Path) -> Cli:
    return Cli(stack.url, cli_key, tmp_path)


def wait_ended(batch_id: str, timeout: float = 600) -> Batch:
    return wait_until(
        lambda: (b := Batch.objects.get(pk=batch_id)).status in TERMINAL and b, timeout, f"batch {batch_id} to end"
    )


def test_submit_wait_shows_progress_and_writes_the_output(cli, stack, tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(line(i) for i in range(6)))  # no body.model: --model fills it
    result = cli.run(
        "submit", "in.jsonl", "--model", demo.SMOLLM2_NAME, "--wait", "--poll", "0.5", "--output", "out.jsonl"
    )
    assert result.returncode == 0, (result.stderr, stack.log_tail())
    batch_id = result.stdout.strip()
    assert Batch.objects.get(pk=batch_id).status == "completed"
    # tqdm's bar: done/total, the rate, and how it ended.
    assert "6/6" in result.stderr and "req/s" in result.stderr, result.stderr
    assert f"batch {batch_id}: completed, 6/6 done, 0 failed" in result.stderr
    output = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(o["custom_id"] for o in output) == [f"q{i}" for i in range(6)]
    assert all(o["response"]["body"]["object"] == "chat.completion" for o in output)
    assert not (tmp_path / f"{batch_id}_error.jsonl").exists()


def test_ctrl_c_during_wait_leaves_the_batch_running(cli, stack, tmp_path):
    # Long enough to still run when Ctrl-C arrives: 48 lines of 256 tokens each.
    body = {"max_tokens": 256, "ignore_eos": True, "model": demo.SMOLLM2_NAME}
    (tmp_path / "long.jsonl").write_text("".join(line(i, **body) for i in range(48)))
    proc = cli.start("submit", "long.jsonl", "--wait", "--poll", "0.5")
    assert proc.stdout is not None and proc.stderr is not None
    batch_id = proc.stdout.readline().strip()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "req/s" in "".join(stderr), 120, "the progress bar")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        reader.join(timeout=10)
        text = "".join(stderr)
        assert "Resume with: " in text and f"batchsite wait {batch_id}" in text, text
        assert "Traceback" not in text
        batch = Batch.objects.get(pk=batch_id)
        assert batch.status == "in_progress" and batch.cancelling_at is None
        resumed = cli.run("status", batch_id)
        assert resumed.returncode == 0 and "in_progress" in resumed.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        assert cli.run("cancel", batch_id).returncode == 0
        assert wait_ended(batch_id).status == "cancelled"


def test_retry_of_a_batch_with_three_failed_lines_makes_a_batch_of_exactly_those(cli, stack, tmp_path):
    bad = {1, 3, 4}  # top_p above 1: vLLM refuses these lines alone, with a 400
    lines = [line(i, model=demo.SMOLLM2_NAME, **({"top_p": 7} if i in bad else {})) for i in range(6)]
    (tmp_path / "in.jsonl").write_text("".join(lines))
    first = cli.run("submit", "in.jsonl", "--wait", "--poll", "0.5")
    assert first.returncode == 0, (first.stderr, stack.log_tail())
    original = first.stdout.strip()
    assert "6/6 done, 3 failed" in first.stderr
    assert sorted(json.loads(x)["custom_id"] for x in Path(tmp_path / f"{original}_error.jsonl").open()) == [
        "q1",
        "q3",
        "q4",
    ]

    retried = cli.run("retry", original, "--wait", "--poll", "0.5", "--errors", "retry_errors.jsonl")
    assert retried.returncode == 0, (retried.stderr, stack.log_tail())
    new = Batch.objects.get(pk=retried.stdout.strip())
    assert new.metadata == {"retry_of": original} and new.total == 3 and new.status == "completed"
    sent = (Path(stack.data_dir) / "files" / new.input_file.storage_name).read_text()
    assert sent == "".join(lines[i] for i in sorted(bad))
    errors = [json.loads(x) for x in (tmp_path / "retry_errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["q1", "q3", "q4"]
    assert all(e["response"]["status_code"] == 400 for e in errors)
