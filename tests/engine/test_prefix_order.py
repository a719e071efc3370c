"""Prefix-aware ordering (jobs/engine/prefix_order.py): grouping within a window, nothing lost."""

from __future__ import annotations

from typing import Any

from jobs.engine.base import EngineRequest
from jobs.engine.prefix_order import grouped, prefix_key

SYSTEMS = [f"You are assistant number {k}. " * 20 for k in range(4)]


def chat(i: int, system: str) -> EngineRequest:
    # The same question within a window of 8: lines of a group then have equal keys.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"question {i // 8}"}]
    return EngineRequest(f"c-{i}", "/v1/chat/completions", {"messages": messages}, ("run", i))


def test_lines_sharing_a_system_prompt_go_together_within_each_window() -> None:
    lines = [chat(i, SYSTEMS[i % 4]) for i in range(20)]  # interleaved line by line
    out = list(grouped(lines, window=8))
    assert sorted(r.custom_id for r in out) == sorted(r.custom_id for r in lines)  # every line once
    # Blocks of 8 read ahead: within each, grouped by system prompt, input order kept for equal keys.
    for start in range(0, 20, 8):
        block, expected = out[start : start + 8], lines[start : start + 8]
        assert {r.custom_id for r in block} == {r.custom_id for r in expected}  # nothing crosses a window
        systems = [r.body["messages"][0]["content"] for r in block]
        assert systems == sorted(systems)
        for system in set(systems):
            ids = [r.tag[1] for r in block if r.body["messages"][0]["content"] == system]
            assert ids == sorted(ids)


def test_a_window_of_one_keeps_input_order_and_grouping_is_lazy() -> None:
    lines = [chat(i, SYSTEMS[i % 4]) for i in range(10)]
    assert list(grouped(lines, window=1)) == lines
    taken: list[int] = []

    def source() -> Any:
        for request in lines:
            taken.append(request.tag[1])
            yield request

    first = next(grouped(source(), window=4))
    assert first.tag[1] == 0 and taken == [0, 1, 2, 3]  # one window read ahead, not the chunk


def test_prefix_keys_of_hostile_bodies_never_raise_and_bound_their_size() -> None:
    bodies: list[Any] = [
        {"messages": "not a list"},
        {"messages": [None, 3, "x", {"role": "user"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800 lone surrogate"}]}]},
        {"messages": [{"role": "user", "content": "x" * 10_000_000}]},
        {"messages": [{"role": "user", "content": [[[[[[["deep"]]]]]]]}]},
        {"prompt": "\udfff" * 100_000},
        {"prompt": [1, 2, 3]},
        {"input": ["a", "b"]},
        {},
    ]
    for body in bodies:
        key = prefix_key(EngineRequest("x", "/v1/chat/completions", body))
        assert isinstance(key, str) and len(key) <= 2048
    # Embeddings inputs and token prompts are left in input order (one empty key for all).
    assert prefix_key(EngineRequest("x", "/v1/embeddings", {"input": ["a"]})) == ""
    assert prefix_key(EngineRequest("x", "/v1/embeddings", {"input": "some text"})) == ""
    embeddings = [EngineRequest(f"e-{i}", "/v1/embeddings", {"input": f"{9 - i} text"}) for i in range(10)]
    assert list(grouped(embeddings, window=8)) == embeddings
