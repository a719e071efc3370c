"""The web server as ``bin/start`` and docs/OPERATING.md run it: waitress in front of Django.

Why waitress and not gunicorn's threads: a gunicorn thread is taken by a connection from
its first byte, so a few clients that send headers or a body slowly (8 slowloris
connections, 24 uploads at a byte a second) hold every thread and the API stalls.
Waitress reads each request whole on its event loop first (headers, then the body,
spooled to a temp file past ``inbuf_overflow``) and only then hands it to a thread, so
slow clients cost a socket and a buffer, not a thread. It also closes a connection idle
for ``channel_timeout`` seconds and caps open connections at ``connection_limit``.

Bodies: they spool to the data volume's tmp folder (as jobs/chunked.py's spools do), not
to RAM or /tmp; waitress de-chunks chunked bodies and gives Django their length. Its body
cap is BATCHSITE_MAX_UPLOAD_BYTES plus multipart framing, so no client spools more than an
upload may be; past it waitress refuses the request itself, and ``_openai_refusal`` makes
that refusal (and its 400 and 431) OpenAI-shaped like Django's.
Responses stream: waitress sends the app's iterator as it comes, blocking the thread
past ``outbuf_high_watermark`` until the client drains it.

Not gunicorn's gevent worker, which held the same load: it is a C extension, and under it
SQLite's busy wait (the embedded default) blocks every greenlet of the process, including
the one holding the lock. Usage: ``python -m batchsite.serve [--bind HOST:PORT] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

from waitress import serve
from waitress.utilities import Error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

from django.conf import settings  # noqa: E402 - needs the settings module named first

from batchsite.wsgi import application  # noqa: E402
from jobs.api.errors import error_body  # noqa: E402
from jobs.chunked import MULTIPART_SLACK  # noqa: E402

# Far more than any honest client keeps open, far below the file-descriptor limit;
# a slow client holds one of these, not a thread.
CONNECTION_LIMIT = 1000
# A connection that sends nothing for this long is closed (headers, body or keep-alive).
CHANNEL_TIMEOUT = 60


def _openai_refusal(self: Error, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    """Waitress's own refusals (a body past its cap, a malformed request line or header) in
    OpenAI's error shape, as Django's are: the SDKs show the message and do not retry."""
    code = {413: "request_too_large", 431: "request_header_fields_too_large"}.get(self.code, "bad_request")
    body = error_body(f"{self.reason}: {self.body}", self.code, code)
    headers = [("Content-Type", "application/json"), ("x-should-retry", "false")]
    return f"{self.code} {self.reason}", headers, json.dumps(body).encode()


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
        # A body is spooled whole before Django sees it: cap it at the upload limit (plus
        # multipart framing) so no client fills the disk; waitress refuses past it.
        "max_request_body_size": settings.BATCHSITE.max_upload_bytes + MULTIPART_SLACK,
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
    serve(application, **options(argv))


if __name__ == "__main__":
    main()
