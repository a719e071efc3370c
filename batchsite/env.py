"""Every environment variable batchsite reads, parsed strictly in one place.

A typo in a production environment (``DEBUG=ture``, ``BATCHSITE_CHUNK_SIZE=5k``)
must stop startup with a message naming the variable, not silently fall back
to a default: a worker that quietly runs with the wrong limits is worse than
one that refuses to start.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

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

    def parsed(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        """A value in a format of its own; ``parse`` raises ValueError to refuse it."""
        return self._parse(name, default, parse, expected)

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

    def http_header(self, name: str) -> tuple[str, str] | None:
        """A request header and the value that marks HTTPS (``X-Forwarded-Proto: https``), in Django's form."""
        return self._parse(name, None, parse_proxy_header, "a header and its value")

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
    # Per-user quotas (overridable per user and per group in the admin: jobs.Quota).
    # The defaults leave room for others: a user at their quota holds at most four
    # fifths of each global queue limit (8 of the 10 batches: the seed's scenario of
    # one user's 8 batches still fits, and 2 slots stay for everyone else).
    user_max_queued_batches: int = 8
    user_max_queued_requests: int = 400_000
    user_max_stored_bytes: int = 5 * 200 * 1024 * 1024
    # POST /v1/batches/estimate counts tokens for at most this long, then scales what it counted.
    estimate_seconds: float = 60.0


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
    queued_batches = reader.integer("BATCHSITE_MAX_QUEUED_BATCHES", 10, minimum=1)
    queued_requests = reader.integer("BATCHSITE_MAX_QUEUED_REQUESTS", 500_000, minimum=1)
    upload_bytes = reader.integer("BATCHSITE_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1)
    return Limits(
        chunk_size=reader.integer("BATCHSITE_CHUNK_SIZE", 5000, minimum=1),
        max_requests_per_batch=reader.integer("BATCHSITE_MAX_REQUESTS_PER_BATCH", 50_000, minimum=1),
        max_queued_batches=queued_batches,
        max_queued_requests=queued_requests,
        max_upload_bytes=upload_bytes,
        max_line_bytes=reader.integer("BATCHSITE_MAX_LINE_BYTES", 10 * 1024 * 1024, minimum=64),
        max_validation_errors=reader.integer("BATCHSITE_MAX_VALIDATION_ERRORS", 100, minimum=1),
        completion_windows=tuple(windows),
        user_max_queued_batches=reader.integer(
            "BATCHSITE_USER_MAX_QUEUED_BATCHES", max(1, queued_batches * 4 // 5), minimum=0
        ),
        user_max_queued_requests=reader.integer(
            "BATCHSITE_USER_MAX_QUEUED_REQUESTS", max(1, queued_requests * 4 // 5), minimum=0
        ),
        user_max_stored_bytes=reader.integer("BATCHSITE_USER_MAX_STORED_BYTES", 5 * upload_bytes, minimum=0),
        estimate_seconds=reader.number("BATCHSITE_ESTIMATE_SECONDS", 60.0, minimum=1.0),
    )


@dataclass(frozen=True)
class WorkerSettings:
    heartbeat_seconds: float
    stale_after_seconds: float
    max_attempts: int
    shutdown_grace_seconds: float
    poll_seconds: float
    progress_seconds: float
    engine_stall_seconds: float
    model_load_attempts: int
    model_load_backoff_seconds: float
    # "auto": a swap loads the next model while the old engine's processes exit, when
    # memory allows (jobs/engine/swap.py); "off": it always waits for them first.
    swap_overlap: str = "auto"
    # A running claim records its finished lines as a segment this often (seconds) or
    # after this many lines, whichever comes first: what a kill -9 can cost at most.
    checkpoint_seconds: float = 5.0
    checkpoint_lines: int = 250
    # Lines the vLLM engine holds in flight (rendered and queued); 0: twice its
    # scheduler's max_num_seqs (jobs/engine/vllm_engine.py). docs/BENCHMARKS.md 8a.
    engine_window: int = 0


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
        engine_stall_seconds=reader.number("BATCHSITE_ENGINE_STALL_SECONDS", 300.0, minimum=1.0),
        model_load_attempts=reader.integer("BATCHSITE_MODEL_LOAD_ATTEMPTS", 3, minimum=1),
        model_load_backoff_seconds=reader.number("BATCHSITE_MODEL_LOAD_BACKOFF_SECONDS", 30.0, minimum=0.0),
        swap_overlap=reader.choice("BATCHSITE_SWAP_OVERLAP", "auto", ("auto", "off")),
        checkpoint_seconds=reader.number("BATCHSITE_CHECKPOINT_SECONDS", 5.0, minimum=0.1),
        checkpoint_lines=reader.integer("BATCHSITE_CHECKPOINT_LINES", 250, minimum=1),
        engine_window=reader.integer("BATCHSITE_ENGINE_WINDOW", 0, minimum=0),
    )


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_SECONDS = 365 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``30``, ``5s``, ``5m``, ``2h`` or ``3d`` (fractions allowed: ``0.5s``); more than zero."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit is not None else value
    seconds = float(number) * (unit or 1.0)
    if not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} must be a duration such as 5s, 5m, 2h or 3d, more than 0 and at most 365d")
    return seconds


# OpenAI's and Standard Webhooks' schedule; the last step repeats until retry_for runs out.
DEFAULT_WEBHOOK_BACKOFF = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebhookSettings:
    allow_private: bool
    allowed_networks: tuple[Network, ...]
    # Delay before the 2nd, 3rd, ... attempt; the last one repeats until retry_for runs out.
    backoff: tuple[float, ...]
    retry_for: float
    timeout_seconds: float
    poll_seconds: float

    @property
    def lease_seconds(self) -> float:
        # A sender that claimed a delivery owns it for this long. An attempt is
        # cut off after timeout_seconds, so a claim still held past twice that
        # (plus room for the database) belongs to a sender that died.
        return 2 * self.timeout_seconds + 10


def parse_networks(value: str) -> tuple[Network, ...]:
    # strict: "10.0.0.1/8" (host bits set) is a typo for a network, not a network.
    return tuple(ipaddress.ip_network(item.strip(), strict=True) for item in value.split(",") if item.strip())


def trusted_proxies(reader: Reader) -> tuple[Network, ...]:
    """BATCHSITE_TRUSTED_PROXIES: the peers whose X-Forwarded-For names the client (none by default)."""
    return reader.parsed(
        "BATCHSITE_TRUSTED_PROXIES", (), parse_networks, "comma-separated networks such as 127.0.0.1/32,10.0.0.0/8"
    )


def read_webhook_settings(reader: Reader) -> WebhookSettings:
    networks = parse_networks

    def durations(value: str) -> tuple[float, ...]:
        steps = tuple(parse_duration(item) for item in value.split(",") if item.strip())
        if not steps:
            raise ValueError("the list is empty")
        return steps

    return WebhookSettings(
        allow_private=reader.flag("BATCHSITE_WEBHOOK_ALLOW_PRIVATE", False),
        allowed_networks=reader.parsed(
            "BATCHSITE_WEBHOOK_ALLOWED_NETWORKS", (), networks, "comma-separated networks such as 10.0.0.0/8"
        ),
        backoff=reader.parsed(
            "BATCHSITE_WEBHOOK_BACKOFF", DEFAULT_WEBHOOK_BACKOFF, durations, "comma-separated durations (5s,5m,2h)"
        ),
        retry_for=reader.parsed("BATCHSITE_WEBHOOK_RETRY_FOR", 72 * 3600.0, parse_duration, "a duration (72h)"),
        timeout_seconds=reader.number("BATCHSITE_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        poll_seconds=reader.number("BATCHSITE_WEBHOOK_POLL_SECONDS", 1.0, minimum=0.05),
    )


def metrics_token(reader: Reader) -> str:
    """BATCHSITE_METRICS_TOKEN: the bearer token Prometheus sends to /metrics ("" = staff sessions only).

    It travels in a header, so it is printable ASCII without spaces; short
    tokens are refused, as a guessable one would publish the queue's contents.
    """

    def parse(value: str) -> str:
        if not (value.isascii() and value.isprintable()) or " " in value:
            raise ValueError("use printable ASCII without spaces")
        if len(value) < 16:
            raise ValueError("use at least 16 characters (python -c 'import secrets; print(secrets.token_urlsafe())')")
        return value

    return reader.parsed("BATCHSITE_METRICS_TOKEN", "", parse, "a token")


@dataclass(frozen=True)
class ObjectStore:
    """Where files, result parts and outputs live when not on the local disk: ``s3://bucket/prefix``."""

    bucket: str
    prefix: str  # "" or "some/prefix", without leading or trailing slashes
    endpoint_url: str | None  # AWS_ENDPOINT_URL: an S3-compatible store (MinIO, Ceph); None is AWS itself
    region: str | None
    addressing_style: str | None


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_storage_url(value: str) -> tuple[str, str]:
    """``s3://bucket/optional/prefix`` -> (bucket, prefix)."""
    parsed = urlsplit(value)
    if parsed.scheme != "s3":
        raise ValueError("only s3://bucket/prefix is supported; leave it unset for the local data directory")
    if parsed.query or parsed.fragment:
        raise ValueError("write it as s3://bucket/prefix, without a query or fragment")
    bucket = parsed.netloc  # as written: hostname would lowercase it, and drop credentials or a port silently
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)")
    segments = [segment for segment in parsed.path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("the prefix may not contain . or .. segments")
    return bucket, "/".join(segments)


def object_store(reader: Reader) -> ObjectStore | None:
    """BATCHSITE_STORAGE and the AWS_* variables django-storages and boto3 read; None: the local disk."""
    location = reader.parsed("BATCHSITE_STORAGE", None, parse_storage_url, "s3://bucket/prefix")
    if location is None:
        return None

    def endpoint(value: str) -> str:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("use http(s)://host[:port]")
        return value

    def style(value: str) -> str:
        if value not in ("auto", "path", "virtual"):
            raise ValueError("use auto, path or virtual")
        return value

    # Credentials are left to boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    # AWS_SESSION_TOKEN, ~/.aws, an instance role); only a half-set pair is an error here.
    if bool(reader.raw("AWS_ACCESS_KEY_ID")) != bool(reader.raw("AWS_SECRET_ACCESS_KEY")):
        raise EnvError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
    return ObjectStore(
        bucket=location[0],
        prefix=location[1],
        endpoint_url=reader.parsed("AWS_ENDPOINT_URL", None, endpoint, "a URL"),
        region=reader.parsed("AWS_DEFAULT_REGION", None, lambda v: v, "a region name"),
        addressing_style=reader.parsed("AWS_S3_ADDRESSING_STYLE", None, style, "auto, path or virtual"),
    )


@dataclass(frozen=True)
class HttpsSettings:
    """What a deployment behind TLS sets, under Django's own names (all off by default:
    the laptop default serves plain HTTP on localhost)."""

    ssl_redirect: bool
    hsts_seconds: int
    hsts_include_subdomains: bool
    hsts_preload: bool
    session_cookie_secure: bool
    csrf_cookie_secure: bool
    proxy_ssl_header: tuple[str, str] | None


_HEADER_NAME = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")


def parse_proxy_header(value: str) -> tuple[str, str]:
    """``X-Forwarded-Proto: https`` as Django's ``("HTTP_X_FORWARDED_PROTO", "https")``."""
    name, colon, expected = (part.strip() for part in value.partition(":"))
    if not colon or not _HEADER_NAME.fullmatch(name) or not expected or " " in expected:
        # Underscores are refused too: proxies and gunicorn drop such headers,
        # and a name already in Django's META form (HTTP_...) would be doubled.
        raise ValueError("write the header as the proxy sends it, such as 'X-Forwarded-Proto: https'")
    return "HTTP_" + name.upper().replace("-", "_"), expected


def read_https_settings(reader: Reader) -> HttpsSettings:
    hsts_seconds = reader.integer("SECURE_HSTS_SECONDS", 0)
    include_subdomains = reader.flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    preload = reader.flag("SECURE_HSTS_PRELOAD", False)
    if (include_subdomains or preload) and not hsts_seconds:
        raise EnvError("SECURE_HSTS_INCLUDE_SUBDOMAINS and SECURE_HSTS_PRELOAD need SECURE_HSTS_SECONDS > 0")
    return HttpsSettings(
        ssl_redirect=reader.flag("SECURE_SSL_REDIRECT", False),
        hsts_seconds=hsts_seconds,
        hsts_include_subdomains=include_subdomains,
        hsts_preload=preload,
        session_cookie_secure=reader.flag("SESSION_COOKIE_SECURE", False),
        csrf_cookie_secure=reader.flag("CSRF_COOKIE_SECURE", False),
        proxy_ssl_header=reader.http_header("SECURE_PROXY_SSL_HEADER"),
    )


# Django's own bar for a secret (security.W009 of `check --deploy`).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5


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
    # Weighted fair share of worker time between users (BATCHSITE_FAIR_SHARE=on|off).
    fair_share: bool = True
    # Another user's work on another model takes a worker from its loaded model only
    # once its oldest line has waited this long: fairness does not swap every chunk.
    fair_switch_seconds: float = 300.0
    # Worker time a user has had decays with this half-life (seconds).
    fair_half_life_seconds: float = 3600.0


def read_scheduler_settings(reader: Reader) -> SchedulerSettings:
    return SchedulerSettings(
        policy=reader.choice("BATCHSITE_SCHEDULER", "fifo", SCHEDULER_POLICIES),
        affinity_max_wait_seconds=reader.number("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", 1800.0, minimum=0.0),
        policy_file=reader.text("BATCHSITE_SCHEDULER_FILE", ""),
        plan_seconds=reader.number("BATCHSITE_QUEUE_PLAN_SECONDS", 5.0, minimum=0.0),
        fair_share=reader.choice("BATCHSITE_FAIR_SHARE", "on", ("on", "off")) == "on",
        fair_switch_seconds=reader.number("BATCHSITE_FAIR_SWITCH_SECONDS", 300.0, minimum=0.0),
        fair_half_life_seconds=reader.number("BATCHSITE_FAIR_HALF_LIFE_SECONDS", 3600.0, minimum=1.0),
    )


def secret_key(reader: Reader, data_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once under the data dir.

    A laptop install must start without any configuration, but a key that
    changes on every start would log everybody out of the admin, so it is kept.
    """
    value = reader.raw("SECRET_KEY")
    if value:
        if len(value) < SECRET_KEY_MIN_LENGTH or len(set(value)) < SECRET_KEY_MIN_UNIQUE:
            raise EnvError(
                f"SECRET_KEY is too weak: use at least {SECRET_KEY_MIN_LENGTH} characters, "
                f"{SECRET_KEY_MIN_UNIQUE} of them different "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))' makes one)"
            )
        if value.startswith("django-insecure-"):
            raise EnvError("SECRET_KEY starts with 'django-insecure-': generate a new one for this deployment")
        return value
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()
