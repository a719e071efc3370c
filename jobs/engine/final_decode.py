"""Final-only detokenization: decode a line's output once when it finishes, not token by token.

vLLM's output processor detokenizes every request incrementally, one DecodeStream
step per generated token, on the frontend's event loop (our worker process): it
was 43% of the worker's CPU, which on a small machine it takes from the engine.
A batch line that is not streamed only needs the final text, unless the text is
read as it is generated: stop strings (matched on the text), logprobs (each token
decoded). For the other lines ``FinalDecodeClient.generate`` asks vLLM for token
ids only (``SamplingParams.detokenize=False``; non-streamed lines are already
``RequestOutputKind.FINAL_ONLY``) and fills each output's ``text`` in one decode
when the request finishes, before vLLM's serving layer builds the body from it.

The text must be the one vLLM's detokenizer would produce (bodies stay field-equal
to ``vllm serve``'s). Its DecodeStream decodes each token in the context of the
ones before it (the prompt's too) and never emits an incomplete UTF-8 character;
we decode a tail of the prompt plus the output and cut the tail's own text off,
and fall back to running vLLM's own detokenizer over the tokens (exact by
construction, still cheaper than per step) whenever that shortcut could differ:
a replacement character in the text, a context that decodes to nothing, a text
that does not start with the context's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any

# Prompt tokens decoded ahead of the output: enough for a tokenizer's context
# rules (a leading-space marker on the first output token, a split character).
_CONTEXT_TOKENS = 16


def wants_final_decode(params: Any) -> bool:
    """Whether nothing about this request reads its text before it finishes."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return (
        isinstance(params, SamplingParams)
        and params.detokenize
        and params.output_kind == RequestOutputKind.FINAL_ONLY
        and not params.stop
        and params.logprobs is None
        and params.prompt_logprobs is None
        and params.skip_special_tokens
    )


class FinalDecodeClient:
    """An AsyncLLM as the serving layer sees it, with final-only detokenization (see above)."""

    def __init__(self, client: Any) -> None:
        from vllm.v1.engine.detokenizer import uses_fast_detokenizer

        self._client = client
        tokenizer = getattr(getattr(client, "renderer", None), "tokenizer", None)
        # Only the fast (tokenizers) detokenizer is mirrored; a slow one keeps vLLM's path.
        self._tokenizer = tokenizer if tokenizer is not None and uses_fast_detokenizer(tokenizer) else None
        self.decoded = 0  # completions whose text was decoded here (for tests and profiles)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def generate(self, prompt: Any, sampling_params: Any, request_id: str, **kwargs: Any) -> Any:
        if self._tokenizer is None or not wants_final_decode(sampling_params):
            return self._client.generate(prompt, sampling_params, request_id, **kwargs)
        sampling_params.detokenize = False
        return self._decoded(self._client.generate(prompt, sampling_params, request_id, **kwargs), sampling_params)

    async def _decoded(self, outputs: AsyncGenerator[Any, None], params: Any) -> AsyncGenerator[Any, None]:
        async for output in outputs:
            if output.finished:
                for completion in output.outputs:
                    completion.text = self.text(output.prompt_token_ids or [], completion, params)
            yield output

    def text(self, prompt_ids: list[int], completion: Any, params: Any) -> str:
        """What vLLM's incremental detokenizer would have made of the completion's tokens."""
        self.decoded += 1
        ids = list(completion.token_ids)
        # vLLM leaves out the token that stopped the request (EOS or a stop token id).
        stop_terminated = completion.finish_reason == "stop"
        shown = ids[:-1] if stop_terminated and not params.include_stop_str_in_output and ids else ids
        rust = self._tokenizer._tokenizer  # type: ignore[union-attr]
        context = list(prompt_ids[-_CONTEXT_TOKENS:])
        prefix = rust.decode(context, skip_special_tokens=True)
        full = rust.decode(context + shown, skip_special_tokens=True)
        if prefix and full.startswith(prefix) and "\ufffd" not in full:
            return str(full[len(prefix) :])
        return exact_text(self._tokenizer, prompt_ids, ids, params, stop_terminated)


def exact_text(tokenizer: Any, prompt_ids: list[int], ids: list[int], params: Any, stop_terminated: bool) -> str:
    """vLLM's own detokenizer run over the finished tokens, as its output processor would have."""
    from vllm.v1.engine.detokenizer import IncrementalDetokenizer

    request = SimpleNamespace(request_id="final-decode", prompt_token_ids=prompt_ids, sampling_params=params)
    detokenizer = IncrementalDetokenizer.from_new_request(tokenizer, request)  # type: ignore[arg-type]
    detokenizer.update(ids, stop_terminated)
    return detokenizer.get_next_output_text(finished=True, delta=False)
