"""Claim overhead at scale: 1, 2 and 4 worker processes on one batch of 200 chunks.

    bin/with-postgres .venv/bin/python bench/claim_scaling.py [--workers 1 2 4] [--json out.json]
    bin/with-postgres .venv/bin/python bench/claim_scaling.py --ray [--workers 4]

--ray: the same batch run by N plain worker processes, then by N workers placed by the Ray fleet
(manage.py run_ray_fleet --cpu on a local Ray cluster with N CPU slots), side by side; the ratio
is Ray's chunks/s over plain's (needs requirements-ray.txt).

SIMULATED ENGINE: the workers run jobs.engine.simulated.SimulatedEngine,
which only sleeps per request (a stand-in for GPU time), so what is measured
is the queue: claiming, progress writes, part files and finalize. Time is
from the batch's first claim to completed, read from the database. Needs
DATABASE_URL (PostgreSQL, as bin/with-postgres sets); SQLite works too but
serialises claims by design.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, table, wait_status, write_jsonl  # noqa: E402

MODEL = "simulated-model"


def run(workers: int, chunks: int, chunk_size: int, sleep: float, ray_address: str = "") -> dict[str, Any]:
    database_url = os.environ.get("DATABASE_URL")
    if database_url and database_url.startswith("postgres"):
        # A fresh database per run, so earlier runs' rows cost nothing.
        import psycopg

        base, _, _ = database_url.rpartition("/")
        name = f"bench_claims_{workers}_{os.getpid()}"
        with psycopg.connect(base + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        database_url = f"{base}/{name}"
    stack = Stack(
        database_url=database_url, env={"BATCHSITE_CHUNK_SIZE": str(chunk_size), "BATCHSITE_POLL_SECONDS": "0.05"}
    )
    try:
        stack.register(MODEL, "/simulated", "chat")
        stack.start_web()
        sdk = stack.sdk(stack.api_key())
        if ray_address:
            stack._spawn(
                [sys.executable, "manage.py", "run_ray_fleet", "--address", ray_address, "--cpu"]
                + ["--max-workers", str(workers), "--engine", "jobs.engine.simulated.SimulatedEngine"],
                log=stack.data_dir / "fleet.log",
                SIM_SLEEP_SECONDS=str(sleep),
            )
            time.sleep(10)  # the fleet connects and its actors start (more than plain workers take)
        for i in range(0 if ray_address else workers):
            stack.start_worker(
                "--engine",
                "jobs.engine.simulated.SimulatedEngine",
                "--worker-id",
                f"sim-{i}",
                log=stack.data_dir / f"worker-{i}.log",
                SIM_SLEEP_SECONDS=str(sleep),
            )
        time.sleep(3)  # let every worker finish starting before the batch exists
        path = write_jsonl(stack.data_dir / "in.jsonl", chat_lines(chunks * chunk_size, MODEL))
        file = sdk.files.create(file=path.open("rb"), purpose="batch")
        batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = wait_status(sdk, batch.id, every=0.05)
        assert done.status == "completed" and done.request_counts.completed == chunks * chunk_size, done
        models = stack.orm()
        row = models.Batch.objects.get(pk=batch.id)
        seconds = (row.completed_at - row.started_at).total_seconds()
        from django.db import connections

        connections.close_all()
        return {
            "placement": "ray" if ray_address else "plain",
            "workers": workers,
            "seconds": seconds,
            "chunks_s": chunks / seconds,
            "ideal_s": chunks * chunk_size * sleep / workers,
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.05, help="simulated GPU seconds per request")
    parser.add_argument("--ray", action="store_true", help="plain workers against Ray-placed ones")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.ray:
        compare_ray(args)
        return
    rows = []
    for workers in args.workers:
        # Each run in a child process: Django is set up once per process and
        # each run reads a different database.
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as pool:
            rows.append(pool.apply(run, (workers, args.chunks, args.chunk_size, args.sleep)))
    base = rows[0]["chunks_s"]
    for row in rows:
        row["speedup"] = row["chunks_s"] / base
        row["efficiency"] = row["speedup"] / (row["workers"] / rows[0]["workers"])
    print("SIMULATED engine (sleeps per request):", os.environ.get("DATABASE_URL", "sqlite").split(":")[0])
    print(table(rows, ["workers", "seconds", "ideal_s", "chunks_s", "speedup", "efficiency"]))
    emit({"database": os.environ.get("DATABASE_URL", "sqlite").split(":")[0], "rows": rows}, args.json)


def compare_ray(args: argparse.Namespace) -> None:
    import multiprocessing

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fleet.ray_cluster import RayCluster

    workers = max(args.workers)
    rows = []
    with RayCluster() as cluster:
        cluster.start_head(cpus=workers)  # CPU slots, not cores: the simulated engine only sleeps
        for address in ("", cluster.address):
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                rows.append(pool.apply(run, (workers, args.chunks, args.chunk_size, args.sleep, address)))
    for row in rows:
        row["vs_plain"] = row["chunks_s"] / rows[0]["chunks_s"]
    print("SIMULATED engine (sleeps per request):", os.environ.get("DATABASE_URL", "sqlite").split(":")[0])
    print(table(rows, ["placement", "workers", "seconds", "ideal_s", "chunks_s", "vs_plain"]))
    emit({"database": os.environ.get("DATABASE_URL", "sqlite").split(":")[0], "rows": rows}, args.json)


if __name__ == "__main__":
    main()
