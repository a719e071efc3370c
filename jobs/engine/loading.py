"""Small helpers around a vLLM engine's load and unload (checks, messages, memory)."""

from __future__ import annotations

import contextlib
import os

from .base import EngineRequest, EngineResult, ModelLoadError, ModelSpec
from .errors import openai_error
from .serving import error_body


def internal_error(request: EngineRequest, exc: BaseException) -> EngineResult:
    """The result of a line whose engine task failed with ``exc`` (vllm serve's 500 body)."""
    from vllm.utils import random_uuid

    status, body = error_body(exc)
    return EngineResult(
        request.custom_id, status, openai_error(status, body), f"vllm-batch-{random_uuid()}", None, request.tag
    )


def check_source(spec: ModelSpec) -> None:
    # A path-looking source that does not exist would otherwise surface as a
    # confusing hub lookup error ("Repo id must be in the form ...").
    src = spec.source
    if src.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(src)):
        raise ModelLoadError(f"model {spec.name!r}: source path {src} does not exist")


def load_error_message(spec: ModelSpec, exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # vLLM's engine-core start-up failures say only "see root cause above"; keep
    # the first lines of whatever we have, the full trace is in the worker log.
    lines = text.splitlines()
    if len(lines) > 6:
        text = "\n".join(lines[:6]) + "\n..."
    return f"could not load model {spec.name!r} from {spec.source!r}: {type(exc).__name__}: {text}"


def trim_malloc() -> None:
    # glibc keeps freed arenas mapped; hand them back so RSS really drops after unload.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
