"""The engine interface the worker calls. Nothing outside jobs/engine/ imports vllm.

A worker loads a model, hands the engine one long iterable of request lines
(spanning chunks, so the engine never drains at a chunk boundary), and gets
one result per line back as soon as that line finishes, in completion order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    tag: Any = None  # opaque to the engine, returned on the result (the worker's chunk)


@dataclass(frozen=True)
class EngineResult:
    custom_id: str
    status_code: int  # 200, or the 4xx/5xx vLLM's server would answer
    body: dict[str, Any]  # the response body, or {"error": {message, type, param, code}}
    request_id: str
    usage: dict[str, int] | None = None  # prompt_tokens, completion_tokens, total_tokens
    tag: Any = None


class ModelLoadError(Exception):
    """The model could not be loaded; the message is fit to show the batch's owner."""


class EngineDeadError(Exception):
    """The engine died mid-run. Lines not yet yielded did not run; reload and retry them."""


class Engine(Protocol):
    @property
    def loaded_model(self) -> str | None: ...

    def load(self, spec: ModelSpec) -> None:
        """Reuse the loaded engine for the same spec; otherwise unload it fully, then load."""

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        """Consume ``requests`` lazily, keeping a bounded window in flight, and
        yield one result per request as it finishes. Raises EngineDeadError."""

    def abort(self) -> None:
        """Abort what is in flight; safe from another thread. ``run`` then
        returns without yielding the aborted requests."""

    def unload(self) -> None:
        """Release the model and everything it holds (memory, processes)."""
