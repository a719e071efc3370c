"""A 200 MB file through the submit page, to the web server (batchsite.serve): streamed to disk and validated
in one pass like the API's uploads, under the same limit."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil
import pytest
from django.conf import settings

from jobs.models import Batch, BatchStatus, RegisteredModel
from tests.conftest import CHAT_MODEL
from tests.web.conftest import server_user

pytestmark = pytest.mark.django_db(transaction=True)

LINES = 50_000  # BATCHSITE_MAX_REQUESTS_PER_BATCH, the most a batch may hold


def write_big(path: Path, target_bytes: int) -> None:
    """LINES chat requests of equal length, together just under ``target_bytes``."""
    probe = json.dumps(
        {
            "custom_id": "c-00000",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": ""}]},
        }
    )
    filler = "x" * (target_bytes // LINES - len(probe) - 1)
    with path.open("w") as f:
        for i in range(LINES):
            body = {"messages": [{"role": "user", "content": filler}]}
            f.write(
                json.dumps({"custom_id": f"c-{i:05d}", "method": "POST", "url": "/v1/chat/completions", "body": body})
            )
            f.write("\n")


def signed_in_session(base: str) -> httpx.Client:
    server_user("uploader", "pw-upload-123")
    session = httpx.Client(base_url=base, timeout=300)
    session.get("/accounts/login/")
    response = session.post(
        "/accounts/login/",
        data={"username": "uploader", "password": "pw-upload-123", "csrfmiddlewaretoken": session.cookies["csrftoken"]},
    )
    assert response.status_code == 302 and response.headers["location"] == "/dashboard"
    return session


def test_a_200_mb_file_through_the_page_is_streamed_validated_and_queued(
    live_server_process, transactional_db, tmp_path
):
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/unused", endpoints=["chat"])
    limit = settings.BATCHSITE.max_upload_bytes
    big = tmp_path / "big.jsonl"
    write_big(big, limit - 1024 * 1024)
    size = big.stat().st_size
    assert limit - 2 * 2**20 < size < limit
    session = signed_in_session(live_server_process.url)
    page = session.get("/submit").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    server = psutil.Process(live_server_process.server_pid)
    before = server.memory_info().rss
    started = time.monotonic()
    with big.open("rb") as fh:
        response = session.post(
            "/submit",
            data={"csrfmiddlewaretoken": token, "model": CHAT_MODEL, "endpoint": "", "completion_window": "24h"},
            files={"file": ("big.jsonl", fh, "application/jsonl")},
        )
    elapsed = time.monotonic() - started
    growth = server.memory_info().rss - before
    print(f"200 MB page upload: {size / 2**20:.0f} MiB in {elapsed:.1f}s, server RSS growth {growth / 2**20:.1f} MiB")
    assert response.status_code == 302, response.text[:2000]
    batch = Batch.objects.get()
    assert response.headers["location"] == f"/batches/{batch.id}"
    assert batch.status == BatchStatus.IN_PROGRESS and batch.total == LINES
    assert growth < size / 4


def test_a_file_declared_past_the_limit_is_refused_before_it_is_read(live_server_process, transactional_db):
    session = signed_in_session(live_server_process.url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', session.get("/submit").text).group(1)
    cookies = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    url = urlparse(live_server_process.url)
    declared = settings.BATCHSITE.max_upload_bytes + 2**20
    head = (
        f"POST /submit HTTP/1.1\r\nHost: {url.netloc}\r\nCookie: {cookies}\r\nX-CSRFToken: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(head.encode() + b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n')
        reply = b""
        while data := conn.recv(65536):  # the server answers on the head and closes
            reply += data
    text = reply.decode(errors="replace")
    # The page checks the file's size in the browser before sending it (data-max-bytes); what
    # declares more anyway is refused by the web server on its headers, before Django runs.
    assert text.split("\r\n", 1)[0] == "HTTP/1.1 413 Request Entity Too Large", text[:500]
    assert json.loads(text.split("\r\n\r\n", 1)[1])["error"]["code"] == "file_too_large"
    assert "File is too large: the limit is" in text
    assert not Batch.objects.exists()
