"""Device status for the dashboard: NVML where a GPU answers, process memory everywhere."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from typing import Any

import psutil
import pytest

from jobs.engine import devices
from jobs.engine.devices import DeviceMonitor, nvml_target, process_tree_rss


@pytest.mark.parametrize(
    ("device", "visible", "expected"),
    [
        ("", None, 0),
        ("cuda", None, 0),
        ("cuda:3", None, 3),
        ("CUDA:1", None, 1),
        ("cuda:1", "4,6", 6),
        ("cuda:0", "GPU-8f3a, 2", "GPU-8f3a"),
        ("cuda:2", "4,6", None),  # not visible to this process
        ("cuda:x", None, None),
        ("cpu", None, None),
        ("rocm:0", None, None),
    ],
)
def test_the_nvml_device_follows_the_cuda_ordinal_through_cuda_visible_devices(device, visible, expected):
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert nvml_target(device, environ) == expected


def test_on_this_cpu_host_the_status_says_cpu_with_the_process_memory():
    # nvidia-ml-py is installed but no NVIDIA driver is: NVML's real failure path.
    stats = DeviceMonitor("cuda:0", environ={}).read()
    assert stats["kind"] == "cpu"
    assert stats["rss_bytes"] > 10 * 2**20
    assert not any(key.startswith("gpu_") for key in stats)


def test_process_memory_counts_the_engine_child_processes():
    # Measured on a parent of its own (a shell running one Python child), not on the
    # test process: a test session has children of its own (live servers, engines)
    # whose memory would drown the 150 MB this test looks for.
    parent = subprocess.Popen(
        [
            "sh",
            "-c",
            f'{sys.executable} -c "import sys, time; b = bytearray(150 * 2**20); '
            "sys.stdout.write('x'); sys.stdout.flush(); time.sleep(60)\" & wait",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None and parent.stdout.read(1) == b"x"
        shell = psutil.Process(parent.pid)
        assert process_tree_rss(parent.pid) - shell.memory_info().rss > 140 * 2**20
        for child in shell.children(recursive=True):
            child.kill()
        psutil.wait_procs(shell.children(recursive=True), timeout=5)
        time.sleep(0.1)
        assert process_tree_rss(parent.pid) - shell.memory_info().rss < 140 * 2**20
    finally:
        parent.kill()
        parent.wait()


class _FakeNvml(types.ModuleType):
    """A STAND-IN for pynvml: this machine has no GPU. The test is about which device
    the worker asks NVML for and how NVML's figures are published, not about NVML."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.asked: list[Any] = []
        self.fail_reads = False

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.asked.append(index)
        return f"handle-{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.asked.append(uuid)
        return f"handle-{uuid}"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        if self.fail_reads:
            raise self.NVMLError("GPU is lost")
        return types.SimpleNamespace(used=30 * 2**30, total=80 * 2**30, free=50 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        return types.SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA A100-SXM4-80GB"


def test_on_a_gpu_host_the_status_carries_nvml_memory_and_utilisation(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = DeviceMonitor("cuda:1", environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    stats = monitor.read()
    assert fake.asked == [3]
    assert stats["kind"] == "gpu" and stats["gpu_name"] == "NVIDIA A100-SXM4-80GB"
    assert (stats["gpu_memory_used_bytes"], stats["gpu_memory_total_bytes"]) == (30 * 2**30, 80 * 2**30)
    assert stats["gpu_utilization_percent"] == 87 and stats["rss_bytes"] > 0
    monitor.read()
    assert fake.asked == [3]  # the handle is opened once
    # A read that fails (a GPU fallen off the bus) still gives a heartbeat, as CPU.
    fake.fail_reads = True
    assert monitor.read()["kind"] == "cpu"


def test_a_device_that_nvml_does_not_have_is_reported_as_cpu(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert DeviceMonitor("cuda:7", environ={}).read()["kind"] == "cpu"
    assert DeviceMonitor("cpu", environ={}).read()["kind"] == "cpu"
    assert fake.asked == []


def test_one_monitor_per_device_is_kept_between_heartbeats():
    assert devices.monitor_for("cuda:0") is devices.monitor_for("cuda:0")
    assert devices.monitor_for("cuda:0") is not devices.monitor_for("cpu")
