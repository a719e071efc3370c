"""The two storage backends batchsite runs on, behind Django's storage API.

Files (uploads, batch outputs) go through ``default_storage`` as any Django
storage does. Two things batchsite needs that Django's API lacks are added on
both backends, and fall back to plain Django calls on any other storage:

* ``open_range(name, start, end)``: a reader of bytes ``[start, end)`` only.
  A worker reads its chunk of a batch's input this way, so a 5,000-line chunk
  of a multi-gigabyte input is one ranged GET, never the whole object.
* ``writer(name)``: a stream that becomes the stored file only when it closes
  without error (a local temp file renamed into place; an S3 multipart upload
  completed, or aborted on error), so a reader never sees half a file and
  nothing is staged whole on local disk or in memory.

``LocalStorage`` is the embedded default (files under the data directory).
``S3Storage`` is django-storages' S3 backend (credentials, endpoint, prefix
and retries all its own) with reads replaced: django-storages downloads the
whole object to a temporary file on first read, which the worker's chunk reads
and streamed downloads must not do; smart_open's reader streams with ranged
GETs instead (and re-opens the stream if the connection drops mid-read), and
its writer does the multipart upload.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import ClientError
from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.deconstruct import deconstructible
from smart_open import s3 as smart_s3
from storages.backends import s3 as storages_s3
from storages.utils import clean_name

# Bytes buffered per read: large enough that a chunk is a handful of socket reads.
READ_BUFFER = 1 << 20
# The multipart upload's part size (S3's minimum is 5 MiB): what a writer
# holds in memory at most.
PART_SIZE = 8 << 20


@deconstructible
class LocalStorage(FileSystemStorage):
    """Files under a local directory (``BATCHSITE_DATA_DIR/files`` by default)."""

    def open_range(self, name: str, start: int, end: int) -> BinaryIO:
        handle = open(self.path(name), "rb")  # noqa: SIM115 - the caller closes it
        handle.seek(start)
        return handle

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[IO[bytes]]:
        """Temp file beside the target, fsync, rename: the file is whole or absent."""
        path = Path(self.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(tmp, self.file_permissions_mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete_folder(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)


class _Reader(File):
    """A Django File over a smart_open reader (FileResponse and ``with`` work on it)."""

    def __init__(self, stream: Any, name: str, size: int | None = None) -> None:
        super().__init__(stream, name=name)
        if size is not None:
            self._size = size

    def seekable(self) -> bool:
        return True


def _missing(error: Any) -> bool:
    """A botocore error that says the object is not there (a missing file, as on a disk)."""
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in (
        "404",
        "NoSuchKey",
        "NotFound",
    )


@functools.lru_cache(maxsize=1)
def _shared_loader() -> Any:
    return botocore.loaders.create_loader()


@deconstructible
class S3Storage(storages_s3.S3Storage):
    """django-storages' S3 backend, reading with ranged GETs and writing with a streamed multipart upload."""

    def _create_session(self) -> Any:
        """django-storages makes a boto3 session per thread (sessions are not thread-safe); each would
        load and keep its own copy of S3's service model, 10-15 MB per gunicorn thread. They share one
        loader (a read-only cache of those files) instead: about 1 MB per thread."""
        core = botocore.session.get_session()
        core.register_component("data_loader", _shared_loader())
        if self.session_profile:
            return boto3.Session(profile_name=self.session_profile, botocore_session=core)
        return boto3.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.security_token,
            botocore_session=core,
        )

    def _key(self, name: str) -> str:
        return str(self._normalize_name(clean_name(name)))

    @property
    def _client(self) -> Any:
        # django-storages keeps one boto3 resource per thread; its client has the
        # credentials, endpoint, region and retry settings configured for the storage.
        return self.connection.meta.client

    def _open(self, name: str, mode: str = "rb") -> File:
        if "w" in mode or "a" in mode or "+" in mode:
            return super()._open(name, mode)
        key = self._key(name)
        # HEAD first: a missing object is FileNotFoundError at open, as on a disk.
        try:
            size = self.bucket.Object(key).content_length
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"{name} is not in the bucket {self.bucket_name}") from None
            raise
        stream = smart_s3.Reader(self.bucket_name, key, buffer_size=READ_BUFFER, defer_seek=True, client=self._client)
        return _Reader(stream, name, size)

    def _save(self, name: str, content: Any) -> str:
        """An upload that is a file on disk goes up by its path: each part is read from the file as it
        is sent. (Given a file object, s3transfer reads whole parts into memory ahead of sending them.)"""
        path = getattr(content, "temporary_file_path", None)
        if path is None or self.gzip:
            return str(super()._save(name, content))
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        params = self._get_write_parameters(key, content)
        self.bucket.Object(key).upload_file(path(), ExtraArgs=params, Config=self.transfer_config)
        return str(cleaned)

    def open_range(self, name: str, start: int, end: int) -> BinaryIO:
        """One GET of bytes [start, end): ``range_chunk_size`` bounds every request smart_open makes."""
        stream = smart_s3.Reader(
            self.bucket_name,
            self._key(name),
            buffer_size=min(READ_BUFFER, max(end - start, 1)),
            defer_seek=True,
            client=self._client,
            range_chunk_size=max(end - start, 1),
        )
        try:
            stream.seek(start)  # the GET
        except OSError as exc:
            stream.close()
            if _missing(getattr(exc, "backend_error", None)):
                raise FileNotFoundError(f"{name} is not in the bucket {self.bucket_name}") from None
            raise
        return stream  # type: ignore[return-value]

    def delete_folder(self, name: str) -> None:
        """Every object under ``name/``, a thousand per request."""
        prefix = self._key(name).rstrip("/") + "/"
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=prefix)
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._client.delete_objects(Bucket=self.bucket_name, Delete={"Objects": keys, "Quiet": True})

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[IO[bytes]]:
        """A multipart upload: completed when the block ends, aborted (nothing stored) if it raises."""
        with smart_s3.MultipartWriter(
            self.bucket_name, self._key(name), part_size=PART_SIZE, client=self._client
        ) as out:
            yield out  # type: ignore[misc]


def open_range(storage: Storage, name: str, start: int, end: int) -> BinaryIO:
    """Bytes [start, end) of a stored file, positioned at ``start`` (offsets stay the file's)."""
    method = getattr(storage, "open_range", None)
    if method is not None:
        return method(name, start, end)
    handle = storage.open(name, "rb")
    handle.seek(start)
    return handle  # type: ignore[return-value]


def delete_folder(storage: Storage, name: str) -> None:
    """Delete everything stored under the folder (prefix) ``name``; nothing there is no error."""
    method = getattr(storage, "delete_folder", None)
    if method is not None:
        method(name)
        return
    try:
        folders, files = storage.listdir(name)
    except FileNotFoundError:
        return
    for file in files:
        storage.delete(f"{name}/{file}")
    for folder in folders:
        delete_folder(storage, f"{name}/{folder}")


@contextlib.contextmanager
def writer(storage: Storage, name: str) -> Iterator[IO[bytes]]:
    """A stream that is stored under ``name`` when the block ends without error."""
    method = getattr(storage, "writer", None)
    if method is not None:
        with method(name) as out:
            yield out
        return
    # Any other Django storage: stage in a temp file, then one save().
    with tempfile.TemporaryFile() as staged:
        yield staged
        staged.seek(0)
        saved = storage.save(name, File(staged, name=name))
        if saved != name:
            storage.delete(saved)
            raise FileExistsError(f"{name} already exists in storage")
