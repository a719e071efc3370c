"""Model swap: a queue alternating two models for 6 batches, through a real worker.

    .venv/bin/python bench/model_swap.py [--batches 6] [--json out.json]

The demo chat model (SmolLM2) and the demo embeddings model (MiniLM) take
turns; the worker logs each unload (the part of it the worker waits for) and
load, and whether the swap overlapped the old engine's exit with the next load
(when memory allows, jobs/engine/swap.py) and how long that exit took in the
background. The queue runs twice, side by side: with BATCHSITE_SWAP_OVERLAP=off
(each swap waits for the old engine; its loads are clean loads, the reference)
and with the default (overlap where memory allows). A swap's overhead is what it
costs beyond a clean load of the same model (the median of the first run's): its
wait for the unload, plus how much slower its load was.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, model_spec, table, wait_status, write_jsonl  # noqa: E402


def run(args: argparse.Namespace, overlap: str) -> dict[str, Any]:
    from jobs.engine import demo

    chat = model_spec("demo")
    # One user submits every batch (default 6): past the default per-user quota of 5.
    slots = str(max(10, args.batches))
    stack = Stack(
        env={
            "BATCHSITE_SWAP_OVERLAP": overlap,
            "BATCHSITE_MAX_QUEUED_BATCHES": slots,
            "BATCHSITE_USER_MAX_QUEUED_BATCHES": slots,
        }
    )
    log = stack.data_dir / "worker.log"
    try:
        stack.register(chat.name, chat.source, "chat,completions", chat.engine_options)
        stack.register(demo.MINILM_NAME, str(demo.minilm_dir()), "embeddings")
        stack.start_web()
        sdk = stack.sdk(stack.api_key())
        ids = []
        for i in range(args.batches):
            if i % 2 == 0:
                lines = chat_lines(args.requests, chat.name, 8)
            else:
                lines = [
                    {
                        "custom_id": f"e{k}",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": {"model": demo.MINILM_NAME, "input": f"text {k}"},
                    }
                    for k in range(args.requests)
                ]
            path = write_jsonl(stack.data_dir / f"b{i}.jsonl", lines)
            file = sdk.files.create(file=path.open("rb"), purpose="batch")
            ids.append(sdk.batches.create(input_file_id=file.id, endpoint=lines[0]["url"], completion_window="24h").id)
        started = time.perf_counter()
        worker = stack.start_worker("--exit-when-idle", log=log)
        assert worker.wait(timeout=3600) == 0, log.read_text()[-3000:]
        total = time.perf_counter() - started
        assert all(wait_status(sdk, i).status == "completed" for i in ids)
    finally:
        stack.stop()
    text = log.read_text()
    loads = [(m, float(s)) for m, s in re.findall(r"model (\S+) ready in ([\d.]+)s", text)]
    unloads = [float(s) for s in re.findall(r"model \S+ unloaded in ([\d.]+)s", text)]
    modes = re.findall(r"swap \S+ -> \S+: (overlapped|in turn)", text)
    exits = [float(s) for s in re.findall(r"engine of \S+ exited in ([\d.]+)s, in the background", text)]
    swaps = []
    for i, ((model, seconds), unload) in enumerate(zip(loads[1:], unloads, strict=False)):
        mode = modes[i] if i < len(modes) else "?"
        swaps.append(
            {
                "model": model,
                "to": model.split("/")[-1],
                "mode": mode,
                "unload_s": unload,
                "load_s": seconds,
                "swap_s": unload + seconds,
                "background_exit_s": exits.pop(0) if mode == "overlapped" and exits else "",
            }
        )
    return {"overlap": overlap, "loads": loads, "swaps": swaps, "wall_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--json")
    parser.add_argument(
        "--overlap",
        choices=["both", "off", "auto"],
        default="both",
        help="both (the benchmark): the queue once with each setting; one setting: a single run "
        "(the smoke test's: its clean-load reference is then its own loads)",
    )
    args = parser.parse_args()
    # The same queue twice: swaps that wait for the old engine (its loads are clean
    # loads, the reference), then swaps that overlap where memory allows.
    runs = [run(args, mode) for mode in (("off", "auto") if args.overlap == "both" else (args.overlap,))]
    clean: dict[str, list[float]] = {}
    for swap in runs[0]["swaps"]:
        clean.setdefault(swap["model"], []).append(swap["load_s"])
    for result in runs:
        for swap in result["swaps"]:
            reference = statistics.median(clean[swap["model"]])
            swap["clean_load_s"] = reference
            swap["overhead_s"] = swap["swap_s"] - reference
        mean = sum(s["overhead_s"] for s in result["swaps"]) / max(len(result["swaps"]), 1)
        result["mean_overhead_s"] = mean
        print(f"BATCHSITE_SWAP_OVERLAP={result['overlap']}: {len(result['loads'])} loads, wall {result['wall_s']:.1f}s")
        columns = ["to", "mode", "unload_s", "load_s", "swap_s", "clean_load_s", "overhead_s", "background_exit_s"]
        print(table(result["swaps"], columns))
        print(f"mean overhead beyond a clean load of the same model: {mean:.2f}s per swap\n")
    emit(
        {
            "runs": runs,
            "mean_overhead_s": runs[-1]["mean_overhead_s"],
            "swaps": runs[-1]["swaps"],
            "loads": runs[-1]["loads"],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
