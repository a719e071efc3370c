"""A real webhook receiver (an HTTP server on loopback) and the settings that let batchsite reach it."""

from __future__ import annotations

import dataclasses
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import standardwebhooks

from tests.conftest import chat_line, jsonl


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before answering at all
    drip: float = 0.0  # seconds between the body's bytes


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, Any]:
        """The event, verified with both the openai SDK and the standardwebhooks package (either raises)."""
        unwrapped = openai.OpenAI(api_key="unused").webhooks.unwrap(self.body, self.headers, secret=secret)
        event = standardwebhooks.Webhook(secret).verify(self.body, self.headers)
        assert unwrapped.id == event["id"] and unwrapped.type == event["type"]
        assert unwrapped.data.id == event["data"]["id"]
        return dict(event)


class Receiver:
    """An HTTP server on loopback that records every request and answers as told.

    ``replies`` are used in order, one per request; after them, ``default``.
    It can be stopped and started again on the same port (a receiver that is down).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.default = Reply(200)
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def _next_reply(self) -> Reply:
        with self.lock:
            return self.replies.pop(0) if self.replies else self.default

    def start(self, tls: tuple[str, str] | None = None) -> Receiver:
        """Listen (again); with ``tls`` (cert file, key file), over HTTPS."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append(Received(headers, body, self.path, time.time()))
                reply = receiver._next_reply()
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.drip:
                        for byte in reply.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up on us

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="receiver").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.received)} requests, not {count}, in {timeout}s")
            time.sleep(0.05)
        return list(self.received)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 (cert file, key file)."""
    import subprocess

    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def webhook_settings(settings: Any) -> Callable[..., None]:
    """Change some of settings.BATCHSITE_WEBHOOKS for one test (in this process)."""

    def change(**changes: Any) -> None:
        settings.BATCHSITE_WEBHOOKS = dataclasses.replace(settings.BATCHSITE_WEBHOOKS, **changes)

    return change


@pytest.fixture
def allow_private(webhook_settings: Callable[..., None]) -> None:
    """The operator setting that lets webhooks reach loopback, where the test's receiver is."""
    webhook_settings(allow_private=True)


def create_batch(client: Any, upload: Any, webhook_url: str, lines: list[Any] | None = None, **extra: Any) -> Any:
    """POST /v1/batches with a webhook_url; returns the response (not checked)."""
    file = upload(jsonl(lines if lines is not None else [chat_line(i) for i in range(3)]))
    body = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "webhook_url": webhook_url,
        **extra,
    }
    # Encoded here, escaped to ASCII, so hostile text (a lone surrogate) reaches the server as sent.
    return client.post("/v1/batches", json.dumps(body), content_type="application/json")


def event_of(received: Received, secret: str) -> dict[str, Any]:
    event = received.verify(secret)
    assert json.loads(received.body) == event
    return event
