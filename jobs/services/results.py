"""Result lines, and finalizing a batch from its chunks' parts into its output and error Files.

Finalize is taken with a guarded UPDATE (one finalizer at a time; a live one
is never taken over, a dead one is, see queue.finishable), checks every
recorded part against its counts before it publishes anything (a missing or
short part sends its chunk back to the queue), and never leaves a batch
``finalizing`` for good: an exception is logged with the batch id and counted
on the batch, and after BATCHSITE_MAX_ATTEMPTS the batch ends ``failed`` with
whatever results could still be assembled.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from typing import IO, Any

import orjson
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.db.utils import InterfaceError, OperationalError

from jobs import storage
from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, File, FilePurpose
from jobs.models.clock import Now
from jobs.services import counters, jsonl, parts, queue
from jobs.services import files as file_service
from jobs.services.jsonl import iter_lines
from jobs.services.lifecycle import end_batch, error_list, mark_failing
from jobs.services.parts import Part

log = logging.getLogger("batchsite.worker")

CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def result_line(custom_id: str, status_code: int, request_id: str, body: Any) -> bytes:
    """OpenAI's output line; a 4xx body {"error": ...} goes to the error file with the same shape.

    ``body`` is a dict, or its JSON already encoded (as the engine hands vLLM's bodies
    over), which goes into the line as it is: this runs once per request, and
    decoding and encoding an embedding's floats again cost more than the engine did.
    """
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return b"".join(
        (
            b'{"id":"batch_req_',
            secrets.token_hex(12).encode(),
            b'","custom_id":',
            orjson.dumps(custom_id),
            b',"response":{"status_code":',
            b"%d" % status_code,
            b',"request_id":',
            orjson.dumps(request_id),
            b',"body":',
            raw,
            b'},"error":null}\n',
        )
    )


def error_line(custom_id: str | None, code: str, message: str) -> bytes:
    """A line that never ran: no response, only OpenAI's ``error`` object."""
    return _dumps(
        {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def add_usage(total: dict[str, int], usage: dict[str, int] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


def openai_usage(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", 0),
    }


class InputUnreadable(Exception):
    """The input file could not be read (it is needed to name the lines that never ran)."""


def _unrun_line_error(batch: Batch, chunk: Chunk) -> tuple[str, str]:
    if chunk.status == ChunkStatus.FAILED:
        return chunk.error_code or "request_failed", chunk.last_error or "The worker running this request failed."
    if batch.cancelling_at is not None:
        return "batch_cancelled", CANCELLED_MESSAGE
    return "batch_expired", EXPIRED_MESSAGE


def _copy(name: str, out: IO[bytes]) -> None:
    with parts.open_part(name) as part:
        shutil.copyfileobj(part, out, 1 << 20)


LOST_MESSAGE = (
    "This request ran, but its stored result was lost before the batch's results could be "
    "assembled (the batch's finalize gave up after BATCHSITE_MAX_ATTEMPTS tries)."
)
UNNAMED = " The input file could not be read, so this line's custom_id is unknown."


class _Assembly:
    """The output and error files of one finalize, written chunk by chunk in order.

    Every request line of every chunk ends in one of the two files: a result its part
    holds, or an error line (never ran, or, best effort, its part failed its check:
    ``result_lost``). None is dropped, so the counts are the files' lines."""

    def __init__(self, batch: Batch, out: IO[bytes], err: IO[bytes], best_effort: bool = False) -> None:
        self.batch, self.out, self.err, self.best_effort = batch, out, err, best_effort
        self.completed = self.failed = 0
        self.usage: dict[str, int] = {}
        self.lost = 0  # best effort: lines whose part failed its check (written as result_lost)
        self.unnamed = 0  # best effort: error lines with a null custom_id (the input was unreadable)
        self._input: File | None = None

    def add(self, chunk: Chunk) -> None:
        recorded = parts.recorded(chunk)
        good: list[Part] = []
        for part in recorded:
            if self.best_effort and parts.problem(self.batch.id, chunk.index, part, chunk.request_count):
                continue
            good.append(part)
            out_name, err_name = parts.names_of(self.batch.id, chunk.index, part)
            _copy(out_name, self.out)
            _copy(err_name, self.err)
            self.completed += part.completed
            self.failed += part.failed
            add_usage(self.usage, part.usage)
        done = parts.done_seqs(good)
        # Lines that ran but whose part was skipped above: written as lost, never dropped.
        lost = parts.done_seqs(recorded) - done
        if len(done) < chunk.request_count:
            self._unrun(chunk, done, lost)

    def _unrun(self, chunk: Chunk, done: set[int], lost: set[int]) -> None:
        code, message = _unrun_line_error(self.batch, chunk)
        written: set[int] = set()

        def write(seq: int, custom_id: str | None, suffix: str = "") -> None:
            if seq in lost:
                self.err.write(error_line(custom_id, "result_lost", LOST_MESSAGE + suffix))
                self.lost += 1
            else:
                self.err.write(error_line(custom_id, code, message + suffix))
            self.failed += 1
            written.add(seq)

        try:
            if self._input is None:
                self._input = File.objects.get(pk=self.batch.input_file_id)
            # Only this chunk's bytes of the input: one ranged read on object storage.
            with file_service.open_range(self._input, chunk.start_byte, chunk.end_byte) as source:
                lines = iter_lines(
                    source, settings.BATCHSITE.max_line_bytes, chunk.start_byte, chunk.end_byte, chunk.first_line
                )
                requests = (line for line in lines if not line.blank)  # too-long lines hold a position too
                for seq, line in enumerate(requests):
                    if seq not in done and seq < chunk.request_count:
                        # A line too long to read (the limit was lowered since validation) has no custom_id.
                        write(seq, jsonl.loads(line.data)["custom_id"] if line.data is not None else None)
        except (OSError, File.DoesNotExist, ValueError) as exc:
            if not self.best_effort:
                raise InputUnreadable(f"the input file {self.batch.input_file_id} could not be read: {exc}") from exc
        # Best effort: the lines the input could not name are still listed, with a null custom_id.
        for seq in range(chunk.request_count):
            if seq not in done and seq not in written:
                write(seq, None, UNNAMED)
                self.unnamed += 1


def _claim(batch_id: str, worker_id: str | None) -> Batch | None:
    """Become the batch's finalizer, if its chunks have all ended and no live finalizer has it."""
    unfinished = Chunk.objects.filter(batch_id=OuterRef("pk"), status__in=[ChunkStatus.PENDING, ChunkStatus.RUNNING])
    with transaction.atomic():
        # Lock the row, then decide: the conditions join the finalizer's row, and
        # PostgreSQL would not re-check such a join for an UPDATE that waited on
        # the lock, so two finalizers could both win.
        if not Batch.objects.select_for_update().filter(pk=batch_id).exists():
            return None
        if not Batch.objects.filter(queue.finishable(worker_id), pk=batch_id).exclude(Exists(unfinished)).exists():
            return None
        Batch.objects.filter(pk=batch_id).update(
            status=BatchStatus.FINALIZING,
            finalizer_id=worker_id,
            finalize_started_at=Now(),
            finalizing_at=Coalesce(F("finalizing_at"), Now()),
        )
    return Batch.objects.get(pk=batch_id)


def _mine(batch_id: str, worker_id: str | None) -> Q:
    return Q(pk=batch_id, status=BatchStatus.FINALIZING, finalizer_id=worker_id)


def _send_back(batch: Batch, worker_id: str | None, chunks: list[Chunk]) -> bool:
    """Drop the parts that do not hold what was recorded. A done chunk that lost lines goes back
    to the queue (its try counted); a cut-short or failed one lists them as not run. True if any
    chunk went back, and so the batch is not ready after all."""
    requeued = False
    with transaction.atomic():
        if not Batch.objects.select_for_update().filter(_mine(batch.id, worker_id)).exists():
            return True  # taken over meanwhile: whoever has it now decides
        for chunk in chunks:
            checked = [(p, parts.problem(batch.id, chunk.index, p, chunk.request_count)) for p in parts.recorded(chunk)]
            problems = [problem for _, problem in checked if problem]
            if not problems:
                continue
            reason = f"Its results were lost ({'; '.join(problems)})."
            log.error("batch %s: chunk %s: %s", batch.id, chunk, reason)
            good = [p for p, problem in checked if not problem]
            completed, failed = parts.totals(good)
            fields: dict[str, Any] = dict(
                parts=[p.to_json() for p in good], completed=completed, failed=failed, usage=parts.total_usage(good)
            )
            if chunk.counted is None and chunk.status in counters.ENDED_CHUNKS:  # /metrics keeps counting these
                fields["counted"] = counters.ended_figures(chunk)
            if chunk.status == ChunkStatus.DONE:
                requeued = True
                fields["worker"] = None
                max_attempts = settings.BATCHSITE_WORKER.max_attempts
                fields.update(queue.back_or_failed(chunk.attempts, reason, max_attempts))
            Chunk.objects.filter(pk=chunk.pk, status=chunk.status, fence=chunk.fence).update(**fields)
        if requeued:
            back = BatchStatus.CANCELLING if batch.cancelling_at is not None else BatchStatus.IN_PROGRESS
            Batch.objects.filter(_mine(batch.id, worker_id)).update(
                status=back, finalizer=None, finalize_started_at=None, finalizing_at=None
            )
    return requeued


def _publish(batch: Batch, assembly: _Assembly, out: tuple[str, str], err: tuple[str, str]) -> tuple[Any, Any]:
    """Rows for the stored output and error files; a file with no line is deleted instead."""
    owner = batch.owner
    keep = batch.output_expires_after  # anchored at each file's creation, as OpenAI's
    output = error = None
    try:
        for (file_id, name), count, purpose, suffix in (
            (out, assembly.completed, FilePurpose.BATCH_OUTPUT, "output"),
            (err, assembly.failed, FilePurpose.BATCH_OUTPUT, "error"),  # as OpenAI labels error files
        ):
            if not count:
                default_storage.delete(name)
                continue
            file = file_service.register_stored(owner, purpose, f"{batch.id}_{suffix}.jsonl", file_id, name, keep)
            output, error = (file, error) if suffix == "output" else (output, file)
    except BaseException:
        for _, name in (out, err):
            default_storage.delete(name)
        File.objects.filter(pk__in=[out[0], err[0]]).delete()
        raise
    return output, error


def _assemble_and_end(batch: Batch, worker_id: str | None, give_up: str = "") -> Batch | None:
    """Write the output and error files and end the batch. ``give_up``: the reason it fails
    (finalize failed too often): assemble what still can be, best effort."""
    chunks = list(batch.chunks.order_by("index"))
    if not give_up and _send_back(batch, worker_id, chunks):
        return None
    chunks = list(batch.chunks.order_by("index"))  # without the parts dropped just now
    # Streamed from the parts straight into the two files' final place in the store (a
    # multipart upload each on S3): never whole on a local disk or in memory. Neither is
    # visible until its writer closes without error; neither has a row until both are whole.
    out, err = file_service.new_stored_name(), file_service.new_stored_name()
    with storage.writer(default_storage, out[1]) as out_stream, storage.writer(default_storage, err[1]) as err_stream:
        assembly = _Assembly(batch, out_stream, err_stream, best_effort=bool(give_up))
        for chunk in chunks:
            assembly.add(chunk)
    output, error = _publish(batch, assembly, out, err)
    fields: dict[str, Any] = {}
    if give_up:
        status = BatchStatus.FAILED
        fields["errors"] = error_list("finalize_failed", give_up + _losses(assembly))
    elif batch.cancelling_at is not None:
        status = BatchStatus.CANCELLED
    elif batch.errors is not None:
        status = BatchStatus.FAILED
    elif any(chunk.status == ChunkStatus.CANCELLED for chunk in chunks):
        status = BatchStatus.EXPIRED
    else:
        status = BatchStatus.COMPLETED
    finished = end_batch(
        batch.id,
        status,
        _mine(batch.id, worker_id),
        output_file=output,
        error_file=error,
        completed=assembly.completed,
        failed=assembly.failed,
        usage=openai_usage(assembly.usage),
        **fields,
    )
    if finished is None:  # another finalizer took over a finalize it thought dead: keep its files, not ours
        for file in (output, error):
            if file is not None:
                file_service.delete_file(file)
        return None
    parts.delete_batch(batch.id)
    return finished


def _losses(assembly: _Assembly) -> str:
    """What the best-effort files say about lines they could not hold as they were."""
    said = ""
    if assembly.lost:
        said += f" {assembly.lost} lines whose results were lost are in the error file as result_lost."
    if assembly.unnamed:
        said += f" {assembly.unnamed} lines in the error file have a null custom_id (the input could not be read)."
    return said


def _failed_attempt(batch: Batch, worker_id: str | None, exc: Exception) -> Batch | None:
    """Count a finalize that raised; retry later (any finalizer, after the lease), or give up."""
    message = str(exc) if isinstance(exc, InputUnreadable) else f"{type(exc).__name__}: {exc}"
    counted = Batch.objects.filter(_mine(batch.id, worker_id)).update(
        finalize_attempts=F("finalize_attempts") + 1, finalize_error=message[:2000]
    )
    if not counted:
        return None
    attempts = Batch.objects.values_list("finalize_attempts", flat=True).get(pk=batch.id)
    limit = settings.BATCHSITE_WORKER.max_attempts
    if attempts < limit:
        log.error("batch %s: finalize failed (attempt %d of %d); retrying later", batch.id, attempts, limit)
        Batch.objects.filter(_mine(batch.id, worker_id)).update(finalizer=None, finalize_started_at=Now())
        return None
    reason = (
        f"Assembling the results failed {attempts} times (BATCHSITE_MAX_ATTEMPTS={limit}); the last error: {message}."
    )
    log.error("batch %s: giving up: %s", batch.id, reason)
    try:
        return _assemble_and_end(batch, worker_id, give_up=reason)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("batch %s: even the best-effort results failed; failing it without files", batch.id)
        errors = error_list("finalize_failed", reason + " No results could be assembled.")
        return end_batch(batch.id, BatchStatus.FAILED, _mine(batch.id, worker_id), errors=errors)


def finalize(batch_id: str, worker_id: str | None) -> Batch | None:
    """Assemble a batch whose chunks have all ended; None if it is not ready, not ours, or sent
    back (a part was lost) or failed for now (to be retried)."""
    # Called after every chunk: the plain read answers "not yet" without a
    # transaction (which on SQLite would take the database's write lock).
    if Chunk.objects.unfinished().filter(batch_id=batch_id).exists():
        return None
    batch = _claim(batch_id, worker_id)
    if batch is None:
        return None
    started = time.monotonic()
    try:
        finished = _assemble_and_end(batch, worker_id)
    except (OperationalError, InterfaceError):
        raise  # the database is away: not this batch's fault; the worker waits and retries
    except Exception as exc:
        log.exception("batch %s: finalize failed", batch_id)
        return _failed_attempt(batch, worker_id, exc)
    if finished is not None:
        log.info(
            "finalized %s: %s, %d completed, %d failed, in %.2fs",
            batch_id,
            finished.status,
            finished.completed,
            finished.failed,
            time.monotonic() - started,
        )
    return finished


def fail_batch(batch_id: str, worker_id: str | None, code: str, message: str) -> Batch | None:
    """Fail a batch that cannot run on, keeping what ran: it ends ``failed`` now if nothing of it
    is running, else when the chunks other workers are running end."""
    log.error("batch %s fails: %s: %s", batch_id, code, message)
    mark_failing(batch_id, code, message)
    return finalize(batch_id, worker_id)
