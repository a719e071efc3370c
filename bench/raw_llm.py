"""The engine's ceiling: one ``LLM.chat`` (or ``LLM.embed``) call over all requests, model already loaded.

    python bench/raw_llm.py REQUESTS.jsonl MODEL_DIR SERVED_NAME 'ENGINE_ARGS_JSON' RESULT.json

Writes one JSON object: seconds for the call, requests, output tokens. The call
is timed after a warm-up call on the first two requests. Chat lines
may carry a ``response_format`` json_schema (the seed's workload): it becomes the
same structured-output constraint the serving layer builds for it.
Run by bench/e2e_throughput.py in its own process so its memory is freed after.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    path, model, name, engine_args, result = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    lines = [json.loads(line) for line in open(path)]
    llm = LLM(model=model, served_model_name=name, **engine_args)
    body = lines[0]["body"]
    if lines[0]["url"] == "/v1/embeddings":
        inputs = [line["body"]["input"] for line in lines]
        llm.embed(inputs[:2], use_tqdm=False)  # warm, as batchsite's worker is by a 2-line batch
        started = time.perf_counter()
        outputs = llm.embed(inputs, use_tqdm=False)
        seconds = time.perf_counter() - started
        assert len(outputs) == len(inputs)
        with open(result, "w") as out:
            json.dump({"seconds": seconds, "requests": len(lines), "output_tokens": 0}, out)
        return
    structured = None
    schema = (body.get("response_format") or {}).get("json_schema")
    if schema:
        structured = StructuredOutputsParams(json=schema["schema"])
    params = SamplingParams(
        max_tokens=body["max_tokens"], temperature=body["temperature"], structured_outputs=structured
    )
    messages = [line["body"]["messages"] for line in lines]
    # Warm, as batchsite's worker is by a 2-line batch of the same requests (a json_schema
    # is compiled to a grammar once, on its first use).
    llm.chat(messages[:2], params, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.chat(messages, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    with open(result, "w") as out:
        json.dump({"seconds": seconds, "requests": len(lines), "output_tokens": tokens}, out)


if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports __main__
    main()
