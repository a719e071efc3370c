"""The chaos run's checks and watchers: what it asserts, kept apart from what it starts.

The check functions are pure (data in, a findings dict out) so tests/bench
can feed them hand-made cases; the watchers (the webhook receiver, the
metrics scraper) collect that data while the run goes on.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TERMINAL = ("completed", "failed", "expired", "cancelled")


def check_lines(expected: Iterable[str], output_ids: Iterable[str], error_ids: Iterable[str]) -> dict[str, Any]:
    """One batch's files against its input: every input custom_id exactly once across both files.

    ``lost``: input ids in neither file; ``duplicated``: extra copies (an id twice in one
    file, or in both); ``unexpected``: ids that were never in the input."""
    wanted = collections.Counter(expected)
    seen = collections.Counter(output_ids) + collections.Counter(error_ids)
    lost = sorted(set(wanted) - set(seen))
    unexpected = sorted(set(seen) - set(wanted))
    duplicated = sum(count - 1 for count in seen.values() if count > 1)
    return {"lost": len(lost), "duplicated": duplicated, "unexpected": len(unexpected), "examples": lost[:5]}


def check_counts(request_counts: dict[str, int], outputs: int, errors: int, lines: int) -> list[str]:
    """The batch's request_counts against its files (and its input's line count); the mismatches."""
    problems = []
    if request_counts.get("completed") != outputs:
        problems.append(f"completed={request_counts.get('completed')} but the output file has {outputs} lines")
    if request_counts.get("failed") != errors:
        problems.append(f"failed={request_counts.get('failed')} but the error file has {errors} lines")
    if request_counts.get("total") != lines:
        problems.append(f"total={request_counts.get('total')} but the input has {lines} lines")
    return problems


def check_webhooks(terminal: Iterable[str], received: list[tuple[str, str]]) -> dict[str, Any]:
    """``terminal``: batch ids that ended; ``received``: (batch id, event id) per POST the receiver took.

    Every terminal batch needs at least one event delivered; a second POST of the same event
    id is a duplicate delivery (allowed, at-least-once, and counted); a batch with two
    different event ids ended twice."""
    events: dict[str, set[str]] = collections.defaultdict(set)
    posts = collections.Counter(event for _, event in received)
    for batch, event in received:
        events[batch].add(event)
    ended = set(terminal)
    missing = sorted(b for b in ended if not events.get(b))
    return {
        "missing": missing,
        "duplicates": sum(n - 1 for n in posts.values()),
        "two_events": sorted(b for b, ids in events.items() if len(ids) > 1),
        "unknown": sorted(set(events) - ended),
    }


def is_counter(name: str, kind: str) -> bool:
    """Samples that must never fall: counters, and histograms' buckets, counts and sums
    (not a family's ``_created``, which is when it was made)."""
    if kind == "counter":
        return not name.endswith("_created")
    return kind == "histogram" and name.endswith(("_bucket", "_count", "_sum"))


def counter_samples(text: str) -> dict[str, float]:
    """The must-never-fall samples of one /metrics scrape, keyed by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if is_counter(sample.name, family.type):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@dataclass
class CounterWatch:
    """Every scrape's counters against the highest value seen before: a drop is a fall."""

    highest: dict[str, float] = field(default_factory=dict)
    falls: list[dict[str, Any]] = field(default_factory=list)
    scrapes: int = 0
    last: dict[str, float] = field(default_factory=dict)

    def add(self, samples: dict[str, float], when: float = 0.0) -> None:
        self.scrapes += 1
        for key, value in samples.items():
            before = self.highest.get(key)
            if before is not None and value < before:
                self.falls.append({"sample": key, "from": before, "to": value, "at": round(when, 1)})
            else:
                self.highest[key] = value
        # A counter seen before but absent now fell to nothing.
        for key in self.highest.keys() - samples.keys():
            self.falls.append({"sample": key, "from": self.highest[key], "to": None, "at": round(when, 1)})
        self.last = samples


def summed(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key.startswith(name + "{"))


def verify_signature(secret: str, headers: Any, body: bytes) -> bool:
    """Standard Webhooks: v1,base64(HMAC-SHA256(id.timestamp.body)) keyed with the whsec_ secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.partition(",")[2] for part in (headers.get("webhook-signature") or "").split()]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


class Receiver:
    """The users' webhook endpoint, on a fixed loopback port; ``down(seconds)`` closes its
    socket for that long (connections are refused meanwhile, as when a receiver is off)."""

    def __init__(self, port: int, secrets: dict[str, str]) -> None:
        self.port = port
        self.secrets = secrets  # user -> whsec_...
        self.received: list[tuple[str, str]] = []  # (batch id, event id), one per accepted POST
        self.bad: list[str] = []
        self.outages: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.is_down = threading.Event()
        self.up()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                user = self.path.rstrip("/").rpartition("/")[2]
                ok = user in receiver.secrets and verify_signature(receiver.secrets[user], self.headers, body)
                with receiver._lock:
                    if ok:
                        event = json.loads(body)
                        receiver.received.append((event["data"]["id"], str(self.headers.get("webhook-id"))))
                    else:
                        receiver.bad.append(self.path)
                self.send_response(204 if ok else 400)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        self.is_down.clear()

    def down(self, seconds: float, stopping: threading.Event) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.is_down.set()
        started = time.monotonic()
        stopping.wait(seconds)
        self.outages.append((started, time.monotonic()))
        self.up()

    def snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class Scraper:
    """GET /metrics every ``every`` seconds from one of the web servers, into a CounterWatch."""

    def __init__(self, fetch: Callable[[], str | None], every: float = 1.0) -> None:
        self.fetch = fetch
        self.every = every
        self.watch = CounterWatch()
        self.failed = 0
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def scrape(self) -> None:
        text = self.fetch()
        if text is None:
            self.failed += 1  # that web server was down: another scrape soon
            return
        self.watch.add(counter_samples(text), time.monotonic() - self._started)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.scrape()

    def stop(self) -> CounterWatch:
        self._stop.set()
        self._thread.join()
        self.scrape()
        return self.watch
