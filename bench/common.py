"""Shared pieces of the benchmarks: a throwaway batchsite (database, data dir,
gunicorn, workers) started as subprocesses, the same way users run it, and
deterministic request files.

Every script prints a small table and can write JSON (--json PATH).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def chat_prompt(i: int) -> str:
    """Mixed lengths, deterministic: 8 to 56 words, then a task."""
    words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(8 * (i % 7 + 1)))
    return f"Here are some words: {words}. Write a sentence that uses three of them."


def chat_lines(n: int, model: str, max_tokens: int = 32) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": chat_prompt(i)}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i in range(n)
    ]


def embedding_lines(n: int, model: str) -> list[dict[str, Any]]:
    """Sentences of 8 to 56 words: each request is cheap, so per-request overhead shows."""
    return [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": model, "input": chat_prompt(i)},
        }
        for i in range(n)
    ]


SEED_SCHEMA = {
    "name": "verdict",
    "schema": {
        "type": "object",
        "properties": {"score": {"type": "integer"}, "fit": {"type": "boolean"}, "reason": {"type": "string"}},
        "required": ["score", "fit", "reason"],
    },
}


def candidate_text(i: int, words: int = 220) -> str:
    """About 300 tokens of a made-up candidate profile (220 words), different per request."""
    vocabulary = WORDS + "python rust sql kubernetes team lead shipped scaled latency budget".split()
    body = " ".join(vocabulary[(i * 13 + k * 7) % len(vocabulary)] for k in range(words))
    return f"Candidate {i}: {body}."


def seed_words(source: str, tokens: int = 300) -> int:
    """How many words of candidate text make about ``tokens`` tokens for this model's tokenizer
    (the tiny model's 512-token BPE needs about twice as many tokens per word as SmolLM2's)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    per_word = len(tokenizer(candidate_text(0, 200))["input_ids"]) / 200
    return max(10, int(tokens / per_word))


def seed_lines(n: int, model: str, max_tokens: int = 64, words: int = 220) -> list[dict[str, Any]]:
    """The seed's workload: a long prompt (a candidate to score), a short structured answer."""
    return [
        {
            "custom_id": f"cand-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [
                    {"role": "system", "content": "Score the candidate for a backend role. Answer in JSON."},
                    {"role": "user", "content": candidate_text(i, words)},
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": SEED_SCHEMA},
            },
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    with path.open("w") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def fresh_database_url(tag: str) -> str | None:
    """A new, empty PostgreSQL database when DATABASE_URL points at PostgreSQL (so runs never
    see each other's rows); None on SQLite, where each Stack has its own file."""
    database_url = os.environ.get("DATABASE_URL")
    if not database_url or not database_url.startswith("postgres"):
        return None
    import psycopg

    base, _, _ = database_url.rpartition("/")
    name = f"bench_{tag}_{os.getpid()}"
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


_stacks = itertools.count()


class Stack:
    """A private batchsite: its own data dir and database, started like bin/start does."""

    def __init__(
        self, database_url: str | None = None, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="batchsite-bench-"))
        self.env = {
            **os.environ,
            "BATCHSITE_DATA_DIR": str(self.data_dir),
            "HF_HUB_OFFLINE": "1",
            "DJANGO_SETTINGS_MODULE": "batchsite.settings",
            **(env or {}),
        }
        # On PostgreSQL a stack never shares the database DATABASE_URL names (a test
        # session's or another run's rows would count against its queue limits).
        database_url = database_url or fresh_database_url(f"stack{next(_stacks)}")
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.processes: list[subprocess.Popen[Any]] = []
        self.url = ""
        self.manage("migrate", "--noinput")

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def api_key(self, user: str = "bench") -> str:
        return self.manage("create_api_key", user).strip().splitlines()[-1]

    def register(self, name: str, source: str, endpoints: str, options: dict[str, Any] | None = None) -> None:
        args = ["register_model", name, "--source", source, "--endpoints", endpoints]
        for key, value in (options or {}).items():
            args += ["--option", f"{key}={json.dumps(value)}"]
        self.manage(*args)

    def start_web(self, workers: int = 2, threads: int = 4) -> str:
        port = free_port()
        self.web = self._spawn(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "batchsite.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--timeout",
                "600",
                "--log-level",
                "warning",
            ]
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/v1/models", timeout=2)
            except urllib.error.HTTPError:
                return self.url
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)

    def start_worker(self, *args: str, log: Path | None = None, **env: str) -> subprocess.Popen[Any]:
        return self._spawn([PYTHON, "manage.py", "run_gpu_worker", *args], log=log, **env)

    def _spawn(self, cmd: list[str], log: Path | None = None, **env: str) -> subprocess.Popen[Any]:
        out = log.open("w") if log else subprocess.DEVNULL
        process = subprocess.Popen(cmd, cwd=REPO, env={**self.env, **env}, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def sdk(self, key: str) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=600)

    def orm(self) -> Any:
        """Django set up against this stack's database, for exact timestamps."""
        os.environ.update({k: v for k, v in self.env.items() if k in ("BATCHSITE_DATA_DIR", "DATABASE_URL")})
        os.environ["DJANGO_SETTINGS_MODULE"] = "batchsite.settings"
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        from jobs import models

        return models

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_status(
    sdk: Any,
    batch_id: str,
    done: tuple[str, ...] = ("completed", "failed", "expired", "cancelled"),
    timeout: float = 3600,
    every: float = 0.1,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in done:
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"{batch_id} still {batch.status}")
        time.sleep(every)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def emit(result: dict[str, Any], json_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))


def model_spec(kind: str) -> Any:
    """The demo chat model (SmolLM2), a tiny random 2-layer Llama (prepared once under
    var/bench-models), or the demo embeddings model (MiniLM)."""
    from jobs.engine import demo
    from jobs.engine.base import ModelSpec

    cache = REPO / "var" / "bench-models"
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "demo":
        path = cache / demo.SMOLLM2_DIRNAME
        demo.convert_smollm2(path)
        return ModelSpec(demo.SMOLLM2_NAME, str(path), ("chat", "completions"), {"max_model_len": 2048})
    if kind == "tiny":
        path = demo.build_tiny_model(cache / "tiny-llama")
        return ModelSpec("tiny-llama", str(path), ("chat", "completions"), {})
    if kind == "minilm":
        return ModelSpec(demo.MINILM_NAME, str(demo.minilm_dir()), ("embeddings",), {})
    raise ValueError(kind)


def engine_env(spec: Any) -> dict[str, str]:
    from jobs.engine.options import resolve

    return {**os.environ, **resolve(spec).env, "HF_HUB_OFFLINE": "1"}


class Spy:
    """``py-spy record`` attached to one process (and, with ``subprocesses``, its children)
    for a stretch of a benchmark, written as collapsed stacks that bench/profile_top.py
    turns into a table. ``--nonblocking`` samples without pausing the process, so the
    profiled run is not slowed much; a few dumps (``py-spy dump``) show each thread's
    stack at a moment of the run."""

    def __init__(self, pid: int, out: Path, subprocesses: bool = False, rate: int = 100) -> None:
        self.pid, self.out = pid, out
        spy = str(Path(PYTHON).parent / "py-spy")
        cmd = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "-o", str(out)]
        cmd += ["--nonblocking"] + (["--subprocesses"] if subprocesses else [])
        self.spy = spy
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dump(self, path: Path) -> None:
        done = subprocess.run([self.spy, "dump", "--pid", str(self.pid)], capture_output=True, text=True, check=False)
        with path.open("a") as out:
            out.write(done.stdout + done.stderr + "\n")

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        self.process.wait(timeout=60)
