"""vLLM's own run_batch, unchanged, with a stopwatch around its processing.

    python bench/run_batch_timed.py RESULT.json -i IN.jsonl -o OUT.jsonl --model ... (run_batch's flags)

The whole process is timed by the caller; this adds the time of vLLM's
``run_batch`` coroutine alone (read input, run every request, write output),
which starts once the engine is loaded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports __main__
    from vllm.entrypoints.launchers import run_batch as launcher

    result_path = sys.argv.pop(1)
    original = launcher.run_batch
    timing: dict[str, float] = {}

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            timing["seconds"] = time.perf_counter() - started

    launcher.run_batch = timed  # main() looks it up in the module at call time
    asyncio.run(launcher.main(launcher.parse_args()))
    with open(result_path, "w") as out:
        json.dump(timing, out)
