"""Streaming validation of a batch input file.

One pass over the file, line by line, holding only a digest per custom_id: a
200 MB upload validates in a few MB of memory. The pass also records where
each chunk's lines start and end, so workers can seek straight to their lines.

The pass itself reads no database and imports no model (what it needs of the
model registry comes in a ``Catalog``), so a big file can be validated in a
child process (validation_child.py) while the server's threads go on answering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any, BinaryIO

from batchsite.env import Limits
from jobs.errors import InvalidRequest
from jobs.services import safe_json
from jobs.services.jsonl import iter_file_lines
from jobs.services.safe_json import JsonRefused, shown

ALLOWED_KEYS = frozenset({"custom_id", "method", "url", "body"})
# The line error code for each rule of safe_json that can refuse a line.
REFUSAL_CODES = {
    "syntax": "invalid_json_line",
    "number": "invalid_number",
    "depth": "nesting_too_deep",
    "unicode": "invalid_unicode",
}


@dataclass(frozen=True)
class Catalog:
    """What validation needs of the model registry, read once before the pass."""

    endpoint_kinds: Mapping[str, str]  # batch URL -> endpoint kind (jobs.models.ENDPOINT_KINDS)
    models: Mapping[str, tuple[str, ...]]  # enabled model name -> the endpoint kinds it serves
    # Longer names, or names with NUL, cannot be registered (or stored on the batch).
    model_name_max: int = 200

    @classmethod
    def load(cls) -> Catalog:
        from jobs.models import ENDPOINT_KINDS, RegisteredModel

        return cls(
            endpoint_kinds=dict(ENDPOINT_KINDS),
            models={m.name: tuple(m.endpoints) for m in RegisteredModel.objects.enabled()},
            model_name_max=RegisteredModel._meta.get_field("name").max_length or 200,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint_kinds": dict(self.endpoint_kinds),
            "models": {name: list(kinds) for name, kinds in self.models.items()},
            "model_name_max": self.model_name_max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        models = {name: tuple(kinds) for name, kinds in data["models"].items()}
        return cls(dict(data["endpoint_kinds"]), models, int(data["model_name_max"]))


@dataclass(frozen=True)
class ChunkSpan:
    index: int
    first_line: int
    start_byte: int
    end_byte: int
    request_count: int


@dataclass
class ValidationResult:
    endpoint: str | None
    model: str | None
    total: int = 0
    chunks: list[ChunkSpan] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    # Every bad line, not only the listed ones (``invalid_lines: "skip"`` settles each one):
    # [position among the request lines (0-based), line number, code, message, custom_id or None].
    bad: list[list[Any]] = field(default_factory=list)
    file_errors: int = 0  # errors of the whole file (no line): these refuse it whatever the mode

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "total": self.total,
            "chunks": [astuple(span) for span in self.chunks],
            "errors": self.errors,
            "error_count": self.error_count,
            "bad": self.bad,
            "file_errors": self.file_errors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationResult:
        return cls(
            endpoint=data["endpoint"],
            model=data["model"],
            total=int(data["total"]),
            chunks=[ChunkSpan(*span) for span in data["chunks"]],
            errors=list(data["errors"]),
            error_count=int(data["error_count"]),
            bad=list(data["bad"]),
            file_errors=int(data["file_errors"]),
        )

    @property
    def skippable(self) -> bool:
        """Only lines are bad, so ``invalid_lines: "skip"`` can run the rest."""
        return self.file_errors == 0 and self.total > 0

    def errors_object(self, limit: int) -> dict[str, Any]:
        """OpenAI's ``errors`` list, capped, with a last entry counting the rest."""
        data = list(self.errors[:limit])
        hidden = self.error_count - len(data)
        if hidden > 0:
            data.append(
                {
                    "code": "too_many_errors",
                    "message": f"{hidden} more errors not listed (the first {len(data)} are shown).",
                    "param": None,
                    "line": None,
                }
            )
        return {"object": "list", "data": data}


def too_many_requests(limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"The input file has more than {limit} requests, the most one batch may hold "
        "(BATCHSITE_MAX_REQUESTS_PER_BATCH). Split it into several batches.",
        code="too_many_requests_in_batch",
        param="input_file_id",
    )


