"""Engine option resolution: CPU/GPU defaults and per-model overrides (no engine started)."""

from __future__ import annotations

import pytest

from jobs.engine.base import ModelLoadError, ModelSpec
from jobs.engine.options import resolve


def spec(**options: object) -> ModelSpec:
    return ModelSpec("m", "/models/m", ("chat",), dict(options))


def test_cpu_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr("jobs.engine.options.cpu_count", lambda: 4)
    resolved = resolve(spec(), gpu=False)
    assert resolved.engine_args == {
        "disable_log_stats": True,
        "dtype": "float32",
        "enforce_eager": True,
        "enable_chunked_prefill": False,
    }
    # The model runs in the engine-core process ("uni" executor), not in a third one.
    assert resolved.env == {
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "VLLM_CPU_OMP_THREADS_BIND": "0-3",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def test_operator_env_and_model_options_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "10")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    resolved = resolve(spec(dtype="bfloat16", max_num_seqs=8, cpu_omp_threads_bind="0-1"), gpu=False)
    assert resolved.engine_args["dtype"] == "bfloat16" and resolved.engine_args["max_num_seqs"] == 8
    assert resolved.env == {
        "VLLM_CPU_KVCACHE_SPACE": "10",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    }
    assert "VLLM_CPU_KVCACHE_SPACE" not in resolve(spec(kv_cache_memory_bytes=2**30), gpu=False).env


def test_gpu_uses_vllm_defaults() -> None:
    resolved = resolve(spec(tensor_parallel_size=2, gpu_memory_utilization=0.8), gpu=True)
    assert resolved.engine_args == {"disable_log_stats": True, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}
    assert resolved.env == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_model_lenn": 1}, "unknown engine option"), ({"served_model_name": "x"}, "cannot be set")],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        resolve(spec(**options), gpu=False)
