"""What a worker feeds the engine: one iterator over many chunks' lines.

The engine pulls requests from a ``Feeder`` as it has room; when a chunk's
lines run out, the feeder claims the next chunk for the same model right
away, so the engine's window stays full across chunk boundaries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

from django.conf import settings

from jobs.engine.base import EngineRequest, EngineResult
from jobs.models import Chunk, File
from jobs.services import files as file_service
from jobs.services import queue, results
from jobs.services.jsonl import iter_lines


class FeedOwner(Protocol):
    """What a Feeder needs of the worker that owns it (the worker implements it;
    this module does not import the worker, so the two form no import circle)."""

    id: str
    stopping: threading.Event
    progress_every: float

    def finish(self, run: ChunkRun) -> None: ...

    def abort_engine(self) -> None: ...


class ChunkRun:
    """One claimed chunk's results as they arrive, kept in memory until the part is written."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.started = time.monotonic()
        self.fed = 0
        self.fed_all = False
        self.received = 0
        self.completed = 0
        self.failed = 0
        self.usage: dict[str, int] = {}
        self.output: list[tuple[int, bytes]] = []
        self.errors: list[tuple[int, bytes]] = []
        self.stopped = False  # cancelled or expired: keep what ran, skip the rest
        self.abandoned = False  # finished, released, or taken by another worker

    @property
    def complete(self) -> bool:
        return (self.fed_all or self.stopped) and self.received == self.fed

    def add(self, seq: int, result: EngineResult) -> None:
        line = results.result_line(result.custom_id, result.status_code, result.request_id, result.body)
        if 200 <= result.status_code < 300:
            self.output.append((seq, line))
            self.completed += 1
        else:
            self.errors.append((seq, line))
            self.failed += 1
        results.add_usage(self.usage, result.usage)
        self.received += 1

    def sorted_output(self) -> list[bytes]:
        return [line for _, line in sorted(self.output, key=lambda item: item[0])]

    def sorted_errors(self) -> list[bytes]:
        return [line for _, line in sorted(self.errors, key=lambda item: item[0])]


def read_requests(run: ChunkRun, source: BinaryIO, model: str) -> Iterator[EngineRequest]:
    chunk = run.chunk
    seq = 0
    for line in iter_lines(
        source, settings.BATCHSITE.max_line_bytes, chunk.start_byte, chunk.end_byte, chunk.first_line
    ):
        if line.data is None or line.blank:
            continue
        obj = json.loads(line.data)
        body = obj["body"]
        body.setdefault("model", model)  # the one-call shortcut lets lines leave it out
        yield EngineRequest(obj["custom_id"], obj["url"], body, (run, seq))
        seq += 1


class Feeder:
    def __init__(self, worker: FeedOwner, first: Chunk, model: str) -> None:
        self.worker = worker
        self.model = model
        self.runs: list[ChunkRun] = []
        self.in_flight: dict[tuple[int, int], EngineRequest] = {}
        self.finished = False
        self._next_chunk: Chunk | None = first
        self._current: ChunkRun | None = None
        self._lines: Iterator[EngineRequest] | None = None
        self._source: Any = None
        self._last_report = time.monotonic()

    def __iter__(self) -> Feeder:
        return self

    def __next__(self) -> EngineRequest:
        while True:
            if self.worker.stopping.is_set():
                self._close_source()
                raise StopIteration
            if self._current is None and not self._open_next():
                self.finished = True
                raise StopIteration
            run, lines = self._current, self._lines
            assert run is not None and lines is not None
            request = None if run.stopped or run.abandoned else next(lines, None)
            if request is None:
                run.fed_all = True
                self._current = None
                self._close_source()
                if run.complete and not run.abandoned:
                    self.worker.finish(run)
                continue
            run.fed += 1
            self.in_flight[(run.chunk.pk, request.tag[1])] = request
            return request

    def _open_next(self) -> bool:
        chunk = self._next_chunk or queue.claim_next(self.worker.id, model=self.model)
        self._next_chunk = None
        if chunk is None:
            return False
        run = ChunkRun(chunk)
        self.runs.append(run)
        input_file = File.objects.get(pk=chunk.batch.input_file_id)
        self._source = file_service.open_range(input_file, chunk.start_byte, chunk.end_byte)
        self._current, self._lines = run, read_requests(run, self._source, self.model)
        return True

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def take_in_flight(self) -> list[EngineRequest]:
        """The requests fed but not answered, for a retry after an engine death."""
        suspects = [r for r in self.in_flight.values() if not r.tag[0].abandoned]
        self.in_flight.clear()
        return suspects

    def maybe_report(self) -> None:
        """Every few seconds: live progress, lost chunks, cancelled or expired batches."""
        now = time.monotonic()
        if now - self._last_report < self.worker.progress_every:
            return
        self._last_report = now
        live = [run for run in self.runs if not run.abandoned]
        for run in live:
            if not queue.report_progress(run.chunk.pk, self.worker.id, run.completed, run.failed):
                run.abandoned = True
        for batch_id in {run.chunk.batch_id for run in live}:
            queue.refresh_batch_counts(batch_id)

    def stop_cancelled(self) -> None:
        """Runs from the heartbeat thread: abort in-flight work of cancelled or expired batches."""
        live = [run for run in list(self.runs) if not run.abandoned and not run.stopped]
        stop = queue.batches_to_stop({run.chunk.batch_id for run in live})
        if stop:
            for run in live:
                if run.chunk.batch_id in stop:
                    run.stopped = True
            self.worker.abort_engine()
