"""What a worker feeds the engine: one iterator over many chunks' lines.

The engine pulls requests from a ``Feeder`` as it has room; when a chunk's
lines run out, the feeder claims the next chunk for the same model right
away, so the engine's window stays full across chunk boundaries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any, BinaryIO, Protocol

from django.conf import settings
from django.db.utils import InterfaceError, OperationalError

from jobs.engine.base import NOT_YET, EngineRequest, EngineResult
from jobs.engine.prefix_order import grouped
from jobs.hang_watch import HangWatch
from jobs.models import Chunk, File
from jobs.services import claims, jsonl, parts, queue, results
from jobs.services import files as file_service
from jobs.services.jsonl import iter_lines

log = logging.getLogger("batchsite.worker")


class FeedOwner(Protocol):
    """What a Feeder needs of the worker that owns it (the worker implements it;
    this module does not import the worker, so the two form no import circle)."""

    id: str
    stopping: threading.Event
    progress_every: float
    watch: HangWatch

    def close_run(self, run: ChunkRun, count_attempt: bool = False, reason: str = "") -> None: ...

    def abort_requests(self, tags: Collection[Any]) -> None: ...


class ChunkRun:
    """One claim of a chunk: its results, written to its part as they arrive.

    Each line fed to the engine ends in exactly one outcome: a result (kept) or
    an abort (not kept: the line did not run). Lines that earlier claims
    finished (the chunk's recorded parts, checkpoints included) are not fed
    again. The claim's counts are its PartWriter's.
    """

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.started = time.monotonic()
        self.skip = claims.kept(chunk)
        self.base_completed, self.base_failed = parts.totals(parts.recorded(chunk))
        self.fed = 0
        self.fed_all = False
        self.outcomes = 0
        self.aborted = 0
        self.part = parts.PartWriter(chunk.batch_id, chunk.index, chunk.fence)
        self.stopped = False  # cancelled or expired: keep what ran, skip the rest
        self.abandoned = False  # closed, released, or taken by another worker

    @property
    def completed(self) -> int:
        return self.part.completed

    @property
    def failed(self) -> int:
        return self.part.failed

    @property
    def settled(self) -> bool:
        """Every line it will feed has been fed and has its outcome."""
        return (self.fed_all or self.stopped) and self.outcomes == self.fed

    @property
    def all_done(self) -> bool:
        return len(self.skip) + len(self.part.seqs) == self.chunk.request_count

    @property
    def total_completed(self) -> int:
        return self.base_completed + self.completed

    @property
    def total_failed(self) -> int:
        return self.base_failed + self.failed

    def add(self, seq: int, result: EngineResult) -> None:
        if result.failure is not None:
            line = results.error_line(result.custom_id, *result.failure)
        else:
            line = results.result_line(result.custom_id, result.status_code, result.request_id, result.payload)
        self.part.add(line, 200 <= result.status_code < 300, seq, result.usage)
        self.outcomes += 1

    def add_aborted(self) -> None:
        self.aborted += 1
        self.outcomes += 1

    def checkpoint_due(self, every_seconds: float, every_lines: int) -> bool:
        waiting = self.part.uncommitted
        return waiting >= every_lines or (waiting > 0 and time.monotonic() - self.part.committed_at >= every_seconds)

    def abandon(self) -> None:
        """Taken by another worker (or closed): nothing more is written, and an unstored part is dropped."""
        self.abandoned = True
        self.part.discard()


def read_requests(run: ChunkRun, source: BinaryIO, model: str) -> Iterator[EngineRequest]:
    """The chunk's request lines that no earlier claim finished, tagged (run, position in chunk)."""
    chunk = run.chunk
    seq = -1
    for line in iter_lines(
        source, settings.BATCHSITE.max_line_bytes, chunk.start_byte, chunk.end_byte, chunk.first_line
    ):
        if line.blank:  # a too-long line keeps its position: invalid_lines="skip" marks it done
            continue
        seq += 1
        if seq in run.skip:
            continue
        if line.data is None:
            # Accepted, but longer than the line limit now is (BATCHSITE_MAX_LINE_BYTES was
            # lowered since): it cannot be read whole, so it ends as an error line here
            # rather than never (the chunk would wait for it forever).
            message = (
                f"Line {line.number} is longer than {settings.BATCHSITE.max_line_bytes} bytes "
                "(BATCHSITE_MAX_LINE_BYTES was lowered after the batch was accepted)."
            )
            run.part.add(results.error_line(None, "line_too_long", message), False, seq)
            continue
        obj = jsonl.loads(line.data)
        body = obj["body"]
        body.setdefault("model", model)  # the one-call shortcut lets lines leave it out
        yield EngineRequest(obj["custom_id"], obj["url"], body, (run, seq))


class Feeder:
    def __init__(
        self,
        worker: FeedOwner,
        first: Chunk,
        model: str,
        claimed: float | None = None,
        window: int = 1,
        runs_at_once: int | None = None,
    ) -> None:
        self.worker = worker
        self.window = window  # lines read ahead and grouped by prompt prefix (jobs/engine/prefix_order.py)
        # When the chunk being opened was claimed (monotonic): its first request is
        # logged with the time since, the per-batch start-up cost (bench/e2e_throughput.py).
        self._claimed = claimed
        self.model = model
        self.runs: list[ChunkRun] = []
        self.in_flight: dict[tuple[int, int], EngineRequest] = {}
        self.finished = False
        self._next_chunk: Chunk | None = first
        self._current: ChunkRun | None = None
        self._lines: Iterator[EngineRequest] | None = None
        self._source: Any = None
        self._last_report = time.monotonic()
        # Claims ahead stop while the engine has as many lines in flight as it runs at once
        # (vLLM: max_num_seqs, half its window). Lines past that would only wait in the
        # engine's own queue, where a chunk claimed next (another user's, under fair share)
        # would wait behind them; claimed a moment later, they run no later.
        self.ahead_limit = max(1, runs_at_once or window)

    def __iter__(self) -> Feeder:
        return self

    def __next__(self) -> EngineRequest:
        # While here the engine waits on us (reading input, claiming the next
        # chunk), not the other way round: the worker's hang watch must not count it.
        watch = self.worker.watch
        before, began = watch.last_progress, time.monotonic()
        with watch.off_clock():
            request = self._next()
        if request is NOT_YET:
            # The engine only asked, and has lines in flight: not progress of its own (a hung
            # line must still trip the watch), and our time here was not its silence either.
            watch.last_progress = before + (time.monotonic() - began)
        return request

    def _next(self) -> EngineRequest:
        while True:
            if self.worker.stopping.is_set():
                self._close_source()
                raise StopIteration
            if self._current is None:
                if self._next_chunk is None and self.in_flight and self._hold_back():
                    return NOT_YET
                if not self._open_next():
                    # Nothing to claim: the engine drains, and the worker's loop claims anew.
                    # (Polling here while the last lines run would let new work join the
                    # running engine, but the queue's ETAs model a worker's chunks as run
                    # one after another, and overlapped runs made them wrong: not yet.)
                    self.finished = True
                    raise StopIteration
                continue  # opened, or dropped (its input unreadable): look again
            run, lines = self._current, self._lines
            assert run is not None and lines is not None
            try:
                request = None if run.stopped or run.abandoned else next(lines, None)
            except (OperationalError, InterfaceError):
                raise
            except Exception as exc:
                self._drop(run, exc)
                continue
            if request is None:
                run.fed_all = True
                self._current = None
                self._close_source()
                if run.settled and not run.abandoned:
                    self.worker.close_run(run)
                continue
            run.fed += 1
            if run.fed == 1 and self._claimed is not None:
                log.info(
                    "batch %s chunk %d: first request to the engine %.3fs after its claim",
                    run.chunk.batch_id,
                    run.chunk.index,
                    time.monotonic() - self._claimed,
                )
                self._claimed = None
            self.in_flight[(run.chunk.pk, request.tag[1])] = request
            return request

    def _hold_back(self) -> bool:
        """Not yet time to claim: the engine has as many lines as it runs at once."""
        return len(self.in_flight) >= self.ahead_limit

    def _open_next(self) -> bool:
        chunk = self._next_chunk
        if chunk is None:
            chunk = queue.claim_next(self.worker.id, model=self.model)
            self._claimed = time.monotonic()
        self._next_chunk = None
        if chunk is None:
            return False
        run = ChunkRun(chunk)
        self.runs.append(run)
        self._current = run
        try:
            input_file = File.objects.get(pk=chunk.batch.input_file_id)
            self._source = file_service.open_range(input_file, chunk.start_byte, chunk.end_byte)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            self._drop(run, exc)
            return True  # on to the next chunk; this one comes back until it has had its tries
        self._lines = grouped(read_requests(run, self._source, self.model), self.window)
        return True

    def _drop(self, run: ChunkRun, exc: Exception) -> None:
        """This chunk's input cannot be read: hand it back (a try counted), keeping what it
        finished; the other chunks in the engine (other batches') run on."""
        log.exception(
            "batch %s: the input of chunk %s could not be read; handing it back", run.chunk.batch_id, run.chunk
        )
        self._current = None
        self._close_source()
        self.worker.abort_requests(self.tags_of([run]))
        self.worker.close_run(
            run, count_attempt=True, reason=f"Its input could not be read: {type(exc).__name__}: {exc}"
        )

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def close(self) -> None:
        self._close_source()

    def take_in_flight(self) -> list[EngineRequest]:
        """The requests fed but not answered, for a retry after an engine death
        (not those of runs that were stopped or taken from us)."""
        suspects = [r for r in self.in_flight.values() if not (r.tag[0].abandoned or r.tag[0].stopped)]
        self.in_flight.clear()
        return suspects

    def tags_of(self, runs: Collection[ChunkRun]) -> list[Any]:
        return [request.tag for request in list(self.in_flight.values()) if request.tag[0] in runs]

    def maybe_report(self) -> None:
        """Every few seconds: live progress, and chunks lost to another worker (their lines are aborted)."""
        now = time.monotonic()
        if now - self._last_report < self.worker.progress_every:
            return
        self._last_report = now
        live = [run for run in self.runs if not run.abandoned]
        lost = []
        for run in live:
            if not queue.report_progress(run.chunk, self.worker.id, run.total_completed, run.total_failed):
                run.abandon()
                lost.append(run)
        if lost:
            self.worker.abort_requests(self.tags_of(lost))
        for batch_id in {run.chunk.batch_id for run in live}:
            queue.refresh_batch_counts(batch_id)

    def stop_cancelled(self) -> None:
        """Runs from the heartbeat thread: abort the in-flight lines of cancelled or
        expired batches, and only theirs (other batches share the engine)."""
        live = [run for run in list(self.runs) if not run.abandoned and not run.stopped]
        stop = queue.batches_to_stop({run.chunk.batch_id for run in live})
        if not stop:
            return
        stopped = [run for run in live if run.chunk.batch_id in stop]
        for run in stopped:
            run.stopped = True
        self.worker.abort_requests(self.tags_of(stopped))
