"""A PROBE engine for the device-pinning tests: it loads no model and writes down what it was given.

This machine has no GPU, so no real engine can show which GPUs it used. What
pinning is about is the environment the engine gets, and this engine records
it twice: in the worker process when run_gpu_worker constructs it, and in a
child process it starts the way vLLM starts its engine core (multiprocessing,
spawn), which is where CUDA would be initialised. Everything else is the
simulated engine's (jobs/engine/simulated.py).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

from jobs.engine.simulated import SimulatedEngine

WATCHED = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def seen() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in WATCHED}


def _child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(seen())


class ProbeEngine(SimulatedEngine):
    def __init__(self) -> None:
        super().__init__()
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=_child, args=(queue,))
        child.start()
        child_env = queue.get(timeout=60)
        child.join(timeout=60)
        report = {"worker": seen(), "engine_process": child_env, "torch_imported_before": "torch" in sys.modules}
        Path(os.environ["PROBE_OUT"]).write_text(json.dumps(report))
