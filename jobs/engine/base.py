"""The engine interface the worker calls. Nothing outside jobs/engine/ imports vllm.

A worker loads a model, hands the engine one long iterable of request lines
(spanning chunks, so the engine never drains at a chunk boundary), and gets
one result per line back as soon as that line finishes, in completion order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs to load a registered model (a plain copy, no ORM)."""

    name: str  # API name; the ``model`` field of every response body
    source: str  # local path or hub id
    endpoints: tuple[str, ...]  # "chat" (chat completions and responses), "completions", "embeddings"
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineRequest:
    custom_id: str
    url: str  # "/v1/chat/completions", "/v1/completions", "/v1/embeddings" or "/v1/responses"
    body: dict[str, Any]
    # Opaque to the engine and returned on the result; it also names the request
    # to ``abort`` (the worker's (chunk run, line) pair), so it must be hashable.
    tag: Any = None


# A request source may yield NOT_YET: it has no request now but may have one
# later (the worker's feeder, holding back its next claim while the engine has
# as many lines as it runs at once). The engine stops filling its window until its next result and asks again then.
# A source yields it only while requests are in flight, so the engine always
# has a result coming to wait on. Compared by identity.
NOT_YET = EngineRequest("", "", {}, tag="not-yet")


@dataclass(frozen=True)
class EngineResult:
    custom_id: str
    status_code: int  # 200, or the 4xx/5xx vLLM's server would answer
    # The response body, or {"error": {message, type, param, code}}: a dict, or the
    # body already encoded as JSON (vLLM's serving layer encodes it; the worker writes
    # those bytes into the result line as they are, instead of decoding and encoding
    # every body again, which for a 384-float embedding cost more than the engine).
    payload: dict[str, Any] | bytes
    request_id: str
    usage: dict[str, int] | None = None  # prompt_tokens, completion_tokens, total_tokens
    tag: Any = None
    # The request was aborted before it finished: no status or body, it did not run.
    aborted: bool = False
    # batchsite failed the line itself (code, message), as when it crashes the engine
    # every time: written as OpenAI writes such lines, response null and a top-level error.
    failure: tuple[str, str] | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The body as a dict (decoded on each call when it came encoded: not for hot paths)."""
        if isinstance(self.payload, bytes):
            body: dict[str, Any] = orjson.loads(self.payload)
            return body
        return self.payload

    def body_json(self) -> bytes:
        """The body as JSON bytes."""
        return self.payload if isinstance(self.payload, bytes) else orjson.dumps(self.payload)

    @classmethod
    def aborted_for(cls, request: EngineRequest) -> EngineResult:
        return cls(request.custom_id, 0, {}, "", None, request.tag, aborted=True)


class ModelLoadError(Exception):
    """The model could not be loaded; the message is fit to show the batch's owner."""


class EngineDeadError(Exception):
    """The engine died mid-run. Lines not yet yielded did not run; reload and retry them."""


class Engine(Protocol):
    @property
    def loaded_model(self) -> str | None: ...

    def load(self, spec: ModelSpec) -> None:
        """Reuse the loaded engine for the same spec; otherwise unload it (``unload(next=spec)``), then load."""

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        """Consume ``requests`` lazily, keeping a bounded window in flight (a
        NOT_YET from the source ends this round of filling, not the source), and
        yield exactly one result per request taken: when it finishes, or, if it
        was aborted, one with ``aborted=True``. Raises EngineDeadError."""

    def abort(self, tags: Collection[Any] | None = None) -> None:
        """Abort the in-flight requests whose tag is in ``tags`` (every request,
        and take no more, with None); safe from another thread. Requests of
        other tags keep running: one engine serves several batches at once."""

    def mark_dead(self, reason: str) -> None:
        """The caller gave up on the engine (it made no progress for too long);
        safe from another thread. ``run`` raises EngineDeadError promptly, and
        ``unload`` tears the engine down without waiting on it."""

    def unload(self, next: ModelSpec | None = None) -> None:
        """Release the model and everything it holds (memory, processes), and return when
        that is done. With ``next``, the model to be loaded right after (a swap): return
        as soon as ``next`` may start loading, which may be while the old model's
        processes still exit, in the background, where memory allows both for a while."""
