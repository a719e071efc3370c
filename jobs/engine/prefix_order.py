"""Prefix-aware ordering: lines that share a prompt prefix go to the engine together.

vLLM's prefix cache (automatic prefix caching) reuses the KV blocks of a prompt
prefix it computed for an earlier request, as long as those blocks are still
cached. Lines of a batch that share a system message, a few-shot preamble or a
document often come interleaved with others; when the distinct prefixes in
flight are more than the cache keeps, input order evicts each prefix before its
next use. ``grouped`` reads ahead up to a window of lines (the engine's window:
what it would hold in flight anyway) and hands them over grouped by prefix, so
each prefix is computed once per group. Groups come in the order of their first
line, lines within a group in input order; a window whose lines share no key, and
embeddings, are left in input order.

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
# Of a bare prompt (completions), whose shared part has no marked end: a few blocks' worth.
_PROMPT_CHARS = 256


def prefix_key(request: EngineRequest) -> str:
    """What lines must share to be grouped: a chat's first message (its system prompt or
    preamble, rendered first by the chat template), a prompt's first characters."""
    body = request.body
    if request.url == "/v1/embeddings":
        return ""  # nothing generated, no prefix cache to serve: left in input order
    messages = body.get("messages")
    if isinstance(messages, list):
        message = messages[0] if messages else None
        if not isinstance(message, dict):
            return ""
        content = message.get("content")
        text = content[:_KEY_CHARS] if isinstance(content, str) else repr(content)[:_KEY_CHARS]
        return f"{message.get('role')}\x00{text}"[:_KEY_CHARS]
    prompt = body.get("prompt", body.get("input"))  # completions; responses' input
    if isinstance(prompt, str):
        return prompt[:_PROMPT_CHARS]
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
            block = _grouped_block(block)
        yield from block
        if len(block) < window:
            return


def _grouped_block(block: list[Any]) -> list[Any]:
    """Lines of equal keys together, groups in the order their first line came; a block with
    no key shared by two lines is left as it came (reordering it could only cost: in
    this sitting's runs, lines all distinct were slower sorted than in input order)."""
    keys = [prefix_key(request) for request in block]
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    if len(first) == len(keys):
        return block
    order = sorted(range(len(block)), key=lambda i: (first[keys[i]], i))
    return [block[i] for i in order]
