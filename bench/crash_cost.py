"""Work lost to a crash: one chunk of N lines on the demo chat model, its worker killed with
SIGKILL at about half, a second worker finishing it; with checkpoints (the default, every
BATCHSITE_CHECKPOINT_SECONDS / _LINES) and with them effectively off (what a crash cost
before issue 19: the whole chunk ran again).

Reported per run: lines the first worker had finished at the kill, lines the second kept,
lines run again (finished before the kill but not kept, from batchsite_lines_rerun_total and
the resume log line), and the worker seconds that cost at the first worker's measured rate.

    .venv/bin/python bench/crash_cost.py --lines 2000 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, model_spec, table, write_jsonl  # noqa: E402

WORKER = {
    "BATCHSITE_HEARTBEAT_SECONDS": "1",
    "BATCHSITE_STALE_AFTER_SECONDS": "5",
    "BATCHSITE_PROGRESS_SECONDS": "0.5",
    "BATCHSITE_POLL_SECONDS": "0.2",
    "TRANSFORMERS_OFFLINE": "1",
}


def run(label: str, n: int, checkpoints: dict[str, str]) -> dict[str, object]:
    spec = model_spec("demo")
    stack = Stack(env={"BATCHSITE_CHUNK_SIZE": str(n), **WORKER, **checkpoints})
    try:
        stack.register(spec.name, spec.source, "chat,completions", spec.engine_options)
        stack.start_web()
        sdk = stack.sdk(stack.api_key())
        path = write_jsonl(stack.data_dir / "in.jsonl", chat_lines(n, spec.name, max_tokens=4))
        file = sdk.files.create(file=path.open("rb"), purpose="batch")
        models = stack.orm()
        doomed = stack.start_worker("--worker-id", "doomed", "--exit-when-idle")
        batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        started = None
        while True:
            chunk = models.Chunk.objects.get(batch_id=batch.id)
            if started is None and chunk.completed:
                started = (time.monotonic(), chunk.completed)
            if chunk.completed >= n // 2:
                break
            time.sleep(0.2)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        assert started is not None
        reported = models.Chunk.objects.get(batch_id=batch.id).completed
        rate = (reported - started[1]) / max(1e-9, time.monotonic() - started[0])
        log = stack.data_dir / "rescuer.log"
        rescuer = stack.start_worker("--worker-id", "rescuer", "--exit-when-idle", log=log)
        rescuer.wait(timeout=1800)
        done = models.Batch.objects.get(pk=batch.id)
        assert done.status == "completed" and done.completed == n, (done.status, done.completed)
        text = log.read_text()
        kept = int(text.split("resumed: kept ", 1)[1].split()[0]) if "resumed: kept " in text else 0
        from jobs.services import counters

        rerun = counters.value(counters.LINES_RERUN)
        return {
            "run": label,
            "lines": n,
            "done_at_kill": reported,
            "kept": kept,
            "rerun_lines": reported - kept,
            "rerun_counter": int(rerun),
            "lost_seconds": round((reported - kept) / rate, 1) if rate else None,
        }
    finally:
        stack.stop()


MODES = {
    "checkpoints": ("checkpoints (default: 5 s / 250 lines)", {}),
    # Never a checkpoint inside the chunk: the whole claim is lost, as before issue 19.
    "none": (
        "no checkpoints (before issue 19)",
        {"BATCHSITE_CHECKPOINT_SECONDS": "86400", "BATCHSITE_CHECKPOINT_LINES": "100000000"},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument(
        "--mode",
        choices=list(MODES),
        help="one run only (each run is its own process: Django is set up once per process)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.mode:
        label, env = MODES[args.mode]
        print(json.dumps(run(label, args.lines, env)))
        return
    rows = []
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, "--lines", str(args.lines), "--mode", mode], capture_output=True, text=True
        )
        if out.returncode:
            raise SystemExit(f"{mode} run failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(table(rows, list(rows[0])))
    emit({"rows": rows}, args.json)


if __name__ == "__main__":
    main()
