"""Session-wide fixtures for the real-vLLM engine tests.

Loading a model costs ~50 s here (vLLM spawns its engine-core and worker
processes, each importing torch), so the whole session shares one VllmEngine
and the tests are ordered to need few swaps: the hot-swap test loads SmolLM2,
MiniLM, SmolLM2; the SmolLM2 tests then reuse it; the MiniLM tests load MiniLM
once more. The reference runs of vLLM's own entry points (run_batch,
api_server) start in-process engines (VLLM_ENABLE_V1_MULTIPROCESSING=0), which
load in seconds; they run each once per session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports vLLM or transformers: no network, no hub lookups.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from jobs.engine import demo  # noqa: E402
from jobs.engine.base import ModelSpec  # noqa: E402
from jobs.engine.options import cli_args  # noqa: E402
from tests.live import SMOL_OPTIONS  # noqa: E402

SMOL_NAME = demo.SMOLLM2_NAME
MINILM_NAME = demo.MINILM_NAME


@pytest.fixture(scope="session")
def smol_spec(smollm2_dir: Path) -> ModelSpec:
    return ModelSpec(SMOL_NAME, str(smollm2_dir), ("chat", "completions"), dict(SMOL_OPTIONS))


@pytest.fixture(scope="session")
def minilm_spec(minilm_path: Path) -> ModelSpec:
    return ModelSpec(MINILM_NAME, str(minilm_path), ("embeddings",), {})


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    from jobs.engine.vllm_engine import VllmEngine

    eng = VllmEngine()
    yield eng
    eng.unload()


def scheduler_limits(spec: ModelSpec) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) our engine will use for ``spec``.

    We run with vLLM's offline (LLM-class) scheduler defaults, the CLI with its
    server defaults; the references get ours so that batches, and so numerics, match.
    """
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    from jobs.engine.options import resolve

    os.environ.update(resolve(spec).env)
    args = AsyncEngineArgs(model=spec.source, **resolve(spec).engine_args)
    sched = args.create_engine_config(usage_context=UsageContext.LLM_CLASS).scheduler_config
    return sched.max_num_seqs, sched.max_num_batched_tokens


def reference_env(spec: ModelSpec) -> dict[str, str]:
    from jobs.engine.options import resolve

    # In-process engine core: these reference runs start in seconds instead of ~40 s.
    env = {**os.environ, **resolve(spec).env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_batch_reference(spec: ModelSpec, lines: list[dict[str, Any]], tmp: Path) -> dict[str, dict[str, Any]]:
    """Run ``python -m vllm.entrypoints.openai.run_batch`` on ``lines``; results by custom_id."""
    infile, outfile = tmp / "in.jsonl", tmp / "out.jsonl"
    infile.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(infile),
        "-o",
        str(outfile),
        *cli_args(spec),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=reference_env(spec), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nrun_batch reference for {spec.name}: {time.monotonic() - started:.1f}s")
    return {row["custom_id"]: row for row in map(json.loads, outfile.read_text().splitlines())}


class ApiServer:
    def __init__(self, spec: ModelSpec, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *cli_args(spec),
        ]
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, env=reference_env(spec), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while True:
            assert self.proc.poll() is None, log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "api_server did not become healthy"
            time.sleep(0.5)  # polling a starting server; not a fixed wait for a result

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def api_server_reference(
    spec: ModelSpec, path: str, bodies: dict[str, dict[str, Any]], tmp: Path
) -> dict[str, tuple[int, dict[str, Any]]]:
    started = time.monotonic()
    server = ApiServer(spec, tmp / "api_server.log")
    try:
        answers = {cid: server.post(path, body) for cid, body in bodies.items()}
    finally:
        server.close()
    print(f"\napi_server reference for {spec.name}: {time.monotonic() - started:.1f}s")
    return answers


class Background:
    """Named jobs run one after another on a thread; ``result(name)`` waits for one.

    The vLLM reference runs are independent of the engine under test, so they
    start at the beginning of the module and overlap with its model loads.
    """

    def __init__(self) -> None:
        self._futures: dict[str, Any] = {}
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-reference")

    def submit(self, name: str, fn: Any, *args: Any) -> None:
        self._futures[name] = self._pool.submit(fn, *args)

    def result(self, name: str) -> Any:
        return self._futures[name].result(timeout=1200)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
