"""Result lines, per-chunk part files, and finalizing a batch into its output and error Files."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import Batch, BatchStatus, Chunk, ChunkStatus, File, FilePurpose
from jobs.services import files as file_service
from jobs.services.jsonl import iter_lines
from jobs.services.lifecycle import end_batch

log = logging.getLogger("batchsite.worker")

CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
# Fault injection for the kill -9 tests: hold finalize open so a test can kill
# the worker in the middle of it. Zero (off) unless the variable is set.
FINALIZE_PAUSE_SECONDS = float(os.environ.get("BATCHSITE_TEST_FINALIZE_PAUSE", "0"))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def result_line(custom_id: str, status_code: int, request_id: str, body: Any) -> bytes:
    """OpenAI's output line; a 4xx body {"error": ...} goes to the error file with the same shape."""
    return _dumps(
        {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body},
            "error": None,
        }
    )


def error_line(custom_id: str, code: str, message: str) -> bytes:
    """A line that never ran: no response, only OpenAI's ``error`` object."""
    return _dumps(
        {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def part_paths(batch_id: str, index: int) -> tuple[Path, Path]:
    directory = Path(settings.PARTS_DIR) / batch_id
    return directory / f"{index:06d}.out.jsonl", directory / f"{index:06d}.err.jsonl"


def write_atomically(path: Path, lines: list[bytes]) -> None:
    """temp file, fsync, rename: a part is either whole on disk or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parts(chunk: Chunk, output: list[bytes], errors: list[bytes]) -> None:
    out_path, err_path = part_paths(chunk.batch_id, chunk.index)
    write_atomically(out_path, output)
    write_atomically(err_path, errors)


def add_usage(total: dict[str, int], usage: dict[str, int] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


def _copy_counting(path: Path, out: IO[bytes], ids: set[str] | None) -> int:
    if not path.exists():
        return 0
    lines = 0
    with path.open("rb") as part:
        if ids is None:
            while block := part.read(1 << 20):
                out.write(block)
                lines += block.count(b"\n")
        else:  # a chunk cut short: remember which lines ran
            for line in part:
                out.write(line)
                lines += 1
                ids.add(json.loads(line)["custom_id"])
    return lines


def _skipped_line_error(batch: Batch, chunk: Chunk) -> tuple[str, str]:
    if chunk.status == ChunkStatus.FAILED:
        return "request_failed", chunk.last_error or "The worker running this request failed."
    if batch.cancelling_at is not None:
        return "batch_cancelled", CANCELLED_MESSAGE
    return "batch_expired", EXPIRED_MESSAGE


def _assemble(batch: Batch, input_file: File, out: IO[bytes], err: IO[bytes]) -> tuple[int, int, dict[str, int]]:
    completed = failed = 0
    usage: dict[str, int] = {}
    with file_service.open_content(input_file) as source:
        for chunk in batch.chunks.order_by("index"):
            out_path, err_path = part_paths(batch.id, chunk.index)
            whole = chunk.status == ChunkStatus.DONE
            ran: set[str] | None = None if whole else set()
            completed += _copy_counting(out_path, out, ran)
            failed += _copy_counting(err_path, err, ran)
            add_usage(usage, chunk.usage)
            if whole:
                continue
            code, message = _skipped_line_error(batch, chunk)
            for line in iter_lines(
                source, settings.BATCHSITE.max_line_bytes, chunk.start_byte, chunk.end_byte, chunk.first_line
            ):
                if line.data is None or line.blank:
                    continue
                custom_id = json.loads(line.data)["custom_id"]
                if custom_id not in ran:  # type: ignore[operator]
                    err.write(error_line(custom_id, code, message))
                    failed += 1
    return completed, failed, usage


def openai_usage(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", 0),
    }


def finalize(batch_id: str, worker_id: str | None) -> Batch | None:
    """Assemble a batch whose chunks have all ended; None if it is not ready or not ours."""
    # Called after every chunk: the plain read answers "not yet" without a
    # transaction (which on SQLite would take the database's write lock).
    if Chunk.objects.unfinished().filter(batch_id=batch_id).exists():
        return None
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.is_terminal:
            return None
        if batch.chunks.unfinished().exists():
            return None
        Batch.objects.filter(pk=batch_id).update(
            status=BatchStatus.FINALIZING, finalizer_id=worker_id, finalizing_at=batch.finalizing_at or timezone.now()
        )
    started = timezone.now()
    input_file = File.objects.get(pk=batch.input_file_id)
    tmp_dir = Path(settings.UPLOAD_TMP_DIR)
    out = tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".out", delete=False)
    err = tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".err", delete=False)
    try:
        with out, err:
            completed, failed, usage = _assemble(batch, input_file, out, err)
            if FINALIZE_PAUSE_SECONDS:
                time.sleep(FINALIZE_PAUSE_SECONDS)
            for handle in (out, err):
                handle.flush()
                os.fsync(handle.fileno())
        owner = batch.owner
        keep = batch.output_expires_after  # anchored at each file's creation, as OpenAI's
        output = (
            file_service.save_generated(owner, FilePurpose.BATCH_OUTPUT, f"{batch.id}_output.jsonl", out.name, keep)
            if completed
            else None
        )
        error = (
            file_service.save_generated(owner, FilePurpose.BATCH_ERROR, f"{batch.id}_error.jsonl", err.name, keep)
            if failed
            else None
        )
    finally:
        for leftover in (out.name, err.name):
            Path(leftover).unlink(missing_ok=True)
    if batch.cancelling_at is not None:
        status = BatchStatus.CANCELLED
    elif batch.chunks.filter(status=ChunkStatus.CANCELLED).exists():
        status = BatchStatus.EXPIRED
    else:
        status = BatchStatus.COMPLETED
    finished = end_batch(
        batch_id,
        status,
        Q(status=BatchStatus.FINALIZING, finalizer_id=worker_id),
        output_file=output,
        error_file=error,
        completed=completed,
        failed=failed,
        usage=openai_usage(usage),
    )
    if finished is None:  # another worker took over a finalize it thought dead: keep its files, not ours
        for file in (output, error):
            if file is not None:
                file_service.delete_file(file)
        return None
    shutil.rmtree(Path(settings.PARTS_DIR) / batch_id, ignore_errors=True)
    log.info(
        "finalized %s: %s, %d completed, %d failed, in %.2fs",
        batch_id,
        status,
        completed,
        failed,
        (timezone.now() - started).total_seconds(),
    )
    return finished
