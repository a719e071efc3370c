"""Upload handling that enforces the size limit while the bytes arrive."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from jobs.errors import TooLarge


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"File is too large: the limit is {limit} bytes (BATCHSITE_MAX_UPLOAD_BYTES).",
        code="file_too_large",
        param="file",
    )


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams to a temp file on the data volume and stops past the byte limit.

    The temp file lives beside the stored files, so saving it is a rename,
    not a second copy of up to 200 MB.

    Bytes are taken 1 MiB at a time (Django's default is 64 KiB): gunicorn reads
    a body up to 1 MiB per recv() and hands it out in the pieces asked for,
    copying what it holds each time, so 64 KiB pieces cost about 16 copies of
    every byte; py-spy showed that copying as most of a 200 MB upload's time.
    """

    chunk_size = 1 << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = settings.BATCHSITE.max_upload_bytes
        self.received = 0

    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: str | None = None
    ) -> None:
        # A declared body far larger than the limit is refused before reading
        # it; multipart framing adds a little, hence the slack.
        if content_length and content_length > self.limit + 64 * 1024:
            raise too_large(self.limit)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()  # deletes the NamedTemporaryFile
            raise too_large(self.limit)
        return super().receive_data_chunk(raw_data, start)
