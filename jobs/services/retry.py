"""Retrying what did not succeed: a new batch of exactly the input lines whose results
are in a finished batch's error file.

The lines are copied byte for byte from the original input (not rebuilt from the
error file, which holds results, not requests), in their input order, into a new
input file; the new batch runs them like any other. Its ``retry_of`` field names the
batch it retries, and so does ``metadata.retry_of`` where the owner's 16 keys leave
room. The API's ``POST /v1/batches/{id}/retry`` and the web page's Retry button both
call ``retry_batch``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.errors import BatchsiteError, Conflict, InvalidRequest
from jobs.models import Batch, BatchStatus, File, FilePurpose, Priority
from jobs.services import batches as batch_service
from jobs.services import files as file_service
from jobs.services import quotas
from jobs.services.jsonl import iter_lines

# Which error-file lines to retry: every one, or those of one kind. "failed" are
# the lines that ran (or whose chunk failed) and got an error; "cancelled" and
# "expired" are those that never ran because the batch was cancelled or expired.
FILTERS = ("all", "failed", "cancelled", "expired")
_NEVER_RAN = {"cancelled": "batch_cancelled", "expired": "batch_expired"}


def _wanted(line: dict[str, Any], which: str) -> bool:
    code = (line.get("error") or {}).get("code")
    if which == "all":
        return True
    if which == "failed":
        return code not in _NEVER_RAN.values()
    return bool(code == _NEVER_RAN[which])


def _available(owner: Any, file_id: str | None, what: str, batch: Batch) -> File:
    file = File.objects.owned_by(owner).live().filter(pk=file_id).first() if file_id else None
    if file is None:
        raise Conflict(
            f"Cannot retry batch {batch.id}: its {what} ({file_id}) was deleted or has expired.",
            code="file_not_available",
            param="batch_id",
        )
    return file


def _error_ids(error_file: File, which: str) -> set[str]:
    ids: set[str] = set()
    with file_service.open_content(error_file) as fh:
        for raw in fh:
            line = json.loads(raw)
            if _wanted(line, which):
                ids.add(line["custom_id"])
    return ids


def _copy_lines(input_file: File, ids: set[str], out: Any) -> int:
    copied = 0
    with file_service.open_content(input_file) as source:
        for line in iter_lines(source, settings.BATCHSITE.max_line_bytes):
            if line.data is None or line.blank:
                continue
            if json.loads(line.data)["custom_id"] in ids:
                out.write(line.data + b"\n")
                copied += 1
    return copied


def _with_retry_of(batch: Batch) -> dict[str, str] | None:
    """The original's metadata with ``retry_of`` set (replaced, on a retry of a retry)
    when it fits. The link is always the new batch's own ``retry_of`` field; this copy
    is a convenience that must never make a legal batch unretryable: with all 16 keys
    used by the owner, the metadata is theirs, unchanged."""
    metadata = dict(batch.metadata or {})
    if len(metadata) < 16 or "retry_of" in metadata:
        metadata["retry_of"] = batch.id
    return batch_service.check_metadata(metadata or None)


def check_filter(which: Any) -> str:
    if which not in FILTERS:
        raise InvalidRequest(
            f"filter must be one of: {', '.join(FILTERS)}; got {which!r:.100}.", param="filter", code="invalid_value"
        )
    return str(which)


def retry_batch(owner: Any, batch_id: str, which: str = "all") -> Batch:
    """A new batch of the input lines of ``batch_id`` whose results are in its error file
    (narrowed by ``which``, one of FILTERS). The batch must have ended."""
    which = check_filter(which)
    batch = batch_service.get_batch(owner, batch_id)
    if not batch.is_terminal:
        raise Conflict(
            f"Batch {batch.id} has status '{batch.status}'; only a finished batch can be retried "
            "(cancel it, or wait for it to end).",
            code="batch_not_finished",
            param="batch_id",
        )
    if batch.error_file_id is None:
        if batch.status == BatchStatus.FAILED:
            reason = "it failed before any line ran; create a new batch from its input file"
        else:
            reason = "none of its lines failed"
        raise Conflict(f"Nothing to retry in batch {batch.id}: {reason}.", code="nothing_to_retry", param="batch_id")
    metadata = _with_retry_of(batch)
    ids = _error_ids(_available(owner, batch.error_file_id, "error file", batch), which)
    input_file = _available(owner, batch.input_file_id, "input file", batch)
    tmp_dir = Path(settings.UPLOAD_TMP_DIR)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="retry-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as out:
            copied = _copy_lines(input_file, ids, out) if ids else 0
        if not copied:
            raise Conflict(
                f"Nothing to retry in batch {batch.id}: no line of its error file is {which}.",
                code="nothing_to_retry",
                param="filter",
            )
        new_input = file_service.save_generated(owner, FilePurpose.BATCH, f"{batch.id}_retry.jsonl", tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
    request = batch_service.BatchRequest(
        endpoint=batch.endpoint,
        completion_window=batch.completion_window,
        metadata=metadata,
        model=batch.model,
        webhook_url=batch.webhook_url,
        output_expires_after=batch.output_expires_after,
        retry_of=batch.id,
        # The retry keeps its batch's place among the owner's own, unless high is no longer theirs.
        priority=Priority(batch.priority)
        if batch.priority != Priority.HIGH or quotas.may_use_high_priority(owner)
        else Priority.NORMAL,
    )
    try:
        return batch_service.create_batch(owner, new_input.id, request)
    except BatchsiteError:
        file_service.delete_file(new_input)  # a refused retry leaves no file behind
        raise
