"""A SIMULATED engine: no model, it sleeps per request and echoes a canned body.

For tests and benchmarks about the queue (claiming, concurrency, faults),
never for anything about inference. Behaviour is steered by the request
body so tests can provoke faults:
  body["sim_sleep"]: seconds this request "computes" (default SIM_SLEEP_SECONDS or 0)
  body["sim_crash"]: true makes the engine die (EngineDeadError) when it runs
  body["sim_fail"]:  an HTTP status to answer with an error body
Loading sleeps the model's engine option ``sim_load_seconds``, else
SIM_LOAD_SECONDS (so two models can load at different speeds, as real ones do).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jobs.engine.base import EngineDeadError, EngineRequest, EngineResult, ModelLoadError, ModelSpec


class SimulatedEngine:
    def __init__(self) -> None:
        self._model: str | None = None
        self._abort = threading.Event()
        self.default_sleep = float(os.environ.get("SIM_SLEEP_SECONDS", "0"))
        self.loads = 0

    @property
    def loaded_model(self) -> str | None:
        return self._model

    def load(self, spec: ModelSpec) -> None:
        if spec.source.startswith("missing:"):
            raise ModelLoadError(f"could not load model {spec.name!r}: no such source {spec.source!r}")
        if self._model != spec.name:
            time.sleep(float(spec.engine_options.get("sim_load_seconds", os.environ.get("SIM_LOAD_SECONDS", "0"))))
            self._model = spec.name
            self.loads += 1

    def unload(self) -> None:
        self._model = None

    def abort(self) -> None:
        self._abort.set()

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        if self._model is None:
            raise RuntimeError("no model loaded")
        self._abort.clear()
        for request in requests:
            if self._abort.is_set():
                return
            body = request.body
            if body.get("sim_crash"):
                self._model = None
                raise EngineDeadError("simulated engine death")
            deadline = time.monotonic() + float(body.get("sim_sleep", self.default_sleep))
            while time.monotonic() < deadline:
                if self._abort.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                    return
            request_id = "sim-" + secrets.token_hex(8)
            status = int(body.get("sim_fail", 200))
            payload: dict[str, Any]
            if status != 200:
                payload = {
                    "error": {"message": "simulated failure", "type": "BadRequestError", "param": None, "code": status}
                }
                yield EngineResult(request.custom_id, status, payload, request_id, None, request.tag)
                continue
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            payload = {"object": "simulated", "model": self._model, "echo": request.custom_id, "usage": usage}
            yield EngineResult(request.custom_id, 200, payload, request_id, usage, request.tag)
