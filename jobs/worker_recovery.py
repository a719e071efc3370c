"""How the GPU worker survives its engine: runs the feeder's lines to the end through
engine deaths and hangs, and finds the line that kills the engine every time.

A mixin of ``jobs.worker.GpuWorker`` (split from it to keep both modules small): it
uses the worker's engine, its hang watch and its ``load``/``accept``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from jobs.engine.base import Engine, EngineDeadError, EngineRequest, EngineResult, ModelSpec
from jobs.hang_watch import HangWatch
from jobs.worker_feed import Feeder

log = logging.getLogger("batchsite.worker")

POISON_MESSAGE = (
    "The engine crashed or stopped answering every time it ran this request, "
    "so it was failed alone to let the rest of the batch complete."
)


class EngineRecovery:
    engine: Engine
    spec: ModelSpec | None
    stopping: threading.Event
    aborting: threading.Event
    watch: HangWatch

    def load(self, spec: ModelSpec) -> None:
        raise NotImplementedError  # GpuWorker's

    def accept(self, result: EngineResult) -> None:
        raise NotImplementedError  # GpuWorker's

    def engine_run(self, requests: Any) -> Iterator[EngineResult]:
        """engine.run under the hang watch."""
        with self.watch.running():
            yield from self.engine.run(requests)

    def pump(self, feeder: Feeder, spec: ModelSpec) -> None:
        """Run the feeder's requests to the end, surviving engine deaths and hangs."""
        while True:
            try:
                self.aborting.clear()
                for result in self.engine_run(feeder):
                    self.accept(result)
                    feeder.maybe_report()
                return
            except EngineDeadError as exc:
                suspects = feeder.take_in_flight()
                log.error("engine died (%s) with %d requests in flight; reloading", exc, len(suspects))
                self.reload(spec)
                self.isolate(suspects, spec)
                if feeder.finished:
                    return

    def reload(self, spec: ModelSpec) -> None:
        self.engine.unload()
        self.spec = None
        self.load(spec)

    def isolate(self, suspects: list[EngineRequest], spec: ModelSpec) -> None:
        """Retry the lines that were in flight when the engine died, halving the
        groups that kill it again, until a line that kills it alone is failed alone."""
        groups = [suspects] if suspects else []
        while groups and not self.stopping.is_set():
            group = groups.pop()
            seen: set[str] = set()
            try:
                for result in self.engine_run(iter(group)):
                    seen.add(result.custom_id)
                    self.accept(result)
            except EngineDeadError:
                self.reload(spec)
                rest = [r for r in group if r.custom_id not in seen]
                if len(group) == 1:
                    log.error("request %s crashes or hangs the engine; failing it alone", group[0].custom_id)
                    self.accept(poison_result(group[0]))
                elif rest:
                    half = max(1, len(rest) // 2)
                    groups += [g for g in (rest[half:], rest[:half]) if g]


def poison_result(request: EngineRequest) -> EngineResult:
    return EngineResult(request.custom_id, 500, {}, "", None, request.tag, failure=("engine_crashed", POISON_MESSAGE))
