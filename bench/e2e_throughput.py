"""End-to-end throughput: the same requests three ways, side by side in one run.

    .venv/bin/python bench/e2e_throughput.py --model demo --n 1000 [--json out.json]
    .venv/bin/python bench/e2e_throughput.py --model tiny --n 1000 --rounds 5 --no-cold
    .venv/bin/python bench/e2e_throughput.py --model minilm --n 2000            # embeddings
    .venv/bin/python bench/e2e_throughput.py --model tiny --workload seed --n 5000 --no-run-batch --no-cold
    .venv/bin/python bench/e2e_throughput.py --model tiny --n 50000 --only-batchsite --rss

a. raw vLLM: one LLM.chat (LLM.embed) call over all requests, model loaded (the ceiling);
b. vLLM's run_batch on the same JSONL: whole process, and its processing time
   (its run_batch coroutine, timed inside the process by bench/run_batch_timed.py);
c. batchsite: upload through the API, run_gpu_worker, until completed with the
   output file written: claim to completed with the model already loaded
   (warm), and upload to completed with a worker started at upload (cold).

Workloads: ``chat`` (8-56 word prompts, max_tokens 32), embeddings for MiniLM, and
``seed`` (the seed's shape: ~300 tokens of candidate text, max_tokens 64, a
json_schema response_format). ``--rounds N`` runs a., b. and c. in turn N times
(one stack, a fresh warm worker each round) and reports medians. ``--rss`` samples the warm worker's resident memory
(its own process: where result lines live) at its first and last finished chunk.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PYTHON,
    REPO,
    Spy,
    Stack,
    chat_lines,
    embedding_lines,
    emit,
    engine_env,
    model_spec,
    seed_lines,
    seed_words,
    table,
    wait_status,
    write_jsonl,
)
from jobs.engine.options import cli_args  # noqa: E402


def output_tokens(lines: list[dict[str, Any]]) -> int:
    return sum(
        (line["response"]["body"].get("usage") or {}).get("completion_tokens", 0)
        for line in lines
        if line.get("response")
    )


def raw_llm(spec: Any, requests: Path) -> dict[str, Any]:
    from jobs.engine.options import resolve

    args = json.dumps(resolve(spec).engine_args)
    result = requests.with_suffix(".raw.json")
    subprocess.run(
        [PYTHON, str(REPO / "bench" / "raw_llm.py"), str(requests), spec.source, spec.name, args, str(result)],
        env=engine_env(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.read_text()))


def run_batch(spec: Any, requests: Path, work: Path) -> dict[str, Any]:
    out, timing = work / "run_batch.out.jsonl", work / "run_batch.timing.json"
    started = time.perf_counter()
    subprocess.run(
        [
            PYTHON,
            str(REPO / "bench" / "run_batch_timed.py"),
            str(timing),
            "-i",
            str(requests),
            "-o",
            str(out),
            *cli_args(spec),
        ],
        env=engine_env(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return {
        "wall": wall,
        "seconds": json.loads(timing.read_text())["seconds"],
        "requests": len(lines),
        "output_tokens": output_tokens(lines),
    }


class RssWatch(threading.Thread):
    """The worker process's RSS when its batch's first chunk is done and when the batch ends."""

    def __init__(self, pid: int, models: Any, batch_id: str) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.models, self.batch_id = models, batch_id
        self.first: int | None = None
        self.peak = 0
        self.running = True

    def run(self) -> None:
        from django.db import connection

        try:
            while self.running:
                rss = self.process.memory_info().rss
                self.peak = max(self.peak, rss) if self.first is not None else 0
                if (
                    self.first is None
                    and self.models.Chunk.objects.filter(batch_id=self.batch_id, status="done").exists()
                ):
                    self.first = rss
                time.sleep(0.5)
        finally:
            connection.close()


def fixed_costs(log: Path, batch_id: str) -> dict[str, float | None]:
    """The batch's per-batch fixed costs, from the worker's log (jobs/worker.py, worker_feed.py):
    its first claim to its first request handed to the engine, and its last result to
    ``completed`` (the close of its last chunk, finalize included)."""
    first = last = None
    for line in log.read_text(errors="replace").splitlines():
        if f"batch {batch_id} chunk " not in line:
            continue
        if first is None and (m := re.search(r"first request to the engine ([0-9.]+)s after its claim", line)):
            first = float(m.group(1))
        if m := re.search(r"closed ([0-9.]+)s after its last result", line):
            last = float(m.group(1))
    return {"claim_to_first_request_s": first, "last_result_to_completed_s": last}


class Batchsite:
    """c.: one private stack (API, database) for every round; each round a fresh worker,
    warmed by a 2-line batch so the model is loaded, takes the measured batch and is
    stopped, so nothing of batchsite's runs while a. or b. do."""

    def __init__(self, spec: Any, endpoint: str) -> None:
        self.endpoint = endpoint
        self.stack = Stack()
        self.rounds = 0
        kinds = "embeddings" if endpoint == "/v1/embeddings" else "chat,completions"
        self.stack.register(spec.name, spec.source, kinds, spec.engine_options)
        self.stack.start_web()
        self.sdk = self.stack.sdk(self.stack.api_key())
        self.models = self.stack.orm()

    def submit(self, path: Path) -> str:
        file = self.sdk.files.create(file=path.open("rb"), purpose="batch")
        return str(self.sdk.batches.create(input_file_id=file.id, endpoint=self.endpoint, completion_window="24h").id)

    def warm(self, requests: Path, n: int, profile: Path | None = None, rss: bool = False) -> dict[str, Any]:
        # Polling once a second: faster polling would take CPU from the engine
        # on a small machine, and the timings come from the database anyway.
        self.rounds += 1
        log = self.stack.data_dir / f"worker-warm-{self.rounds}.log"
        worker = self.stack.start_worker(log=log)
        with requests.open() as fh:
            first_two = [json.loads(next(fh)) for _ in range(2)]
        wait_status(self.sdk, self.submit(write_jsonl(self.stack.data_dir / "warm.jsonl", first_two)))
        spies = []
        if profile is not None:
            spies = [
                Spy(worker.pid, profile / "e2e-worker.txt", subprocesses=True),
                Spy(self.stack.web.pid, profile / "e2e-api.txt", subprocesses=True),
            ]
        batch_id = self.submit(requests)
        watch = RssWatch(worker.pid, self.models, batch_id) if rss else None
        if watch is not None:
            watch.start()
        if profile is not None:
            time.sleep(3)  # into the run, past the first chunk's start
            spies[0].dump(profile / "e2e-worker-dump.txt")
        done = wait_status(self.sdk, batch_id, every=1.0)
        for spy in spies:
            spy.stop()
        row = self.models.Batch.objects.get(pk=batch_id)
        out = [json.loads(x) for x in self.sdk.files.content(done.output_file_id).text.splitlines()]
        assert done.request_counts.completed == n, done
        warm = {
            "seconds": (row.completed_at - row.started_at).total_seconds(),
            "requests": done.request_counts.completed,
            "output_tokens": output_tokens(out),
            "prompt_tokens": sum((x["response"]["body"].get("usage") or {}).get("prompt_tokens", 0) for x in out),
        }
        warm.update(fixed_costs(log, batch_id))
        if watch is not None:
            watch.running = False
            watch.join()
            end_rss = psutil.Process(worker.pid).memory_info().rss
            warm["rss_first_chunk_MB"] = (watch.first or 0) / 1e6
            warm["rss_end_MB"] = end_rss / 1e6
            warm["rss_peak_MB"] = max(watch.peak, end_rss) / 1e6
            warm["rss_growth_MB"] = (max(watch.peak, end_rss) - (watch.first or end_rss)) / 1e6
        worker.terminate()
        worker.wait(timeout=120)
        return warm

    def cold(self, requests: Path, n: int) -> dict[str, Any]:
        """Upload, create, and only then a fresh worker that must load the model."""
        started = time.perf_counter()
        batch_id = self.submit(requests)
        self.stack.start_worker(log=self.stack.data_dir / "worker-cold.log")
        done = wait_status(self.sdk, batch_id, every=1.0)
        assert done.request_counts.completed == n, done
        return {"wall": time.perf_counter() - started, "requests": done.request_counts.completed}

    def stop(self) -> None:
        self.stack.stop()


