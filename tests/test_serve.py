"""batchsite.serve's waitress options on a real waitress server in this process (an echo app
stands in for Django: these tests are about what waitress hands the app, not about Django)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waitress.server import create_server

from batchsite import serve


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Labelled fake app: answers with the proxy headers and peer address waitress passed on."""
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_X_FORWARDED") or k == "REMOTE_ADDR"}
    if int(environ.get("CONTENT_LENGTH") or 0):
        seen["BODY_BYTES"] = len(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


# The server-wide cap in these tests; Django's and the upload limit are set below it per test.
SERVER_CAP = 1 << 20


@pytest.fixture
def echo_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # As serve.main installs them, for this test only.
    monkeypatch.setattr(serve.Error, "to_response", serve._openai_refusal)
    monkeypatch.setattr(serve.HTTPChannel, "parser_class", serve.CappedParser)
    kwargs = {**serve.options(["--bind", "127.0.0.1:0", "--threads", "2"]), "max_request_body_size": SERVER_CAP}
    server = create_server(echo, **{k: v for k, v in kwargs.items() if k != "listen"}, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


def test_x_forwarded_for_reaches_django_untouched_for_its_trusted_proxy_check(echo_url):
    seen = httpx.get(echo_url, headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    # Waitress's default would strip both from an untrusted peer; jobs/web/client_ip.py decides instead.
    assert seen == {
        "HTTP_X_FORWARDED_FOR": "203.0.113.7",
        "HTTP_X_FORWARDED_PROTO": "https",
        "REMOTE_ADDR": "127.0.0.1",
    }


def test_a_body_past_waitress_cap_is_a_413_in_openais_shape(echo_url):
    refused = httpx.post(echo_url, content=b"x" * (SERVER_CAP + 1))
    assert refused.status_code == 413 and refused.headers["x-should-retry"] == "false"
    error = refused.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"


def raw(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's head (and maybe part of its body) and read the answer to its end."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    return answer


def test_a_json_body_declared_past_djangos_limit_is_refused_on_its_headers_alone(echo_url, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    # Only the head is sent: waitress answers without waiting for (or spooling) the body.
    answer = raw(echo_url, b"POST /v1/batches HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 50000000")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_too_large" and "the limit is 1000 bytes" in error["message"]
    assert b'"code":"request_too_large"' in answer  # compact, as DRF renders Django's own


def test_a_json_body_at_djangos_limit_reaches_the_app(echo_url, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert httpx.post(echo_url, content=b"x" * 1000).json()["BODY_BYTES"] == 1000
    assert httpx.post(echo_url, content=b"x" * 1001).status_code == 413


def test_an_upload_has_the_upload_limit_not_djangos(echo_url, settings, limits):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    limits(max_upload_bytes=10_000)
    ok = httpx.post(echo_url, files={"file": ("in.jsonl", b"x" * 9_000)})
    assert ok.status_code == 200 and ok.json()["BODY_BYTES"] > 9_000
    head = b"POST /v1/files HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d"
    answer = raw(echo_url, head % (10_000 + 64 * 1024 + 1))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "file_too_large" and "BATCHSITE_MAX_UPLOAD_BYTES" in error["message"]


def test_a_chunked_body_past_twice_its_limit_is_refused_as_it_arrives(echo_url, settings):
    """Waitress counts chunk framing too, so it allows twice the limit; between the two, Django
    refuses the de-chunked body by its length (tests/api/test_chunked.py, live)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    refused = httpx.post(echo_url, content=iter([b"x" * 1200, b"x" * 1200]))  # an iterator: sent chunked
    assert refused.request.headers["transfer-encoding"] == "chunked"
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    taken = httpx.post(echo_url, content=iter([b"x" * 900, b"x" * 900]))
    assert taken.json()["BODY_BYTES"] == 1800


def test_chunked_with_a_content_length_beside_it_is_a_400(echo_url):
    head = b"POST /v1/files HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close"
    answer = raw(echo_url, head, b"3\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "line",
    [
        b"GET /\xff\xfe HTTP/1.1",
        b"\xed\xa0\x80 / HTTP/1.1",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 300_000,
        b"POST / HTTP/1.1\r\nContent-Length: -1",
        b"POST / HTTP/1.1\r\nContent-Length: 1e9",
        b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000,
        b"POST / HTTP/1.1\r\nContent-Type: multipart/\xed\xa0\x80\r\nContent-Length: 99999999999",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked",
    ],
)
def test_a_malformed_request_is_a_4xx_not_a_crash(echo_url, line):
    import socket

    host, port = echo_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(line + b"\r\n\r\n")
        status = sock.recv(65536).split(b"\r\n", 1)[0]
    assert status.split()[1][:1] == b"4", status
