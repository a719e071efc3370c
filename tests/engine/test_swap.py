"""When a swap may load the next model beside the exiting one: from measured footprints and free memory."""

from __future__ import annotations

import dataclasses
import os

import pytest

from batchsite.env import EnvError, Reader, read_worker_settings
from jobs.engine import swap
from jobs.engine.vllm_engine import VllmEngine
from jobs.worker import GpuWorker

GIB = 1 << 30


def test_a_model_measured_before_is_expected_at_its_own_footprint_else_the_largest_seen():
    measured = {"small": 2 * GIB, "big": 7 * GIB}
    assert swap.expected_footprint("small", measured) == 2 * GIB
    assert swap.expected_footprint("never-loaded", measured) == 7 * GIB
    assert swap.expected_footprint("anything", {}) is None


def test_cpu_overlaps_only_with_room_for_the_next_engine_and_a_margin():
    assert swap.may_overlap(False, 7 * GIB, 20 * GIB)[0]
    refused, why = swap.may_overlap(False, 7 * GIB, 9 * GIB)
    assert not refused and "9.0 GiB available" in why
    assert not swap.may_overlap(False, None, 100 * GIB)[0]  # nothing measured: no guess


def test_gpu_never_overlaps_whatever_the_memory():
    overlapped, why = swap.may_overlap(True, 1, 10**15)
    assert not overlapped and "profiling" in why


def test_footprint_counts_live_processes_only():
    assert swap.footprint([os.getpid()]) > 0
    assert swap.footprint([2**22 + 12345]) == 0  # no such process


def test_the_overlap_setting_parses_strictly_and_reaches_the_engine(settings):
    assert read_worker_settings(Reader({})).swap_overlap == "auto"
    assert read_worker_settings(Reader({"BATCHSITE_SWAP_OVERLAP": "off"})).swap_overlap == "off"
    with pytest.raises(EnvError, match="BATCHSITE_SWAP_OVERLAP"):
        read_worker_settings(Reader({"BATCHSITE_SWAP_OVERLAP": "sometimes"}))
    settings.BATCHSITE_WORKER = dataclasses.replace(settings.BATCHSITE_WORKER, swap_overlap="off")
    assert GpuWorker(VllmEngine()).engine.overlap_swaps is False  # type: ignore[attr-defined]
