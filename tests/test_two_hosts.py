"""Two "hosts" sharing only the database and an object store (moto's S3 server on loopback): a web
host and two worker hosts, each with its own BATCHSITE_DATA_DIR, run one batch through the API.

The workers run the SIMULATED engine: this is about where the batch's files live and who can
read them, not inference. CI runs it on PostgreSQL (the whole suite's second pass).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from jobs.models import ApiKey, Batch, Chunk
from tests.conftest import ROOT, chat_line, free_port, jsonl, subprocess_env
from tests.s3 import S3Server
from tests.worker.common import FAST, SIM, finish

pytestmark = pytest.mark.django_db(transaction=True)

LINES = 240


def start_web(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The web host's server as the documented layout runs it (batchsite.serve: waitress)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "batchsite.serve", "--bind", f"127.0.0.1:{port}", "--threads", "4"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
        except urllib.error.HTTPError:
            return process, url  # 401: it is up
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("batchsite.serve did not start") from None
            time.sleep(0.2)


class DiskWatch:
    """Every file that appears under the hosts' data directories while it runs, outside their temp space."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.scan()
            except OSError:  # a file went between listing and looking: look again
                continue

    def scan(self) -> None:
        for root in self.roots:
            for path in root.rglob("*"):
                relative = path.relative_to(root)
                if relative.parts and relative.parts[0] == "tmp":
                    continue  # each host's temp space (uploads in progress)
                if path.is_file():
                    self.seen.add(str(relative))

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        self.scan()
        return self.seen


def test_two_worker_hosts_share_only_the_database_and_the_object_store(
    settings, tmp_path, s3_server: S3Server, django_user_model: Any, models: None
):
    prefix = s3_server.new_prefix("hosts")
    store = s3_server.env(prefix)
    web_dir, host_a, host_b = (tmp_path / name for name in ("web", "host-a", "host-b"))
    for directory in (web_dir, host_a, host_b):
        directory.mkdir()
    key = ApiKey.generate(django_user_model.objects.create_user("two-hosts"))[1]

    web, url = start_web(
        subprocess_env(settings, data_dir=web_dir, BATCHSITE_CHUNK_SIZE="20", MALLOC_ARENA_MAX="2", **store)
    )
    watch = DiskWatch([web_dir, host_a, host_b])
    try:
        sdk = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        source = tmp_path / "requests.jsonl"
        source.write_bytes(jsonl([chat_line(i) for i in range(LINES)]))
        file = sdk.files.create(file=source.open("rb"), purpose="batch")
        batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "in_progress" and Chunk.objects.filter(batch_id=batch.id).count() == LINES // 20

        worker_env = {**FAST, **store, "SIM_SLEEP_SECONDS": "0.01"}
        workers = [
            subprocess.Popen(
                [sys.executable, "manage.py", "run_gpu_worker", *SIM, "--worker-id", name, "--device", "cpu"],
                cwd=ROOT,
                env=subprocess_env(settings, data_dir=data_dir, **worker_env),
            )
            for name, data_dir in (("host-a", host_a), ("host-b", host_b))
        ]
        assert [finish(worker) for worker in workers] == [0, 0]
        done = sdk.batches.retrieve(batch.id)
        assert done.output_file_id is not None, done
        text = sdk.files.content(done.output_file_id).text
        seen = watch.stop()
    finally:
        watch.stop()
        web.terminate()
        web.wait(timeout=30)

    assert done.status == "completed", done
    assert done.request_counts is not None and done.request_counts.completed == LINES
    # Both hosts ran chunks of the one batch.
    by_host = collections.Counter(Chunk.objects.filter(batch_id=batch.id).values_list("worker_id", flat=True))
    assert set(by_host) == {"host-a", "host-b"}, by_host
    # The output, through the SDK and through plain HTTP: every custom_id exactly once.
    ids = collections.Counter(json.loads(line)["custom_id"] for line in text.splitlines())
    assert ids == collections.Counter(f"req-{i}" for i in range(LINES))
    # Plain HTTP too, from a second web host started now (the first one has stopped).
    web, url = start_web(subprocess_env(settings, data_dir=tmp_path / "web-2", **store))
    try:
        request = urllib.request.Request(
            f"{url}/v1/files/{done.output_file_id}/content", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.read().decode() == text
    finally:
        web.terminate()
        web.wait(timeout=30)

    # No file of the batch was ever on a local disk outside the hosts' temp space; all of it
    # (input, output; the parts, deleted once published) is in the object store.
    assert not [name for name in seen if name.endswith(".jsonl") or "parts" in name], seen
    assert seen == {"secret_key"}, seen  # each host's generated SECRET_KEY: the watch saw the disks
    batch_row = Batch.objects.get(pk=batch.id)
    stored = s3_server.keys(prefix)
    assert sorted(stored) == sorted(f.storage_name for f in (batch_row.input_file, batch_row.output_file)), (
        stored
    )  # nothing else: no parts left behind, no staging copies
