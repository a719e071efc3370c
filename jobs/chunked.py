"""Request bodies sent with ``Transfer-Encoding: chunked``, made whole for Django.

Django reads exactly ``CONTENT_LENGTH`` bytes of a body (none when it is absent), so
a chunked body, which has no length, arrives empty: the Node SDK's documented upload
(``files.create({file: fs.createReadStream(path)})``) sends one. Waitress (batchsite.serve)
de-chunks it and sets the length itself, so this is for the servers that do not: gunicorn
de-chunks the body on ``wsgi.input`` without one. This WSGI wrapper reads it to its end
into a spool (memory up to 1 MiB, then a temp file on the data volume), counting the bytes
against the limit as they arrive, and hands Django the spool with its true length. Past the limit it stops
reading, drops what it spooled and marks the request refused; ``jobs.api.middleware``
answers it (a 413, in OpenAI's shape under /v1), so nothing is stored.

A chunked body's length, not a ``Content-Length`` sent beside it, is the truth
(RFC 9112 section 6.3): a lying one is replaced. Gunicorn and batchsite.serve already
refuse that pair; other servers may pass it through.

Why not a library: Django has no setting for this, and the WSGI middlewares that do it
(werkzeug's ``wsgi.input_terminated`` support) expect a werkzeug application.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import IO, Any

from django.conf import settings

log = logging.getLogger(__name__)

# Set in the WSGI environ when a chunked body was refused: (HTTP status, code, message).
REFUSED = "batchsite.chunked_refused"
SPOOL_IN_MEMORY = 1 << 20
PIECE = 1 << 20
# Multipart framing around the file (boundaries, part headers, small fields).
MULTIPART_SLACK = 64 * 1024

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def is_chunked(environ: dict[str, Any]) -> bool:
    codings = [c.strip().lower() for c in environ.get("HTTP_TRANSFER_ENCODING", "").split(",")]
    return bool(codings) and codings[-1] == "chunked"


def body_limit(environ: dict[str, Any]) -> tuple[int, str, str]:
    """(bytes, code, message) for this body: uploads are counted against
    BATCHSITE_MAX_UPLOAD_BYTES, other bodies against Django's in-memory limit."""
    if environ.get("CONTENT_TYPE", "").lower().startswith("multipart/"):
        limit = settings.BATCHSITE.max_upload_bytes
        message = f"File is too large: the limit is {limit} bytes (BATCHSITE_MAX_UPLOAD_BYTES)."
        return limit + MULTIPART_SLACK, "file_too_large", message
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or settings.BATCHSITE.max_upload_bytes
    return limit, "request_too_large", f"The request body is too large: the limit is {limit} bytes."


class ChunkedBodies:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not is_chunked(environ):
            return self.app(environ, start_response)
        spool = self._spool(environ)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        return _Closing(result, spool)

    def _spool(self, environ: dict[str, Any]) -> IO[bytes] | None:
        limit, code, message = body_limit(environ)
        source = environ["wsgi.input"]
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed with the response
            max_size=SPOOL_IN_MEMORY, dir=str(settings.UPLOAD_TMP_DIR)
        )
        received = 0
        refusal: tuple[int, str, str] | None = None
        try:
            while piece := source.read(PIECE):
                received += len(piece)
                if received > limit:
                    refusal = (413, code, message)
                    break
                spool.write(piece)
        except Exception as exc:  # the server's own error for broken framing or a dropped client
            log.info("a chunked request body could not be read: %s", exc)
            refusal = (400, "invalid_request_body", "The chunked request body could not be read to its end.")
        if refusal is not None:
            spool.close()  # what arrived is dropped: nothing of a refused body is kept
            environ[REFUSED] = refusal
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = BytesIO(b""), "0"
            return None
        spool.seek(0)
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = spool, str(received)
        return spool


class _Closing:
    """The application's response, closing the spool when the server closes the response."""

    def __init__(self, result: Iterable[bytes], spool: IO[bytes] | None) -> None:
        self.result, self.spool = result, spool

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            if self.spool is not None:
                self.spool.close()
