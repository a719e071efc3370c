"""The engine's ceiling: one ``LLM.chat`` call over all requests, model already loaded.

    python bench/raw_llm.py REQUESTS.jsonl MODEL_DIR SERVED_NAME 'ENGINE_ARGS_JSON' RESULT.json

Writes one JSON object: seconds for the chat call, requests, output tokens.
Run by bench/e2e_throughput.py in its own process so its memory is freed after.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    path, model, name, engine_args, result = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
    from vllm import LLM, SamplingParams

    lines = [json.loads(line) for line in open(path)]
    llm = LLM(model=model, served_model_name=name, **engine_args)
    body = lines[0]["body"]
    params = SamplingParams(max_tokens=body["max_tokens"], temperature=body["temperature"])
    messages = [line["body"]["messages"] for line in lines]
    started = time.perf_counter()
    outputs = llm.chat(messages, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    with open(result, "w") as out:
        json.dump({"seconds": seconds, "requests": len(lines), "output_tokens": tokens}, out)


if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports __main__
    main()
