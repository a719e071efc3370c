"""The vLLM implementation of the Engine interface.

Design: vLLM's own OpenAI serving layer (the objects ``vllm serve`` and
``run_batch`` build with ``init_app_state``) drives an ``AsyncLLM`` on an asyncio
loop in a background thread. Every line is one ``create_chat_completion`` /
``create_completion`` / embeddings call, exactly as the HTTP server makes it, so
bodies, errors and usage are vLLM's own. ``run`` keeps a bounded window of
lines in flight (twice the scheduler's ``max_num_seqs``), so the scheduler always
has queued work across the worker's chunk boundaries and never drains.

The caller's thread is the only one that iterates the request iterable (the
worker reads it from the database, and Django connections are per-thread);
the loop thread only runs vLLM coroutines.

Every line is an asyncio task on that loop; ``abort(tags)`` cancels the tasks of
those lines only (vLLM then aborts their requests, by request id, in the engine
core), so cancelling one batch leaves the other batches' lines in the same
engine running. Each aborted line still yields one result, marked ``aborted``.
``mark_dead`` is how the worker gives up on an engine that hangs: ``run`` raises
EngineDeadError, and ``unload`` kills the engine's processes before closing it.
The processes die with the worker too, even on SIGKILL (see lifeline.py).

Why the serving layer and not a hand-driven engine: it is the code ``vllm serve``
answers with, so fidelity comes for free, and with the scheduler's offline
defaults (see serving.open_serving) and a primed start (see priming.py) it
matched one ``LLM.chat`` call here: tiny model ~0.94-1.2x, SmolLM2 ~1.0x.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from . import lifeline, loading, priming, swap
from . import options as engine_options
from .base import NOT_YET, EngineDeadError, EngineRequest, EngineResult, ModelLoadError, ModelSpec
from .serving import ABORTED, DEAD, LoadedServing, open_serving

logger = logging.getLogger(__name__)

# How often a waiting ``run`` checks that the engine is still alive.
_LIVENESS_POLL_S = 0.5


class VllmEngine:
    def __init__(self, window: int | None = None) -> None:
        self._window_override = window  # a test's: runs_at_once is half of it
        # BATCHSITE_ENGINE_WINDOW (set by the worker): lines in flight, rendered and queued
        # ahead of the scheduler, which still runs max_num_seqs of them at once. On a CPU
        # host the frontend shares the engine's cores, and rendering lines while its steps
        # run slows them (docs/BENCHMARKS.md 8a); a larger window renders more up front.
        self.window_lines = 0
        self._spec: ModelSpec | None = None
        self._serving: LoadedServing | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        # In-flight tasks and their requests' tags, touched on the loop thread only:
        # an abort by tag cancels those tasks, which makes vLLM abort their requests.
        self._tasks: dict[asyncio.Task[Any], Any] = {}
        self._dead: str | None = None  # why the caller gave up on this engine (mark_dead)
        self._lock = threading.RLock()  # load/unload/run exclusion; abort() never takes it
        self.last_load_seconds: float | None = None
        self.last_unload_seconds: float | None = None
        self.prime_start = True  # see priming.py
        self._prime: priming.Prime | None = None
        # vLLM's Prometheus metrics (run_gpu_worker --metrics-port): its stats loggers record
        # into this process's default prometheus_client registry when stats are on.
        self.log_stats = False
        self._base_env = {key: os.environ.get(key) for key in engine_options.ENV_OPTIONS.values()}
        # Resident bytes of each model's engine processes as measured in this process
        # (see swap.py), and the threads still reaping retired engines.
        self.footprints: dict[str, int] = {}
        self._reapers: list[threading.Thread] = []
        self.last_overlap: tuple[bool, str] | None = None  # the last swap's decision, and why
        self.overlap_swaps = True  # False: a swap always waits for the old engine (BATCHSITE_SWAP_OVERLAP=off)

    # ------------------------------------------------------------------ state
    @property
    def loaded_model(self) -> str | None:
        return self._spec.name if self._spec is not None and self._serving is not None else None

    @property
    def window(self) -> int:
        if self._window_override or self.window_lines:
            return self._window_override or self.window_lines
        assert self._serving is not None
        return max(2 * self._serving.max_num_seqs, 32)

    @property
    def runs_at_once(self) -> int:
        """Lines the scheduler runs at once; the rest of the window waits in its queue."""
        if self._window_override:
            return max(1, self._window_override // 2)
        assert self._serving is not None
        return max(self._serving.max_num_seqs, 1)

    def is_alive(self) -> bool:
        serving = self._serving
        thread = self._thread
        return (
            serving is not None
            and thread is not None
            and thread.is_alive()
            and not serving.client.errored
            and self._dead is None
        )

    # ------------------------------------------------------------- event loop
    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            return self._loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="vllm-engine-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        return loop

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        if not thread.is_alive():
            loop.close()

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        loop = self._start_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    # ------------------------------------------------------------ load/unload
    def load(self, spec: ModelSpec) -> None:
        with self._lock:
            if self._spec == spec and self.is_alive():
                logger.info("model %s already loaded; reusing the engine", spec.name)
                return
            if self._serving is not None:
                self.unload(next=spec)
            self._dead = None
            # Before vLLM starts any process: its processes must die with this one.
            lifeline.tie_children()
            # Start from the operator's environment, not the previous model's options.
            for key, value in self._base_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            resolved = engine_options.resolve(spec)  # ModelLoadError on bad options
            if self.log_stats:
                resolved.engine_args["disable_log_stats"] = False
            loading.check_source(spec)
            # The engine core process is spawned during load and reads these then.
            os.environ.update(resolved.env)
            started = time.monotonic()
            logger.info(
                "loading model %s from %s (options %s, env %s)",
                spec.name,
                spec.source,
                resolved.engine_args,
                resolved.env,
            )
            try:
                self._serving = self._call(open_serving(spec, resolved.engine_args))
            except BaseException as exc:
                # open_serving closed whatever it had started; drop the loop too so
                # nothing of the failed engine survives, and the next load starts clean.
                self._serving = None
                self._stop_loop()
                gc.collect()
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                raise ModelLoadError(loading.load_error_message(spec, exc)) from exc
            self._spec = spec
            self.last_load_seconds = time.monotonic() - started
            self.footprints[spec.name] = swap.footprint(self._serving.engine_pids)
            logger.info(
                "loaded model %s in %.1fs (engine processes: %.2f GiB resident)",
                spec.name,
                self.last_load_seconds,
                self.footprints[spec.name] / 2**30,
            )

    def unload(self, next: ModelSpec | None = None) -> None:
        """Shut the engine down. With ``next`` (a swap), return as soon as the next model may
        load: at once, with the old engine's processes exiting in the background, when the
        memory allows both for a while (swap.py); after they exited otherwise."""
        with self._lock:
            serving, spec = self._serving, self._spec
            if serving is not None and spec is not None and next is not None and self._dead is None:
                gpu = engine_options.has_gpu()
                self.footprints[spec.name] = max(self.footprints.get(spec.name, 0), swap.footprint(serving.engine_pids))
                expected = swap.expected_footprint(next.name, self.footprints)
                if self.overlap_swaps:
                    overlap, why = self.last_overlap = swap.may_overlap(gpu, expected, swap.available_memory())
                else:
                    overlap, why = self.last_overlap = False, "BATCHSITE_SWAP_OVERLAP=off"
                logger.info("swap %s -> %s: %s (%s)", spec.name, next.name, "overlapped" if overlap else "in turn", why)
                if overlap:
                    self._retire_in_background(serving, spec)
                    return
            self._serving = self._spec = None
            if serving is None:
                self._stop_loop()
                if next is None:
                    self.wait_retired()
                return
            started = time.monotonic()
            if self._dead is not None:
                # A hung engine would not answer a polite shutdown: kill its
                # processes first, then let the client close what is left.
                logger.warning("killing the engine processes of %s: %s", spec.name if spec else "?", self._dead)
                serving.reap_processes(timeout=0)
            try:
                self._call(serving.aclose(), timeout=30 if self._dead is not None else 300)
            except Exception:
                logger.exception("error while shutting down the engine for %s", spec.name if spec else "?")
            serving.reap_processes()
            del serving
            self._stop_loop()
            gc.collect()
            loading.trim_malloc()
            self.last_unload_seconds = time.monotonic() - started
            logger.info("unloaded model %s in %.1fs", spec.name if spec else "?", self.last_unload_seconds)
            if next is None:
                self.wait_retired()

    def _retire_in_background(self, serving: LoadedServing, spec: ModelSpec) -> None:
        """Detach the engine (its loop and thread too: the next load gets new ones) and
        shut it down on a thread of its own."""
        loop, thread = self._loop, self._thread
        self._serving = self._spec = None
        self._loop = self._thread = None
        self.last_unload_seconds = 0.0

        def retire() -> None:
            started = time.monotonic()
            try:
                if loop is not None:
                    asyncio.run_coroutine_threadsafe(serving.aclose(), loop).result(300)
            except Exception:
                logger.exception("error while shutting down the engine for %s", spec.name)
            serving.reap_processes()
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
                if not thread.is_alive():
                    loop.close()
            gc.collect()
            loading.trim_malloc()
            logger.info("engine of %s exited in %.1fs, in the background", spec.name, time.monotonic() - started)

        reaper = threading.Thread(target=retire, name=f"vllm-retire-{spec.name}", daemon=True)
        self._reapers = [t for t in self._reapers if t.is_alive()] + [reaper]
        reaper.start()

    def wait_retired(self, timeout: float = 300) -> None:
        """Until every engine retired in the background has exited."""
        for reaper in list(self._reapers):
            reaper.join(timeout)
        self._reapers = [t for t in self._reapers if t.is_alive()]

    # --------------------------------------------------------------------- run
    def abort(self, tags: Collection[Any] | None = None) -> None:
        wanted = None if tags is None else set(tags)
        if wanted is None:
            self._abort.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed in between
                loop.call_soon_threadsafe(self._cancel, wanted)

    def _cancel(self, tags: set[Any] | None) -> None:
        for task, tag in list(self._tasks.items()):
            if tags is None or tag in tags:
                task.cancel()

    def mark_dead(self, reason: str) -> None:
        self._dead = reason

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        serving, loop = self._serving, self._loop
        if serving is None or loop is None:
            raise RuntimeError("no model loaded; call load() first")
        if serving.client.errored or self._dead is not None:
            raise EngineDeadError(f"the vLLM engine for {self.loaded_model} is dead; load the model again")
        self._abort.clear()
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        window = self.window
        source = iter(requests)
        in_flight = 0  # submitted and not yet yielded (those in ``ready`` included)
        ready: collections.deque[Any] = collections.deque()
        exhausted = False
        prime = priming.start_primed(self._call, loop, serving.client, results, window) if self.prime_start else None
        self._prime = prime  # keeps its hold task referenced past the first window
        try:
            while True:
                # Results come per engine step, many at once: take all that are there,
                # then refill the window in one hand-over to the loop (one wake-up of
                # its thread per step, not one per request).
                batch: list[EngineRequest] = []
                while not exhausted and in_flight + len(batch) < window and not self._abort.is_set():
                    try:
                        request = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    if request is NOT_YET:
                        break  # nothing now: ask again after the next results
                    batch.append(request)
                if batch:
                    self._submit(loop, serving, batch, results)
                    in_flight += len(batch)
                    if prime is not None:
                        prime.submitted = in_flight
                if prime is not None:
                    prime.filled = True
                    prime = None
                if in_flight == 0:
                    # The source's end; or a NOT_YET with nothing in flight, which would
                    # leave nothing to wait on: the run ends as at the end (nothing is lost,
                    # NOT_YET comes before a claim, not after).
                    return
                if not ready:
                    self._take_results(results, serving, ready)
                while ready:
                    item = ready.popleft()
                    in_flight -= 1
                    if item is DEAD:
                        raise EngineDeadError(f"the vLLM engine for {self.loaded_model} died")
                    yield item
        finally:
            in_flight -= len(ready)
            if in_flight:
                # Closed early (consumer stopped, abort, engine death): cancel
                # what is left so the engine does not keep working for nobody.
                self.abort()
                with contextlib.suppress(EngineDeadError):
                    while in_flight:
                        self._next_result(results, serving)
                        in_flight -= 1

    def _submit(
        self,
        loop: asyncio.AbstractEventLoop,
        serving: LoadedServing,
        requests: list[EngineRequest],
        results: queue.SimpleQueue[Any],
    ) -> None:
        def done(request: EngineRequest, t: asyncio.Task[Any]) -> None:
            self._tasks.pop(t, None)
            if t.cancelled() or (t.exception() is None and t.result() is ABORTED):
                results.put(EngineResult.aborted_for(request))
            elif (exc := t.exception()) is not None:
                logger.error("engine task failed for %s", request.custom_id, exc_info=exc)
                results.put(DEAD if serving.client.errored else loading.internal_error(request, exc))
            else:
                results.put(t.result())

        def start() -> None:
            for request in requests:
                task = loop.create_task(serving.handle(request))
                self._tasks[task] = request.tag
                if self._abort.is_set():
                    task.cancel()
                task.add_done_callback(functools.partial(done, request))

        loop.call_soon_threadsafe(start)

    def _take_results(self, results: queue.SimpleQueue[Any], serving: LoadedServing, into: Any) -> None:
        """Wait for one result, then take every other one already there."""
        into.append(self._next_result(results, serving))
        while True:
            try:
                into.append(results.get_nowait())
            except queue.Empty:
                return

    def _next_result(self, results: queue.SimpleQueue[Any], serving: LoadedServing) -> Any:
        while True:
            if self._dead is not None:
                raise EngineDeadError(f"the vLLM engine for {self.loaded_model} was given up: {self._dead}")
            try:
                return results.get(timeout=_LIVENESS_POLL_S)
            except queue.Empty:
                thread = self._thread
                if serving.client.errored or thread is None or not thread.is_alive():
                    raise EngineDeadError(f"the vLLM engine for {self.loaded_model} died") from None
