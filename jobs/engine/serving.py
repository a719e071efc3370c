"""vLLM's OpenAI serving layer for one loaded model, without the HTTP server.

``open_serving`` builds what ``vllm serve`` builds: the same argument namespace
(vLLM's own batch-runner CLI parser, so every default is the CLI's), the same
``AsyncLLM`` client and the same serving objects (``init_app_state``).
``LoadedServing.handle`` then plays the part of the FastAPI route for one batch
line: validate the body with vLLM's request model, call the serving method, and
turn the answer into (status, body) the way the route and its exception
handlers do. Only that last glue is ours; every body comes from vLLM's models.

Runs on the engine's event-loop thread. Imports vllm lazily (inside functions)
so that importing jobs.engine stays cheap for the web process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from .base import EngineRequest, EngineResult, ModelSpec
from .errors import openai_error
from .final_decode import FinalDecodeClient

logger = logging.getLogger(__name__)

# Sentinels the loop thread hands back to ``run`` instead of a result.
ABORTED = object()
DEAD = object()

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
EMBEDDINGS_URL = "/v1/embeddings"
RESPONSES_URL = "/v1/responses"
URLS = (CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL, RESPONSES_URL)


def error_body(exc: BaseException | str, status: int | None = None) -> tuple[int, dict[str, Any]]:
    """(status, {"error": {...}}) exactly as vLLM's server exception handlers answer."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    if isinstance(exc, str) and status is not None:
        from http import HTTPStatus

        resp = create_error_response(
            exc, err_type=HTTPStatus(status).phrase.replace(" ", "") + "Error", status_code=HTTPStatus(status)
        )
    else:
        resp = create_error_response(exc)  # type: ignore[arg-type]
    body = resp.model_dump(mode="json")
    return int(body["error"]["code"]), body


def _usage(body: dict[str, Any]) -> dict[str, int] | None:
    """Token counts in chat's names; a Responses body counts input/output tokens instead."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    completion = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


@dataclass
class LoadedServing:
    spec: ModelSpec
    client: Any  # vllm.v1.engine.async_llm.AsyncLLM
    state: Any  # starlette State holding the serving objects, as app.state in vllm serve
    stack: contextlib.AsyncExitStack
    max_num_seqs: int
    max_num_batched_tokens: int = 0
    engine_pids: list[int] = field(default_factory=list)
    _validators: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        # AsyncLLM.shutdown() (via build_async_engine_client's finally) stops the
        # engine-core process and joins it.
        await self.stack.aclose()
        self.state = None
        self.client = None

    def reap_processes(self, timeout: float = 60.0) -> None:
        """Make sure every process the engine started is gone (no sleeps: wait on them)."""
        import psutil

        procs = []
        for pid in self.engine_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        if not procs:
            return
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            logger.warning("engine process %s outlived shutdown; killing it", proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)

    # ------------------------------------------------------------- one line
    def _route(self, url: str) -> tuple[Any, Any, str] | None:
        """(validator, handler, what) for a URL, as vllm serve's routers wire them."""
        st = self.state
        if url == RESPONSES_URL:
            from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

            handler = getattr(st, "openai_serving_responses", None)
            return ResponsesRequest, handler and handler.create_responses, "Responses API"
        if url == CHAT_URL:
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

            handler = getattr(st, "openai_serving_chat", None)
            return ChatCompletionRequest, handler and handler.create_chat_completion, "Chat Completions API"
        if url == COMPLETIONS_URL:
            from vllm.entrypoints.openai.completion.protocol import CompletionRequest

            handler = getattr(st, "openai_serving_completion", None)
            return CompletionRequest, handler and handler.create_completion, "Completions API"
        if url == EMBEDDINGS_URL:
            from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

            return EmbeddingRequest, getattr(st, "serving_embedding", None), "Embeddings API"
        return None

    def _validator(self, url: str, model: Any) -> Any:
        adapter = self._validators.get(url)
        if adapter is None:
            from pydantic import TypeAdapter

            adapter = self._validators[url] = TypeAdapter(model)  # EmbeddingRequest is a Union
        return adapter

    async def handle(self, request: EngineRequest) -> Any:
        from vllm.utils import random_uuid
        from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

        request_id = f"vllm-batch-{random_uuid()}"  # the id run_batch gives a line
        try:
            status, payload, usage = await self._answer(request)
        except VllmEngineDeadError:
            return DEAD
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Aborted: vLLM's chat handler swallows the cancellation and answers
            # "Client disconnected"; that is not a result of this line.
            return ABORTED
        if status >= 500 and self.client is not None and self.client.errored:
            return DEAD  # an internal error because the engine died: not this line's fault
        if status != 200:
            payload = openai_error(status, payload)  # vLLM's message, OpenAI's vocabulary
        return EngineResult(
            custom_id=request.custom_id,
            status_code=status,
            payload=payload,
            request_id=request_id,
            usage=usage if status == 200 else None,
            tag=request.tag,
        )

    async def _answer(self, request: EngineRequest) -> tuple[int, dict[str, Any] | bytes, dict[str, int] | None]:
        """(status, body, usage). Bodies vLLM encodes stay the bytes it encoded them to."""
        from pydantic import BaseModel, ValidationError
        from starlette.responses import Response

        route = self._route(request.url)
        if route is None:
            return (*error_body(f"Unsupported URL {request.url}: use one of {', '.join(URLS)}", 404), None)
        model, handler, what = route
        try:
            parsed = self._validator(request.url, model).validate_python(request.body)
        except ValidationError as exc:
            return (*await _validation_error(exc), None)
        if handler is None:
            # What vllm serve's router raises when the model lacks the task (501).
            return (*error_body(NotImplementedError(f"The model does not support {what}")), None)
        if getattr(parsed, "stream", False):
            # A batch line has nowhere to stream to; run_batch refuses it too.
            return (*error_body("Request must not be sent in stream mode", 400), None)
        if request.url == RESPONSES_URL:
            if parsed.background:
                # A background response is only a "queued" stub whose result is kept
                # in this process's memory: nothing a batch line could return.
                return (*error_body("Request must not be sent in background mode", 400), None)
            # vllm serve ignores store unless VLLM_ENABLE_RESPONSES_API_STORE is set, and
            # then keeps every response in memory for good; a worker that runs millions
            # of lines must not, and a batch line has no later request to read it back.
            parsed.store = False
        try:
            response = await handler(parsed)
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

            if isinstance(exc, VllmEngineDeadError):
                raise
            return (*error_body(exc), None)
        if isinstance(response, Response):
            # The embeddings handler answers with a JSONResponse (ORJSONResponse when
            # orjson is installed): its bytes are the body, as vllm serve sends them.
            raw = bytes(response.body)
            status = int(response.status_code)
            return status, raw, _usage(orjson.loads(raw)) if status == 200 else None
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        if isinstance(response, ErrorResponse):
            return int(response.error.code), response.model_dump(mode="json"), None
        if not isinstance(response, BaseModel) or not hasattr(response, "object"):
            return (*error_body("Request must not be sent in stream mode", 400), None)
        # pydantic's own JSON encoder, once, instead of model_dump and json.dumps (as the
        # route's JSONResponse would); the Responses router dumps by alias (its models
        # rename fields), the others do not.
        raw = response.__pydantic_serializer__.to_json(response, by_alias=request.url == RESPONSES_URL)
        usage = getattr(response, "usage", None)
        return 200, raw, _usage({"usage": usage.model_dump()}) if isinstance(usage, BaseModel) else None


