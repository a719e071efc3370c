"""API under load: concurrent clients polling batch status, on loopback, bounded in time.

    .venv/bin/python bench/api_load.py --clients 100 --seconds 30 [--json out.json]

Each client alternates GET /v1/batches/{id} and GET /v1/batches?limit=20,
once per --interval seconds (an SDK polling loop; 0 = back to back, which
measures saturation: latency is then concurrency / throughput),
against gunicorn as bin/start runs it (2 processes x 4 threads, unless
--web-workers/--threads say otherwise). The load generator shares the
machine's cores with the server, as it would on a one-host deployment.

``--upload-mb 200``: meanwhile one more client uploads a file of that size
(1 KB lines) and creates a batch from it; the pollers' latencies are also
reported for the requests sent while the upload ran and while the batch was
created (the validation pass).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, table, write_jsonl  # noqa: E402
from bench.ingest import make_file  # noqa: E402

MODEL = "load-model"


async def client(
    session: Any,
    url: str,
    key: str,
    batch_ids: list[str],
    deadline: float,
    n: int,
    interval: float,
    latencies: list[tuple[float, float]],
    errors: list[str],
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    i = n
    while time.monotonic() < deadline:
        path = f"/v1/batches/{batch_ids[i % len(batch_ids)]}" if i % 2 else "/v1/batches?limit=20"
        i += 1
        started = time.perf_counter()
        try:
            async with session.get(url + path, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors.append(str(response.status))
        except Exception as exc:  # a refused or reset connection is an error to count, not a crash
            errors.append(type(exc).__name__)
        latencies.append((started, time.perf_counter() - started))
        if interval:
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))


def summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


class Uploader(threading.Thread):
    """One client uploading a big file and creating a batch from it, timed."""

    def __init__(self, sdk: Any, path: Path, delay: float) -> None:
        super().__init__(daemon=True)
        self.sdk, self.path, self.delay = sdk, path, delay
        self.windows: dict[str, tuple[float, float]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(self.delay)
            started = time.perf_counter()
            file = self.sdk.files.create(file=self.path.open("rb"), purpose="batch")
            uploaded = time.perf_counter()
            batch = self.sdk.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            self.windows = {"upload": (started, uploaded), "validation": (uploaded, time.perf_counter())}
            assert batch.status == "in_progress", batch
        except BaseException as exc:  # reported by main
            self.error = exc


async def load(
    url: str, key: str, batch_ids: list[str], clients: int, seconds: float, interval: float, uploader: Any = None
) -> dict[str, Any]:
    import aiohttp

    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.monotonic() + seconds
        started = time.perf_counter()

        async def staggered(n: int) -> None:
            await asyncio.sleep(interval * n / clients)  # pollers do not all start in the same instant
            await client(session, url, key, batch_ids, deadline, n, interval, latencies, errors)

        if uploader is not None:
            uploader.start()
        await asyncio.gather(*(staggered(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    result = {"clients": clients, "seconds": elapsed, **summary([lat for _, lat in latencies], elapsed)}
    result["errors"] = len(errors)
    if uploader is not None:
        uploader.join()
        if uploader.error is not None:
            raise uploader.error
        for phase, (begin, end) in uploader.windows.items():
            inside = [lat for sent, lat in latencies if begin <= sent <= end]
            result[phase] = {"seconds": end - begin, **summary(inside, end - begin)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between one client's polls; 0 = back to back (saturation)"
    )
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--upload-mb", type=int, default=0, help="also upload and create a batch of this size")
    parser.add_argument("--json")
    args = parser.parse_args()
    lines = args.upload_mb * 1000
    # One user submits every batch: the per-user quotas are raised with the global ones.
    slots = str(args.batches + 2)
    env = {"BATCHSITE_MAX_QUEUED_BATCHES": slots, "BATCHSITE_USER_MAX_QUEUED_BATCHES": slots}
    if lines:
        env.update(
            BATCHSITE_MAX_REQUESTS_PER_BATCH=str(lines),
            BATCHSITE_MAX_QUEUED_REQUESTS=str(lines + 100 * args.batches),
            BATCHSITE_USER_MAX_QUEUED_REQUESTS=str(lines + 100 * args.batches),
            BATCHSITE_MAX_UPLOAD_BYTES=str(1100 * lines + 1_000_000),
        )
    stack = Stack(env=env)
    try:
        stack.register(MODEL, "/nonexistent", "chat")
        stack.start_web(workers=args.web_workers, threads=args.threads)
        key = stack.api_key()
        sdk = stack.sdk(key)
        path = write_jsonl(stack.data_dir / "in.jsonl", chat_lines(100, MODEL))
        file = sdk.files.create(file=path.open("rb"), purpose="batch")
        ids = [
            sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(args.batches)
        ]
        uploader = None
        if lines:
            big = make_file(stack.data_dir / "big.jsonl", lines, model=MODEL)
            uploader = Uploader(stack.sdk(key), big, delay=min(3.0, args.seconds / 4))
        result = asyncio.run(load(stack.url, key, ids, args.clients, args.seconds, args.interval, uploader))
    finally:
        stack.stop()
    result.update(web_workers=args.web_workers, threads=args.threads, interval=args.interval)
    print(
        table(
            [result],
            [
                "clients",
                "interval",
                "web_workers",
                "threads",
                "seconds",
                "requests",
                "req_s",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "errors",
            ],
        )
    )
    for phase in ("upload", "validation"):
        if phase in result:
            p = result[phase]
            print(
                f"during the {args.upload_mb} MB {phase} ({p['seconds']:.2f}s): {p['requests']} polls, "
                f"p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms"
            )
    emit(result, args.json)


if __name__ == "__main__":
    main()
