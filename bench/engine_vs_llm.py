"""Throughput of VllmEngine against one ``LLM.chat`` call, in the same process.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_vs_llm.py PATH [--n 256] [--max-tokens 32] [--rounds 3]

Both engines are loaded side by side with the same options (our CPU/GPU
defaults) and run the same chats with ``ignore_eos`` (every request yields
exactly ``max-tokens`` tokens), alternating, after one warm-up run each, so
that a noisy neighbour hurts both alike. Reports the best and median round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.engine.base import EngineRequest, ModelSpec  # noqa: E402

# Prompt tokens of the last run of each side: equal work is part of a fair comparison.
_PROMPT_TOKENS_ENGINE = 0
_PROMPT_TOKENS_LLM = 0


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Write a short story about the number {i}."}] for i in range(n)]


def run_engine(engine: Any, name: str, n: int, max_tokens: int) -> tuple[float, int]:
    requests = [
        EngineRequest(
            str(i),
            "/v1/chat/completions",
            {"model": name, "messages": m, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
        )
        for i, m in enumerate(chats(n))
    ]
    started = time.perf_counter()
    results = list(engine.run(requests))
    elapsed = time.perf_counter() - started
    global _PROMPT_TOKENS_ENGINE
    _PROMPT_TOKENS_ENGINE = sum((r.usage or {}).get("prompt_tokens", 0) for r in results)
    return elapsed, sum((r.usage or {}).get("completion_tokens", 0) for r in results)


def run_llm(llm: Any, n: int, max_tokens: int) -> tuple[float, int]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    started = time.perf_counter()
    outputs = llm.chat(chats(n), params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    global _PROMPT_TOKENS_LLM
    _PROMPT_TOKENS_LLM = sum(len(o.prompt_token_ids or ()) for o in outputs)
    return elapsed, sum(len(o.outputs[0].token_ids) for o in outputs)


def summary(runs: list[tuple[float, int]], n: int) -> dict[str, float]:
    rates = sorted(n / s for s, _ in runs)
    toks = sorted(t / s for s, t in runs)
    return {
        "req_s_best": rates[-1],
        "req_s_median": statistics.median(rates),
        "tok_s_best": toks[-1],
        "tok_s_median": statistics.median(toks),
    }


def compare(
    spec: ModelSpec, n: int = 256, max_tokens: int = 32, rounds: int = 3, compare_prime: bool = False
) -> dict[str, Any]:
    """Load both engines side by side, alternate ``rounds`` runs, return the report."""
    from vllm import LLM

    from jobs.engine.options import resolve
    from jobs.engine.vllm_engine import VllmEngine

    engine = VllmEngine()
    engine.load(spec)
    load_s = engine.last_load_seconds
    resolved = resolve(spec)
    os.environ.update(resolved.env)
    started = time.monotonic()
    llm = LLM(model=spec.source, served_model_name=spec.name, **resolved.engine_args)
    llm_load_s = time.monotonic() - started
    try:
        run_engine(engine, spec.name, min(n, 32), 4)  # warm-up
        run_llm(llm, min(n, 32), 4)
        ours, theirs, unprimed = [], [], []
        for _ in range(rounds):
            ours.append(run_engine(engine, spec.name, n, max_tokens))
            theirs.append(run_llm(llm, n, max_tokens))
            line = {"engine_req_s": n / ours[-1][0], "llm_chat_req_s": n / theirs[-1][0]}
            if compare_prime:
                engine.prime_start = False
                unprimed.append(run_engine(engine, spec.name, n, max_tokens))
                engine.prime_start = True
                line["engine_unprimed_req_s"] = n / unprimed[-1][0]
            print(json.dumps({"round": line}), flush=True)
    finally:
        llm.llm_engine.engine_core.shutdown()
        engine.unload()
    report: dict[str, Any] = {
        "model": spec.source,
        "n": n,
        "max_tokens": max_tokens,
        "engine_load_s": load_s,
        "llm_load_s": llm_load_s,
        "engine_unload_s": engine.last_unload_seconds,
        "prompt_tokens": {"engine": _PROMPT_TOKENS_ENGINE, "llm_chat": _PROMPT_TOKENS_LLM},
        "engine": summary(ours, n),
        "llm_chat": summary(theirs, n),
    }
    if unprimed:
        report["engine_unprimed"] = summary(unprimed, n)
    report["ratio_best"] = report["engine"]["req_s_best"] / report["llm_chat"]["req_s_best"]
    report["ratio_median"] = report["engine"]["req_s_median"] / report["llm_chat"]["req_s_median"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("--name", default="bench-model")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-prime", action="store_true", help="also time the engine without priming")
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = ModelSpec(args.name, args.source, ("chat",), {"max_model_len": args.max_model_len})
    report = compare(spec, args.n, args.max_tokens, args.rounds, args.compare_prime)
    print(json.dumps(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
