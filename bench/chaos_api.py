"""The chaos run's users: plain HTTP to the API, failing over between the web servers.

A web server may be SIGKILLed mid-request, so every call is retried on another
server (or the same one, restarted) until it gets an answer. A retried create
can make a second batch or file when the first answer was lost with its
connection: that is what a user's client would do too, and the run checks
every batch the users own (listed through the API), not only the ones it
knows it made.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx


class ApiError(Exception):
    pass


class Api:
    def __init__(self, urls: list[str], key: str, give_up_after: float = 180) -> None:
        self.urls = urls
        self.key = key
        self.give_up_after = give_up_after
        self._next = itertools.cycle(range(len(urls)))
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def _url(self) -> str:
        with self._lock:
            return self.urls[next(self._next)]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The first answer below 500 from any server; connection failures and 5xx are retried."""
        deadline = time.monotonic() + self.give_up_after
        while True:
            url = self._url()
            try:
                response = httpx.request(
                    method, url + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=60, **kwargs
                )
            except httpx.HTTPError as exc:
                self.counts["connection_errors"] += 1
                last = f"{type(exc).__name__}: {exc}"
            else:
                self.counts[f"{response.status_code // 100}xx"] += 1
                if response.status_code < 500:
                    return response
                last = f"{response.status_code}: {response.text[:300]}"
            if time.monotonic() > deadline:
                raise ApiError(f"{method} {path}: no answer after {self.give_up_after:.0f}s ({last})")
            time.sleep(0.3)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code != 200:
            raise ApiError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def text_once(self, path: str) -> str | None:
        """One try on the next server; None if it did not answer 200 (it may be down)."""
        try:
            response = httpx.get(self._url() + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.urls[0] + "/v1/models", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise ApiError(f"{self.urls[0]} did not start in {timeout:.0f}s")

    def list_batches(self) -> list[dict[str, Any]]:
        batches: list[dict[str, Any]] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            page = self.ok("GET", "/v1/batches", params=params)
            batches += page["data"]
            if not page["has_more"]:
                return batches
            after = page["data"][-1]["id"]

    def custom_ids(self, file_id: str | None) -> list[str]:
        """The custom_id of every line of a file (none for no file)."""
        if not file_id:
            return []
        response = self.request("GET", f"/v1/files/{file_id}/content")
        if response.status_code != 200:
            raise ApiError(f"file {file_id}: {response.status_code} {response.text[:300]}")
        return [json.loads(line)["custom_id"] for line in response.text.splitlines() if line.strip()]

    @staticmethod
    def stats(apis: Iterable[Api]) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for api in apis:
            total += api.counts
        return dict(total)


def chat_line(custom_id: str, model: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"Say {custom_id}"}], "max_tokens": 8},
    }


def submit_batch(api: Api, ids: list[str], model: str, webhook_url: str) -> str:
    """Upload the lines and create a batch of them with a webhook; the input file's id."""
    body = "".join(json.dumps(chat_line(i, model)) + "\n" for i in ids).encode()
    file = api.ok("POST", "/v1/files", data={"purpose": "batch"}, files={"file": ("chaos.jsonl", body)})
    created = api.ok(
        "POST",
        "/v1/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "webhook_url": webhook_url,
        },
    )
    if created["status"] not in ("validating", "in_progress"):
        raise ApiError(f"batch {created['id']} is {created['status']} at create: {created.get('errors')}")
    return str(file["id"])
