"""Creating, queueing and cancelling batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import File as DjangoFile
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from batchsite.env import parse_window
from jobs.errors import Conflict, InvalidRequest, LimitReached, NotFound, not_found
from jobs.models import ENDPOINT_KINDS, Batch, BatchStatus, Chunk, ChunkStatus, File, Priority, RegisteredModel
from jobs.models.clock import Now
from jobs.models.ids import could_be_id
from jobs.services import files as file_service
from jobs.services import lifecycle, parts, quotas, skipped, stranded, validation_child
from jobs.services.expiry import expire_overdue
from jobs.services.safe_json import has_lone_surrogate, shown
from jobs.services.validation import Catalog, ValidationResult
from jobs.services.webhook_urls import check_webhook_url

# Any constant works: it only has to be the same number in every process.
_QUEUE_LOCK_KEY = 0x62617463  # "batc"


@dataclass(frozen=True)
class BatchRequest:
    endpoint: str | None
    completion_window: str
    metadata: dict[str, str] | None = None
    model: str | None = None
    webhook_url: str = ""
    # Seconds after which the output and error files expire (OpenAI's output_expires_after).
    output_expires_after: int | None = None
    retry_of: str | None = None  # the batch this one retries (services/retry.py)
    priority: Priority = Priority.NORMAL  # from quotas.parse_priority, which authorizes high
    invalid_lines: str = "fail"  # "skip": bad lines go to the error file, the rest run (skipped.py)


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's rules: up to 16 string pairs, keys up to 64 and values up to 512 characters.

    Text that cannot be stored and rendered is refused too: a lone surrogate
    has no UTF-8 form, and PostgreSQL's jsonb holds no NUL character.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad_metadata(f"metadata must be an object of string keys and values, got {shown(metadata)}.")
    if len(metadata) > 16:
        raise _bad_metadata(f"metadata may have at most 16 keys, got {len(metadata)}.")
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > 64:
            raise _bad_metadata(f"metadata key {shown(key)} must be a string of at most 64 characters.")
        if not isinstance(value, str) or len(value) > 512:
            raise _bad_metadata(f"metadata[{shown(key)}] must be a string of at most 512 characters.")
        for text, what in ((key, f"metadata key {shown(key)}"), (value, f"metadata[{shown(key)}]")):
            if has_lone_surrogate(text):
                raise _bad_metadata(f"{what} has a lone surrogate, which is not valid Unicode.")
            if "\x00" in text:
                raise _bad_metadata(f"{what} has a NUL character, which cannot be stored.")
    return metadata


def _bad_metadata(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="metadata", code="invalid_metadata")


def check_request(req: BatchRequest) -> None:
    windows = settings.BATCHSITE.completion_windows
    if req.completion_window not in windows:
        raise InvalidRequest(
            f"completion_window must be one of: {', '.join(windows)}; got {shown(req.completion_window)}.",
            param="completion_window",
            code="invalid_completion_window",
        )
    if req.endpoint is not None and req.endpoint not in ENDPOINT_KINDS:
        raise InvalidRequest(
            f"endpoint must be one of: {', '.join(ENDPOINT_KINDS)}; got {shown(req.endpoint)}.",
            param="endpoint",
            code="invalid_endpoint",
        )
    if req.model is not None:
        entry = RegisteredModel.objects.enabled().filter(name=req.model).first()
        if entry is None:
            raise NotFound(
                f"The model {shown(req.model)} does not exist or is not enabled here; "
                "GET /v1/models lists the models you can use.",
                param="model",
                code="model_not_found",
            )
        if req.endpoint is not None and not entry.serves(req.endpoint):
            raise InvalidRequest(
                f"The model {shown(req.model)} does not serve {req.endpoint}.",
                param="model",
                code="model_not_supported",
            )
    if req.webhook_url:
        check_webhook_url(req.webhook_url)


def check_queue_limits(new_requests: int) -> None:
    """Refuse work the queue has no room for (429), before anything is stored."""
    limits = settings.BATCHSITE
    queued = Batch.objects.active().count()
    if queued >= limits.max_queued_batches:
        raise LimitReached(
            f"The queue is full: {queued} batches are waiting or running, the most allowed "
            f"(BATCHSITE_MAX_QUEUED_BATCHES={limits.max_queued_batches}). Try again when one finishes.",
            code="queue_full",
        )
    waiting = (
        Chunk.objects.unfinished()
        .filter(batch__status__in=[BatchStatus.IN_PROGRESS])
        .aggregate(n=Sum("request_count"))["n"]
        or 0
    )
    if waiting + new_requests > limits.max_queued_requests:
        raise LimitReached(
            f"The queue holds {waiting} requests; {new_requests} more would pass the limit of "
            f"{limits.max_queued_requests} (BATCHSITE_MAX_QUEUED_REQUESTS). Try again later.",
            code="too_many_queued_requests",
        )


def _lock_queue() -> None:
    # On SQLite the IMMEDIATE transaction already serialises writers; on
    # PostgreSQL two creations could both pass the limit check without this.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_QUEUE_LOCK_KEY])


def _validate(input_file: File, req: BatchRequest) -> ValidationResult:
    catalog = Catalog.load()
    with file_service.open_content(input_file) as fh:
        return validation_child.validate(fh, input_file.bytes, req.endpoint, req.model, settings.BATCHSITE, catalog)


def create_batch(owner: Any, input_file_id: str, req: BatchRequest) -> Batch:
    """Validate the input (streaming) and queue a batch, or store it as failed."""
    check_request(req)
    return _create(owner, file_service.get_owned_file(owner, input_file_id, "input_file_id"), req)


def _create(owner: Any, input_file: File, req: BatchRequest) -> Batch:
    if input_file.purpose != "batch":
        raise InvalidRequest(
            f"File {input_file.id} has purpose {input_file.purpose!r}; a batch input needs purpose 'batch'.",
            param="input_file_id",
            code="invalid_file_purpose",
        )
    check_queue_limits(0)
    quotas.check_queue_quota(owner, 0)
    result = _validate(input_file, req)
    now = timezone.now()
    fields: dict[str, Any] = dict(
        owner=owner,
        input_file=input_file,
        completion_window=req.completion_window,
        metadata=req.metadata,
        webhook_url=req.webhook_url,
        output_expires_after=req.output_expires_after,
        retry_of=req.retry_of,
        priority=req.priority,
        created_at=now,
        endpoint=result.endpoint or req.endpoint or "",
        model=result.model or req.model or "",
        expires_at=now + timedelta(seconds=parse_window(req.completion_window)),
    )
    skip = req.invalid_lines == "skip" and result.skippable
    if not result.ok and not skip:
        # OpenAI's behaviour: the batch exists, failed, with the line errors.
        return lifecycle.create_failed(errors=result.errors_object(settings.BATCHSITE.max_validation_errors), **fields)
    with transaction.atomic():
        _lock_queue()
        # Validation read the file outside any transaction; it may have been deleted
        # (or expired and swept) since. Locking its row orders this against
        # files.delete_file, which locks it too: the batch exists before the file
        # can go, or the file is gone and no batch points at it.
        if not File.objects.select_for_update().filter(pk=input_file.pk).exists():
            raise not_found("file", input_file.id, "input_file_id")
        check_queue_limits(result.total)
        quotas.check_queue_quota(owner, result.total)  # in the lock: two submits cannot both pass
        batch = Batch.objects.create(status=BatchStatus.IN_PROGRESS, in_progress_at=now, total=result.total, **fields)
        chunks = Chunk.objects.bulk_create(
            [
                Chunk(
                    batch=batch,
                    index=s.index,
                    first_line=s.first_line,
                    start_byte=s.start_byte,
                    end_byte=s.end_byte,
                    request_count=s.request_count,
                )
                for s in result.chunks
            ],
            batch_size=500,
        )
        if result.bad:
            try:
                batch.failed = skipped.settle(batch, chunks, result.bad)
            except BaseException:
                parts.delete_batch(batch.id)  # the transaction rolls back: no part may outlive it
                raise
            Batch.objects.filter(pk=batch.pk).update(failed=batch.failed)
    if result.bad and not Chunk.objects.filter(batch=batch).exclude(status=ChunkStatus.DONE).exists():
        # Every line was bad: nothing to run. It is handed to the next worker or housekeeper to
        # finalize (completed, every line failed, as when every line fails in the engine); the
        # API answers at once and never assembles a batch in the request (stranded.py).
        stranded.hand_over(batch.id)
        return Batch.objects.get(pk=batch.pk)
    return batch


def create_batch_from_upload(owner: Any, upload: DjangoFile, req: BatchRequest) -> Batch:
    """The one-call shortcut: upload and create. A refused batch leaves no file behind."""
    check_request(req)
    check_queue_limits(0)
    quotas.check_queue_quota(owner, 0)
    input_file = file_service.store_upload(owner, upload, "batch")
    try:
        return _create(owner, input_file, req)
    except BaseException:
        # Not only refusals: whatever stopped the batch (a bug, a lost
        # database), the caller got no batch, so it must not keep a file
        # it never asked for on its own.
        file_service.delete_file(input_file)
        raise


def get_batch(owner: Any, batch_id: str) -> Batch:
    """A user's own batch; one past its window (or cancelled) that no worker is running is
    stopped here and handed over to be finalized (expire_overdue): it shows ``finalizing``."""
    batch = Batch.objects.owned_by(owner).filter(pk=batch_id).first() if could_be_id(batch_id) else None
    if batch is None:
        raise not_found("batch", batch_id, "batch_id")
    if batch.status in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING) and expire_overdue([batch.pk], finalize=False):
        batch.refresh_from_db()
    return batch


def cancel_batch(batch: Batch) -> Batch:
    """Cancelling: its pending chunks are cancelled at once; running ones are aborted by their
    workers. The caller gets ``cancelling`` at once, as OpenAI's contract allows: the finalize
    (error file of batch_cancelled lines, ``cancelled``, webhook) is left to a worker's loop or
    the housekeeper (expire_overdue), never done inside the request (issue 20 item 6), which a
    big batch on S3 would hold for as long as its files take to assemble.

    Idempotent, as OpenAI's is: a second cancel, however concurrent, gets the batch back."""
    with transaction.atomic():
        # The batch's row, then its chunks: the lock order of every path that takes both.
        batch = Batch.objects.select_for_update().get(pk=batch.pk)
        if batch.cancelling_at is not None and batch.status in (
            BatchStatus.CANCELLING,
            BatchStatus.FINALIZING,
            BatchStatus.CANCELLED,
        ):
            return batch
        if batch.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
            raise Conflict(
                f"Cannot cancel a batch with status '{batch.status}'.",
                code="batch_not_cancellable",
                param="batch_id",
            )
        batch.mark_cancelling()
        batch.chunks.pending().update(status=ChunkStatus.CANCELLED, finished_at=Now())
    return batch
