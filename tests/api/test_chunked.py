"""Chunked request bodies (Transfer-Encoding: chunked, no Content-Length), as the Node SDK sends uploads.

In-process: the WSGI application of batchsite/wsgi.py, handed the de-chunked stream as
a WSGI server may hand it (wsgi.input, no CONTENT_LENGTH), with a small upload limit.
Live: raw httpx chunked requests against the session's web server (waitress de-chunks them itself).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobs.models import ApiKey, Batch, File, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl, stored_files

BOUNDARY = "batchsite-test-boundary"


def multipart(content: bytes, purpose: str = "batch", filename: str = "in.jsonl") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def pieces(body: bytes, size: int = 7919) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


class Broken(io.RawIOBase):
    """A client that drops the connection mid-body: the server's read raises."""

    def __init__(self, first: bytes) -> None:
        self.first: bytes | None = first

    def read(self, size: int = -1) -> bytes:
        if self.first is None:
            raise OSError("connection reset by peer")
        first, self.first = self.first, None
        return first


def call_wsgi(api_key: str, path: str, body: Any, content_type: str, content_length: str | None = None) -> Any:
    from batchsite.wsgi import application

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "wsgi.url_scheme": "http",
        "wsgi.input": body if not isinstance(body, bytes) else io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": content_type,
        "HTTP_TRANSFER_ENCODING": "chunked",
        "HTTP_AUTHORIZATION": f"Bearer {api_key}",
    }
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"], got["headers"] = int(status.split()[0]), dict(headers)

    result = application(environ, start_response)
    try:
        got["body"] = b"".join(result)
    finally:
        result.close()
    return got


@pytest.mark.django_db(transaction=True)
class TestInProcess:
    def test_a_chunked_upload_is_read_whole_and_stored(self, api_key, settings):
        content = jsonl([chat_line(i) for i in range(50)])
        got = call_wsgi(api_key, "/v1/files", multipart(content), f"multipart/form-data; boundary={BOUNDARY}")
        assert got["status"] == 200, got
        file = File.objects.get(pk=json.loads(got["body"])["id"])
        assert file.bytes == len(content)

    def test_a_lying_content_length_beside_chunked_is_ignored(self, api_key):
        content = jsonl([chat_line(i) for i in range(5)])
        for lie in ("10", "99999999", "-1", "abc"):
            got = call_wsgi(api_key, "/v1/files", multipart(content), f"multipart/form-data; boundary={BOUNDARY}", lie)
            assert got["status"] == 200, (lie, got)
            assert json.loads(got["body"])["bytes"] == len(content)

    def test_a_chunked_upload_past_the_limit_is_a_413_and_nothing_is_kept(self, api_key, settings, limits):
        limits(max_upload_bytes=100_000)
        before = stored_files(settings)
        content = b"x" * 200_000
        got = call_wsgi(api_key, "/v1/files", multipart(content), f"multipart/form-data; boundary={BOUNDARY}")
        assert got["status"] == 413, got
        error = json.loads(got["body"])["error"]
        assert error["code"] == "file_too_large" and "BATCHSITE_MAX_UPLOAD_BYTES" in error["message"]
        assert got["headers"]["x-request-id"].startswith("req_")
        assert File.objects.count() == 0 and stored_files(settings) == before

    def test_a_chunked_body_cut_off_midway_is_a_400_and_nothing_is_kept(self, api_key, settings):
        before = stored_files(settings)
        got = call_wsgi(api_key, "/v1/files", Broken(multipart(b"x" * 1000)[:500]), "multipart/form-data; boundary=b")
        assert got["status"] == 400 and json.loads(got["body"])["error"]["code"] == "invalid_request_body"
        assert File.objects.count() == 0 and stored_files(settings) == before

    def test_a_chunked_page_post_past_the_limit_is_plain_text(self, api_key, limits):
        limits(max_upload_bytes=1000)
        got = call_wsgi(api_key, "/submit/", multipart(b"x" * 100_000), f"multipart/form-data; boundary={BOUNDARY}")
        assert got["status"] == 413 and got["headers"]["Content-Type"].startswith("text/plain")


@pytest.fixture
def live(live_server_process: Any, transactional_db: Any, django_user_model: Any) -> tuple[str, dict[str, str]]:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    user = django_user_model.objects.create_user(username="chunked-" + secrets.token_hex(4))
    return live_server_process.url, {"Authorization": f"Bearer {ApiKey.generate(user)[1]}"}


def test_live_chunked_upload_and_chunked_json_create_work_on_the_server(live):
    url, auth = live
    content = jsonl([chat_line(i) for i in range(200)])
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        uploaded = http.post(
            "/v1/files",
            content=pieces(multipart(content)),  # an iterator: httpx sends it chunked, with no length
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert uploaded.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in uploaded.request.headers
        assert uploaded.status_code == 200, uploaded.text
        file = uploaded.json()
        assert file["bytes"] == len(content) and http.get(f"/v1/files/{file['id']}/content").content == content
        create = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        created = http.post(
            "/v1/batches", content=pieces(json.dumps(create).encode(), 10), headers={"Content-Type": "application/json"}
        )
        assert created.status_code == 200, created.text
        assert created.json()["request_counts"]["total"] == 200
        http.post(f"/v1/batches/{created.json()['id']}/cancel")


def test_live_chunked_json_past_the_body_limit_is_a_413_and_creates_nothing(live):
    url, auth = live
    huge = json.dumps({"input_file_id": "file-x", "metadata": {"k": "v" * 3_000_000}}).encode()
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        refused = http.post("/v1/batches", content=pieces(huge, 1 << 16), headers={"Content-Type": "application/json"})
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    assert refused.headers["x-should-retry"] == "false" and Batch.objects.count() == 0


def test_live_server_refuses_chunked_with_a_lying_content_length_and_stores_nothing(live):
    import socket
    from urllib.parse import urlsplit

    url, auth = live
    before = File.objects.count()
    body = multipart(jsonl([chat_line(1)]))
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces(body, 100)) + b"0\r\n\r\n"
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    ).encode()
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(head + chunked)
        answer = b""
        while piece := conn.recv(65536):
            answer += piece
    # Both framings at once is how requests are smuggled: the server refuses it before Django (RFC 9112 6.3).
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert File.objects.count() == before
