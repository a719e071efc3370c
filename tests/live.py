"""One real stack for the whole test session: the web server (batchsite.serve) and a real GPU worker (vLLM on the CPU).

Loading a model costs 25-50 s on this CPU, so tests that need a real engine
behind the API (the browser, the CLI, metrics, the scheduler on real models)
share one ``run_gpu_worker`` that stays up for the session and keeps whatever
model it last loaded. tests/conftest.py runs those tests last, after every
other test, so this worker never claims a batch that belongs to another test.

pytest-django empties the tables after each transactional test; the worker
registers its row again when it finds it gone (jobs/worker.py ``beat``), and
each test registers the demo models again with the same source and options,
so the loaded engine is reused rather than reloaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Converted models are cached across sessions (the SmolLM2 conversion takes ~45 s).
MODELS_CACHE = Path(os.environ.get("BATCHSITE_TEST_MODELS", ROOT / "var" / "test-models"))
# A small context for the demo chat model keeps over-long prompt tests cheap.
SMOL_OPTIONS = {"max_model_len": 2048}

# Fast beats so tests see progress quickly; a generous stale limit because two
# cores loaded by vLLM can delay a heartbeat by seconds.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "BATCHSITE_HEARTBEAT_SECONDS": "1",
    "BATCHSITE_STALE_AFTER_SECONDS": "30",
    "BATCHSITE_PROGRESS_SECONDS": "0.5",
    "BATCHSITE_POLL_SECONDS": "0.2",
}


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


TERMINAL = ("completed", "failed", "expired", "cancelled")


def sdk_batch_ended(sdk: Any, batch_id: str, timeout: float = 600, what: str = "the batch to end") -> Any:
    """Poll the batch through the openai SDK until it reaches a terminal status; the batch."""
    return wait_until(
        lambda: (b := sdk.batches.retrieve(batch_id)).status in TERMINAL and b, timeout=timeout, what=what, every=0.5
    )


class LiveStack:
    def __init__(self, server: Any, worker: subprocess.Popen[bytes], log_path: Path, engine_metrics_url: str) -> None:
        self.server = server
        self.url: str = server.url
        self.data_dir: Path = server.data_dir
        self.worker = worker
        self.worker_log = log_path
        # vLLM's own metrics, served by the worker (run_gpu_worker --metrics-port).
        self.engine_metrics_url = engine_metrics_url

    @classmethod
    def start(cls, server: Any, root: Path) -> LiveStack:
        from tests.conftest import database_url, free_port

        log_path = server.data_dir / "live-worker.log"
        metrics_port = free_port()
        env = {
            **os.environ,
            **WORKER_ENV,
            "DATABASE_URL": database_url(),
            "BATCHSITE_DATA_DIR": str(server.data_dir),
            "DJANGO_SETTINGS_MODULE": "batchsite.settings",
            # Read at each claim: a test switches the policy with use_scheduler().
            "BATCHSITE_SCHEDULER_FILE": str(server.data_dir / "scheduler"),
            **server.storage.env,
        }
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "run_gpu_worker", "--worker-id", "live-worker", "--device", "cpu"]
                + ["--metrics-port", str(metrics_port)],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(server, worker, log_path, f"http://127.0.0.1:{metrics_port}/metrics")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.worker_log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        assert self.worker.poll() is None, f"the live worker exited ({self.worker.returncode}):\n{self.log_tail()}"

    def register_demo_models(self, smollm2_dir: Path, minilm_path: Path) -> None:
        from jobs.engine import demo
        from jobs.models import RegisteredModel

        RegisteredModel.objects.update_or_create(
            name=demo.SMOLLM2_NAME,
            defaults={"source": str(smollm2_dir), "endpoints": ["chat", "completions"], "engine_options": SMOL_OPTIONS},
        )
        RegisteredModel.objects.update_or_create(
            name=demo.MINILM_NAME, defaults={"source": str(minilm_path), "endpoints": ["embeddings"]}
        )

    def point_storage(self, settings: Any) -> None:
        """Make this test process read and write the stack's files, as the web server and the worker do."""
        settings.FILES_DIR = self.data_dir / "files"
        settings.UPLOAD_TMP_DIR = self.data_dir / "tmp"
        settings.FILE_UPLOAD_TEMP_DIR = str(settings.UPLOAD_TMP_DIR)
        used = self.server.storage
        if used.s3 is not None:
            default = used.s3.storage(used.prefix)
        else:
            default = {"BACKEND": "jobs.storage.LocalStorage", "OPTIONS": {"location": str(settings.FILES_DIR)}}
        settings.STORAGES = {**settings.STORAGES, "default": default}
        settings.TEST_STORAGE = used

    @contextlib.contextmanager
    def use_scheduler(self, policy: str) -> Iterator[None]:
        """Run the live worker under ``policy`` for a block (through its BATCHSITE_SCHEDULER_FILE),
        then under the default again. Waits until the worker publishes it, so the
        server's queue plan simulates it too."""
        from jobs.models import Worker

        knob = self.data_dir / "scheduler"
        knob.write_text(policy)
        try:
            wait_until(
                lambda: Worker.objects.filter(pk="live-worker", scheduler=policy).exists(),
                30,
                f"the live worker to claim by {policy}",
            )
            yield
        finally:
            knob.unlink(missing_ok=True)

    def sdk(self, api_key: str) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)

    def loads(self) -> list[str]:
        """The models this worker has loaded so far, in order (from its log)."""
        import re

        return re.findall(r"model (\S+) ready in", self.worker_log.read_text(errors="replace"))

    def stop(self) -> None:
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
