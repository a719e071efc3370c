"""Stored files: upload, read, delete."""

from __future__ import annotations

import os
from typing import Any

from django.core.files.base import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction

from jobs.errors import Conflict, InvalidRequest, not_found
from jobs.models import Batch, File, FilePurpose
from jobs.models.ids import could_be_id, new_file_id
from jobs.services.safe_json import shown

UPLOAD_PURPOSES = {FilePurpose.BATCH.value}


def _storage_name(file_id: str) -> str:
    # Two levels of fan-out keep directories small at millions of files.
    return f"{file_id[5:7]}/{file_id}.jsonl"


def get_owned_file(owner: Any, file_id: str, param: str = "file_id") -> File:
    """A user's own file; another user's id is a 404, as if it did not exist.

    ``param`` names the request field the id came from (``input_file_id`` when
    creating a batch), so the error points at what the caller sent.
    """
    file = File.objects.owned_by(owner).filter(pk=file_id).first() if could_be_id(file_id) else None
    if file is None:
        raise not_found("file", file_id, param)
    return file


def store_upload(owner: Any, upload: DjangoFile, purpose: str) -> File:
    """Save an uploaded file. The upload is already a temp file on the data volume."""
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"Invalid purpose {shown(purpose)}: files uploaded here are for batches, use purpose 'batch'.",
            code="invalid_purpose",
            param="purpose",
        )
    name = os.path.basename(upload.name or "input.jsonl")[:255] or "input.jsonl"
    return _store(owner, purpose, name, upload)


def _store(owner: Any, purpose: str, filename: str, content: DjangoFile) -> File:
    file_id = new_file_id()
    stored = default_storage.save(_storage_name(file_id), content)
    try:
        return File.objects.create(
            id=file_id,
            owner=owner,
            purpose=purpose,
            filename=filename,
            bytes=default_storage.size(stored),
            storage_name=stored,
        )
    except BaseException:
        default_storage.delete(stored)  # no row, so no bytes either
        raise


class _LocalFile(DjangoFile):
    # With this, FileSystemStorage moves the file into place instead of copying it.
    def temporary_file_path(self) -> str:
        return str(getattr(self.file, "name", ""))


def save_generated(owner: Any, purpose: str, filename: str, path: str) -> File:
    """Register a file a worker wrote (an output or error file) by moving it into storage."""
    with open(path, "rb") as fh:
        return _store(owner, purpose, filename, _LocalFile(fh, name=filename))


def open_content(file: File) -> Any:
    return default_storage.open(file.storage_name, "rb")


def delete_file(file: File) -> None:
    """Delete a file unless a batch that has not finished still reads it."""
    with transaction.atomic():
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
