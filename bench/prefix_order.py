"""Prefix-aware ordering (jobs/engine/prefix_order.py) against input order, side by side.

    .venv/bin/python bench/prefix_order.py --model tiny --n 1024 [--rounds 2] [--json out.json]
    .venv/bin/python bench/prefix_order.py --model tiny --n 1024 --kv-cache-mib 4   # a cache that holds few prefixes

The workload: 8 distinct system prompts of ~300 tokens, interleaved line by line
(line i uses prompt i % 8), each with a short distinct question and max_tokens 8
(prefill-heavy: where a prefix cache saves work). One VllmEngine, vLLM's prefix
caching on (its default), metrics on; the same lines run in input order and in
the order the worker's feeder hands them over (grouped within the engine's
window), alternating, the prefix cache reset before every run so neither order
inherits the other's cached blocks. Reports per order: seconds, requests/s, and
vLLM's prefix cache hit rate (hit tokens / queried tokens, from its Prometheus
counters) for the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import candidate_text, emit, model_spec, seed_words, table  # noqa: E402
from jobs.engine.base import EngineRequest  # noqa: E402
from jobs.engine.prefix_order import grouped  # noqa: E402


def lines(n: int, model: str, words: int, max_tokens: int) -> list[EngineRequest]:
    systems = [f"Policy {k}. " + candidate_text(1000 + k, words) for k in range(8)]
    return [
        EngineRequest(
            f"q-{i}",
            "/v1/chat/completions",
            {
                "model": model,
                "messages": [
                    {"role": "system", "content": systems[i % 8]},
                    {"role": "user", "content": f"Question {i}: does rule {i % 13} apply?"},
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        for i in range(n)
    ]


def cache_counters() -> tuple[float, float]:
    """(queried tokens, hit tokens) of vLLM's prefix cache so far, all engines summed."""
    from prometheus_client import REGISTRY

    queries = hits = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
            elif sample.name == "vllm:prefix_cache_hits_total":
                hits += sample.value
    return queries, hits


def run(engine: Any, requests: list[EngineRequest]) -> dict[str, float]:
    engine._call(engine._serving.client.reset_prefix_cache())
    q0, h0 = cache_counters()
    started = time.perf_counter()
    results = list(engine.run(requests))
    seconds = time.perf_counter() - started
    time.sleep(0.3)  # the stats loggers record as outputs arrive; a moment for the last step
    q1, h1 = cache_counters()
    assert len(results) == len(requests) and all(r.status_code == 200 for r in results)
    return {"seconds": seconds, "req_s": len(results) / seconds, "hit_rate": (h1 - h0) / max(q1 - q0, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["demo", "tiny"], default="tiny")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--kv-cache-mib", type=float, help="a KV cache this small (kv_cache_memory_bytes): fewer prefixes fit"
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    from jobs.engine.vllm_engine import VllmEngine

    spec = model_spec(args.model)
    if args.kv_cache_mib:
        options = {**spec.engine_options, "kv_cache_memory_bytes": int(args.kv_cache_mib * 2**20)}
        spec = dataclasses.replace(spec, engine_options=options)
    words = seed_words(spec.source)
    engine = VllmEngine()
    engine.log_stats = True
    engine.load(spec)
    window = engine.window
    try:
        in_order = lines(args.n, spec.name, words, args.max_tokens)
        by_prefix = list(grouped(in_order, window))
        run(engine, in_order[:64])  # warm-up
        rounds: dict[str, list[dict[str, float]]] = {"input order": [], "prefix-grouped": []}
        for _ in range(args.rounds):
            rounds["input order"].append(run(engine, in_order))
            rounds["prefix-grouped"].append(run(engine, by_prefix))
    finally:
        engine.unload()
    rows: list[dict[str, Any]] = [
        {
            "order": name,
            "seconds": statistics.median(r["seconds"] for r in runs),
            "req_s": statistics.median(r["req_s"] for r in runs),
            "hit_rate": statistics.median(r["hit_rate"] for r in runs),
        }
        for name, runs in rounds.items()
    ]
    ratio = rows[1]["req_s"] / rows[0]["req_s"]
    cache = f"{args.kv_cache_mib:g} MiB" if args.kv_cache_mib else "default"
    print(f"model={spec.name} n={args.n} window={window} rounds={args.rounds} kv cache={cache} (medians)")
    print(table(rows, ["order", "seconds", "req_s", "hit_rate"]))
    print(f"prefix-grouped / input order throughput: {ratio:.3f}")
    emit({"model": spec.name, "n": args.n, "rows": rows, "rounds": rounds, "ratio": ratio}, args.json)


if __name__ == "__main__":
    main()
