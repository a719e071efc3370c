"""Stored files: upload, read, delete, and when they expire."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files.base import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from jobs import storage
from jobs.errors import Conflict, InvalidRequest, not_found
from jobs.models import Batch, File, FilePurpose
from jobs.models.ids import could_be_id, new_file_id
from jobs.services.quotas import check_storage_quota
from jobs.services.safe_json import shown

UPLOAD_PURPOSES = {FilePurpose.BATCH.value}
# OpenAI's range for expires_after and output_expires_after: one hour to 30 days.
EXPIRES_MIN_SECONDS = 3600
EXPIRES_MAX_SECONDS = 30 * 86400
KEYS = ("anchor", "seconds")


def parse_expires_after(value: Any, param: str) -> int | None:
    """OpenAI's expiration policy ``{"anchor": "created_at", "seconds": N}`` -> N, or None if absent.

    ``seconds`` may arrive as a string (multipart forms carry only strings), but
    must be a whole number in OpenAI's range; anything else is a 400 naming the field.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f'{param} must be an object: {{"anchor": "created_at", "seconds": N}}.',
            param=param,
            code="invalid_value",
        )
    # Keys are echoed back: escape what UTF-8 cannot carry (lone surrogates).
    unknown = sorted(str(key).encode("utf-8", "backslashreplace").decode() for key in value if key not in KEYS)
    if unknown:
        raise InvalidRequest(
            f"{param} has unknown fields: {', '.join(unknown)}; it takes anchor and seconds.",
            param=f"{param}.{unknown[0]}",
            code="invalid_value",
        )
    if value.get("anchor") != "created_at":
        raise InvalidRequest(
            f"{param}.anchor must be 'created_at', got {value.get('anchor')!r:.100}.",
            param=f"{param}.anchor",
            code="invalid_value",
        )
    seconds = value.get("seconds")
    # Ten digits hold the whole range; a longer string is out of it, and int() of
    # thousands of digits would raise (or cost quadratic time) rather than answer.
    if isinstance(seconds, str) and seconds.isascii() and seconds.strip().isdigit():
        digits = seconds.strip().lstrip("0") or "0"
        seconds = int(digits) if len(digits) <= 10 else EXPIRES_MAX_SECONDS + 1
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidRequest(
            f"{param}.seconds must be a whole number of seconds, got {seconds!r:.100}.",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    if not EXPIRES_MIN_SECONDS <= seconds <= EXPIRES_MAX_SECONDS:
        raise InvalidRequest(
            f"{param}.seconds must be between {EXPIRES_MIN_SECONDS} (1 hour) and "
            f"{EXPIRES_MAX_SECONDS} (30 days), got {seconds}.",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return seconds


def default_expiry(purpose: str) -> int | None:
    """Seconds after which a file of ``purpose`` expires when the client set none (OpenAI's
    default: batch inputs after 30 days, everything else kept)."""
    if purpose == FilePurpose.BATCH:
        return settings.BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS or None
    return None


def _storage_name(file_id: str) -> str:
    # Two levels of fan-out keep directories small at millions of files.
    return f"{file_id[5:7]}/{file_id}.jsonl"


def get_owned_file(owner: Any, file_id: str, param: str = "file_id") -> File:
    """A user's own file; another user's id is a 404, as if it did not exist.

    ``param`` names the request field the id came from (``input_file_id`` when
    creating a batch), so the error points at what the caller sent.
    """
    file = File.objects.owned_by(owner).live().filter(pk=file_id).first() if could_be_id(file_id) else None
    if file is None:
        raise not_found("file", file_id, param)
    return file


def store_upload(owner: Any, upload: DjangoFile, purpose: str, expires_after: int | None = None) -> File:
    """Save an uploaded file. The upload is already a temp file on the data volume.

    ``expires_after``: seconds (from ``parse_expires_after``); None takes the default.
    """
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"Invalid purpose {shown(purpose)}: files uploaded here are for batches, use purpose 'batch'.",
            code="invalid_purpose",
            param="purpose",
        )
    check_storage_quota(owner, upload.size or 0)  # before anything is stored
    name = os.path.basename(upload.name or "input.jsonl")[:255] or "input.jsonl"
    return _store(owner, purpose, name, upload, expires_after)


def _expires_at(purpose: str, expires_after: int | None, created: datetime) -> datetime | None:
    seconds = expires_after if expires_after is not None else default_expiry(purpose)
    return created + timedelta(seconds=seconds) if seconds else None


def _store(owner: Any, purpose: str, filename: str, content: DjangoFile, expires_after: int | None = None) -> File:
    file_id = new_file_id()
    stored = default_storage.save(_storage_name(file_id), content)
    return register_stored(owner, purpose, filename, file_id, stored, expires_after)


class _LocalFile(DjangoFile):
    # With this, FileSystemStorage moves the file into place instead of copying it.
    def temporary_file_path(self) -> str:
        return str(getattr(self.file, "name", ""))


def save_generated(owner: Any, purpose: str, filename: str, path: str, expires_after: int | None = None) -> File:
    """Register a file a worker wrote (an output or error file) by moving it into storage."""
    with open(path, "rb") as fh:
        return _store(owner, purpose, filename, _LocalFile(fh, name=filename), expires_after)


def new_stored_name() -> tuple[str, str]:
    """(file id, storage name) for a file written straight into the store (``register_stored``)."""
    file_id = new_file_id()
    return file_id, _storage_name(file_id)


def register_stored(
    owner: Any, purpose: str, filename: str, file_id: str, name: str, expires_after: int | None = None
) -> File:
    """The row for bytes a worker streamed into the store under ``name`` (from ``new_stored_name``);
    if the row cannot be made, the bytes go too."""
    try:
        created = timezone.now()
        return File.objects.create(
            id=file_id,
            owner=owner,
            purpose=purpose,
            filename=filename,
            bytes=default_storage.size(name),
            storage_name=name,
            created_at=created,
            expires_at=_expires_at(purpose, expires_after, created),
        )
    except BaseException:
        default_storage.delete(name)  # no row, so no bytes either
        raise


def open_content(file: File) -> Any:
    """The whole file as a stream (on object storage: read as it is consumed, never staged)."""
    return default_storage.open(file.storage_name, "rb")


def open_range(file: File, start: int, end: int) -> BinaryIO:
    """Bytes [start, end) of a stored file, positioned at ``start``: a chunk of a batch's input
    is one ranged read, whatever the size of the whole file."""
    return storage.open_range(default_storage, file.storage_name, start, end)


def delete_file(file: File) -> None:
    """Delete a file unless a batch that has not finished still reads it."""
    with transaction.atomic():
        # The row lock orders this against a batch being created on the file
        # (batches._create locks the same row): either that batch exists now and
        # the file stays, or the file is gone before the batch is inserted.
        if not File.objects.select_for_update().filter(pk=file.pk).exists():
            return
        if Batch.objects.active().filter(input_file=file).exists():
            raise Conflict(
                f"File {file.id} is the input of a batch that has not finished; "
                "cancel the batch or wait for it before deleting the file.",
                code="file_in_use",
                param="file_id",
            )
        file.delete()
    # After the row is gone for good: a failed delete must not lose the bytes.
    default_storage.delete(file.storage_name)
