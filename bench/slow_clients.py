"""Slow clients against a running server: GET /v1/models latency while they hold.

N slow-header connections (slowloris) send a request line, then one header line every
``--header-every`` seconds and never end their headers; M slow uploads send whole headers
for a POST /v1/files with a 100 MB Content-Length (``--upload-bytes``), then one body byte a second. Meanwhile
one client times GET /v1/models (with ``--key``; without one the 401 is answered by the same
workers, so it measures the same thing) and reports p50/p99/max.

    .venv/bin/python bench/slow_clients.py http://127.0.0.1:8000 --headers 200 --uploads 50 [--json]

A GET that fails or takes longer than ``--timeout`` counts as that timeout: a stalled server
shows as a p99 equal to the timeout, not as missing samples.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

UPLOAD_BYTES = 100 * 1024 * 1024  # declared, under the default upload limit: never all sent


@dataclass
class Result:
    latencies: list[float]
    held_headers: int
    held_uploads: int
    timeouts: int
    reopened: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def figures(self) -> dict[str, float | int]:
        return {
            "requests": len(self.latencies),
            "held_headers": self.held_headers,
            "held_uploads": self.held_uploads,
            "timeouts": self.timeouts,
            "reopened": self.reopened,
            "p50_ms": round(statistics.median(self.latencies) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "max_ms": round(max(self.latencies) * 1000, 1),
        }

    def summary(self) -> str:
        f = self.figures()
        return (
            f"{f['requests']} GET /v1/models while {f['held_headers']} slow-header and {f['held_uploads']} "
            f"slow-upload connections held: p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms, "
            f"max {f['max_ms']:.0f} ms, {f['timeouts']} timed out; {f['reopened']} dropped by the server and reopened"
        )


class SlowClients:
    """Opens the slow connections, then keeps them trickling from one thread until stopped."""

    def __init__(
        self, url: str, headers: int, uploads: int, header_every: float, key: str | None, upload_bytes: int
    ) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host = parts.netloc
        self.headers, self.uploads, self.header_every = headers, uploads, header_every
        self.header_socks: list[socket.socket] = []
        self.upload_socks: list[socket.socket] = []
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.header_head = f"GET /v1/models HTTP/1.1\r\nHost: {self.host}\r\n".encode()
        # With a key, Django gets past authentication and reads the body: the slow part.
        self.upload_head = (
            f"POST /v1/files HTTP/1.1\r\nHost: {self.host}\r\n{auth}"
            "Content-Type: multipart/form-data; boundary=slow\r\n"
            f"Content-Length: {upload_bytes}\r\n\r\n"
        ).encode()
        self.reopened = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)

    def _open(self, first: bytes) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=5)
            sock.sendall(first)
            return sock
        except OSError:
            return None

    def _fill(self, socks: list[socket.socket], want: int, head: bytes) -> None:
        while len(socks) < want and not self.stopped.is_set():
            sock = self._open(head)
            if sock is None:
                return  # refused: tried again on the next tick
            socks.append(sock)

    def start(self) -> None:
        self._fill(self.header_socks, self.headers, self.header_head)
        self._fill(self.upload_socks, self.uploads, self.upload_head)
        self.thread.start()

    def _send(self, socks: list[socket.socket], data: bytes) -> None:
        for sock in list(socks):
            try:
                sock.sendall(data)
            except OSError:  # the server closed it (a header or body timeout, or a refusal)
                socks.remove(sock)
                sock.close()
                self.reopened += 1

    def _trickle(self) -> None:
        n = 0
        last_header = time.monotonic()
        while not self.stopped.wait(1.0):
            self._send(self.upload_socks, b"x")
            if time.monotonic() - last_header >= self.header_every:
                n += 1
                self._send(self.header_socks, f"X-Slow-{n}: 1\r\n".encode())
                last_header = time.monotonic()
            # As a real attacker does: a connection the server dropped is opened again, so
            # the server faces N and M slow connections all along.
            self._fill(self.header_socks, self.headers, self.header_head)
            self._fill(self.upload_socks, self.uploads, self.upload_head)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        for sock in self.header_socks + self.upload_socks:
            sock.close()


def time_models(url: str, key: str | None, seconds: float, timeout: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    timeouts = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = urllib.request.Request(url.rstrip("/") + "/v1/models")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        start = time.monotonic()
        try:
            urllib.request.urlopen(request, timeout=timeout).read()
        except urllib.error.HTTPError as exc:  # a 401 without a key: answered all the same
            exc.read()
        except OSError:
            latencies.append(timeout)
            timeouts += 1
            continue
        latencies.append(time.monotonic() - start)
        time.sleep(0.05)
    return latencies, timeouts


def run(
    url: str,
    headers: int,
    uploads: int,
    seconds: float,
    key: str | None = None,
    timeout: float = 15.0,
    header_every: float = 2.0,
    upload_bytes: int = UPLOAD_BYTES,
) -> Result:
    clients = SlowClients(url, headers, uploads, header_every, key, upload_bytes)
    clients.start()
    try:
        time.sleep(min(2.0, header_every))  # let the server take them all in
        latencies, timeouts = time_models(url, key, seconds, timeout)
        return Result(latencies, len(clients.header_socks), len(clients.upload_socks), timeouts, clients.reopened)
    finally:
        clients.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--headers", type=int, default=200, help="slow-header connections")
    parser.add_argument("--uploads", type=int, default=50, help="uploads at one byte a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to time GET /v1/models")
    parser.add_argument("--key", help="an API key for the GETs and the uploads (else 401s, bodies unread)")
    parser.add_argument("--timeout", type=float, default=15.0, help="a GET slower than this counts as this")
    parser.add_argument("--header-every", type=float, default=2.0, help="seconds between header lines")
    parser.add_argument("--upload-bytes", type=int, default=UPLOAD_BYTES, help="each upload's Content-Length")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = run(
        args.url, args.headers, args.uploads, args.seconds, args.key, args.timeout, args.header_every, args.upload_bytes
    )
    if args.json:
        figures = {**asdict(result), **result.figures()}
        del figures["latencies"]
        print(json.dumps({"url": args.url, "seconds": args.seconds, **figures}))
    else:
        print(result.summary())


if __name__ == "__main__":
    main()
