"""A SIMULATED engine: no model, it sleeps per request and echoes a canned body.

For tests and benchmarks about the queue (claiming, concurrency, faults),
never for anything about inference. Behaviour is steered by the request
body so tests can provoke faults:
  body["sim_sleep"]: seconds this request "computes" (default SIM_SLEEP_SECONDS or 0)
  body["sim_crash"]: true makes the engine die (EngineDeadError) when it takes the request
  body["sim_fail"]:  an HTTP status to answer with an error body
  body["sim_hang"]:  true: the engine stops answering when it takes it (until aborted
                     or marked dead); "once": only the first time in this process
and by the environment and the model's source:
  SIM_WINDOW:        requests in flight at once (default 1: one after another)
  SIM_LOAD_SECONDS:  seconds a load takes (the model's engine option sim_load_seconds wins,
                     so two models can load at different speeds, as real ones do)
  SIM_UNLOADABLE:    comma-separated model names this process fails to load (out of memory)
  SIM_ABORT_LOG:     a file to append the custom_id of every aborted request to
  source "missing:...": the load fails, with the same message every time
  source "flaky:N:...": the first N loads in this process fail, each with another message
A result body carries the process id, so a test can tell which worker ran a line.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from jobs.engine.base import NOT_YET, EngineDeadError, EngineRequest, EngineResult, ModelLoadError, ModelSpec
from jobs.engine.errors import openai_error


@dataclass
class _Flight:
    request: EngineRequest
    due: float  # time.monotonic() when it answers; inf while hung


class SimulatedEngine:
    hung_once: ClassVar[set[str]] = set()  # custom_ids that already hung once in this process

    def __init__(self) -> None:
        self._model: str | None = None
        self._abort_all = threading.Event()
        self._abort_tags: set[Any] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._dead: str | None = None
        self._flaky: Counter[str] = Counter()
        self.default_sleep = float(os.environ.get("SIM_SLEEP_SECONDS", "0"))
        self.window = max(1, int(os.environ.get("SIM_WINDOW", "1")))
        self.runs_at_once = self.window  # no queue of its own: every line in its window runs
        self.unloadable = {n.strip() for n in os.environ.get("SIM_UNLOADABLE", "").split(",") if n.strip()}
        self.abort_log = os.environ.get("SIM_ABORT_LOG", "")
        self.loads = 0
        self.aborted: list[str] = []

    @property
    def loaded_model(self) -> str | None:
        return self._model

    def load(self, spec: ModelSpec) -> None:
        self._dead = None
        if spec.source.startswith("missing:"):
            raise ModelLoadError(f"could not load model {spec.name!r}: no such source {spec.source!r}")
        if spec.name in self.unloadable:
            raise ModelLoadError(f"could not load model {spec.name!r}: simulated out of memory on this worker")
        if spec.source.startswith("flaky:"):
            self._flaky[spec.source] += 1
            failures, tries = int(spec.source.split(":")[1]), self._flaky[spec.source]
            if tries <= failures:
                raise ModelLoadError(f"could not load model {spec.name!r}: transient failure {tries} of {failures}")
        if self._model != spec.name:
            time.sleep(float(spec.engine_options.get("sim_load_seconds", os.environ.get("SIM_LOAD_SECONDS", "0"))))
            self._model = spec.name
            self.loads += 1

    def unload(self, next: ModelSpec | None = None) -> None:
        self._model = None

    def abort(self, tags: Collection[Any] | None = None) -> None:
        if tags is None:
            self._abort_all.set()
        else:
            with self._lock:
                self._abort_tags.update(tags)
        self._wake.set()

    def mark_dead(self, reason: str) -> None:
        self._dead = reason
        self._wake.set()

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        if self._model is None:
            raise RuntimeError("no model loaded")
        self._abort_all.clear()
        with self._lock:
            self._abort_tags.clear()
        source = iter(requests)
        exhausted = False
        flights: list[_Flight] = []
        while True:
            if self._dead is not None:
                self._model = None
                raise EngineDeadError(f"simulated engine marked dead: {self._dead}")
            not_yet = False
            while not exhausted and len(flights) < self.window and not self._abort_all.is_set():
                try:
                    request = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if request is NOT_YET:
                    not_yet = True
                    break  # nothing now: ask again after the next results
                if request.body.get("sim_crash"):
                    self._model = None
                    raise EngineDeadError("simulated engine death")
                flights.append(_Flight(request, self._due(request)))
            for flight in self._take_aborted(flights):
                yield EngineResult.aborted_for(flight.request)
            if not flights:
                # The source's end, or a NOT_YET with nothing in flight (nothing to wait on).
                if exhausted or not_yet or self._abort_all.is_set():
                    return
                continue
            now = time.monotonic()
            due = sorted((f for f in flights if f.due <= now), key=lambda f: f.due)
            for flight in due:
                flights.remove(flight)
                yield self._answer(flight.request)
            if not due:
                self._wake.wait(min(0.05, min(f.due for f in flights) - now))
                self._wake.clear()

    def _due(self, request: EngineRequest) -> float:
        hang = request.body.get("sim_hang")
        if hang is True or (hang == "once" and request.custom_id not in self.hung_once):
            self.hung_once.add(request.custom_id)
            return math.inf
        return time.monotonic() + float(request.body.get("sim_sleep", self.default_sleep))

    def _take_aborted(self, flights: list[_Flight]) -> list[_Flight]:
        with self._lock:
            if self._abort_all.is_set():
                gone = list(flights)
            else:
                gone = [f for f in flights if f.request.tag in self._abort_tags]
                self._abort_tags.difference_update(f.request.tag for f in gone)
        for flight in gone:
            flights.remove(flight)
            self.aborted.append(flight.request.custom_id)
        if gone and self.abort_log:
            with open(self.abort_log, "a") as log:
                log.writelines(f"{f.request.custom_id}\n" for f in gone)
        return gone

    def _answer(self, request: EngineRequest) -> EngineResult:
        body = request.body
        request_id = "sim-" + secrets.token_hex(8)
        status = int(body.get("sim_fail", 200))
        payload: dict[str, Any]
        if status != 200:
            payload = openai_error(status, "simulated failure")
            return EngineResult(request.custom_id, status, payload, request_id, None, request.tag)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        payload = {
            "object": "simulated",
            "model": self._model,
            "echo": request.custom_id,
            "pid": os.getpid(),
            "usage": usage,
        }
        return EngineResult(request.custom_id, 200, payload, request_id, usage, request.tag)