class _Validator:
    def __init__(self, endpoint: str | None, model: str | None, limits: Limits, catalog: Catalog) -> None:
        self.limits = limits
        self.catalog = catalog
        self.result = ValidationResult(endpoint=endpoint, model=model)
        # A model named by the request itself was checked by the caller.
        self.model_checked = model is not None
        # 64-bit hashes instead of the ids themselves keep memory per line small
        # and independent of id length; a false duplicate needs a 64-bit collision
        # (about 1e-10 at 50,000 lines). Python's own str hash (SipHash, keyed per
        # process, and one pass runs in one process) is as good a 64-bit hash here
        # as a truncated blake2b was, at a fraction of the cost.
        self.seen: dict[int, int] = {}
        self.size = 0  # bytes read so far: the file's size once the pass ends
        self.span_start: tuple[int, int] | None = None  # (first line, start byte)
        self.span_count = 0
        self.line_error: tuple[str, str] | None = None  # the line being checked: its first error
        self.line_custom_id: str | None = None  # and its custom_id, where one can be read

    def error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.result.error_count += 1
        if line is None:
            self.result.file_errors += 1
        elif self.line_error is None:
            self.line_error = (code, message)  # a line's first error is the one its error line gives
        if len(self.result.errors) < self.limits.max_validation_errors:
            self.result.errors.append({"code": code, "message": message, "param": param, "line": line})

    def run(self, f: BinaryIO) -> ValidationResult:
        for number, start, end, data in iter_file_lines(f, self.limits.max_line_bytes):
            self.size = end
            if data is not None and not data.strip():
                continue  # a blank line
            self.result.total += 1
            if self.result.total > self.limits.max_requests_per_batch:
                raise too_many_requests(self.limits.max_requests_per_batch)
            if self.span_start is None:
                self.span_start = (number, start)
            self.span_count += 1
            if self.span_count == self.limits.chunk_size:
                self.close_span(end)
            if data is None or not self.looks_right(number, data):
                self.line_error, self.line_custom_id = None, None
                self.check_line(number, data)
                if self.line_error is not None:
                    code, message = self.line_error
                    self.result.bad.append([self.result.total - 1, number, code, message, self.line_custom_id])
        if self.span_start is not None:
            self.close_span(self.size)
        if self.result.total == 0:
            self.error(None, "empty_file", "The input file has no requests.", "input_file_id")
        elif self.result.model is None and self.result.error_count == 0:
            self.error(None, "missing_model", "No line sets body.model.", "body.model")
        return self.result

    def close_span(self, end: int) -> None:
        assert self.span_start is not None
        first_line, start = self.span_start
        self.result.chunks.append(ChunkSpan(len(self.result.chunks), first_line, start, end, self.span_count))
        self.span_start = None
        self.span_count = 0

    def looks_right(self, n: int, data: bytes) -> bool:
        """The common line, passed in a few operations: parsed by orjson alone, the four keys,
        POST, the batch's URL and model, no stream, a new custom_id. False is no verdict:
        check_line then runs every rule on the line and words what is wrong. (Once the
        first line has set the batch's URL and model, this is what every line costs, and
        it is what brought validation to the speed of a bare parse loop.)"""
        result = self.result
        # Inexact numbers are fine here: only strings and booleans are looked at,
        # and only to accept; a line this passes, every rule passes.
        obj = safe_json.loads_fast(data, exact=False)
        if type(obj) is not dict or obj.keys() != ALLOWED_KEYS or obj["method"] != "POST":
            return False
        body = obj["body"]
        if obj["url"] != result.endpoint or result.endpoint is None or type(body) is not dict:
            return False
        model = body.get("model")
        if (model is not None and model != result.model) or not self.model_checked:
            return False
        if body.get("stream") not in (None, False):
            return False
        custom_id = obj["custom_id"]
        return type(custom_id) is str and custom_id != "" and self.seen.setdefault(hash(custom_id), n) == n

    def check_line(self, n: int, data: bytes | None) -> None:
        if data is None:
            self.error(n, "line_too_long", f"Line {n} is longer than {self.limits.max_line_bytes} bytes.")
            return
        try:
            obj = parse_line(data)
        except UnicodeDecodeError as exc:
            self.error(n, "invalid_encoding", f"Line {n} is not valid UTF-8 (byte {exc.start}).")
            return
        except JsonRefused as exc:
            self.error(n, REFUSAL_CODES[exc.kind], f"Line {n} {exc.message}.", exc.path)
            return
        if not isinstance(obj, dict):
            self.error(n, "invalid_request", f"Line {n} is a JSON {type(obj).__name__}, not an object.")
            return
        unknown = sorted(set(obj) - ALLOWED_KEYS)
        if unknown:
            listed = ", ".join(shown(key, 40) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            self.error(
                n,
                "unexpected_key",
                f"Line {n} has unknown keys: {listed}. Allowed: custom_id, method, url, body.",
                safe_json.path_text((None, unknown[0])),
            )
        self.check_custom_id(n, obj)
        method = obj.get("method")
        if method != "POST":
            self.error(n, "invalid_method", f"Line {n}: method must be 'POST', got {shown(method)}.", "method")
        self.check_url(n, obj.get("url"))
        body = obj.get("body")
        if not isinstance(body, dict):
            self.error(n, "invalid_body", f"Line {n}: body must be a JSON object.", "body")
            return
        if body.get("stream") not in (None, False):
            self.error(n, "unsupported_stream", f"Line {n}: stream is not supported in a batch.", "body.stream")
        self.check_model(n, body.get("model"))

    def check_custom_id(self, n: int, obj: dict[str, Any]) -> None:
        if "custom_id" not in obj:
            self.error(n, "missing_custom_id", f"Line {n} has no custom_id.", "custom_id")
            return
        custom_id = obj["custom_id"]
        if not isinstance(custom_id, str) or not custom_id:
            self.error(n, "invalid_custom_id", f"Line {n}: custom_id must be a non-empty string.", "custom_id")
            return
        # parse_line let no lone surrogate through: the id can go in the error file as it is.
        self.line_custom_id = custom_id
        first = self.seen.setdefault(hash(custom_id), n)
        if first != n:
            self.error(
                n,
                "duplicate_custom_id",
                f"Line {n}: custom_id {shown(custom_id)} was already used on line {first}.",
                "custom_id",
            )

    def check_url(self, n: int, url: Any) -> None:
        kinds = self.catalog.endpoint_kinds
        if self.result.endpoint is None and isinstance(url, str) and url in kinds:
            self.result.endpoint = url
        if url != self.result.endpoint:
            expected = self.result.endpoint or " or ".join(kinds)
            self.error(n, "invalid_url", f"Line {n}: url must be {expected}, got {shown(url)}.", "url")

    def check_model(self, n: int, model: Any) -> None:
        if model is None:
            if self.result.model is None:
                self.error(n, "missing_model", f"Line {n}: body.model is required.", "body.model")
            return
        longest = self.catalog.model_name_max
        if not isinstance(model, str) or not model or len(model) > longest or "\x00" in model:
            self.error(
                n,
                "invalid_model",
                f"Line {n}: body.model must be a model name (a string of 1 to {longest} characters), "
                f"got {shown(model)}.",
                "body.model",
            )
            return
        if self.result.model is None:
            self.result.model = model
        if model != self.result.model:
            self.error(
                n,
                "mismatched_model",
                f"Line {n}: body.model {shown(model)} differs from the batch's model "
                f"{shown(self.result.model)}; a batch uses one model.",
                "body.model",
            )
            return
        if not self.model_checked:
            self.model_checked = True
            self.check_registered(n, model)

    def check_registered(self, n: int, model: str) -> None:
        serves = self.catalog.models.get(model)
        if serves is None:
            self.error(
                n,
                "model_not_found",
                f"Line {n}: the model {shown(model)} does not exist or is not "
                "enabled here; GET /v1/models lists the models you can use.",
                "body.model",
            )
        elif self.result.endpoint and self.catalog.endpoint_kinds.get(self.result.endpoint) not in serves:
            self.error(
                n,
                "model_not_supported",
                f"Line {n}: the model {shown(model)} does not serve "
                f"{self.result.endpoint} (it serves {', '.join(serves)}).",
                "body.model",
            )


def parse_line(data: bytes) -> Any:
    """One input line as JSON the rest of the system can carry (safe_json's rules):
    no NaN or infinite numbers, no deep nesting, no lone surrogates in any string.
    Raises UnicodeDecodeError (not UTF-8) or JsonRefused.

    orjson reads the bytes as they are; only a line it cannot decide alone (one that
    breaks a rule, or that the stdlib would read differently) is decoded and read by
    the stdlib, which gives the refusal its message (see safe_json.loads_fast).
    """
    obj = safe_json.loads_fast(data)
    if obj is not safe_json.UNDECIDED:
        return obj
    text = data.decode("utf-8")
    obj = safe_json.loads(text)
    safe_json.check_unicode(obj, text)
    return obj


def validate_input(
    f: BinaryIO, endpoint: str | None, model: str | None, limits: Limits, catalog: Catalog | None = None
) -> ValidationResult:
    """Validate a batch input file, streaming. Raises InvalidRequest for breaking a limit."""
    return _Validator(endpoint, model, limits, catalog or Catalog.load()).run(f)
