"""What a worker's device is doing, published with its heartbeat for the dashboard.

On a host where an NVIDIA GPU answers, NVML (the ``nvidia-ml-py`` package,
imported only then) gives the GPU's memory and utilisation; everywhere the
worker also reports the memory of its process tree (psutil), which on a CPU
host is the engine's footprint. Reading either never raises: a heartbeat must
not fail because a driver hiccupped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

log = logging.getLogger("batchsite.worker")


def process_tree_rss(pid: int | None = None) -> int:
    """Resident memory of the worker and its children (vLLM's engine core runs in a child)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        # A child can exit between listing and reading; it then uses no memory.
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def nvml_target(device: str, environ: Mapping[str, str]) -> int | str | None:
    """The NVML device (physical index or UUID) behind a worker's ``--device``, or None for CPU.

    ``cuda:N`` is a CUDA ordinal, counted among CUDA_VISIBLE_DEVICES when that
    is set; NVML ignores that variable and counts every GPU, so the ordinal is
    mapped through it. Entries there may be indexes or UUIDs (``GPU-…``, ``MIG-…``).
    """
    name = device.strip().lower()
    if name == "cpu":
        return None
    ordinal = 0
    if name.startswith("cuda"):
        _, _, number = name.partition(":")
        if number:
            if not number.isdigit():
                return None
            ordinal = int(number)
    elif name:
        return None  # some other accelerator NVML knows nothing about
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return ordinal
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if ordinal >= len(entries):
        return None
    entry = entries[ordinal]
    return int(entry) if entry.isdigit() else entry


class DeviceMonitor:
    """Reads one device's status; NVML is initialised once, on the first read."""

    def __init__(self, device: str, environ: Mapping[str, str] | None = None) -> None:
        self.device = device
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handle: Any = None
        self._tried = False

    def read(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"kind": "cpu", "rss_bytes": process_tree_rss()}
        gpu = self._read_gpu()
        if gpu:
            stats.update(gpu, kind="gpu")
        return stats

    def _open(self) -> None:
        self._tried = True
        target = nvml_target(self.device, self.environ)
        if target is None:
            return
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return
        try:
            pynvml.nvmlInit()
            if isinstance(target, int):
                if target >= pynvml.nvmlDeviceGetCount():
                    return
                handle = pynvml.nvmlDeviceGetHandleByIndex(target)
            else:
                handle = pynvml.nvmlDeviceGetHandleByUUID(target)
        except pynvml.NVMLError as exc:
            # No driver or no GPU here: a CPU host, reported as such.
            log.debug("NVML unavailable (%s); reporting CPU status", exc)
            return
        self._nvml, self._handle = pynvml, handle

    def _read_gpu(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._tried:
                self._open()
            nvml, handle = self._nvml, self._handle
        if handle is None:
            return None
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
            name = nvml.nvmlDeviceGetName(handle)
        except nvml.NVMLError as exc:
            log.warning("NVML read failed: %s", exc)
            return None
        return {
            "gpu_name": name.decode() if isinstance(name, bytes) else str(name),
            "gpu_memory_used_bytes": int(memory.used),
            "gpu_memory_total_bytes": int(memory.total),
            "gpu_utilization_percent": int(utilization.gpu),
        }


@lru_cache(maxsize=8)
def monitor_for(device: str) -> DeviceMonitor:
    return DeviceMonitor(device)


def device_stats(device: str) -> dict[str, Any]:
    """The status a worker on ``device`` publishes: kind (gpu/cpu), process memory, GPU figures."""
    return monitor_for(device).read()
