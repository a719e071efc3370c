"""End-to-end throughput: the same chat requests three ways, side by side in one run.

    .venv/bin/python bench/e2e_throughput.py --model demo --n 1000 [--json out.json]
    .venv/bin/python bench/e2e_throughput.py --model tiny --n 1000

a. raw vLLM: one LLM.chat call over all requests, model loaded (the ceiling);
b. vLLM's run_batch on the same JSONL: whole process, and its processing time
   (its run_batch coroutine, timed inside the process by bench/run_batch_timed.py);
c. batchsite: upload through the API, run_gpu_worker, until completed with the
   output file written: claim to completed with the model already loaded
   (warm), and upload to completed with a worker started at upload (cold).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PYTHON,
    REPO,
    Spy,
    Stack,
    chat_lines,
    emit,
    engine_env,
    model_spec,
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


def batchsite(
    spec: Any, requests: Path, n: int, profile: Path | None = None, cold_run: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    stack = Stack()
    try:
        stack.register(spec.name, spec.source, "chat,completions", spec.engine_options)
        stack.start_web()
        sdk = stack.sdk(stack.api_key())
        models = stack.orm()

        def submit(path: Path) -> str:
            file = sdk.files.create(file=path.open("rb"), purpose="batch")
            return str(
                sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id
            )

        # Polling once a second: faster polling would take CPU from the engine
        # on a small machine, and the timings come from the database anyway.
        # Warm: a worker with the model loaded (by a 2-line batch) takes the batch.
        worker = stack.start_worker(log=stack.data_dir / "worker-warm.log")
        warm_up = write_jsonl(
            stack.data_dir / "warm.jsonl", [json.loads(x) for x in requests.read_text().splitlines()[:2]]
        )
        wait_status(sdk, submit(warm_up))
        spies = []
        if profile is not None:
            spies = [
                Spy(worker.pid, profile / "e2e-worker.txt", subprocesses=True),
                Spy(stack.web.pid, profile / "e2e-api.txt", subprocesses=True),
            ]
        batch_id = submit(requests)
        if spies:
            time.sleep(3)  # into the run, past the first chunk's start
            spies[0].dump(profile / "e2e-worker-dump.txt")  # type: ignore[operator]
        done = wait_status(sdk, batch_id, every=1.0)
        for spy in spies:
            spy.stop()
        row = models.Batch.objects.get(pk=batch_id)
        out = [json.loads(x) for x in sdk.files.content(done.output_file_id).text.splitlines()]
        warm = {
            "seconds": (row.completed_at - row.started_at).total_seconds(),
            "requests": done.request_counts.completed,
            "output_tokens": output_tokens(out),
        }
        worker.terminate()
        worker.wait(timeout=120)
        if not cold_run:
            return warm, {}

        # Cold: upload, create, and only then a fresh worker that must load the model.
        started = time.perf_counter()
        batch_id = submit(requests)
        stack.start_worker(log=stack.data_dir / "worker-cold.log")
        done = wait_status(sdk, batch_id, every=1.0)
        cold = {"wall": time.perf_counter() - started, "requests": done.request_counts.completed}
        assert done.request_counts.completed == n, done
        return warm, cold
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["demo", "tiny"], default="demo")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json")
    parser.add_argument("--profile", type=Path, help="py-spy the warm worker and the API into this directory")
    parser.add_argument("--only-batchsite", action="store_true", help="skip a. and b. (for profiling)")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    spec = model_spec(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    requests = write_jsonl(work / "requests.jsonl", chat_lines(args.n, spec.name, args.max_tokens))
    if args.only_batchsite:
        warm, _ = batchsite(spec, requests, args.n, args.profile, cold_run=False)
        print(f"batchsite claim->completed: {warm['seconds']:.2f}s, {warm['requests'] / warm['seconds']:.1f} req/s")
        return
    raw = raw_llm(spec, requests)
    rb = run_batch(spec, requests, work)
    warm, cold = batchsite(spec, requests, args.n, args.profile)

    def rates(name: str, r: dict[str, Any], key: str = "seconds") -> dict[str, Any]:
        return {
            "method": name,
            "seconds": r[key],
            "req_s": r["requests"] / r[key],
            "out_tok_s": r.get("output_tokens", 0) / r[key] if "output_tokens" in r else "",
        }

    rows = [
        rates("a. LLM.chat (loaded)", raw),
        rates("b. run_batch processing", rb),
        rates("b. run_batch whole process", rb, "wall"),
        rates("c. batchsite claim->completed (loaded)", warm),
        {
            "method": "c. batchsite upload->completed (cold)",
            "seconds": cold["wall"],
            "req_s": cold["requests"] / cold["wall"],
        },
    ]
    ratios = {
        "c/a processing": rows[3]["req_s"] / rows[0]["req_s"],
        "c/b processing": rows[3]["req_s"] / rows[1]["req_s"],
        "c/b wall (cold batchsite / whole run_batch)": cold["wall"] / rb["wall"],
    }
    print(f"model={spec.name} n={args.n} max_tokens={args.max_tokens}")
    print(table(rows, ["method", "seconds", "req_s", "out_tok_s"]))
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    emit({"model": spec.name, "n": args.n, "rows": rows, "ratios": ratios}, args.json)


if __name__ == "__main__":
    main()
