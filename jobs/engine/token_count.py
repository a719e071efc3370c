"""Count a batch's prompt tokens as the engine will, without loading its weights.

Run as a child process (``python -m jobs.engine.token_count``) by
``jobs.services.estimate``: stdin is one JSON header line (the model's spec)
then the batch's JSONL; stdout gets a JSON line of running totals about every
half second and a last one with ``"done": true``. The parent kills it at its
time bound and answers from the last totals it read.

Exact by construction: the counting is vLLM's own render-only pipeline (the one
behind its GPU-less render server, ``vllm.entrypoints.launchers.render``),
built from the same engine arguments the worker loads the model with
(``jobs.engine.options.resolve``). ``OpenAIServingChat`` delegates to the very
``ServingRender.render_chat_request`` used here, so a chat line's count is its
``usage.prompt_tokens``; completions and embeddings inputs go through the
renderer's completion preprocessing, as vLLM's serving of them does. A line
the engine would refuse (too long, a bad body) is counted as ``failing``, not
in the tokens: its usage will not be in the output either.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, BinaryIO

import orjson

from jobs.engine.base import ModelSpec

CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
REPORT_EVERY = 0.5  # seconds between running totals


class Counter:
    """vLLM's renderer for one model, and the totals of the lines counted so far."""

    def __init__(self, spec: ModelSpec, engine_args: dict[str, Any]) -> None:
        self.spec = spec
        self.engine_args = engine_args
        self.state: Any = None
        self.requests = self.prompt_tokens = self.max_output_tokens = self.failing = 0

    async def open(self) -> None:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.render.app_state import init_render_app_state
        from vllm.usage.usage_lib import UsageContext

        from jobs.engine.serving import _frontend_args

        args = _frontend_args(self.spec, self.engine_args)
        # The usage context the worker's engine uses (serving.open_serving): it picks defaults.
        config = AsyncEngineArgs.from_cli_args(args).create_engine_config(UsageContext.LLM_CLASS)
        self.state = State()
        await init_render_app_state(config, self.state, args)

    async def count(self, url: str, body: dict[str, Any]) -> None:
        self.requests += 1
        try:
            counted = await self._count(url, {**body, "model": self.spec.name})
        except Exception:  # a body vLLM's protocol refuses: the engine answers it with a 400
            counted = None
        if counted is None:
            self.failing += 1
        else:
            self.prompt_tokens += counted[0]
            self.max_output_tokens += counted[1]

    async def _count(self, url: str, body: dict[str, Any]) -> tuple[int, int] | None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        if url == CHAT_URL:
            rendered = await self.state.serving_render.render_chat_request(ChatCompletionRequest.model_validate(body))
            if isinstance(rendered, ErrorResponse):
                return None
            params = rendered.sampling_params
            return len(rendered.token_ids), int(params.max_tokens or 0) * int(params.n or 1)
        if url == COMPLETIONS_URL:
            rendered = await self.state.serving_render.render_completion_request(CompletionRequest.model_validate(body))
            if isinstance(rendered, ErrorResponse):
                return None
            items = rendered if isinstance(rendered, list) else [rendered]
            outputs = sum(int(r.sampling_params.max_tokens or 0) * int(r.sampling_params.n or 1) for r in items)
            return sum(len(r.token_ids) for r in items), outputs
        if url == EMBEDDINGS_URL:
            return await self._embedding(body)
        return None

    async def _embedding(self, body: dict[str, Any]) -> tuple[int, int] | None:
        """An embeddings input rendered as the pooling serving renders a text prompt; one
        past the model's context is refused by the engine, so it fails here too."""
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.renderers.inputs.preprocess import extract_prompt_len

        fields = {k: body[k] for k in ("add_special_tokens", "truncate_prompt_tokens") if k in body}
        request = CompletionRequest.model_validate({"model": self.spec.name, "prompt": body.get("input"), **fields})
        renderer = self.state.online_renderer
        inputs = await renderer.render_completion(request)
        if isinstance(inputs, ErrorResponse):
            return None
        lengths = [extract_prompt_len(renderer.model_config, engine_input) for engine_input in inputs]
        if any(n > renderer.model_config.max_model_len for n in lengths):
            return None
        return sum(lengths), 0

    def totals(self, done: bool = False) -> bytes:
        return orjson.dumps(
            {
                "requests": self.requests,
                "prompt_tokens": self.prompt_tokens,
                "max_output_tokens": self.max_output_tokens,
                "failing": self.failing,
                "done": done,
            }
        )


async def run(stdin: BinaryIO, out: BinaryIO) -> None:
    from jobs.engine import options

    header = orjson.loads(stdin.readline())
    spec = ModelSpec(header["name"], header["source"], tuple(header["endpoints"]), dict(header["engine_options"]))
    resolved = options.resolve(spec)
    os.environ.update(resolved.env)  # before vLLM reads them, as the worker sets them for its engine
    counter = Counter(spec, resolved.engine_args)
    await counter.open()
    url = header["url"]
    last = time.monotonic()
    for raw in stdin:
        if not raw.strip():
            continue
        try:
            body = orjson.loads(raw).get("body")
        except (orjson.JSONDecodeError, AttributeError):
            body = None
        if isinstance(body, dict):
            await counter.count(url, body)
        else:
            counter.requests += 1
            counter.failing += 1
        if time.monotonic() - last >= REPORT_EVERY:
            out.write(counter.totals() + b"\n")
            out.flush()
            last = time.monotonic()
    out.write(counter.totals(done=True) + b"\n")
    out.flush()


def main() -> None:
    # vLLM logs to stdout by default; the answer is stdout's only content.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr
    asyncio.run(run(sys.stdin.buffer, answer))


if __name__ == "__main__":
    main()
