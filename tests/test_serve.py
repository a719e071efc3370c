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
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


@pytest.fixture
def echo_url() -> Iterator[str]:
    kwargs = {**serve.options(["--bind", "127.0.0.1:0", "--threads", "2"]), "max_request_body_size": 1024}
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


def test_a_body_past_waitress_cap_is_a_413_in_openais_shape(echo_url, monkeypatch):
    monkeypatch.setattr(serve.Error, "to_response", serve._openai_refusal)
    refused = httpx.post(echo_url, content=b"x" * 4096)
    assert refused.status_code == 413 and refused.headers["x-should-retry"] == "false"
    error = refused.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "line", [b"GET /\xff\xfe HTTP/1.1", b"\xed\xa0\x80 / HTTP/1.1", b"GET / HTTP/1.1\r\nX: " + b"a" * 300_000]
)
def test_a_malformed_request_is_a_4xx_not_a_crash(echo_url, monkeypatch, line):
    import socket

    monkeypatch.setattr(serve.Error, "to_response", serve._openai_refusal)
    host, port = echo_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(line + b"\r\n\r\n")
        status = sock.recv(65536).split(b"\r\n", 1)[0]
    assert status.split()[1][:1] == b"4", status
