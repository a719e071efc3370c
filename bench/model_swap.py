"""Model swap: a queue alternating two models for 6 batches, through a real worker.

    .venv/bin/python bench/model_swap.py [--batches 6] [--json out.json]

The demo chat model (SmolLM2) and the demo embeddings model (MiniLM) take
turns; the worker logs each unload (the part of it the worker waits for) and
load, and whether the swap overlapped the old engine's exit with the next load
(when memory allows, jobs/engine/swap.py) and how long that exit took in the
background. A swap's overhead is what it costs beyond a load of the same model:
its wait for the unload, plus how much slower its load was than that model's
fastest load in the run (the first load of the first model also pays the
process's imports of vLLM and torch).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, chat_lines, emit, model_spec, table, wait_status, write_jsonl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    from jobs.engine import demo

    chat = model_spec("demo")
    stack = Stack()
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
    fastest: dict[str, float] = {}
    for model, seconds in loads:
        fastest[model] = min(fastest.get(model, seconds), seconds)
    swaps = []
    for i, ((model, seconds), unload) in enumerate(zip(loads[1:], unloads, strict=False)):
        swaps.append(
            {
                "to": model.split("/")[-1],
                "mode": modes[i] if i < len(modes) else "?",
                "unload_s": unload,
                "load_s": seconds,
                "swap_s": unload + seconds,
                "fastest_load_s": fastest[model],
                "overhead_s": unload + seconds - fastest[model],
                "background_exit_s": exits.pop(0) if i < len(modes) and modes[i] == "overlapped" and exits else "",
            }
        )
    print(f"{args.batches} batches, {len(loads)} loads, {len(unloads)} unloads, worker wall {total:.1f}s")
    columns = ["to", "mode", "unload_s", "load_s", "swap_s", "fastest_load_s", "overhead_s", "background_exit_s"]
    print(table(swaps, columns))
    mean = sum(s["overhead_s"] for s in swaps) / max(len(swaps), 1)
    print(f"mean overhead beyond a load of the same model: {mean:.2f}s per swap")
    emit({"loads": loads, "unloads": unloads, "swaps": swaps, "mean_overhead_s": mean, "wall_s": total}, args.json)


if __name__ == "__main__":
    main()
