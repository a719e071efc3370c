"""Ingest: upload and create batches of ~1 KB lines; time to in_progress and the server's memory.

    .venv/bin/python bench/ingest.py --lines 50000 200000 [--json out.json]

Against bare loops that only parse the same file's lines, with the stdlib's
``json.loads`` and with ``orjson.loads`` (the floor any validator has to pay),
for the whole ingest (upload and create) and for the create call alone (the
validation pass). The server is gunicorn with one worker process, whose RSS
(and its validation child's, for big files) is sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Spy, Stack, chat_prompt, emit, table  # noqa: E402

MODEL = "ingest-model"


def make_file(path: Path, lines: int, size: int = 1000, model: str = MODEL) -> Path:
    """Lines of exactly ``size`` bytes (newline included): a prompt cut to fit."""

    def line(i: int, content: str) -> str:
        body = {"model": model, "max_tokens": 32, "temperature": 0, "messages": [{"role": "user", "content": content}]}
        return json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})

    with path.open("w") as out:
        for i in range(lines):
            room = size - 1 - len(line(i, ""))  # ASCII content: one byte per character
            out.write(line(i, ((chat_prompt(i) + " ") * 20)[:room]) + "\n")
    return path


def bare_parse(path: Path, loads: Any = json.loads) -> float:
    started = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            loads(line)
    return time.perf_counter() - started


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.child_peak = 0  # the validation child's (a process of its own)
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            for child in self.process.children():
                with contextlib.suppress(psutil.Error):
                    self.child_peak = max(self.child_peak, child.memory_info().rss)
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--json")
    parser.add_argument("--profile", type=Path, help="py-spy the server during each ingest into this directory")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    biggest = max(args.lines)
    stack = Stack(
        env={
            "BATCHSITE_MAX_REQUESTS_PER_BATCH": str(biggest),
            "BATCHSITE_MAX_QUEUED_REQUESTS": str(4 * biggest),
            "BATCHSITE_MAX_UPLOAD_BYTES": str(1100 * biggest + 1_000_000),
        }
    )
    rows = []
    try:
        stack.register(MODEL, "/nonexistent", "chat")
        stack.start_web(workers=1, threads=2)
        sdk = stack.sdk(stack.api_key())
        server = psutil.Process(stack.web.pid).children()[0]
        warm = make_file(stack.data_dir / "warm.jsonl", 100)
        sdk.batches.create(
            input_file_id=sdk.files.create(file=warm.open("rb"), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        for n in args.lines:
            path = make_file(stack.data_dir / f"in-{n}.jsonl", n)
            # Best of three each, alternating, so a noisy neighbour hurts both alike.
            bare = bare_or = float("inf")
            for _ in range(3):
                bare = min(bare, bare_parse(path))
                bare_or = min(bare_or, bare_parse(path, orjson.loads))
            sampler = RssSampler(server.pid)
            base = sampler.peak
            sampler.start()
            spy = Spy(server.pid, args.profile / f"ingest-{n}.txt", subprocesses=True) if args.profile else None
            started = time.perf_counter()
            file = sdk.files.create(file=path.open("rb"), purpose="batch")
            uploaded = time.perf_counter()
            batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
            seconds = time.perf_counter() - started
            create = seconds - (uploaded - started)
            if spy is not None:
                spy.stop()
            sampler.running = False
            sampler.join()
            assert batch.status == "in_progress" and batch.request_counts.total == n, batch
            rows.append(
                {
                    "lines": n,
                    "MB": path.stat().st_size / 1e6,
                    "upload_s": uploaded - started,
                    "to_in_progress_s": seconds,
                    "lines_s": n / seconds,
                    "bare_parse_lines_s": n / bare,
                    "bare_orjson_lines_s": n / bare_or,
                    "ratio_vs_bare": bare / seconds,
                    "ratio_vs_orjson": bare_or / seconds,
                    "create_s": create,
                    "create_vs_bare": bare / create,
                    "create_vs_orjson": bare_or / create,
                    "rss_growth_MB": (sampler.peak - base) / 1e6,
                    "child_rss_MB": sampler.child_peak / 1e6,
                }
            )
            sdk.batches.cancel(batch.id)
    finally:
        stack.stop()
    print(
        table(
            rows,
            [
                "lines",
                "MB",
                "upload_s",
                "to_in_progress_s",
                "lines_s",
                "bare_parse_lines_s",
                "bare_orjson_lines_s",
                "ratio_vs_bare",
                "ratio_vs_orjson",
                "create_s",
                "create_vs_bare",
                "create_vs_orjson",
                "rss_growth_MB",
                "child_rss_MB",
            ],
        )
    )
    emit({"rows": rows}, args.json)


if __name__ == "__main__":
    main()
