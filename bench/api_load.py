"""API under load: concurrent clients polling batch status, on loopback, bounded in time.

    .venv/bin/python bench/api_load.py --clients 100 --seconds 30 [--json out.json]

Each client alternates GET /v1/batches/{id} and GET /v1/batches?limit=20,
once per --interval seconds (an SDK polling loop; 0 = back to back, which
measures saturation: latency is then concurrency / throughput),
against gunicorn as bin/start runs it (2 processes x 4 threads, unless
--web-workers/--threads say otherwise). The load generator shares the
machine's cores with the server, as it would on a one-host deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, table, write_jsonl  # noqa: E402

MODEL = "load-model"


async def client(
    session: Any,
    url: str,
    key: str,
    batch_ids: list[str],
    deadline: float,
    n: int,
    interval: float,
    latencies: list[float],
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
        latencies.append(time.perf_counter() - started)
        if interval:
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))


async def load(
    url: str, key: str, batch_ids: list[str], clients: int, seconds: float, interval: float
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.monotonic() + seconds
        started = time.perf_counter()

        async def staggered(n: int) -> None:
            await asyncio.sleep(interval * n / clients)  # pollers do not all start in the same instant
            await client(session, url, key, batch_ids, deadline, n, interval, latencies, errors)

        await asyncio.gather(*(staggered(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
        "errors": len(errors),
    }


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
    parser.add_argument("--json")
    args = parser.parse_args()
    stack = Stack(env={"BATCHSITE_MAX_QUEUED_BATCHES": str(args.batches + 1)})
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
        result = asyncio.run(load(stack.url, key, ids, args.clients, args.seconds, args.interval))
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
    emit(result, args.json)


if __name__ == "__main__":
    main()
