"""Device pinning (jobs/engine/pinning.py): what each --device/--devices value means for the engine.

Pure functions; no GPU and no engine needed. What the worker process and its
engine process really get is tested in tests/test_worker_devices.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jobs.engine.devices import nvml_target
from jobs.engine.pinning import DeviceError, Devices, cuda_initialised, parallel_size, parse, pin


@pytest.mark.parametrize(
    "device, devices, label, count, env",
    [
        (None, None, "auto", None, {}),
        ("auto", None, "auto", None, {}),
        ("cpu", None, "cpu", 1, {"CUDA_VISIBLE_DEVICES": ""}),
        ("cuda:0", None, "cuda:0", 1, {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
        ("cuda:07", None, "cuda:7", 1, {"CUDA_VISIBLE_DEVICES": "7", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
        (None, "0,1", "cuda:0,1", 2, {"CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
        (None, " 2, 3 ", "cuda:2,3", 2, {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
        (
            None,
            "cuda:4,cuda:5,6,7",
            "cuda:4,5,6,7",
            4,
            {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        ),
        (
            None,
            "GPU-8f6e-11aa",
            "cuda:GPU-8f6e-11aa",
            1,
            {"CUDA_VISIBLE_DEVICES": "GPU-8f6e-11aa", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        ),
    ],
)
def test_each_flag_gives_the_engine_its_devices(device, devices, label, count, env):
    parsed = parse(device, devices)
    assert (parsed.label, parsed.count, parsed.environment()) == (label, count, env)


@pytest.mark.parametrize(
    "device, devices, message",
    [
        ("cuda:0", "0,1", "not both"),
        ("gpu0", None, "--device"),
        ("cuda", None, "--device"),
        ("cuda:", None, "--device"),
        ("cuda:-1", None, "--device"),
        ("cuda:0,1", None, "--devices 0,1"),
        ("cuda:256", None, "out of range"),
        ("cuda:" + "9" * 5000, None, "out of range"),
        ("cuda:\u0661", None, "--device"),  # an Arabic-Indic one: isdigit() but not a CUDA index
        ("cuda:1\udcff", None, "--device"),  # a lone surrogate, as a bad byte in argv arrives
        ("CPU; rm -rf /", None, "--device"),
        (None, "", "--devices"),
        (None, "0,,1", "--devices"),
        (None, "0,0", "twice"),
        (None, "cuda:1,1", "twice"),
        (None, "0 1", "--devices"),
        (None, "GPU-" + "a" * 200, "--devices"),
    ],
)
def test_a_bad_value_is_refused_naming_the_flag(device, devices, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(")) as info:
        parse(device, devices)
    assert len(str(info.value)) < 300  # a 5,000-digit value is not echoed whole


@pytest.mark.parametrize(
    "options, size",
    [
        ({}, 1),
        ({"max_model_len": 4096}, 1),
        ({"tensor_parallel_size": 2}, 2),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 4),
        ({"tensor_parallel_size": 2, "data_parallel_size": 2}, 4),
        ({"tensor_parallel_size": "2"}, None),
        ({"tensor_parallel_size": 0}, None),
        ({"tensor_parallel_size": True}, None),
        ({"tensor_parallel_size": 2.0}, None),
        ([], 1),
    ],
)
def test_parallel_size_is_the_product_of_vllms_parallel_options(options, size):
    assert parallel_size(options) == size


def test_a_worker_refuses_models_whose_parallel_size_differs_from_its_devices():
    one, two, cpu, auto = parse("cuda:0"), parse(None, "0,1"), parse("cpu"), parse()
    tp2 = {"tensor_parallel_size": 2}
    assert one.refusal("big", {}) is None and two.refusal("big", tp2) is None
    message = one.refusal("big", tp2)
    assert message is not None
    assert "'big' needs 2 GPUs (tensor_parallel_size=2 x pipeline_parallel_size=1)" in message
    assert "this worker has 1 GPU (cuda:0)" in message
    assert "this worker has 2 GPUs (cuda:0,1)" in (two.refusal("small", {}) or "")
    assert "the CPU" in (cpu.refusal("big", tp2) or "") and cpu.refusal("small", {}) is None
    # Unpinned: it has whatever vLLM finds, so it cannot tell before loading; nor can bad options.
    assert auto.refusal("big", tp2) is None and one.refusal("odd", {"tensor_parallel_size": "x"}) is None


def test_pinning_sets_the_variables_and_keeps_the_operators_numbering():
    environ: dict[str, str] = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    assert pin(parse(None, "0,1"), environ) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert environ == {"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "CUDA_VISIBLE_DEVICES": "0,1"}
    environ = {"CUDA_VISIBLE_DEVICES": "3"}
    assert pin(parse(), environ) == {} and environ == {"CUDA_VISIBLE_DEVICES": "3"}  # auto touches nothing


def test_pinning_after_cuda_started_is_refused(monkeypatch):
    # A stand-in for torch (labelled: this host has no CUDA to start); only is_initialized matters.
    started = SimpleNamespace(cuda=SimpleNamespace(is_initialized=lambda: True))
    assert cuda_initialised({"torch": started}) and not cuda_initialised({})
    monkeypatch.setitem(__import__("sys").modules, "torch", started)
    environ: dict[str, str] = {}
    with pytest.raises(DeviceError, match="CUDA was initialised before --device cuda:1"):
        pin(Devices("cuda", ("1",)), environ)
    assert environ == {}


@pytest.mark.parametrize(
    "device, devices, target",
    [("cuda:3", None, 3), (None, "5,6", 5), (None, "GPU-8f6e-11aa", "GPU-8f6e-11aa"), ("cpu", None, None)],
)
def test_a_pinned_worker_publishes_the_status_of_its_own_physical_gpu(device, devices, target):
    """The dashboard's GPU figures (jobs/engine/devices.py) come from the GPU the engine was pinned to."""
    pinned = parse(device, devices)
    assert nvml_target(pinned.monitored, pinned.environment()) == target
