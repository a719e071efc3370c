"""bin/start's worker count: one per GPU that nvidia-smi lists (a fake nvidia-smi on the PATH
plays the GPU host), WORKERS=N to override, one CPU worker without a GPU.

``bin/start --plan`` prints the processes it would start and exits before
setting anything up, so these tests run the real script in a second or so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

A100 = "NVIDIA A100-SXM4-80GB"


def fake_nvidia_smi(tmp_path: Path, output: str, status: int = 0) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 64\ncat <<'EOF'\n{output}EOF\nexit {status}\n")
    script.chmod(0o755)
    return folder


def gpu_lines(n: int) -> str:
    return "".join(f"GPU {i}: {A100} (UUID: GPU-{i:04x}aaaa-bbbb)\n" for i in range(n))


def plan(path_dirs: list[Path], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "WORKERS", "BIND")}
    # The fake folder first; then only system folders, so no real nvidia-smi is found elsewhere.
    base["PATH"] = ":".join([*map(str, path_dirs), "/usr/bin", "/bin"])
    base.update(env)
    return subprocess.run(
        ["bash", str(ROOT / "bin" / "start"), "--plan"], cwd=ROOT, env=base, capture_output=True, text=True, timeout=30
    )


def workers(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("web: ") and lines[-1].startswith("housekeeper: ")
    return [line.rsplit(" ", 1)[-1] for line in lines if line.startswith("worker: ")]


@pytest.mark.parametrize(
    "output, status, env, expected",
    [
        (gpu_lines(4), 0, {}, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
        (gpu_lines(1), 0, {}, ["cuda:0"]),
        # MIG slices are listed under their GPU, indented: the GPU counts once.
        (gpu_lines(2) + "  MIG 1g.10gb     Device  0: (UUID: MIG-0000)\n", 0, {}, ["cuda:0", "cuda:1"]),
        (gpu_lines(4), 0, {"WORKERS": "2"}, ["cuda:0", "cuda:1"]),
        (gpu_lines(4), 0, {"WORKERS": "0"}, []),
        (gpu_lines(4), 0, {"CUDA_VISIBLE_DEVICES": "2,3"}, ["cuda:2", "cuda:3"]),
        (gpu_lines(4), 0, {"CUDA_VISIBLE_DEVICES": ""}, ["cpu"]),
        # The driver is not loaded: nvidia-smi says so and fails. A CPU host, then.
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", 9, {}, ["cpu"]),
        ("No devices found.\n", 6, {}, ["cpu"]),
        ("", 0, {"WORKERS": "2"}, ["cpu", "cpu"]),
    ],
)
def test_one_worker_per_gpu_that_nvidia_smi_lists(tmp_path, output, status, env, expected):
    assert workers(plan([fake_nvidia_smi(tmp_path, output, status)], **env)) == expected


def test_a_host_without_nvidia_smi_runs_one_cpu_worker(tmp_path):
    result = plan([tmp_path], BIND="0.0.0.0:9000")
    assert workers(result) == ["cpu"]
    assert "--bind 0.0.0.0:9000" in result.stdout
    assert "run_gpu_worker --device cpu" in result.stdout


@pytest.mark.parametrize("value", ["5", "abc", "-1", "1.5", "99999", "1; rm -rf /", " "])
def test_workers_must_be_a_count_that_the_gpus_can_hold(tmp_path, value):
    result = plan([fake_nvidia_smi(tmp_path, gpu_lines(4))], WORKERS=value)
    assert result.returncode == 2 and result.stdout == ""
    assert "WORKERS" in result.stderr and len(result.stderr) < 300
