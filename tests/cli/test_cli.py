"""bin/batchsite as a subprocess against the session's live web server, for what needs no worker:
arguments, the server's errors, validation failures, status, list, cancel, download, retry.

Batches here are never run (no worker serves this web server until the live-stack
tests, which run last); tests/cli/test_cli_live.py runs them on the real engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Batch, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl, run_housekeeper_once

from .conftest import Cli

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(live_server_process: Any, cli_key: str, tmp_path: Path) -> Cli:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    cli = Cli(live_server_process.url, cli_key, tmp_path)
    cli.server_data_dir = live_server_process.data_dir
    return cli


def write(path: Path, lines: list[Any]) -> str:
    path.write_bytes(jsonl(lines))
    return str(path)


def test_bad_arguments_exit_2_with_a_message(cli, tmp_path):
    result = cli.run("submit", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "no such file" in result.stderr
    result = cli.run("submit", write(tmp_path / "in.jsonl", [chat_line(0)]), "--metadata", "novalue")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
    result = cli.run("retry", "batch_x", "--filter", "some")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not Batch.objects.exists()


def test_the_servers_errors_are_printed_as_the_server_words_them(cli):
    result = cli.run("status", "batch_nope")
    assert result.returncode == 1
    assert "No such batch: 'batch_nope' (HTTP 404, not_found)" in result.stderr
    cli.env["OPENAI_API_KEY"] = "bs-wrong-key"
    result = cli.run("list")
    assert result.returncode == 1 and "Incorrect API key provided" in result.stderr


def test_a_failed_validation_prints_the_line_errors_and_exits_non_zero(cli, tmp_path):
    lines: list[Any] = [chat_line(0), b"{not json", chat_line(0), {**chat_line(3), "method": "GET"}]
    result = cli.run("submit", write(tmp_path / "bad.jsonl", lines), "--wait")
    assert result.returncode == 1, result.stderr
    batch = Batch.objects.get()
    assert batch.status == "failed" and result.stdout.strip() == batch.id
    assert "line 2: Line 2 is not valid JSON" in result.stderr
    assert "(duplicate_custom_id)" in result.stderr and "line 4:" in result.stderr


def test_submit_fills_in_the_model_and_sends_the_options(cli, tmp_path):
    lines = [chat_line(i) for i in range(3)]
    for line in lines:
        del line["body"]["model"]
    result = cli.run(
        "submit",
        write(tmp_path / "in.jsonl", lines),
        "--model",
        CHAT_MODEL,
        "--metadata",
        "project=cli",
        "--metadata",
        "owner=ada=lovelace",
        "--webhook-url",
        "https://example.com/hook",
        "--output-expires-after",
        "7200",
    )
    assert result.returncode == 0, result.stderr
    batch = Batch.objects.get(pk=result.stdout.strip())
    assert batch.status == "in_progress" and batch.model == CHAT_MODEL and batch.endpoint == "/v1/chat/completions"
    assert batch.metadata == {"project": "cli", "owner": "ada=lovelace"}
    assert batch.webhook_url == "https://example.com/hook" and batch.output_expires_after == 7200
    assert f"batchsite wait {batch.id}" in result.stderr
    stored = Path(cli.server_data_dir) / "files" / batch.input_file.storage_name
    sent = [json.loads(line) for line in stored.read_text().splitlines()]
    assert [line["body"]["model"] for line in sent] == [CHAT_MODEL] * 3


def test_status_list_cancel_download_and_retry_of_a_queued_batch(cli, tmp_path, settings, live_server_process):
    batch_id = cli.run("submit", write(tmp_path / "in.jsonl", [chat_line(i) for i in range(4)])).stdout.strip()
    status = cli.run("status", batch_id)
    assert status.returncode == 0 and status.stdout.startswith(f"{batch_id}: in_progress, 0/4 done, 0 failed")
    assert json.loads(cli.run("status", batch_id, "--json").stdout)["id"] == batch_id
    listed = cli.run("list")
    assert listed.returncode == 0 and batch_id in listed.stdout and "in_progress" in listed.stdout

    assert cli.run("cancel", batch_id).stdout.strip() == f"{batch_id}: cancelling"
    # The cancel left its finalize to the housekeeper (or a worker): one pass on the server's files.
    run_housekeeper_once(settings, live_server_process.data_dir, **live_server_process.storage.env)
    assert cli.run("status", batch_id).stdout.startswith(f"{batch_id}: cancelled")
    download = cli.run("download", batch_id, "--errors", "err.jsonl")
    assert download.returncode == 0, download.stderr
    errors = [json.loads(line) for line in (tmp_path / "err.jsonl").read_text().splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"} and len(errors) == 4

    refused = cli.run("retry", batch_id, "--filter", "failed")
    assert refused.returncode == 1 and "Nothing to retry" in refused.stderr and "nothing_to_retry" in refused.stderr
    retried = cli.run("retry", batch_id, "--filter", "cancelled")
    assert retried.returncode == 0, retried.stderr
    new = Batch.objects.get(pk=retried.stdout.strip())
    assert new.total == 4 and new.metadata == {"retry_of": batch_id}
    assert cli.run("cancel", new.id).returncode == 0


def test_the_cli_imports_no_part_of_the_server():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys, jobs.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'batchsite')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result


def test_download_partial_writes_the_lines_finished_so_far(cli, tmp_path):
    from jobs.models import Chunk
    from jobs.services import parts, results

    batch_id = cli.run("submit", write(tmp_path / "in.jsonl", [chat_line(i) for i in range(4)])).stdout.strip()
    # A checkpoint of a claim, stored where the live server keeps its files.
    ok = results.result_line("req-1", 200, "r1", {"ok": True})
    out_name, err_name = parts.names(batch_id, 0, 1)
    for name, content in ((out_name, ok), (err_name, b"")):
        path = Path(cli.server_data_dir) / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    part = parts.Part(1, 1, 0, ((1, 2),))
    Chunk.objects.filter(batch_id=batch_id, index=0).update(parts=[part.to_json()])
    result = cli.run("download", batch_id, "--partial", "--output", "so-far.jsonl", "--errors", "err-so-far.jsonl")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "so-far.jsonl").read_bytes() == ok and (tmp_path / "err-so-far.jsonl").read_bytes() == b""
    assert "output so far: so-far.jsonl (1 lines)" in result.stderr
