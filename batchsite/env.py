"""Every environment variable batchsite reads, parsed strictly in one place.

A typo in a production environment (``DEBUG=ture``, ``BATCHSITE_CHUNK_SIZE=5k``)
must stop startup with a message naming the variable, not silently fall back
to a default: a worker that quietly runs with the wrong limits is worse than
one that refuses to start.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvError(ImproperlyConfigured):
    pass


class Reader:
    """Reads typed values from a mapping (os.environ by default)."""

    def __init__(self, source: Mapping[str, str] | None = None) -> None:
        self.env = environ.Env()
        if source is not None:
            self.env.ENVIRON = dict(source)

    def raw(self, name: str) -> str | None:
        value = self.env.ENVIRON.get(name)
        return None if value is None else value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise EnvError(f"{name}={value!r} is not valid: expected {expected} ({exc})") from None

    def text(self, name: str, default: str) -> str:
        return self._parse(name, default, lambda v: v, "a string")

    def flag(self, name: str, default: bool) -> bool:
        def parse(v: str) -> bool:
            low = v.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("use 1/0, true/false, yes/no or on/off")

        return self._parse(name, default, parse, "a boolean")

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        def parse(v: str) -> int:
            number = int(v.replace("_", ""))
            if number < minimum:
                raise ValueError(f"must be >= {minimum}")
            return number

        return self._parse(name, default, parse, "a whole number")

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        def parse(v: str) -> float:
            number = float(v)
            # float() reads "nan" and "inf": neither is a usable time or size.
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            if number < minimum:
                raise ValueError(f"must be >= {minimum}")
            return number

        return self._parse(name, default, parse, "a number")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(v: str) -> str:
            if v not in choices:
                raise ValueError(f"use one of {', '.join(choices)}")
            return v

        return self._parse(name, default, parse, "one of " + ", ".join(choices))

    def items(self, name: str, default: list[str]) -> list[str]:
        def parse(v: str) -> list[str]:
            items = [item.strip() for item in v.split(",") if item.strip()]
            if not items:
                raise ValueError("the list is empty")
            return items

        return self._parse(name, default, parse, "a comma-separated list")

    def database(self, name: str, default: str) -> dict[str, Any]:
        url = self.text(name, default)
        try:
            config = self.env.db_url_config(url)
        except Exception as exc:  # django-environ raises several types here
            raise EnvError(f"{name}={url!r} is not a database URL ({exc})") from None
        engine = config.get("ENGINE", "")
        if engine not in {"django.db.backends.sqlite3", "django.db.backends.postgresql"}:
            raise EnvError(f"{name}={url!r}: only sqlite:/// and postgres:// URLs are supported")
        return dict(config)


@dataclass(frozen=True)
class Limits:
    chunk_size: int
    max_requests_per_batch: int
    max_queued_batches: int
    max_queued_requests: int
    max_upload_bytes: int
    max_line_bytes: int
    max_validation_errors: int
    completion_windows: tuple[str, ...]


def parse_window(window: str) -> int:
    """Seconds in a completion window such as ``24h`` (OpenAI's only value)."""
    if len(window) < 2 or window[-1] not in "hd" or not window[:-1].isdigit():
        raise ValueError(f"{window!r}: use hours or days, such as 24h or 7d")
    return int(window[:-1]) * (3600 if window[-1] == "h" else 86400)


def read_limits(reader: Reader) -> Limits:
    windows = reader.items("BATCHSITE_COMPLETION_WINDOWS", ["24h"])
    for window in windows:
        try:
            parse_window(window)
        except ValueError as exc:
            raise EnvError(f"BATCHSITE_COMPLETION_WINDOWS: {exc}") from None
    return Limits(
        chunk_size=reader.integer("BATCHSITE_CHUNK_SIZE", 5000, minimum=1),
        max_requests_per_batch=reader.integer("BATCHSITE_MAX_REQUESTS_PER_BATCH", 50_000, minimum=1),
        max_queued_batches=reader.integer("BATCHSITE_MAX_QUEUED_BATCHES", 10, minimum=1),
        max_queued_requests=reader.integer("BATCHSITE_MAX_QUEUED_REQUESTS", 500_000, minimum=1),
        max_upload_bytes=reader.integer("BATCHSITE_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1),
        max_line_bytes=reader.integer("BATCHSITE_MAX_LINE_BYTES", 10 * 1024 * 1024, minimum=64),
        max_validation_errors=reader.integer("BATCHSITE_MAX_VALIDATION_ERRORS", 100, minimum=1),
        completion_windows=tuple(windows),
    )


@dataclass(frozen=True)
class WorkerSettings:
    heartbeat_seconds: float
    stale_after_seconds: float
    max_attempts: int
    shutdown_grace_seconds: float
    poll_seconds: float
    progress_seconds: float


def read_worker_settings(reader: Reader) -> WorkerSettings:
    heartbeat = reader.number("BATCHSITE_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
    stale = reader.number("BATCHSITE_STALE_AFTER_SECONDS", 60.0, minimum=1.0)
    if stale <= 2 * heartbeat:
        # A live worker that misses one beat must not lose its chunk.
        raise EnvError(
            f"BATCHSITE_STALE_AFTER_SECONDS={stale} must be more than twice BATCHSITE_HEARTBEAT_SECONDS={heartbeat}"
        )
    return WorkerSettings(
        heartbeat_seconds=heartbeat,
        stale_after_seconds=stale,
        max_attempts=reader.integer("BATCHSITE_MAX_ATTEMPTS", 3, minimum=1),
        shutdown_grace_seconds=reader.number("BATCHSITE_SHUTDOWN_GRACE_SECONDS", 30.0, minimum=0.0),
        poll_seconds=reader.number("BATCHSITE_POLL_SECONDS", 1.0, minimum=0.05),
        progress_seconds=reader.number("BATCHSITE_PROGRESS_SECONDS", 2.0, minimum=0.1),
    )


# The scheduling policies jobs/services/scheduling/policy.py implements (a test
# keeps the two lists equal; settings cannot import the app).
SCHEDULER_POLICIES = ("fifo", "affinity")


@dataclass(frozen=True)
class SchedulerSettings:
    policy: str
    affinity_max_wait_seconds: float
    # A file whose content ("fifo" or "affinity"), when present, overrides
    # ``policy`` at each claim: switches the policy of running workers.
    policy_file: str
    # How long a computed queue plan (positions and ETAs) is reused.
    plan_seconds: float


def read_scheduler_settings(reader: Reader) -> SchedulerSettings:
    return SchedulerSettings(
        policy=reader.choice("BATCHSITE_SCHEDULER", "fifo", SCHEDULER_POLICIES),
        affinity_max_wait_seconds=reader.number("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", 1800.0, minimum=0.0),
        policy_file=reader.text("BATCHSITE_SCHEDULER_FILE", ""),
        plan_seconds=reader.number("BATCHSITE_QUEUE_PLAN_SECONDS", 5.0, minimum=0.0),
    )


def secret_key(reader: Reader, data_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once under the data dir.

    A laptop install must start without any configuration, but a key that
    changes on every start would log everybody out of the admin, so it is kept.
    """
    value = reader.raw("SECRET_KEY")
    if value:
        if len(value) < 32:
            raise EnvError("SECRET_KEY is too short: use at least 32 characters")
        return value
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()
