"""The web server as ``bin/start`` and docs/OPERATING.md run it: waitress in front of Django.

Why waitress and not gunicorn's threads: a gunicorn thread is taken by a connection from
its first byte, so a few clients that send headers or a body slowly (8 slowloris
connections, 24 uploads at a byte a second) hold every thread and the API stalls.
Waitress reads each request whole on its event loop first (headers, then the body,
spooled to a temp file past ``inbuf_overflow``) and only then hands it to a thread, so
slow clients cost a socket and a buffer, not a thread. It also closes a connection idle
for ``channel_timeout`` seconds and caps open connections at ``connection_limit``.

Bodies: they spool to the data volume's tmp folder (as jobs/chunked.py's spools do), not
to RAM or /tmp; waitress de-chunks chunked bodies and gives Django their length. Each body
has its own cap (``CappedParser``: an upload BATCHSITE_MAX_UPLOAD_BYTES plus multipart
framing, any other body Django's 2.5 MB), so no client spools more than Django would read;
past it waitress refuses the request itself, a declared length before reading any of the
body, and ``_openai_refusal`` makes that refusal (and its 400 and 431) OpenAI-shaped like
Django's.
Responses stream: waitress sends the app's iterator as it comes, blocking the thread
past ``outbuf_high_watermark`` until the client drains it.

Not gunicorn's gevent worker, which held the same load: it is a C extension, and under it
SQLite's busy wait (the embedded default) blocks every greenlet of the process, including
the one holding the lock. Usage: ``python -m batchsite.serve [--bind HOST:PORT] [--threads N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from typing import Any

from waitress import serve
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.utilities import Error, RequestEntityTooLarge

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

from django.conf import settings  # noqa: E402 - needs the settings module named first

from batchsite.wsgi import application  # noqa: E402
from jobs.api.errors import error_body  # noqa: E402
from jobs.chunked import MULTIPART_SLACK, body_limit  # noqa: E402

# Far more than any honest client keeps open, far below the file-descriptor limit;
# a slow client holds one of these, not a thread.
CONNECTION_LIMIT = 1000
# A connection that sends nothing for this long is closed (headers, body or keep-alive).
CHANNEL_TIMEOUT = 60


class TooLarge(RequestEntityTooLarge):
    """A body past its own cap, with the code and message Django gives the same refusal."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.openai_code = code


class CappedParser(HTTPRequestParser):
    """Waitress's request parser with each request's own body cap, jobs.chunked.body_limit's.

    Waitress has one cap for every request; at the upload limit, a JSON body declaring 50 MB
    would be spooled whole before Django refused it, and a few hundred such connections would
    fill the data volume. Here it is refused on its headers, as Django would refuse it."""

    adj: Any
    error: Error | None
    too_large: tuple[str, str] | None = None  # (code, message) once the headers are read

    def parse_header(self, header_plus: bytes) -> None:
        try:
            super().parse_header(header_plus)
        except ValueError as exc:
            # A Content-Length past Python's 4,300 digits: waitress's int() raises, and it
            # dropped the connection unanswered. A 400 like any other bad length.
            raise ParsingError("Content-Length is invalid") from exc
        except TransferEncodingNotImplemented as exc:
            # Waitress's 501 (a coding it lacks, such as gzip) would tell clients to retry.
            raise ParsingError(exc.args[0]) from exc
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            # Both framings at once is how requests are smuggled (RFC 9112 6.3): waitress would
            # take the chunked one; refusing it, as gunicorn does, leaves no doubt.
            raise ParsingError("Transfer-Encoding and Content-Length are both set")
        if not self.chunked and not self.content_length:
            return  # no body (most requests): nothing to cap, no copy of the settings
        limit, code, message = body_limit(self.headers)
        # Waitress refuses a body of max_request_body_size bytes or more; Django, one past its limit.
        # A chunked body is counted on the wire, framing and all: it gets twice its limit here,
        # and Django, given its true length, refuses it exactly.
        limit = 2 * limit if self.chunked else limit
        if limit + 1 <= self.adj.max_request_body_size:
            self.adj = copy.copy(self.adj)  # this request's own: the server's is shared
            self.adj.max_request_body_size = limit + 1
            self.too_large = (code, message)

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge) and self.too_large is not None:
            self.error = TooLarge(self.too_large[1], self.too_large[0])
        return consumed


def _openai_refusal(self: Error, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    """Waitress's own refusals (a body past its cap, a malformed request line or header) in
    OpenAI's error shape, as Django's are: the SDKs show the message and do not retry."""
    code = getattr(self, "openai_code", None) or {
        413: "request_too_large",
        431: "request_header_fields_too_large",
    }.get(self.code, "bad_request")
    message = self.body if isinstance(self, TooLarge) else f"{self.reason}: {self.body}"
    body = error_body(message, self.code, code)
    headers = [("Content-Type", "application/json"), ("x-should-retry", "false")]
    # Compact, as DRF renders Django's refusals.
    return f"{self.code} {self.reason}", headers, json.dumps(body, separators=(",", ":")).encode()


def options(argv: list[str] | None = None) -> dict[str, Any]:
    """waitress.serve's keyword arguments for this command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on")
    parser.add_argument("--threads", type=int, default=8, help="threads that run Django")
    parser.add_argument("--connection-limit", type=int, default=CONNECTION_LIMIT)
    parser.add_argument("--channel-timeout", type=int, default=CHANNEL_TIMEOUT)
    args = parser.parse_args(argv)
    return {
        "listen": args.bind,
        "threads": args.threads,
        "connection_limit": args.connection_limit,
        "channel_timeout": args.channel_timeout,
        # select() cannot watch a socket numbered past 1024; poll() can.
        "asyncore_use_poll": True,
        # A body is spooled whole before Django sees it: no request past the upload limit (plus
        # multipart framing); CappedParser lowers it for what is not an upload.
        "max_request_body_size": settings.BATCHSITE.max_upload_bytes + MULTIPART_SLACK + 1,
        # Waitress strips X-Forwarded-* and Forwarded by default when it trusts no proxy;
        # they are Django's to judge (only from BATCHSITE_TRUSTED_PROXIES: jobs/web/client_ip.py),
        # so they pass through and REMOTE_ADDR stays the peer's address.
        "clear_untrusted_proxy_headers": False,
        "ident": "batchsite",
    }


def main(argv: list[str] | None = None) -> None:
    # Waitress spools large bodies with tempfile: keep them on the data volume, not /tmp.
    tempfile.tempdir = str(settings.UPLOAD_TMP_DIR)
    Error.to_response = _openai_refusal
    HTTPChannel.parser_class = CappedParser
    serve(application, **options(argv))


if __name__ == "__main__":
    main()