async def _validation_error(exc: Any) -> tuple[int, bytes]:
    """Answer a body that fails validation as vllm serve does (FastAPI's 400).

    FastAPI prefixes each error's location with "body" and drops pydantic's URL;
    vLLM's own handler then formats the message. We call that handler.
    """
    from fastapi.exceptions import RequestValidationError
    from vllm.entrypoints.serve.exception_handling.handlers.validation import validation_exception_handler

    errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in exc.errors(include_url=False)]
    fake_request = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(args=SimpleNamespace(log_error_stack=False))), state=SimpleNamespace()
    )
    response = await validation_exception_handler(fake_request, RequestValidationError(errors))  # type: ignore[arg-type]
    return int(response.status_code), bytes(response.body)


def _frontend_args(spec: ModelSpec, engine_args: dict[str, Any]) -> Any:
    """The namespace ``vllm run_batch --model SOURCE --served-model-name NAME`` would parse."""
    from vllm.entrypoints.launchers.run_batch import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(description="batchsite engine"))
    args = parser.parse_args(["-i", "unused", "-o", "unused", "--model", spec.source, "--served-model-name", spec.name])
    for key, value in engine_args.items():
        setattr(args, key, value)
    return args


def _engine_pids(client: Any) -> list[int]:
    """The processes this AsyncLLM started: its engine-core processes (from vLLM's own
    process manager) and their descendants (the workers). Asking vLLM, rather than
    diffing our children, keeps unrelated subprocesses out of the reaping.
    """
    import psutil

    resources = getattr(getattr(client, "engine_core", None), "resources", None)
    pids: list[int] = []
    for manager in (getattr(resources, "engine_manager", None), getattr(resources, "coordinator", None)):
        procs = list(getattr(manager, "processes", None) or [])
        single = getattr(manager, "proc", None)
        if single is not None:
            procs.append(single)
        for proc in procs:
            if not getattr(proc, "pid", None):
                continue
            pids.append(proc.pid)
            with contextlib.suppress(psutil.Error):
                pids += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    return pids


async def open_serving(spec: ModelSpec, engine_args: dict[str, Any]) -> LoadedServing:
    from starlette.datastructures import State
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.usage.usage_lib import UsageContext

    args = _frontend_args(spec, engine_args)
    stack = contextlib.AsyncExitStack()
    client = None
    try:
        # LLM_CLASS, not OPENAI_BATCH_RUNNER: the usage context only picks scheduler
        # defaults, and the offline ones (CPU: 256 seqs / 4096 batched tokens instead
        # of 128 / 2048) are what a batch engine wants; on the tiny model they were
        # the whole throughput gap to LLM.chat. Explicit engine_options still win.
        client = await stack.enter_async_context(build_async_engine_client(args, usage_context=UsageContext.LLM_CLASS))
        engine_pids = _engine_pids(client)
        supported = await client.get_supported_tasks()
        state = State()
        await init_app_state(client, state, args, supported)
        # The generating routes get final-only detokenization where a line allows it.
        decoding = FinalDecodeClient(client)
        for name in ("openai_serving_chat", "openai_serving_completion"):
            if (serving := getattr(state, name, None)) is not None:
                serving.engine_client = decoding
    except BaseException:
        # vLLM's launcher terminates engine processes that failed to start; a client
        # that did start is shut down by the stack, and we make sure its processes went.
        pids = _engine_pids(client) if client is not None else []
        await stack.aclose()
        LoadedServing(spec, None, None, stack, 0, 0, pids).reap_processes(30)
        raise
    return LoadedServing(
        spec=spec,
        client=client,
        state=state,
        stack=stack,
        max_num_seqs=int(client.vllm_config.scheduler_config.max_num_seqs or 128),
        max_num_batched_tokens=int(client.vllm_config.scheduler_config.max_num_batched_tokens or 0),
        engine_pids=engine_pids,
    )
