"""Prefix-aware ordering: lines that share a prompt prefix go to the engine together.

vLLM's prefix cache (automatic prefix caching) reuses the KV blocks of a prompt
prefix it computed for an earlier request, as long as those blocks are still
cached. Lines of a batch that share a system message, a few-shot preamble or a
document often come interleaved with others; when the distinct prefixes in
flight are more than the cache keeps, input order evicts each prefix before its
next use. ``grouped`` reads ahead up to a window of lines (the engine's window:
what it would hold in flight anyway) and hands them over grouped by prefix, so
each prefix is computed once per group. Within a group, and for lines with no
prefix worth grouping (embeddings), the input order is kept (a stable sort).

What a line answers does not depend on its order: each line's result is its
own, written with its position in the chunk (the result files are in finishing
order already).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .base import EngineRequest

# Characters of a prompt's start that make its key: well past a system message
# or preamble's first KV block (16 tokens), cheap to compare.
_KEY_CHARS = 2048


def prefix_key(request: EngineRequest) -> str:
    """The start of the prompt as text, in the order the chat template renders it."""
    body = request.body
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            text = content if isinstance(content, str) else repr(content)
            role = message.get("role") if isinstance(message, dict) else None
            parts.append(f"{role}\x00{text}\x00")
            size += len(text)
            if size >= _KEY_CHARS:
                break
        return "".join(parts)[:_KEY_CHARS]
    if request.url == "/v1/embeddings":
        return ""  # nothing generated, no prefix cache to serve: left in input order
    prompt = body.get("prompt", body.get("input"))  # completions; responses' input
    if isinstance(prompt, str):
        return prompt[:_KEY_CHARS]
    return ""  # token-id prompts, lists: left in input order


def grouped(requests: Iterable[EngineRequest], window: int) -> Iterator[EngineRequest]:
    """``requests`` in blocks of up to ``window``, each block grouped by prefix (a stable sort).

    Reads a block ahead only as the engine asks for lines, so the first line of a chunk
    waits for at most one block to be read (a block of lines is parsed in milliseconds).
    """
    source = iter(requests)
    while True:
        block: list[Any] = []
        for request in source:
            block.append(request)
            if len(block) >= window:
                break
        if not block:
            return
        if window > 1:
            block.sort(key=prefix_key)
        yield from block
        if len(block) < window:
            return
