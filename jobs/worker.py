"""The GPU worker: claims chunks, keeps the engine fed across chunk boundaries, writes results.

One ``GpuWorker`` per process (``manage.py run_gpu_worker``). The main thread
runs the loop; a heartbeat thread keeps the Worker row fresh even while a
model loads for minutes, so other workers never mistake a slow load for death.
It also aborts the lines of cancelled batches, and gives up on an engine that
made no progress for BATCHSITE_ENGINE_STALL_SECONDS (a hang is handled like a
crash: reload, retry the lines, fail a line that hangs it every time alone).

A fault in one batch (its model will not load, its input cannot be read, its
finalize raises) is caught, logged with the batch id and counted against that
batch; the worker goes on with other work. The process dies only for a bug in
its own loop, and then ``bin/start`` starts it again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Collection
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.utils import InterfaceError, OperationalError

from jobs.engine.base import Engine, EngineResult, ModelLoadError, ModelSpec
from jobs.engine.devices import device_stats
from jobs.engine.pinning import Devices
from jobs.hang_watch import HangWatch
from jobs.housekeeper import Housekeeper
from jobs.models import Batch, BatchStatus, Chunk, RegisteredModel, WorkerState
from jobs.models.ids import new_worker_id
from jobs.services import claims, loads, metrics, queue, results, scheduling
from jobs.worker_feed import ChunkRun, Feeder
from jobs.worker_recovery import EngineRecovery

log = logging.getLogger("batchsite.worker")

DATABASE_ERRORS = (OperationalError, InterfaceError)


class GpuWorker(EngineRecovery):
    def __init__(
        self,
        engine: Engine,
        worker_id: str | None = None,
        device: str = "",
        exit_when_idle: bool = False,
        heartbeat_seconds: float | None = None,
        stale_after: float | None = None,
        devices: Devices | None = None,
        ray_node: str = "",
    ) -> None:
        conf = settings.BATCHSITE_WORKER
        self.engine = engine
        self.id = worker_id or new_worker_id()
        self.devices = devices
        self.device = device or (devices.label if devices else "")
        self.ray_node = ray_node  # where the Ray fleet placed it (jobs/fleet/), shown on the dashboard
        self._refused: set[str] = set()  # refusals already logged (once each, not every poll)
        self.exit_when_idle = exit_when_idle
        self.heartbeat_seconds = heartbeat_seconds or conf.heartbeat_seconds
        self.stale_after = stale_after or conf.stale_after_seconds
        self.max_attempts = conf.max_attempts
        self.grace = conf.shutdown_grace_seconds
        self.poll = conf.poll_seconds
        self.progress_every = conf.progress_seconds
        self.checkpoint_seconds = conf.checkpoint_seconds
        self.checkpoint_lines = conf.checkpoint_lines
        if hasattr(engine, "overlap_swaps"):  # the vLLM engine's; see jobs/engine/swap.py
            engine.overlap_swaps = conf.swap_overlap == "auto"
        if conf.engine_window and hasattr(engine, "window_lines"):  # the vLLM engine's window
            engine.window_lines = conf.engine_window
        self.state = WorkerState.IDLE
        self.stopping = threading.Event()
        self._beat_stop = threading.Event()
        self._abort_timer: threading.Timer | None = None
        self.spec: ModelSpec | None = None
        self.feeder: Feeder | None = None
        self.meter = scheduling.Meter(device)  # swaps, and the rates and load times the queue plan uses
        # Set while in-flight requests are being aborted: vLLM's serving layer
        # answers a cancelled request with an error body ("Client disconnected"),
        # which must not be written as that line's result.
        self.aborting = threading.Event()
        self.watch = HangWatch(conf.engine_stall_seconds)  # jobs/hang_watch.py
        self.claimed_at: float | None = None  # when tick claimed the chunk process() runs
        self.last_result_at = time.monotonic()

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

    def abort_requests(self, tags: Collection[Any]) -> None:
        """Abort these lines only; the engine's other lines (other batches') run on."""
        if tags:
            log.info("aborting %d in-flight requests", len(tags))
            self.engine.abort(tags)

    def run(self) -> int:
        # A Ray actor runs the worker in a thread of its own (signals go to the main
        # thread only): there the fleet calls request_stop instead.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        queue.register_worker(self.id, self.device, os.getpid(), ray_node=self.ray_node)
        log.info(
            "worker %s started (pid %d, device %s, scheduler=%s)",
            self.id,
            os.getpid(),
            self.device or "-",
            scheduling.current_policy(),
        )
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
                except DATABASE_ERRORS as exc:
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
            log.info(
                "worker %s stopped (swaps=%d scheduler=%s)", self.id, self.meter.swaps, scheduling.current_policy()
            )
        return 0

    def _heartbeat_loop(self) -> None:
        try:
            while not self._beat_stop.wait(self.heartbeat_seconds):
                try:
                    self.beat()
                    self.watch_engine()
                    feeder = self.feeder
                    if feeder is not None:
                        # Here, not in the result loop: a cancel must abort
                        # within seconds even while no result is arriving.
                        feeder.stop_cancelled()
                except DATABASE_ERRORS as exc:
                    log.warning("heartbeat failed: %s", exc)
                    connection.close()
                except Exception:
                    # This thread is what keeps the worker's chunks its own: it must not die.
                    log.exception("heartbeat thread error (carrying on)")
        finally:
            connection.close()

    def set_state(self, state: WorkerState) -> None:
        """Change state and publish it (with the loaded model) at once, not at the next
        heartbeat: the queue plan reads it, and a worker still shown `loading` seconds
        after its load made every ETA behind it count that load again."""
        if state == self.state:
            return
        self.state = state
        try:
            queue.heartbeat(self.id, state=state, loaded_model=self.engine.loaded_model or "")
        except DATABASE_ERRORS as exc:
            log.warning("could not publish state %s now (the heartbeat will): %s", state, exc)

    def beat(self) -> None:
        loaded = self.engine.loaded_model or ""
        stats = device_stats(self.devices.monitored if self.devices else self.device)
        policy = scheduling.current_policy()
        if not queue.heartbeat(self.id, state=self.state, loaded_model=loaded, stats=stats, scheduler=policy):
            # The row is gone (an operator deleted it in the admin, or a test
            # emptied the tables): a live worker must stay visible, and its
            # claims reference the row, so it registers again.
            log.warning("worker %s: its row was missing; registering again", self.id)
            queue.register_worker(self.id, self.device, os.getpid(), self.state, loaded, ray_node=self.ray_node)

    def watch_engine(self) -> None:
        """Give up on an engine that holds lines but has answered none for too long (a hang)."""
        reason = self.watch.stalled()
        if reason is not None:
            log.error("engine for %s hangs: %s; restarting it", self.engine.loaded_model, reason)
            self.engine.mark_dead(reason)

    def queue_drained(self) -> bool:
        """Nothing left that this worker could ever pick up, including a finalize
        whose worker may yet die (so --exit-when-idle cannot strand a batch)."""
        return not (
            Chunk.objects.unfinished()
            .filter(batch__status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING])
            .exists()
            or Batch.objects.filter(status=BatchStatus.FINALIZING).exists()
            or queue.finishable_batches(self.id)
        )

    # -- one pass of the loop ------------------------------------------------

    def tick(self) -> bool:
        """Housekeeping, then one claimed chunk (and what follows it). True if anything was done."""
        self.beat()
        busy = bool(queue.release_orphans(self.id))
        busy = bool(queue.sweep_stale(self.stale_after, self.max_attempts)) or busy
        queue.stop_due_batches()
        for batch_id in queue.finishable_batches(self.id):
            busy = results.finalize(batch_id, self.id) is not None or busy
        if self.stopping.is_set():
            return busy
        chunk = queue.claim_next(self.id, skip_models=self.unfit_models())
        if chunk is None:
            return busy
        self.claimed_at = time.monotonic()
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
            queue.release_chunk(chunk, self.id, count_attempt=False, reason="Its model is not registered.")
            results.fail_batch(
                batch.pk, self.id, "model_not_found", f"The model {batch.model!r} is no longer registered or enabled."
            )
            return
        options = dict(entry.engine_options)
        if self.devices is not None:
            options = self.devices.engine_options(options)
        spec = ModelSpec(entry.name, entry.source, tuple(entry.endpoints), options)
        try:
            self.load(spec)
        except ModelLoadError as exc:
            self.load_failed(chunk, spec, str(exc))
            return
        self.set_state(WorkerState.RUNNING)
        # The engine's window (the vLLM engine's: twice its scheduler's sequences) is how far
        # the feeder reads ahead to group lines by prompt prefix.
        window = int(getattr(self.engine, "window", 1) or 1)
        at_once = int(getattr(self.engine, "runs_at_once", window) or window)
        feeder = self.feeder = Feeder(self, chunk, spec.name, self.claimed_at, window, at_once)
        try:
            self.pump(feeder, spec)
            self.settle(feeder)
            self.meter.flush()  # the engine is idle: record its last measurement now
        except DATABASE_ERRORS:
            raise  # the loop waits for the database; release_orphans hands the chunks back
        except Exception as exc:
            ids = ", ".join(sorted({run.chunk.batch_id for run in feeder.runs}))
            log.exception("error while running batch(es) %s; handing their chunks back", ids)
            reason = f"The worker running it failed: {type(exc).__name__}: {exc}"
            try:
                self.settle(feeder, count_attempt=True, reason=reason)
            except DATABASE_ERRORS:
                raise
            except Exception:
                # Still ours in the database: release_orphans hands them back (counted) on the next pass.
                log.exception("could not hand back the chunks of batch(es) %s", ids)
        finally:
            feeder.close()
            self.feeder = None
            self.set_state(WorkerState.IDLE)

    def load(self, spec: ModelSpec) -> None:
        if self.engine.loaded_model == spec.name and self.spec == spec:
            return
        self.set_state(WorkerState.LOADING)
        began = time.monotonic()
        previous = self.engine.loaded_model or ""
        if previous:
            # A swap: the engine may let the old model's processes exit in the background
            # while the next one loads (when memory allows); this is the part we wait for.
            self.engine.unload(next=spec)
            log.info("model %s unloaded in %.2fs", previous, time.monotonic() - began)
        started = time.monotonic()
        self.spec = None
        self.engine.load(spec)
        self.spec = spec
        loads.record_success(self.id, spec.name)
        ready = time.monotonic()
        self.meter.loaded(spec.name, ready - began)
        log.info(
            "model %s ready in %.2fs (swaps=%d scheduler=%s)",
            spec.name,
            ready - started,
            self.meter.swaps,
            scheduling.current_policy(),
        )
        metrics.record_load(self.id, self.device, spec.name, previous, ready - began)

    def load_failed(self, chunk: Chunk, spec: ModelSpec, message: str) -> None:
        """Hand the chunk back untouched and back off from the model; fail its batch
        only if the failure is deterministic (the same everywhere, again and again)."""
        self.set_state(WorkerState.IDLE)
        log.error("batch %s: model %s failed to load: %s", chunk.batch_id, spec.name, message)
        queue.release_chunk(chunk, self.id, count_attempt=False, reason=f"Its model failed to load here: {message}")
        if loads.record_failure(self.id, spec.name, message):
            results.fail_batch(chunk.batch_id, self.id, "model_load_failed", message)
            loads.forget(spec.name)

    # -- running requests (pump, reload, isolate: jobs/worker_recovery.py) ----

    def accept(self, result: EngineResult) -> None:
        run, seq = result.tag
        if self.feeder is not None:
            self.feeder.in_flight.pop((run.chunk.pk, seq), None)
        self.last_result_at = self.watch.progressed()
        if run.abandoned:
            return
        if result.aborted or ((self.aborting.is_set() or run.stopped) and result.status_code >= 400):
            run.add_aborted()
        else:
            run.add(seq, result)
            self.meter.result(run.chunk.batch.model, (result.usage or {}).get("completion_tokens", 0), run.started)
        if run.settled:
            self.close_timed(run)
        elif run.checkpoint_due(self.checkpoint_seconds, self.checkpoint_lines):
            self.checkpoint(run)

    def close_timed(self, run: ChunkRun) -> None:
        """close_run, logging the time since the last result: the per-batch wind-down
        cost (bench/e2e_throughput.py reads it); for a batch's last chunk it includes the finalize."""
        self.close_run(run)
        log.info(
            "batch %s chunk %d: closed %.3fs after its last result",
            run.chunk.batch_id,
            run.chunk.index,
            time.monotonic() - self.last_result_at,
        )

    def close_run(self, run: ChunkRun, count_attempt: bool = False, reason: str = "") -> None:
        """End this claim (jobs/services/claims.py): its last lines recorded, then the chunk
        done, cut short (cancelled or expired), or handed back with the rest to run."""
        run.abandoned = True  # nothing more to do with it, whatever happens below
        chunk = run.chunk
        outcome = claims.end_claim(
            chunk,
            self.id,
            run.part,
            base=(run.base_completed, run.base_failed),
            all_done=run.all_done,
            stopped=run.stopped,
            count_attempt=count_attempt,
            reason=reason,
            finalize=self.finalize_after_claim,
        )
        if outcome is None:
            return
        elapsed = max(time.monotonic() - run.started, 1e-9)
        log.info(
            "chunk %s %s: %d ok, %d failed, %d aborted, %.1f req/s",
            chunk,
            outcome,
            run.completed,
            run.failed,
            run.aborted,
            (run.completed + run.failed) / elapsed,
        )

    def finalize_after_claim(self, batch_id: str, worker_id: str) -> None:
        self.meter.cut()
        with self.watch.off_clock():  # the engine waits on this finalize, not the other way round
            results.finalize(batch_id, worker_id)

    def checkpoint(self, run: ChunkRun) -> None:
        """Record what the claim finished so far (a segment); a claim lost meanwhile is stopped."""
        if claims.checkpoint(run.chunk, self.id, run.part, run.total_completed, run.total_failed):
            return
        log.warning("chunk %s was taken from this worker; dropping its results", run.chunk)
        run.abandon()
        if self.feeder is not None:
            self.abort_requests(self.feeder.tags_of([run]))

    def settle(self, feeder: Feeder, count_attempt: bool = False, reason: str = "") -> None:
        """After the engine returns: close every run still open. Runs cut short by cancel or
        expiry keep what ran; the rest (shutdown, an error) keep the lines they finished and
        go back to the queue for the others."""
        for run in feeder.runs:
            if run.abandoned:
                continue
            if run.settled and (run.all_done or run.stopped) and not count_attempt:
                self.close_timed(run)
            else:
                self.close_run(run, count_attempt=count_attempt, reason=reason or "The worker running it stopped.")
