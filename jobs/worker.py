"""The GPU worker: claims chunks, keeps the engine fed across chunk boundaries, writes results.

One ``GpuWorker`` per process (``manage.py run_gpu_worker``). The main thread
runs the loop; a heartbeat thread keeps the Worker row fresh even while a
model loads for minutes, so other workers never mistake a slow load for death.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.utils import InterfaceError, OperationalError

from jobs.engine.base import Engine, EngineDeadError, EngineRequest, EngineResult, ModelLoadError, ModelSpec
from jobs.engine.devices import device_stats
from jobs.engine.pinning import Devices
from jobs.housekeeper import Housekeeper
from jobs.models import Batch, BatchStatus, Chunk, RegisteredModel, WorkerState
from jobs.models.ids import new_worker_id
from jobs.services import lifecycle, metrics, queue, results
from jobs.worker_feed import ChunkRun, Feeder

log = logging.getLogger("batchsite.worker")

POISON_MESSAGE = (
    "The engine crashed every time it ran this request, so it was failed alone to let the rest of the batch complete."
)


class GpuWorker:
    def __init__(
        self,
        engine: Engine,
        worker_id: str | None = None,
        device: str = "",
        exit_when_idle: bool = False,
        heartbeat_seconds: float | None = None,
        stale_after: float | None = None,
        devices: Devices | None = None,
    ) -> None:
        conf = settings.BATCHSITE_WORKER
        self.engine = engine
        self.id = worker_id or new_worker_id()
        self.devices = devices
        self.device = device or (devices.label if devices else "")
        self._refused: set[str] = set()  # refusals already logged (once each, not every poll)
        self.exit_when_idle = exit_when_idle
        self.heartbeat_seconds = heartbeat_seconds or conf.heartbeat_seconds
        self.stale_after = stale_after or conf.stale_after_seconds
        self.max_attempts = conf.max_attempts
        self.grace = conf.shutdown_grace_seconds
        self.poll = conf.poll_seconds
        self.progress_every = conf.progress_seconds
        self.state = WorkerState.IDLE
        self.stopping = threading.Event()
        self._beat_stop = threading.Event()
        self._abort_timer: threading.Timer | None = None
        self.spec: ModelSpec | None = None
        self.feeder: Feeder | None = None
        # Set while in-flight requests are being aborted: vLLM's serving layer
        # answers a cancelled request with an error body ("Client disconnected"),
        # which must not be written as that line's result.
        self.aborting = threading.Event()

    # -- lifecycle -------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT: stop claiming now; abort what is in flight after the grace period."""
        if self.stopping.is_set():
            return
        log.info("worker %s stopping (grace %.0fs)", self.id, self.grace)
        self.stopping.set()
        self._abort_timer = threading.Timer(self.grace, self.abort_engine)
        self._abort_timer.daemon = True
        self._abort_timer.start()

    def abort_engine(self) -> None:
        self.aborting.set()
        self.engine.abort()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        queue.register_worker(self.id, self.device, os.getpid())
        log.info("worker %s started (pid %d, device %s)", self.id, os.getpid(), self.device or "-")
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        # Webhooks (and the other periodic jobs) go out from every worker.
        keeper = Housekeeper(self.id)
        keeper.start()
        backoff = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    close_old_connections()
                    busy = self.tick()
                    backoff = 1.0
                except (OperationalError, InterfaceError) as exc:
                    # The database went away: wait and retry instead of crash-looping.
                    log.warning("database unavailable (%s); retrying in %.0fs", exc, backoff)
                    connection.close()
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not busy:
                    if self.exit_when_idle and self.queue_drained():
                        log.info("worker %s: queue drained, exiting", self.id)
                        break
                    self.stopping.wait(self.poll)
        finally:
            self.state = WorkerState.STOPPING
            if self._abort_timer is not None:
                self._abort_timer.cancel()
            self.engine.unload()
            self._beat_stop.set()
            beat.join(timeout=10)
            # A send cut short here is sent again by another process once its lease ends.
            keeper.stop(timeout=5)
            queue.stop_worker(self.id)
            log.info("worker %s stopped", self.id)
        return 0

    def _heartbeat_loop(self) -> None:
        try:
            while not self._beat_stop.wait(self.heartbeat_seconds):
                try:
                    self.beat()
                    feeder = self.feeder
                    if feeder is not None:
                        # Here, not in the result loop: a cancel must abort
                        # within seconds even while no result is arriving.
                        feeder.stop_cancelled()
                except (OperationalError, InterfaceError) as exc:
                    log.warning("heartbeat failed: %s", exc)
                    connection.close()
        finally:
            connection.close()

    def beat(self) -> None:
        loaded = self.engine.loaded_model or ""
        stats = device_stats(self.devices.monitored if self.devices else self.device)
        if not queue.heartbeat(self.id, state=self.state, loaded_model=loaded, stats=stats):
            # The row is gone (an operator deleted it in the admin, or a test
            # emptied the tables): a live worker must stay visible, and its
            # claims reference the row, so it registers again.
            log.warning("worker %s: its row was missing; registering again", self.id)
            queue.register_worker(self.id, self.device, os.getpid(), self.state, loaded)

    def queue_drained(self) -> bool:
        """Nothing left that this worker could ever pick up, including a finalize
        whose worker may yet die (so --exit-when-idle cannot strand a batch)."""
        return not (
            Chunk.objects.unfinished()
            .filter(batch__status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING])
            .exists()
            or Batch.objects.filter(status=BatchStatus.FINALIZING).exists()
            or queue.finishable_batches()
        )

    # -- one pass of the loop ------------------------------------------------

    def tick(self) -> bool:
        """Housekeeping, then one claimed chunk (and what follows it). True if anything was done."""
        self.beat()
        busy = bool(queue.release_orphans(self.id))
        busy = bool(queue.sweep_stale(self.stale_after, self.max_attempts)) or busy
        queue.stop_due_batches()
        for batch_id in queue.finishable_batches():
            busy = results.finalize(batch_id, self.id) is not None or busy
        if self.stopping.is_set():
            return busy
        chunk = queue.claim_next(self.id, skip_models=self.unfit_models())
        if chunk is None:
            return busy
        self.process(chunk)
        return True

    def unfit_models(self) -> list[str]:
        """Enabled models whose parallel size does not match this worker's devices: not claimed."""
        if self.devices is None or self.devices.count is None:
            return []
        unfit = []
        for name, options in RegisteredModel.objects.enabled().values_list("name", "engine_options"):
            reason = self.devices.refusal(name, options)
            if reason is None:
                continue
            unfit.append(name)
            if reason not in self._refused:
                self._refused.add(reason)
                log.warning("worker %s: %s", self.id, reason)
        return unfit

    def process(self, chunk: Chunk) -> None:
        batch = chunk.batch
        entry = RegisteredModel.objects.enabled().filter(name=batch.model).first()
        if entry is None:
            self.fail_batch(batch, "model_not_found", f"The model {batch.model!r} is no longer registered or enabled.")
            return
        spec = ModelSpec(entry.name, entry.source, tuple(entry.endpoints), dict(entry.engine_options))
        try:
            self.load(spec)
        except ModelLoadError as exc:
            self.fail_batch(batch, "model_load_failed", str(exc))
            return
        self.state = WorkerState.RUNNING
        feeder = self.feeder = Feeder(self, chunk, spec.name)
        try:
            self.pump(feeder, spec)
            self.settle(feeder)
        finally:
            self.feeder = None
            self.state = WorkerState.IDLE

    def load(self, spec: ModelSpec) -> None:
        if self.engine.loaded_model == spec.name and self.spec == spec:
            return
        self.state = WorkerState.LOADING
        began = time.monotonic()
        previous = self.engine.loaded_model or ""
        if previous:
            self.engine.unload()
            log.info("model %s unloaded in %.2fs", previous, time.monotonic() - began)
        started = time.monotonic()
        self.spec = None
        self.engine.load(spec)
        self.spec = spec
        log.info("model %s ready in %.2fs", spec.name, time.monotonic() - started)
        metrics.record_load(self.id, self.device, spec.name, previous, time.monotonic() - began)

    def fail_batch(self, batch: Batch, code: str, message: str) -> None:
        log.error("batch %s failed: %s", batch.id, message)
        lifecycle.fail_batch(batch.pk, code, message)
        self.state = WorkerState.IDLE

    # -- running requests ------------------------------------------------

    def pump(self, feeder: Feeder, spec: ModelSpec) -> None:
        """Run the feeder's requests to the end, surviving engine deaths."""
        while True:
            try:
                self.aborting.clear()
                for result in self.engine.run(feeder):
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
                for result in self.engine.run(iter(group)):
                    seen.add(result.custom_id)
                    self.accept(result)
            except EngineDeadError:
                self.reload(spec)
                rest = [r for r in group if r.custom_id not in seen]
                if len(group) == 1:
                    log.error("request %s crashes the engine; failing it alone", group[0].custom_id)
                    self.accept(poison_result(group[0]))
                elif rest:
                    half = max(1, len(rest) // 2)
                    groups += [g for g in (rest[half:], rest[:half]) if g]

    def accept(self, result: EngineResult) -> None:
        run, seq = result.tag
        if self.feeder is not None:
            self.feeder.in_flight.pop((run.chunk.pk, seq), None)
        if run.abandoned or (self.aborting.is_set() and result.status_code >= 400):
            return
        run.add(seq, result)
        if run.complete:
            self.finish(run)

    def finish(self, run: ChunkRun) -> None:
        chunk = run.chunk
        if not queue.report_progress(chunk.pk, self.id, run.completed, run.failed):
            run.abandoned = True
            log.warning("chunk %s was taken from this worker; dropping its results", chunk)
            return
        results.write_parts(chunk, run.sorted_output(), run.sorted_errors())
        done = queue.end_chunk(chunk.pk, self.id, run.completed, run.failed, run.usage, cut_short=run.stopped)
        run.abandoned = True  # nothing more to do with it either way
        if not done:
            log.warning("chunk %s was taken from this worker before it was marked done", chunk)
            return
        queue.refresh_batch_counts(chunk.batch_id)
        elapsed = max(time.monotonic() - run.started, 1e-9)
        log.info(
            "chunk %s done: %d ok, %d failed, %.1f req/s, %d output tokens",
            chunk,
            run.completed,
            run.failed,
            (run.completed + run.failed) / elapsed,
            run.usage.get("completion_tokens", 0),
        )
        results.finalize(chunk.batch_id, self.id)

    def settle(self, feeder: Feeder) -> None:
        """After the engine returns: runs cut short by cancel/expiry keep what ran; the
        rest (shutdown, abort for another batch) go back to the queue untouched."""
        for run in feeder.runs:
            if run.abandoned:
                continue
            if run.stopped:
                self.finish(run)
            else:
                run.abandoned = True
                queue.release_chunk(run.chunk.pk, self.id, count_attempt=False)
                queue.refresh_batch_counts(run.chunk.batch_id)
                log.info("released chunk %s back to the queue", run.chunk)


def poison_result(request: EngineRequest) -> EngineResult:
    body = {"error": {"message": POISON_MESSAGE, "type": "InternalServerError", "param": None, "code": 500}}
    return EngineResult(request.custom_id, 500, body, "", None, request.tag)