def rate(r: dict[str, Any], key: str = "seconds") -> float:
    return float(r["requests"] / r[key])


def rates(name: str, r: dict[str, Any], key: str = "seconds") -> dict[str, Any]:
    return {
        "method": name,
        "seconds": r[key],
        "req_s": rate(r, key),
        "out_tok_s": r.get("output_tokens", 0) / r[key] if "output_tokens" in r else "",
    }


def medians(name: str, runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    """One row over the rounds: the median of each column."""
    rows = [rates(name, r, key) for r in runs]
    return {
        column: statistics.median(float(row[column]) for row in rows) if rows[0][column] != "" else ""
        for column in ("seconds", "req_s", "out_tok_s")
    } | {"method": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["demo", "tiny", "minilm"], default="demo")
    parser.add_argument("--workload", choices=["chat", "seed"], default="chat")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=None, help="default 32 (chat), 64 (seed)")
    parser.add_argument("--rounds", type=int, default=1, help="a., b., c. in turn this many times; medians")
    parser.add_argument("--json")
    parser.add_argument("--profile", type=Path, help="py-spy the warm worker and the API into this directory")
    parser.add_argument("--only-batchsite", action="store_true", help="skip a. and b. and the cold run")
    parser.add_argument("--no-run-batch", action="store_true", help="skip b.")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold run")
    parser.add_argument("--rss", action="store_true", help="the warm worker's RSS from its first chunk to the end")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    spec = model_spec(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    if args.model == "minilm":
        lines, endpoint = embedding_lines(args.n, spec.name), "/v1/embeddings"
    elif args.workload == "seed":
        words = seed_words(spec.source)
        lines, endpoint = seed_lines(args.n, spec.name, args.max_tokens or 64, words), "/v1/chat/completions"
    else:
        lines, endpoint = chat_lines(args.n, spec.name, args.max_tokens or 32), "/v1/chat/completions"
    requests = write_jsonl(work / "requests.jsonl", lines)
    del lines

    # The sides take turns, round after round (a, b, c, a, b, c, ...): this VM's speed
    # drifts by more than the few per cent the targets are set at, so a single run of
    # each side, minutes apart, can decide a ratio by itself. Ratios are the median of
    # each round's own ratio (sides minutes apart, not a whole sitting apart).
    a_name = "a. LLM.embed (loaded)" if args.model == "minilm" else "a. LLM.chat (loaded)"
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": []}
    side = Batchsite(spec, endpoint)
    cold: dict[str, Any] = {}
    try:
        for k in range(args.rounds):
            if not args.only_batchsite:
                runs["a"].append(raw_llm(spec, requests))
                if not args.no_run_batch:
                    runs["b"].append(run_batch(spec, requests, work))
            runs["c"].append(side.warm(requests, args.n, args.profile if k == 0 else None, args.rss))
            if args.rounds > 1:
                print(f"round {k + 1}: " + ", ".join(f"{s} {r[-1]['seconds']:.3f}s" for s, r in runs.items() if r))
        if not (args.only_batchsite or args.no_cold):
            cold = side.cold(requests, args.n)
    finally:
        side.stop()

    rows: list[dict[str, Any]] = []
    if runs["a"]:
        rows.append(medians(a_name, runs["a"]))
    if runs["b"]:
        rows += [
            medians("b. run_batch processing", runs["b"]),
            medians("b. run_batch whole process", runs["b"], "wall"),
        ]
    rows.append(medians("c. batchsite claim->completed (loaded)", runs["c"]))
    if cold:
        rows.append(
            {
                "method": "c. batchsite upload->completed (cold)",
                "seconds": cold["wall"],
                "req_s": cold["requests"] / cold["wall"],
            }
        )

    per_round: dict[str, list[float]] = {}
    for k, c in enumerate(runs["c"]):
        if runs["a"]:
            per_round.setdefault("c/a processing", []).append(rate(c) / rate(runs["a"][k]))
        if runs["b"]:
            per_round.setdefault("c/b processing", []).append(rate(c) / rate(runs["b"][k]))
    ratios = {name: statistics.median(values) for name, values in per_round.items()}
    if cold and runs["b"]:
        ratios["c/b wall (cold batchsite / whole run_batch)"] = cold["wall"] / statistics.median(
            b["wall"] for b in runs["b"]
        )
    warm = runs["c"][0]
    print(f"model={spec.name} workload={args.workload if args.model != 'minilm' else 'embeddings'} n={args.n}")
    print(f"prompt tokens per request (batchsite's usage): {warm['prompt_tokens'] / max(warm['requests'], 1):.1f}")
    if args.rounds > 1:
        print(f"rounds={args.rounds}: medians; ratios are the median of each round's ratio")
    print(table(rows, ["method", "seconds", "req_s", "out_tok_s"]))
    for name, value in ratios.items():
        each = " ".join(f"{v:.3f}" for v in per_round.get(name, []))
        print(f"{name}: {value:.3f}" + (f"  (rounds: {each})" if args.rounds > 1 and each else ""))
    # The fixed costs reported (printed and in the JSON) are the largest of the
    # rounds: the target is a ceiling, so the worst round is the one that counts.
    fixed: dict[str, float | None] = {}
    for key in ("claim_to_first_request_s", "last_result_to_completed_s"):
        values = [c[key] for c in runs["c"] if c.get(key) is not None]
        fixed[key] = max(values) if values else None
        shown = (
            "not logged"
            if not values
            else f"{max(values):.3f}s" + (" (the largest of the rounds)" if len(values) > 1 else "")
        )
        print(f"per-batch {key.replace('_', ' ')[:-2]}: {shown}")
    if args.rss:
        print(
            "worker RSS: first chunk done {rss_first_chunk_MB:.1f} MB, end {rss_end_MB:.1f} MB, "
            "peak {rss_peak_MB:.1f} MB, growth {rss_growth_MB:.1f} MB".format(**warm)
        )
    emit(
        {
            "model": spec.name,
            "n": args.n,
            "workload": args.workload,
            "rows": rows,
            "ratios": ratios,
            "per_round": per_round,
            "runs": runs,
            "per_batch_fixed_costs_max": fixed,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
